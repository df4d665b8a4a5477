"""Numeric precision of training: Keras dtype policies and what the CPU supports natively.

`float32` is the default. `mixed_bfloat16` computes layers in bfloat16 with float32
variables; it pays off only on hardware with native bfloat16 matrix units (GPUs since
Ampere, TPUs, Intel Xeons with AMX-BF16); on CPUs without them (AVX2-only AMD EPYCs, for
instance) TensorFlow emulates bfloat16 and training gets slower. `mixed_float16` adds loss
scaling, which Keras applies through the optimizer (`LossScaleOptimizer`, wrapped by
`compile`); `SimCLR.train_step` scales its loss with `optimizer.scale_loss`. The loss and the
logits stay float32 whatever the policy (`losses` casts the projections). `auto` picks
`mixed_bfloat16` where the CPU has AMX-BF16 and no GPU is used, else `float32`.
"""
from __future__ import annotations

import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bfloat16_support(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's native bfloat16 instructions: "amx_bf16", "avx512_bf16" or "none".

    Reads the flags Linux reports; "unknown" where /proc/cpuinfo cannot be read.
    """
    try:
        with open(cpuinfo_path) as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown"
    for flag in _CPU_BF16_FLAGS:
        if flag in flags:
            return flag
    return "none"


def resolve(precision: str, has_gpu: bool = False) -> str:
    """The Keras dtype policy name for a `--precision` value (resolving "auto")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if not has_gpu and cpu_bfloat16_support() == "amx_bf16":
        return "mixed_bfloat16"
    return "float32"


def set_precision(precision: str, has_gpu: bool = False) -> str:
    """Set Keras' global dtype policy for `precision`; returns the policy name set.

    Call before building the model: layers take the policy in effect when created.
    """
    policy = resolve(precision, has_gpu)
    keras.config.set_dtype_policy(policy)
    return policy
