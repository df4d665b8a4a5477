"""Where a train step's convolution time goes: every Conv2D of an encoder timed alone.

For each convolution of the encoder, at its input shape in the model and the global
batch of views, the median over --repeats runs of forward + backward (the gradients of the
kernel and, except for the first layer, whose input is the image, of the input), once as
`keras.layers.Conv2D` computes it and once as `conv.SmallMapConv2D` does (the same where
the map is larger than the kernel). Prints a table with the nominal and useful GFLOP/s of
each (useful: kernel taps that read data, not "same" padding; see bench/throughput.py)
and appends the totals to bench/RESULTS.md. Every time is taken as wall and as process CPU
seconds (medians of each), with the ratio CPU / wall (about the cores kept busy).

    python bench/conv_layers.py --backbone=resnet18 --stem=imagenet --image_size=32
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402,F401  (before TensorFlow)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr.networks import backbones, conv  # noqa: E402

SECTION = "## Convolutions of the train step, one by one (bench/conv_layers.py)"
HEADER = ("| date | CPU | cores | command | model | Conv2D s/step | SmallMapConv2D s/step "
          "| Conv2D CPU s/step (CPU/wall) | SmallMapConv2D CPU s/step (CPU/wall) "
          "| layers on the matmul path | slowest layers (Conv2D → SmallMapConv2D, ms) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = common.batch_parser(__doc__, 256)
    parser.add_argument("--repeats", type=int, default=7)
    common.add_output_flags(parser)
    return common.parse_with_encoder_flags(parser, argv)


def time_layer(convolution_op, input_shape, kernel_shape, views, repeats, input_gradient):
    """Median (wall, CPU) seconds of forward + backward of one convolution on `views` inputs."""
    x = tf.random.normal((views, *input_shape[1:]))
    kernel = tf.Variable(tf.random.normal(kernel_shape, stddev=0.05))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = convolution_op(x, kernel)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, kernel] if input_gradient else [kernel])

    for _ in range(2):
        [g.numpy() for g in step(x)]
    wall, cpu = [], []
    for _ in range(repeats):
        with common.Stopwatch() as watch:
            [g.numpy() for g in step(x)]
        wall.append(watch.wall_s)
        cpu.append(watch.cpu_s)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = common.run_info("bench/conv_layers.py")
    result.update(vars(args))
    result.pop("results")
    encoder = backbones.build_backbone(args.backbone, **common.encoder_arguments(args),
                                       input_shape=(args.image_size, args.image_size, 3))
    views = 2 * args.batch_size
    layers = []
    first = True
    for layer in encoder.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        shape = layer.input.shape
        passes = 3 if not first else 2  # forward, kernel gradient, input gradient
        nominal, useful = (2 * passes * views * macs for macs in conv.multiply_adds(layer))
        plain = keras.layers.Conv2D.from_config(layer.get_config())
        timing = (shape, layer.kernel.shape, views, args.repeats, not first)
        entry = {"name": layer.name, "input": list(shape[1:]),
                 "matmul_path": bool(layer.uses_matmul(shape))}
        entry["conv2d_s"], entry["conv2d_cpu_s"] = time_layer(plain.convolution_op, *timing)
        entry["small_map_s"], entry["small_map_cpu_s"] = time_layer(layer.convolution_op,
                                                                    *timing)
        entry.update(nominal_gflop=nominal / 1e9, useful_gflop=useful / 1e9)
        layers.append(entry)
        first = False
    result["layers"] = layers
    for key in ("conv2d_s", "small_map_s", "conv2d_cpu_s", "small_map_cpu_s"):
        result[key] = sum(entry[key] for entry in layers)

    print(f"{'layer':28s} {'input':>14s} {'path':>6s} {'Conv2D ms':>10s} {'GFLOP/s':>8s} "
          f"{'SmallMap ms':>12s} {'GFLOP/s':>8s} {'useful':>7s}")
    for e in layers:
        print(f"{e['name']:28s} {str(tuple(e['input'])):>14s} "
              f"{'matmul' if e['matmul_path'] else 'conv':>6s} "
              f"{1000 * e['conv2d_s']:10.1f} {e['nominal_gflop'] / e['conv2d_s']:8.1f} "
              f"{1000 * e['small_map_s']:12.1f} {e['nominal_gflop'] / e['small_map_s']:8.1f} "
              f"{e['useful_gflop'] / e['small_map_s']:7.1f}")
    print(f"all convolutions: Conv2D {result['conv2d_s']:.3f} s wall, "
          f"{result['conv2d_cpu_s']:.3f} s CPU; SmallMapConv2D {result['small_map_s']:.3f} s "
          f"wall, {result['small_map_cpu_s']:.3f} s CPU per step of {views} views")
    if args.json:
        print(json.dumps(result))
    if args.results:
        slowest = sorted(layers, key=lambda e: -e["conv2d_s"])[:4]
        common.append_row(args.results, SECTION, HEADER, [
            result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            f"{common.encoder_cell(args)}, {args.image_size} px, {views} views",
            f"{result['conv2d_s']:.3f}", f"{result['small_map_s']:.3f}",
            common.time_cell(result["conv2d_s"], result["conv2d_cpu_s"], digits=3),
            common.time_cell(result["small_map_s"], result["small_map_cpu_s"], digits=3),
            str(sum(e["matmul_path"] for e in layers)),
            ", ".join(f"{e['name']} {tuple(e['input'])}: {1000 * e['conv2d_s']:.0f} → "
                      f"{1000 * e['small_map_s']:.0f}" for e in slowest)])
    return result


if __name__ == "__main__":
    main()
