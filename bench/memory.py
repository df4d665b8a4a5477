"""How much memory does pretraining need? Peak resident memory and step time by global batch.

Each configuration (stem x global batch x chunk size) runs in a fresh Python process that
builds the model as `apps.pretrain` does on a CPU (encoder from `backbones.build_backbone`,
3-layer `ProjectionHead`, online probe on 10 classes, LARS with the warm-up + cosine
schedule, views made by `SimCLRAugment` in the tf.data pipeline) and runs one warm-up step
(which traces and compiles the graph, timed apart) plus --steps timed train steps on
random uint8 images. `--chunk_sizes` lists the steps to compare: 0 is the plain step, C > 0
the gradient-caching step (`build_simclr(chunk_size=C)`, C views per encoder pass). The
child reports its peak resident set (`ru_maxrss`), its resident set after building the
model (the part that does not grow with the batch), and the wall and process CPU seconds
of its first step and per timed step; it does not include the dataset cache and shuffle
buffer of a real run (about 0.3 GiB for CIFAR-10 at 32 px). The parent adds the child's
whole CPU time (`RUSAGE_CHILDREN`).

With --rounds R every batch size runs its chunk sizes R times, interleaved (plain,
chunked, plain, chunked, ...), and the step times are medians over the rounds; the cost
of the chunked step is its median CPU seconds per step over the plain step's at the same
batch. Compare by CPU time on a shared machine: other processes inflate wall time.

The parent polls the child's VmRSS and kills it above --limit_gib (or above what the machine
has available, whichever is lower), so the machine never swaps or runs out of memory; such
a configuration is reported as not fitting. A configuration whose need, extrapolated from
the smaller batches already measured with the same step, exceeds the limit is skipped.

The largest batch that fits in --budget_gib (24) comes from a straight line through the
measured peaks of each stem and step (peak = fixed + per-image x batch; with one measured
batch size, through its post-build resident set, which charges the step's graph memory to
the images and so gives a lower bound), and says whether it is extrapolated beyond the
largest batch measured. Prints a table, a JSON line with `--json`, and appends one row per
stem and step to bench/RESULTS.md (`--results=` to skip).

    python bench/memory.py --json                       # 256 ... 4096, both stems, plain
    python bench/memory.py --stems=cifar --batch_sizes=256,512 --chunk_sizes=0,128 --rounds=2
    python bench/memory.py --stems=cifar --batch_sizes=4096 --chunk_sizes=512 --steps=0
    python bench/memory.py --batch_sizes=32 --chunk_sizes=0,16 --width_multiplier=0.125 \\
        --steps=1 --results=
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import common  # noqa: E402  (no TensorFlow in the parent)
from bench.memory_summary import (  # noqa: E402
    fit_line, largest_batches, largest_cell, peak_cell, step_cell, step_name, summarize)

REPO = os.path.dirname(common.BENCH_DIR)
GIB = 2**30
SECTION = "## Memory by batch size (bench/memory.py)"
HEADER = ("| date | CPU | cores | command | model | step | peak RSS GiB by global batch "
          "| s/step by global batch | CPU s/step by global batch (CPU/wall) "
          "| CPU time against the plain step | largest batch in the budget |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", default="256,512,1024,2048,4096",
                        help="comma-separated global batch sizes (images; twice as many views)")
    parser.add_argument("--stems", default="imagenet,cifar", help="comma-separated ResNet stems")
    parser.add_argument("--chunk_sizes", default="0",
                        help="comma-separated views per encoder pass with gradient caching; "
                             "0: the plain step")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every configuration, interleaved across chunk sizes")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--head_depth", type=int, default=3)
    parser.add_argument("--proj_dim", type=int, default=128)
    parser.add_argument("--probe_classes", type=int, default=10, help="0: no online probe")
    parser.add_argument("--steps", type=int, default=2,
                        help="timed train steps after the warm-up step (0: only the warm-up "
                             "step, whose time includes tracing)")
    parser.add_argument("--limit_gib", type=float, default=22.0,
                        help="kill a child whose resident set exceeds this (also capped at the "
                             "memory available when it starts, less --reserve_gib)")
    parser.add_argument("--reserve_gib", type=float, default=1.0,
                        help="memory left to the rest of the machine")
    parser.add_argument("--budget_gib", type=float, default=24.0,
                        help="report the largest batch whose peak fits in this")
    parser.add_argument("--poll_s", type=float, default=0.1, help="memory polling interval")
    common.add_output_flags(parser, "the rows")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    args.stems = [s.strip() for s in args.stems.split(",")]
    args.chunk_sizes = [int(c) for c in args.chunk_sizes.split(",")]
    if any(c < 0 for c in args.chunk_sizes) or args.rounds < 1 or args.steps < 0:
        parser.error("--chunk_sizes must be >= 0, --rounds >= 1, --steps >= 0")
    return args


# ----------------------------------------------------------------------------------------
# The child: one configuration in a fresh process.


def _max_rss_gib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def run_configuration(config: dict) -> dict:
    """Build, compile and train one configuration; returns its memory and step times."""
    import keras_simclr  # noqa: F401  (before TensorFlow)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_simclr import SimCLRAugment, build_simclr, optimizers

    batch, size = config["batch_size"], config["image_size"]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, max(1, config["probe_classes"]), batch)
    augmenter = SimCLRAugment(size, jitter_strength=0.5)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    ds = ds.batch(batch, drop_remainder=True).map(
        lambda x, y: ({"view_1": augmenter(x), "view_2": augmenter(x)}, y),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    model = build_simclr(backbone=config["backbone"], stem=config["stem"],
                         width_multiplier=config["width_multiplier"],
                         head_depth=config["head_depth"], proj_dim=config["proj_dim"],
                         probe_classes=config["probe_classes"] or None,
                         chunk_size=config["chunk_size"] or None)
    schedule = optimizers.warmup_cosine_for(1.0, batch, "linear", 100, 100, 10)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=schedule,
                                                       weight_decay=1e-4))
    result = {"built_gib": _max_rss_gib()}

    with common.Stopwatch() as first:
        model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # traces and compiles
    result.update(first.as_dict("first_step_"), after_first_step_gib=_max_rss_gib())
    print(json.dumps({**result, "peak_gib": _max_rss_gib()}), flush=True)  # if cut short
    if config["steps"]:
        with common.Stopwatch() as timed:
            model.fit(ds, steps_per_epoch=config["steps"], epochs=1, verbose=0)
        result.update(timed.as_dict("step_", per=config["steps"]))
        result["views_per_s"] = 2 * batch / result["step_wall_s"]
    result["peak_gib"] = _max_rss_gib()
    return result


# ----------------------------------------------------------------------------------------
# The parent: one child per configuration, watched and killed above the limit.


def _meminfo_gib(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / GIB
    raise OSError(f"no {field} in /proc/meminfo")


def _rss_gib(pid):
    """(VmRSS, VmHWM) of a live process in GiB, or None once it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(line.split()[1]) * 1024 / GIB
    except OSError:
        return None
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def watch_child(config: dict, limit_gib: float, poll_s: float) -> dict:
    """Run `config` in a child process; kill it if its resident set exceeds `limit_gib`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with common.Stopwatch(children=True) as whole:
            child = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(config)],
                stdout=out, stderr=err, cwd=REPO)
            seen_gib, killed = 0.0, False
            while child.poll() is None:
                rss = _rss_gib(child.pid)
                if rss is not None:
                    seen_gib = max(seen_gib, *rss)
                    if rss[0] > limit_gib:
                        child.kill()
                        killed = True
                        break
                time.sleep(poll_s)
            child.wait()
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        error_tail = err.read().strip().splitlines()[-3:]
    process = whole.as_dict("process_")
    if killed:
        return {"status": "over limit", "peak_gib": seen_gib, **process,
                "note": f"killed at {seen_gib:.2f} GiB > limit {limit_gib:.2f} GiB"}
    if child.returncode != 0 or not lines:
        partial = json.loads(lines[-1]) if lines else {}  # the first step's figures, if any
        return {**partial, "status": "failed", "peak_gib": max(seen_gib, partial.get(
            "peak_gib", 0.0)), **process,
                "note": f"exit status {child.returncode}: " + " / ".join(error_tail)}
    return {"status": "ok", **process, **json.loads(lines[-1])}


def measure(args) -> list[dict]:
    """Every run: per stem and batch, the chunk sizes --rounds times, interleaved."""
    runs = []
    for stem in args.stems:
        for batch in args.batch_sizes:
            for round_index in range(args.rounds):
                for chunk in args.chunk_sizes:
                    runs.append(_run_or_skip(args, runs, stem, batch, chunk, round_index))
    return runs


def _run_or_skip(args, runs, stem, batch, chunk, round_index):
    """One child run of (stem, batch, chunk), or a skip when it cannot fit."""
    same = [r for r in runs if r["stem"] == stem and r["chunk_size"] == chunk]
    measured = {r["batch_size"]: (r["batch_size"], r["peak_gib"], r["built_gib"])
                for r in same if r["status"] == "ok"}
    limit = min(args.limit_gib, _meminfo_gib("MemAvailable") - args.reserve_gib)
    # One point's line charges the per-step graph memory to the images: too high to skip
    # on, so only a fit through two or more batch sizes can skip a run.
    line = fit_line(list(measured.values())) if len(measured) > 1 else None
    estimate = None if line is None else line[0] + line[1] * batch
    over = [r for r in same if r["status"] in ("over limit", "skipped")]
    step = step_name(chunk)
    if over or (estimate is not None and estimate > limit):
        run = {"status": "skipped",
               "note": (f"batch {over[0]['batch_size']} did not fit" if over else
                        f"estimated {estimate:.1f} GiB > limit {limit:.1f} GiB")}
    else:
        print(f"{stem} stem, batch {batch}, {step} step, round {round_index + 1}: running "
              f"(limit {limit:.1f} GiB)...", file=sys.stderr, flush=True)
        config = {"backbone": args.backbone, "stem": stem, "batch_size": batch,
                  "chunk_size": chunk, "width_multiplier": args.width_multiplier,
                  "image_size": args.image_size, "head_depth": args.head_depth,
                  "proj_dim": args.proj_dim, "probe_classes": args.probe_classes,
                  "steps": args.steps}
        run = watch_child(config, limit, args.poll_s)
    run.update(stem=stem, batch_size=batch, chunk_size=chunk, round=round_index,
               limit_gib=limit, estimated_gib=estimate)
    print(json.dumps(run), file=sys.stderr, flush=True)  # the raw figures, whatever follows
    print(f"  {stem:8s} {batch:6d} {step:>10s}  {peak_cell(run)} GiB, {step_cell(run)} CPU s "
          f"(CPU/wall)  {run.get('note', '')}", file=sys.stderr, flush=True)
    return run


def report(args, result: dict) -> None:
    """Print the configurations' table and the largest batches."""
    print(f"peak resident memory and step time of pretraining ({args.backbone}, width "
          f"{args.width_multiplier:g}, {args.image_size} px; step times: median over "
          f"{args.rounds} round(s) of {args.steps} step(s) after a warm-up step):")
    print(f"{'stem':8s} {'batch':>6s} {'step':>10s} {'peak GiB':>22s} {'built':>6s} "
          f"{'1st wall':>8s} {'1st CPU':>8s} {'wall s':>7s} {'CPU s':>7s} {'CPU/wall':>8s} "
          f"{'CPU/plain':>9s}  note")
    for e in result["configurations"]:
        def fmt(value, width, digits=1):
            return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"
        print(f"{e['stem']:8s} {e['batch_size']:6d} {step_name(e['chunk_size']):>10s} "
              f"{peak_cell(e):>22s} {fmt(e['built_gib'], 6, 2)} "
              f"{fmt(e['first_step_wall_s'], 8)} {fmt(e['first_step_cpu_s'], 8)} "
              f"{fmt(e['step_wall_s'], 7)} {fmt(e['step_cpu_s'], 7)} "
              f"{fmt(e['step_cpu_over_wall'], 8, 2)} {fmt(e['cpu_over_plain'], 9, 2)}  "
              f"{e['note']}")
    for name, summary in result["largest_batch"].items():
        line = ("" if summary is None else f"; {summary['fixed_gib']:.2f} GiB fixed + "
                f"{summary['gib_per_1000_images']:.2f} GiB per 1000 images")
        print(f"{name}: largest global batch ~ {largest_cell(summary, args.budget_gib)}{line}")


def append_rows(args, result: dict) -> None:
    """One RESULTS.md row per stem and step."""
    for stem, chunk in sorted({(e["stem"], e["chunk_size"]) for e in result["configurations"]}):
        entries = [e for e in result["configurations"]
                   if (e["stem"], e["chunk_size"]) == (stem, chunk)]
        timed = [e for e in entries if e["first_step_wall_s"] is not None]
        compared = [e for e in entries if e["cpu_over_plain"] is not None]
        common.append_row(args.results, SECTION, HEADER, [
            result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            f"{args.backbone}, {stem} stem, width {args.width_multiplier:g}, "
            f"{args.image_size} px",
            step_name(chunk) + (f" ({args.rounds} rounds, medians)" if args.rounds > 1 else ""),
            ", ".join(f"{e['batch_size']}: {peak_cell(e)}" for e in entries),
            ", ".join(f"{e['batch_size']}: {step_cell(e, cpu=False)}" for e in timed) or "-",
            ", ".join(f"{e['batch_size']}: {step_cell(e)}" for e in timed) or "-",
            ", ".join(f"{e['batch_size']}: {e['cpu_over_plain']:.2f}x" for e in compared)
            or "-",
            largest_cell(result["largest_batch"][f"{stem}, {step_name(chunk)}"],
                          args.budget_gib)])


def main(argv: list[str] | None = None) -> dict | None:
    """Measure (or, with --_child, run one configuration) and report."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args._child:
        print(json.dumps(run_configuration(json.loads(args._child))))
        return None
    result = common.run_info("bench/memory.py")
    result.update(backbone=args.backbone, width_multiplier=args.width_multiplier,
                  image_size=args.image_size, steps=args.steps, rounds=args.rounds,
                  budget_gib=args.budget_gib, mem_total_gib=_meminfo_gib("MemTotal"))
    with common.Stopwatch(children=True) as whole:
        result["runs"] = measure(args)
    result.update(whole.as_dict("children_"))
    result["configurations"] = summarize(result["runs"])
    result["largest_batch"] = largest_batches(result["configurations"], args.budget_gib)
    report(args, result)
    if args.json:
        print(json.dumps(result))
    if args.results:
        append_rows(args, result)
    return result


if __name__ == "__main__":
    main()
