"""CPU time of the SimCLR augmentation per 1,024 views, this checkout against another.

Times `SimCLRAugment` (crop, flip, colour jitter, grayscale: the CIFAR settings) on a batch
of random uint8 images held in memory, and its colour jitter alone (`_color_jitter` on
float crops), in milliseconds of process CPU time per 1,024 views, beside wall time. With
`--baseline=DIR` (another checkout, e.g. the main branch), the two checkouts' augmenters
run in alternating subprocesses, `--rounds` times each, and the medians and their ratio
are reported: a before/after comparison in one run on a machine shared with other work.
Appends a row to bench/RESULTS.md (`--results=` to skip).

    python bench/augment_cost.py --baseline=../main --rounds=3
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)  # bench.common (keras_simclr comes from --code, put before it)

from bench import common  # noqa: E402

SECTION = "## Augmentation CPU time per 1,024 views (bench/augment_cost.py)"
HEADER = ("| date | CPU | cores | command | image px | batch | code | augmentation CPU ms "
          "(wall ms) | colour jitter CPU ms (wall ms) | against the baseline (CPU) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = common.batch_parser(__doc__, 512, batch_help="images (2 views each)")
    parser.add_argument("--jitter_strength", type=float, default=0.5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="another checkout to compare with")
    parser.add_argument("--code", default=ROOT, help="checkout whose keras_simclr is timed "
                        "(in this process: the subprocesses of a comparison use it)")
    common.add_output_flags(parser)
    return parser.parse_args(argv)


def _timed(function, calls: int, views: int) -> dict:
    """CPU and wall ms per 1,024 views of `calls` calls of `function` (after one warm-up)."""
    function()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        function()
    scale = 1000 * 1024 / (calls * views)
    return {"cpu_ms": (time.process_time() - cpu) * scale,
            "wall_ms": (time.perf_counter() - wall) * scale}


def measure(args) -> dict:
    """Time the augmenter of the checkout `args.code` in this process."""
    sys.path.insert(0, args.code)
    import keras_simclr  # noqa: F401  (before TensorFlow: sets its runtime flags)
    import numpy as np
    import tensorflow as tf
    from keras_simclr.views.augment import SimCLRAugment

    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = tf.constant(rng.integers(0, 256, shape, np.uint8))
    crops = tf.constant(rng.uniform(0, 1, (2 * args.batch_size,) + shape[1:]), tf.float32)
    augment = SimCLRAugment(args.image_size, jitter_strength=args.jitter_strength, seed=0)
    views = tf.function(lambda x: augment.views(x))
    jitter = tf.function(augment._color_jitter)
    return {"augment": _timed(lambda: views(images), args.calls, 2 * args.batch_size),
            "jitter": _timed(lambda: jitter(crops), args.calls, 2 * args.batch_size)}


def run_child(args, code: str) -> dict:
    """`measure` in a fresh process for checkout `code` (its JSON line)."""
    command = [sys.executable, os.path.abspath(__file__), "--code", code, "--json",
               "--results=", f"--image_size={args.image_size}",
               f"--batch_size={args.batch_size}", f"--calls={args.calls}",
               f"--jitter_strength={args.jitter_strength}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare(args) -> dict:
    """Medians over interleaved rounds of the baseline and this checkout."""
    codes = {"baseline": os.path.abspath(args.baseline), "this": ROOT}
    rounds = {name: [] for name in codes}
    for _ in range(args.rounds):
        for name, code in codes.items():
            rounds[name].append(run_child(args, code))
    return {name: {part: {key: statistics.median(r[part][key] for r in runs)
                          for key in ("cpu_ms", "wall_ms")}
                   for part in ("augment", "jitter")}
            for name, runs in rounds.items()} | {"codes": codes, "rounds": args.rounds}


def append_rows(args, result: dict) -> None:
    """One row per checkout under `SECTION` of --results (nothing when it is empty)."""
    if not args.results:
        return
    info = common.run_info("bench/augment_cost.py")
    base = result["baseline"]["augment"]["cpu_ms"]
    for name in ("baseline", "this"):
        figures = result[name]
        ratio = figures["augment"]["cpu_ms"] / base
        common.append_row(args.results, SECTION, HEADER, [
            info["date"], info["cpu"], str(info["cores"]), f"`{info['command']}`",
            str(args.image_size), str(args.batch_size),
            f"{name} ({result['codes'][name]}; medians of {args.rounds} rounds)",
            *(f"{figures[p]['cpu_ms']:.0f} ({figures[p]['wall_ms']:.0f})"
              for p in ("augment", "jitter")),
            f"{ratio:.2f}x"])


def report(args, result: dict) -> None:
    """Print both checkouts' medians (and the JSON line with --json)."""
    for name in ("baseline", "this"):
        figures = result[name]
        print(f"{name}: augmentation {figures['augment']['cpu_ms']:.0f} CPU ms per 1,024 "
              f"views ({figures['augment']['wall_ms']:.0f} wall), colour jitter "
              f"{figures['jitter']['cpu_ms']:.0f} ({figures['jitter']['wall_ms']:.0f})")
    if args.json:
        print(json.dumps(result))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.baseline is None:
        result = measure(args)
        print(json.dumps(result))
        return result
    result = compare(args)
    report(args, result)
    append_rows(args, result)
    return result


if __name__ == "__main__":
    main()
