"""Where the train step's CPU time goes: per-op CPU time, one precision against another.

Builds the pretraining model as bench/throughput.py does (LARS, views in memory) under
each of `--precisions`, warms it up, then records `--steps` steps with TensorFlow's
profiler (`tf.profiler.experimental`) and reads the trace (the XSpace protobuf) itself.
TensorFlow runs on one thread here (intra- and inter-op parallelism 1), so an op's span in
the trace is the time it held that thread: its CPU time, plus whatever other processes on
the machine took meanwhile. Each step's spans are therefore scaled to add up to the step's
process CPU time (`scaled_ms`), and each op's figure is its median over `--steps` steps,
the precisions' steps alternating. The ops are grouped (convolutions
forward / backward, matmuls and einsums, BatchNormalization's element-wise ops and
reductions, casts, the optimizer, the rest) and the table gives each group's CPU ms per
step per precision and their ratio, then the costliest op types. One thread is not how
training runs (both cores, with oneDNN's own threading), so the total is the sum of the ops'
single-thread times: compare the precisions' shares, not the absolute step time with
bench/throughput.py's. Appends the table to bench/RESULTS.md (`--results=` to skip).

    python bench/profile_step.py --width_multiplier=0.5 --stage_widths=0.5,0.5,0.5,1 \\
        --batch_size=1024 --steps=3
"""
import collections
import glob
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402,F401  (before TensorFlow)
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from bench import common, throughput  # noqa: E402

SECTION = "## Train step profile by op, one thread (bench/profile_step.py)"
# Op types that only call or wrap other ops: their spans contain the ops they run.
_WRAPPERS = {"StatefulPartitionedCall", "PartitionedCall", "While", "If", "StatelessIf",
             "StatelessWhile", "IteratorGetNext", "IteratorGetNextAsOptional"}
GROUPS = (
    ("optimizer (LARS)", lambda name, kind: "/lars/" in name or name.startswith("lars/")),
    ("convolution backward (filter)", lambda name, kind: "BackpropFilter" in kind),
    ("convolution backward (input)", lambda name, kind: "BackpropInput" in kind),
    ("convolution forward", lambda name, kind: "Conv2D" in kind),
    ("matmul / einsum (SmallMapConv2D, head)",
     lambda name, kind: "MatMul" in kind or "Einsum" in kind),
    # the backbone's BN layers are NAME_bn, the projection head's bn_0, bn_1, ...
    ("BatchNormalization",
     lambda name, kind: "_bn" in name or "/bn_" in name or "batch_norm" in name.lower()),
    ("cast", lambda name, kind: kind == "Cast"),
    ("loss and the rest", lambda name, kind: True),
)


def parse_args(argv):
    parser = common.batch_parser(__doc__, 256)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per precision")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--top", type=int, default=12, help="op types listed")
    common.add_output_flags(parser, "the table")
    args = common.parse_with_encoder_flags(parser, argv)
    args.precisions = [p.strip() for p in args.precisions.split(",")]
    return args


def op_spans(xspace_path: str) -> dict:
    """{(node name, op type): [span ms, ...]} of the TensorFlow ops in a profiler trace."""
    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    spans = collections.defaultdict(list)
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                full_name = plane.event_metadata[event.metadata_id].name
                name, _, kind = full_name.rpartition(":")
                # "name:type" is an op; "Class::Method" spans (executor, runtime) hold ops.
                if (name and kind and "::" not in full_name and " " not in kind
                        and kind not in _WRAPPERS):
                    spans[(name, kind)].append(event.duration_ps / 1e9)
    return spans


def scaled_ms(steps: list[tuple[dict, float]]) -> dict:
    """{(name, kind): CPU ms per step}: each op's median over the profiled steps.

    A span is wall time, lengthened when other processes take the core; the thread's CPU
    time is not. Each step's spans are scaled so that they add up to the process CPU time
    of that step (one thread), which assumes the waits fell evenly over the step's ops.
    """
    per_step = []
    for spans, cpu_s in steps:
        total = sum(sum(times) for times in spans.values())
        scale = 1000 * cpu_s / total if total else 0.0
        per_step.append({key: sum(times) * scale for key, times in spans.items()})
    keys = set().union(*per_step)
    return {key: statistics.median(step.get(key, 0.0) for step in per_step) for key in keys}


def group_of(name: str, kind: str) -> str:
    return next(group for group, test in GROUPS if test(name, kind))


def profile_step(model, in_memory) -> tuple[dict, float]:
    """`op_spans` of one train step of `model`, and the step's process CPU seconds."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        _, cpu = throughput.step_times(model, in_memory, 1)
        tf.profiler.experimental.stop()
        path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
        return op_spans(path), cpu[0]


def profile(args) -> dict:
    """{precision: CPU ms per step of each op}, the precisions' steps alternating."""
    in_memory = throughput.in_memory_views(args)
    models = {}
    for name in args.precisions:
        with throughput.dtype_policy(name):
            models[name] = throughput.build_model(args, augment_in_model=False)
            throughput.step_times(models[name], in_memory, 0, skip=2)  # trace, warm up
    spans = {name: [] for name in args.precisions}
    for _ in range(args.steps):
        for name in args.precisions:
            with throughput.dtype_policy(name):
                spans[name].append(profile_step(models[name], in_memory))
    return {name: scaled_ms(steps) for name, steps in spans.items()}


def summarise(ops: dict) -> dict:
    """Per group and per op type: CPU ms per step."""
    groups, kinds = collections.Counter(), collections.Counter()
    for (name, kind), ms in ops.items():
        groups[group_of(name, kind)] += ms
        kinds[kind] += ms
    return {"groups": dict(groups), "kinds": dict(kinds), "total": sum(ops.values())}


def _ratio(value: float, base: float) -> str:
    """value / base as "0.48x", or "-" where the first precision spends under 0.5 ms."""
    return f"{value / base:.2f}x" if base >= 0.5 else "-"


def table(args, summaries: dict) -> list[str]:
    """Markdown lines: groups, then the costliest op types, ms per step per precision."""
    names = args.precisions
    base = names[0]
    head = (f"| | {' | '.join(f'{n} CPU ms/step (share)' for n in names)} | "
            + " | ".join(f"{n} / {base}" for n in names[1:]) + " |")
    lines = [head, "|---" * (1 + 2 * len(names) - 1) + "|"]

    def row(label, key, part):
        cells = [f"{summaries[n][part].get(key, 0.0):.0f} "
                 f"({100 * summaries[n][part].get(key, 0.0) / summaries[n]['total']:.0f}%)"
                 for n in names]
        ratios = [_ratio(summaries[n][part].get(key, 0.0), summaries[base][part].get(key, 0.0))
                  for n in names[1:]]
        lines.append(f"| {label} | {' | '.join(cells + ratios)} |")

    for group, _ in GROUPS:
        row(group, group, "groups")
    totals = [f"{summaries[n]['total']:.0f}" for n in names]
    ratios = [f"{summaries[n]['total'] / summaries[base]['total']:.2f}x" for n in names[1:]]
    lines.append(f"| **total** | {' | '.join(totals + ratios)} |")
    kinds = collections.Counter()
    for n in names:
        kinds.update(summaries[n]["kinds"])
    for kind, _ in kinds.most_common(args.top):
        row(f"op `{kind}`", kind, "kinds")
    return lines


def append_block(path: str, lines: list[str]) -> None:
    """Append `lines` at the end of the Markdown file, under `SECTION` (added when missing)."""
    text = open(path).read().rstrip("\n") if os.path.exists(path) else "# Benchmark results"
    if SECTION not in text:
        text += f"\n\n{SECTION}"
    with open(path, "w") as f:
        f.write(text + "\n\n" + "\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    result = common.run_info("bench/profile_step.py")
    summaries = {name: summarise(ops) for name, ops in profile(args).items()}
    lines = table(args, summaries)
    print("\n".join(lines))
    result["profile"] = summaries
    if args.json:
        print(json.dumps(result))
    if args.results:
        caption = (f"{result['date']}, {result['cpu']}, {result['cores']} cores, "
                   f"`{result['command']}`: {common.encoder_cell(args)}, {args.image_size} px, "
                   f"batch {args.batch_size}, one thread, medians of {args.steps} steps per op, "
                   "spans scaled to the step's CPU time")
        append_block(args.results, [caption, ""] + lines)
    return result


if __name__ == "__main__":
    main()
