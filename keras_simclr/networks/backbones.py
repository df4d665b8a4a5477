"""ResNet encoders f(x) = h for SimCLR, as functional Keras models.

ResNet-10/18/34 (basic blocks; ResNet-10, one block per stage, is a cheap CPU encoder)
and ResNet-50/101/152 (bottlenecks) after He et al. 2016, with
- `stem="imagenet"`: 7x7 stride-2 convolution and 3x3 stride-2 max-pool (224 px inputs);
- `stem="cifar"`: one 3x3 stride-1 convolution and no pooling (32 px inputs, as the
  SimCLR paper's CIFAR-10 experiments);
- `stem="stride2"`: one 3x3 stride-2 convolution and no pooling, between the two: 16x16
  maps after the stem at 32 px (the ImageNet stem leaves 8x8, the CIFAR stem 32x32), for
  about a quarter of the CIFAR stem's FLOPs;
- `width_multiplier` scaling every channel count (SimCLR's 1x/2x/4x, or fractions such as
  0.25 for small CPU runs), and `stage_widths` one multiplier per stage in its place: at
  32 px with the ImageNet stem the last stage runs on 1x1 maps, where a wider stage and h
  cost little next to the 8x8 and 4x4 stages;
- output h: global average pooling of the last stage, of size 512*width (10/18/34) or
  2048*width (50/101/152), with the last stage's width;
- BatchNormalization with momentum 0.9 and epsilon 1e-5 as the official code, the last BN
  of every residual branch initialised to zero, and `synchronized_bn` passed at
  construction: set after construction it would be lost on `.keras` reload; BN runs
  through TensorFlow's fused kernel (`batchnorm.FusedBatchNormalization`);
- the official SimCLR architecture's details as options, so that its released weights
  load into this network (`keras_simclr.exchange.official`): `padding="fixed"` for its strided
  convolutions and `sk_ratio` for SimCLRv2's selective kernel models.

keras-cv's `ResNetBackbone` has neither a CIFAR stem nor a synchronized-BN flag that
survives reload, so the network is built here. The model expects float images in [0, 1].
Its convolutions are `conv.SmallMapConv2D`, which runs the 2x2 and 1x1 maps that small
inputs leave in the last stages as matmuls (2.1x faster training at 32 px, bench/RESULTS.md).
"""
from __future__ import annotations

from typing import Callable, Mapping

import keras

from keras_simclr.networks.batchnorm import FusedBatchNormalization
from keras_simclr.networks.conv import SmallMapConv2D
from keras_simclr.utils.registry import Registry
from keras_simclr.networks.selective_kernel import SelectiveMix, SumOfHalves

_BLOCKS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)),
           34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
           101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
_STAGE_FILTERS = (64, 128, 256, 512)
STEMS = ("imagenet", "cifar", "stride2")
PADDINGS = ("same", "fixed")
SK_MIN_DIM = 32  # smallest squeeze of a selective kernel (the official `min_dim`)


def _conv(filters, kernel, strides, name, padding="same"):
    """A bias-free convolution as a function of x.

    padding="fixed" (the official code's `Conv2dFixedPadding`): a strided convolution
    pads (kernel - 1) // 2 before and the rest after, then runs VALID, the same for every
    input size; Keras' "same" pads the end more when the input side is even.
    """
    fixed = padding == "fixed" and strides > 1 and kernel > 1
    conv = SmallMapConv2D(
        filters, kernel, strides=strides, padding="valid" if fixed else "same",
        use_bias=False, kernel_initializer="he_normal", name=name,
    )
    if not fixed:
        return conv
    before = (kernel - 1) // 2
    pad = keras.layers.ZeroPadding2D(((before, kernel - 1 - before),) * 2, name=f"{name}_pad")
    return lambda x: conv(pad(x))


def _bn(synchronized, name, zero_init=False):
    return FusedBatchNormalization(
        momentum=0.9, epsilon=1e-5, synchronized=synchronized, name=name,
        gamma_initializer="zeros" if zero_init else "ones",
    )


def _conv_bn_relu(x, filters, kernel, strides, sync, name, padding):
    x = _conv(filters, kernel, strides, f"{name}_conv", padding)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(_bn(sync, f"{name}_bn")(x))


def _projection(x, filters, strides, sync, name, padding, avg_pool):
    """The projection shortcut: a strided 1x1 convolution and BN, or with `avg_pool`
    (ResNet-D, as the official SK models) a 2x2 average pool, then a 1x1 convolution."""
    if avg_pool:
        if strides > 1 and padding == "fixed":
            x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_proj_pad")(x)
        x = keras.layers.AveragePooling2D(
            2, strides, padding="same" if strides == 1 or padding == "same" else "valid",
            name=f"{name}_proj_pool")(x)
        strides = 1
    x = _conv(filters, 1, strides, f"{name}_proj_conv", padding)(x)
    return _bn(sync, f"{name}_proj_bn")(x)


def _selective_kernel(x, filters, strides, sk_ratio, sync, name, padding):
    """A selective kernel 3x3 convolution with BN and ReLU (see `selective_kernel`)."""
    streams = _conv_bn_relu(x, 2 * filters, 3, strides, sync, name, padding)
    squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(streams)
    squeeze = SumOfHalves(name=f"{name}_sum")(squeeze)
    squeeze = _conv_bn_relu(squeeze, max(int(filters * sk_ratio), SK_MIN_DIM), 1, 1, sync,
                            f"{name}_squeeze", padding)
    logits = _conv(2 * filters, 1, 1, f"{name}_mix_conv")(squeeze)
    return SelectiveMix(name=f"{name}_mix")([streams, logits])


def _basic_block(x, filters, strides, sync, name, padding="same", sk_ratio=0.0):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _projection(x, filters, strides, sync, name, padding, sk_ratio > 0)
    y = _conv_bn_relu(x, filters, 3, strides, sync, f"{name}_1", padding)
    y = _conv(filters, 3, 1, f"{name}_2_conv")(y)
    y = _bn(sync, f"{name}_2_bn", zero_init=True)(y)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _bottleneck_block(x, filters, strides, sync, name, padding="same", sk_ratio=0.0):
    out_filters = 4 * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _projection(x, out_filters, strides, sync, name, padding, sk_ratio > 0)
    y = _conv_bn_relu(x, filters, 1, 1, sync, f"{name}_1", padding)
    if sk_ratio > 0:
        y = _selective_kernel(y, filters, strides, sk_ratio, sync, f"{name}_2", padding)
    else:
        y = _conv_bn_relu(y, filters, 3, strides, sync, f"{name}_2", padding)
    y = _conv(out_filters, 1, 1, f"{name}_3_conv")(y)
    y = _bn(sync, f"{name}_3_bn", zero_init=True)(y)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _stem(inputs, stem, filters, sync, padding, deep):
    """The stem; `deep` (ResNet-D, the official SK models) makes the ImageNet stem's 7x7
    convolution three 3x3 ones, of filters/2, filters/2 and filters."""
    if stem == "imagenet" and deep:
        x = _conv_bn_relu(inputs, max(1, filters // 2), 3, 2, sync, "stem_a", padding)
        x = _conv_bn_relu(x, max(1, filters // 2), 3, 1, sync, "stem_b", padding)
        x = _conv(filters, 3, 1, "stem_conv")(x)
    elif stem == "imagenet":
        x = _conv(filters, 7, 2, "stem_conv", padding)(inputs)
    else:
        x = _conv(filters, 3, 1 if stem == "cifar" else 2, "stem_conv", padding)(inputs)
    x = keras.layers.ReLU(name="stem_relu")(_bn(sync, "stem_bn")(x))
    if stem == "imagenet":
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    return x


def _check_options(depth, stem, width_multiplier, padding, sk_ratio):
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if sk_ratio < 0 or (sk_ratio > 0 and _BLOCKS[depth][0] != "bottleneck"):
        raise ValueError(f"sk_ratio must be 0, or positive with bottleneck blocks (depth 50, "
                         f"101, 152); got {sk_ratio} at depth {depth}")


def resnet(
    depth=18,
    stem="imagenet",
    width_multiplier=1.0,
    synchronized_bn=False,
    input_shape=(None, None, 3),
    name=None,
    stage_widths=None,
    padding="same",
    sk_ratio=0.0,
):
    """Build a ResNet encoder mapping float images in [0, 1] to h = GAP(features).

    `stage_widths`: four multipliers, one per stage, used instead of `width_multiplier`
    for the stages (the stem keeps `width_multiplier`); None: `width_multiplier` for all.
    `padding`: "same" (Keras) or "fixed" (the official SimCLR code: strided convolutions
    pad (k - 1) // 2 before, then VALID). `sk_ratio` > 0: selective kernel bottlenecks
    with squeezes of max(filters * sk_ratio, 32) channels and, as the official SimCLRv2
    SK models, ResNet-D's deep stem and average-pooled projection shortcuts.
    """
    _check_options(depth, stem, width_multiplier, padding, sk_ratio)
    stage_widths = tuple(stage_widths or (width_multiplier,) * len(_STAGE_FILTERS))
    if len(stage_widths) != len(_STAGE_FILTERS) or min(stage_widths) <= 0:
        raise ValueError(f"stage_widths must be {len(_STAGE_FILTERS)} positive multipliers, "
                         f"got {stage_widths}")
    kind, repeats = _BLOCKS[depth]
    block = _basic_block if kind == "basic" else _bottleneck_block

    def width(filters, multiplier=width_multiplier):
        return max(1, int(round(filters * multiplier)))

    inputs = keras.Input(input_shape, name="images")
    x = _stem(inputs, stem, width(64), synchronized_bn, padding, deep=sk_ratio > 0)
    stages = zip(_STAGE_FILTERS, repeats, stage_widths)
    for stage, (filters, count, multiplier) in enumerate(stages):
        for index in range(count):
            strides = 2 if stage > 0 and index == 0 else 1
            x = block(x, width(filters, multiplier), strides, synchronized_bn,
                      f"stage{stage + 1}_block{index + 1}", padding, sk_ratio)
    h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, h, name=name or f"resnet{depth}_{stem}")


FAMILIES = Registry("backbone family")
_BACKBONES: dict[str, tuple[str, dict]] = {}  # backbone name -> (family, fixed arguments)


def register_family(name: str, builder: Callable[..., keras.Model],
                    variants: Mapping[str, Mapping] | None = None) -> Callable:
    """Offer `builder(**kwargs) -> keras.Model` (images in [0, 1] to h) as a backbone family.

    Args:
        name: the family's name.
        builder: builds one encoder; `build_backbone` passes it only the arguments its
            signature declares (a family without stems never sees `stem=`).
        variants: backbone names (what `--backbone` takes) with the arguments each fixes,
            e.g. {"resnet18": {"depth": 18}}; None: one backbone called `name`.

    Returns:
        `builder`.

    Raises:
        ValueError: the family or one of the backbone names is already registered.
    """
    variants = {name: {}} if variants is None else {k: dict(v) for k, v in variants.items()}
    taken = sorted(set(variants) & set(_BACKBONES))
    if taken:
        raise ValueError(f"backbone name(s) {taken} already registered; choose others")
    FAMILIES.register(name, builder)
    for backbone, fixed in variants.items():
        _BACKBONES[backbone] = (name, fixed)
    return builder


def names() -> tuple[str, ...]:
    """Every registered backbone name, e.g. ("resnet10", "resnet18", ...)."""
    return tuple(_BACKBONES)


def build_backbone(name: str = "resnet18", **kwargs) -> keras.Model:
    """The encoder called `name` (e.g. "resnet18"); raises ValueError on unknown names.

    `kwargs` that only other families declare (`stem` for a family without stems) are left
    out; one that no family declares raises TypeError.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {names()}")
    family, fixed = _BACKBONES[name]
    return FAMILIES.build(family, **fixed, **kwargs)


register_family("resnet", resnet, {f"resnet{depth}": {"depth": depth} for depth in _BLOCKS})


def output_width(encoder):
    """Size of the representation h an encoder produces."""
    return int(encoder.output.shape[-1])
