"""Embedding speed of an imported official model against the official SavedModel itself.

The same official SavedModel (a ResNet-50 1x as released: `tools/make_official_fixtures.py
--bench_dir=DIR` writes one with random weights) is timed two ways in one process, the
variants interleaved round by round (their order rotated): loaded with
`tf.saved_model.load` and called as the official colabs do (`model(images,
trainable=False)["final_avg_pool"]`), and imported with `keras_simclr.exchange.official.load` into
this project's encoder, in float32 and under the mixed_bfloat16 policy (the official
SavedModel is a float32 graph and has no bfloat16 variant). Each variant embeds --steps
batches of --batch_size 224 px images per round; the first round warms up (tracing) and
is not counted; medians of the rest.

    python bench/official.py --official=DIR/saved_model
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402,F401  (before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr.exchange import official  # noqa: E402

SECTION = "## Imported official models: embedding speed (bench/official.py)"
COLUMNS = ("date", "CPU", "cores", "command", "model", "batch",
           "official SavedModel float32 images/s, CPU ms/image",
           "native float32 images/s, CPU ms/image",
           "native mixed_bfloat16 images/s, CPU ms/image",
           "native / official CPU time (float32, bfloat16)")
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def parse_args(argv):
    parser = common.batch_parser(__doc__, 32, image_size=224)
    parser.add_argument("--official", required=True, help="official SavedModel directory")
    parser.add_argument("--steps", type=int, default=2, help="batches per variant and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, the first not counted")
    common.add_output_flags(parser)
    return parser.parse_args(argv)


def variants(path):
    """{name: function from float32 images in [0, 1] to h}."""
    import keras

    saved = tf.saved_model.load(path)
    functions = {"official": lambda x: saved(x, False)["final_avg_pool"]}
    for policy, name in (("float32", "native_float32"), ("mixed_bfloat16", "native_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        model, _ = official.load(path)
        encoder = model.encoder
        functions[name] = tf.function(lambda x, encoder=encoder: encoder(x, training=False))
    keras.mixed_precision.set_global_policy("float32")
    return functions


def time_rounds(functions, images, steps, rounds):
    """{name: [(wall_s, cpu_s) per counted round]}: the variants interleaved, their order
    rotated from round to round so that none always follows the same one."""
    times = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            with common.Stopwatch() as watch:
                for _ in range(steps):
                    np.asarray(functions[name](images))
            if round_index:
                times[name].append((watch.wall_s, watch.cpu_s))
    return times


def main(argv=None):
    args = parse_args(argv)
    images = tf.constant(np.random.default_rng(0).uniform(
        0, 1, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32))
    functions = variants(args.official)
    want = np.asarray(functions["official"](images))
    got = np.asarray(functions["native_float32"](images))
    times = time_rounds(functions, images, args.steps, args.rounds)
    count = args.batch_size * args.steps
    result = {**common.run_info("bench/official.py"),  # same weights, same embeddings:
              "native_vs_official_max_relative_difference":
                  float(np.max(np.abs(got - want)) / np.max(np.abs(want)))}
    for name, rows in times.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        result[name] = {"images_per_s": count / wall, "cpu_ms_per_image": 1000 * cpu / count,
                        "wall_s": wall, "cpu_s": cpu, "rounds": len(rows)}
    for name in ("native_float32", "native_bfloat16"):
        result[f"{name}_cpu_vs_official"] = result[name]["cpu_s"] / result["official"]["cpu_s"]

    def cell(name):
        return (f"{result[name]['images_per_s']:.1f}, "
                f"{result[name]['cpu_ms_per_image']:.0f}")

    common.append_row(args.results, SECTION, HEADER, [
        result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
        f"ResNet-50 1x sk0 (SimCLRv2 layout, random weights), {args.image_size} px, "
        f"{args.rounds - 1} rounds x {args.steps} batches, medians", str(args.batch_size),
        cell("official"), cell("native_float32"), cell("native_bfloat16"),
        f"{result['native_float32_cpu_vs_official']:.2f}x, "
        f"{result['native_bfloat16_cpu_vs_official']:.2f}x"])
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
