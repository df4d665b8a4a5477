"""How much memory does pretraining need? Peak resident memory by global batch size and stem.

Each configuration (stem x global batch) runs in a fresh Python process that builds the
model as `apps.pretrain` does on a CPU (encoder from `backbones.build_backbone`, 3-layer
`ProjectionHead`, online probe on 10 classes, LARS with the warm-up + cosine schedule,
views made by `SimCLRAugment` in the tf.data pipeline) and runs one compiling step plus
--steps timed train steps on random uint8 images. The child reports its peak resident set
(`ru_maxrss`), its resident set after building the model (the part that does not grow with
the batch) and the seconds per step; it does not include the dataset cache and shuffle
buffer of a real run (about 0.3 GiB for CIFAR-10 at 32 px).

The parent polls the child's VmRSS and kills it above --limit_gib (or above what the machine
has available, whichever is lower), so the machine never swaps or runs out of memory; such
a configuration is reported as not fitting. A configuration whose need, extrapolated from
the smaller batches already measured, exceeds the limit is skipped without running.

The largest batch that fits in --budget_gib (24) comes from a straight line through the
measured peaks of each stem (peak = fixed + per-image x batch; with one measured batch
size, through its post-build resident set, which charges the step's graph memory to the
images and so gives a lower bound), and says whether it is extrapolated beyond the
largest batch measured. Prints a table, a JSON line with `--json`, and appends one row per
stem to bench/RESULTS.md (`--results=` to skip). Run it on an otherwise idle machine.

    python bench/memory.py --json                       # 256 ... 4096, both stems
    python bench/memory.py --batch_sizes=8,16 --width_multiplier=0.125 --steps=1 --results=
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import common  # noqa: E402  (no TensorFlow in the parent)

REPO = os.path.dirname(common.BENCH_DIR)
GIB = 2**30
SECTION = "## Memory by batch size (bench/memory.py)"
HEADER = ("| date | CPU | cores | command | model | peak RSS GiB by global batch "
          "| s/step by global batch | largest batch in the budget |\n"
          "|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", default="256,512,1024,2048,4096",
                        help="comma-separated global batch sizes (images; twice as many views)")
    parser.add_argument("--stems", default="imagenet,cifar", help="comma-separated ResNet stems")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--head_depth", type=int, default=3)
    parser.add_argument("--proj_dim", type=int, default=128)
    parser.add_argument("--probe_classes", type=int, default=10, help="0: no online probe")
    parser.add_argument("--steps", type=int, default=2, help="timed train steps after the first")
    parser.add_argument("--limit_gib", type=float, default=22.0,
                        help="kill a child whose resident set exceeds this (also capped at the "
                             "memory available when it starts, less --reserve_gib)")
    parser.add_argument("--reserve_gib", type=float, default=1.0,
                        help="memory left to the rest of the machine")
    parser.add_argument("--budget_gib", type=float, default=24.0,
                        help="report the largest batch whose peak fits in this")
    parser.add_argument("--poll_s", type=float, default=0.1, help="memory polling interval")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--results", default=common.RESULTS,
                        help="Markdown file to append the rows to ('' to skip)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    args.stems = [s.strip() for s in args.stems.split(",")]
    return args


# ----------------------------------------------------------------------------------------
# The child: one configuration in a fresh process.


def _max_rss_gib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def run_configuration(config):
    """Build, compile and train one configuration; returns its memory and step time."""
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

    model = build_simclr(config["backbone"], config["stem"], config["width_multiplier"],
                         config["head_depth"], config["proj_dim"],
                         probe_classes=config["probe_classes"] or None)
    schedule = optimizers.warmup_cosine_for(1.0, batch, "linear", 100, 100, 10)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=schedule,
                                                       weight_decay=1e-4))
    built_gib = _max_rss_gib()

    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # traces and compiles
    first_step_s = time.perf_counter() - start
    after_first_gib = _max_rss_gib()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=config["steps"], epochs=1, verbose=0)
    step_s = (time.perf_counter() - start) / config["steps"]
    return {"built_gib": built_gib, "after_first_step_gib": after_first_gib,
            "peak_gib": _max_rss_gib(), "first_step_s": first_step_s, "step_s": step_s,
            "views_per_s": 2 * batch / step_s}


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


def watch_child(config, limit_gib, poll_s):
    """Run `config` in a child process; kill it if its resident set exceeds `limit_gib`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
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
    if killed:
        return {"status": "over limit", "peak_gib": seen_gib,
                "note": f"killed at {seen_gib:.2f} GiB > limit {limit_gib:.2f} GiB"}
    if child.returncode != 0 or not lines:
        return {"status": "failed", "peak_gib": seen_gib,
                "note": f"exit status {child.returncode}: " + " / ".join(error_tail)}
    return {"status": "ok", **json.loads(lines[-1])}


def fit_line(points):
    """(fixed GiB, GiB per image) of peak = fixed + per_image * batch over measured points.

    `points`: [(batch, peak_gib, built_gib)] of completed runs. Least squares with two or
    more batch sizes; with one, the line through its post-build resident set and its peak.
    """
    if not points:
        return None
    if len({b for b, _, _ in points}) == 1:
        batch, peak, built = points[0]
        return built, max(peak - built, 0.0) / batch
    n = len(points)
    mean_b = sum(b for b, _, _ in points) / n
    mean_p = sum(p for _, p, _ in points) / n
    slope = (sum((b - mean_b) * (p - mean_p) for b, p, _ in points)
             / sum((b - mean_b) ** 2 for b, _, _ in points))
    return mean_p - slope * mean_b, slope


def largest_batch(line, budget_gib, measured):
    """Largest global batch whose fitted peak is within `budget_gib`, and how it was found."""
    if line is None:
        return None
    fixed, per_image = line
    if per_image <= 0 or fixed > budget_gib:
        return None
    batch = int(math.floor((budget_gib - fixed) / per_image))
    fitting = [b for b, p, _ in measured if p <= budget_gib]
    return {"batch": batch, "extrapolated": batch > max(b for b, _, _ in measured),
            "measured_batch_sizes": len({b for b, _, _ in measured}),
            "largest_measured_fitting": max(fitting) if fitting else None,
            "fixed_gib": fixed, "gib_per_1000_images": 1000 * per_image}


def measure(args):
    runs, summaries = [], {}
    for stem in args.stems:
        measured = []  # (batch, peak, built) of completed runs of this stem
        for batch in args.batch_sizes:
            config = {"backbone": args.backbone, "stem": stem, "batch_size": batch,
                      "width_multiplier": args.width_multiplier, "image_size": args.image_size,
                      "head_depth": args.head_depth, "proj_dim": args.proj_dim,
                      "probe_classes": args.probe_classes, "steps": args.steps}
            limit = min(args.limit_gib, _meminfo_gib("MemAvailable") - args.reserve_gib)
            # One point's line charges the per-step graph memory to the images: too high
            # to skip on, so only a fit through two or more batch sizes can skip a run.
            line = fit_line(measured) if len(measured) > 1 else None
            estimate = None if line is None else line[0] + line[1] * batch
            over = [r for r in runs if r["stem"] == stem and r["status"] == "over limit"]
            if over or (estimate is not None and estimate > limit):
                why = (f"batch {over[0]['batch_size']} was over the limit" if over else
                       f"estimated {estimate:.1f} GiB > limit {limit:.1f} GiB")
                run = {"status": "skipped", "note": why}
            else:
                print(f"{stem} stem, batch {batch}: running (limit {limit:.1f} GiB)...",
                      file=sys.stderr, flush=True)
                run = watch_child(config, limit, args.poll_s)
            run.update(stem=stem, batch_size=batch, limit_gib=limit, estimated_gib=estimate)
            runs.append(run)
            if run["status"] == "ok":
                measured.append((batch, run["peak_gib"], run["built_gib"]))
            print(f"  {stem:8s} {batch:6d}  {_peak_cell(run)}", file=sys.stderr, flush=True)
        summaries[stem] = largest_batch(fit_line(measured), args.budget_gib, measured)
    return runs, summaries


def _peak_cell(run):
    if run["status"] == "ok":
        return f"{run['peak_gib']:.2f}"
    if run["status"] == "over limit":
        return f">{run['limit_gib']:.2f} (killed)"
    return run["status"]


def _largest_cell(summary, budget_gib):
    if summary is None:
        return "-"
    how = ("extrapolated beyond the measured batches" if summary["extrapolated"]
           else "within the measured batches")
    if summary["measured_batch_sizes"] == 1:
        how = "lower bound from one measured batch"
    return f"{summary['batch']} ({how}; {budget_gib:g} GiB)"


def report(args, result):
    print(f"peak resident memory of pretraining ({args.backbone}, width "
          f"{args.width_multiplier:g}, {args.image_size} px, {args.steps} timed steps):")
    print(f"{'stem':9s} {'batch':>6s} {'peak GiB':>18s} {'built GiB':>9s} {'s/step':>8s} "
          f"{'views/s':>8s}  note")
    for run in result["runs"]:
        numbers = (f"{run['built_gib']:9.2f} {run['step_s']:8.2f} {run['views_per_s']:8.0f}"
                   if run["status"] == "ok" else f"{'-':>9s} {'-':>8s} {'-':>8s}")
        print(f"{run['stem']:9s} {run['batch_size']:6d} {_peak_cell(run):>18s} {numbers}  "
              f"{run.get('note', '')}")
    for stem, summary in result["largest_batch"].items():
        if summary is None:
            print(f"{stem} stem: too few measurements for the largest batch in "
                  f"{args.budget_gib:g} GiB")
            continue
        where = "extrapolated linearly beyond" if summary["extrapolated"] else "within"
        if summary["measured_batch_sizes"] == 1:
            where = "a lower bound from one batch size, extrapolated beyond"
        print(f"{stem} stem: largest global batch within {args.budget_gib:g} GiB ~ "
              f"{summary['batch']} ({where} the measured batches; "
              f"{summary['fixed_gib']:.2f} GiB fixed + "
              f"{summary['gib_per_1000_images']:.2f} GiB per 1000 images)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args._child:
        print(json.dumps(run_configuration(json.loads(args._child))))
        return None
    result = common.run_info("bench/memory.py")
    result.update(backbone=args.backbone, width_multiplier=args.width_multiplier,
                  image_size=args.image_size, steps=args.steps, budget_gib=args.budget_gib,
                  mem_total_gib=_meminfo_gib("MemTotal"))
    result["runs"], result["largest_batch"] = measure(args)
    report(args, result)
    if args.json:
        print(json.dumps(result))
    if args.results:
        for stem in args.stems:
            runs = [r for r in result["runs"] if r["stem"] == stem]
            common.append_row(args.results, SECTION, HEADER, [
                result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
                f"{args.backbone}, {stem} stem, width {args.width_multiplier:g}, "
                f"{args.image_size} px",
                ", ".join(f"{r['batch_size']}: {_peak_cell(r)}" for r in runs),
                ", ".join(f"{r['batch_size']}: {r['step_s']:.1f}" for r in runs
                          if r["status"] == "ok") or "-",
                _largest_cell(result["largest_batch"][stem], args.budget_gib)])
    return result


if __name__ == "__main__":
    main()
