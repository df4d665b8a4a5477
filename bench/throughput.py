"""Pretraining speed: end-to-end views/s, train-step views/s, FLOP rate against the machine's peak.

Measures in one run, after warm-up, the median over --steps steps of
- `views_per_s`: pretraining as `apps.pretrain` runs it: the real input pipeline (decode,
  cache, shuffle, keras-cv-based SimCLR augmentation where --augment_in says) feeding
  `SimCLR.fit` with LARS;
- `step_views_per_s`: the train step alone on views already in memory;
- `gflops_per_s`: training FLOPs per view times `step_views_per_s`. FLOPs are counted
  analytically from the layer shapes: 2 x multiply-adds of every Conv2D and Dense layer of
  encoder and head for the forward pass, times 3 for forward + backward (the backward pass
  computes gradients for inputs and weights, each about one forward pass). This is the
  usual nominal count, every kernel tap at every output pixel;
- `useful_gflops_per_s`: the same but counting only the kernel taps that read image data,
  not "same" padding. At 32 px the last stages' 3x3 convolutions run on 2x2 and 1x1 maps
  where most taps read padding (a 1x1 map: 1 of 9), and `SmallMapConv2D` skips that work,
  so the nominal rate there overstates what the CPU computes; this one does not;
- `peak_gflops_per_s`: the best of a large float32 matmul in TensorFlow and in NumPy on
  this machine, measured in the same run, so `utilization` is machine-independent.

    python bench/throughput.py --dataset=folder:../shared/data/cifar10 --backbone=resnet18 \\
        --stem=imagenet --image_size=32 --batch_size=256 --steps=20 --json
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402  (before TensorFlow)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr import ProjectionHead, SimCLRAugment, backbones, build_simclr, conv, data, optimizers  # noqa: E402

SECTION = "## Pretraining throughput (bench/throughput.py)"
HEADER = ("| date | CPU | cores | command | views/s end to end | train step views/s "
          "| end to end / step | GFLOP/s | useful GFLOP/s | peak GFLOP/s | utilization "
          "| useful utilization |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=common.CIFAR10_FOLDER)
    parser.add_argument("--split", default="train")
    parser.add_argument("--backbone", default="resnet18", choices=backbones.BACKBONES)
    parser.add_argument("--stem", default="imagenet", choices=backbones.STEMS)
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=256, help="global batch (images)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup_steps", type=int, default=3)
    parser.add_argument("--augment_in", default="data", choices=["data", "model"])
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--skip_end_to_end", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--results", default=common.RESULTS,
                        help="Markdown file to append a row to ('' to skip)")
    return parser.parse_args(argv)


class StepTimes(keras.callbacks.Callback):
    """Wall time of every training batch."""

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def on_train_begin(self, logs=None):
        self.times = []


def build_model(args, augment_in_model):
    model = build_simclr(args.backbone, args.stem, args.width_multiplier,
                         augmenter=SimCLRAugment(args.image_size) if augment_in_model else None)
    schedule = optimizers.warmup_cosine_for(1.0, args.batch_size, "linear", 100, 100, 10)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=schedule,
                                                       weight_decay=1e-4))
    return model


def median_views_per_s(model, dataset, args):
    """Median views/s of fit steps on `dataset`, after warm-up steps."""
    timer = StepTimes()
    model.fit(dataset, steps_per_epoch=args.warmup_steps + args.steps, epochs=1, verbose=0,
              callbacks=[timer], shuffle=False)
    return 2 * args.batch_size / statistics.median(timer.times[args.warmup_steps:])


def training_flops_per_view(args):
    """Analytic FLOPs of forward + backward for one view through encoder and head.

    Returns (nominal, useful): all kernel taps, or only those that read data, not padding.
    """
    encoder = backbones.build_backbone(args.backbone, stem=args.stem,
                                       width_multiplier=args.width_multiplier,
                                       input_shape=(args.image_size, args.image_size, 3))
    nominal = useful = 0
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer_nominal, layer_useful = conv.multiply_adds(layer)
            nominal += layer_nominal
            useful += layer_useful
    width = encoder.output.shape[-1]
    head = ProjectionHead(3)
    head.build((None, width))
    head_macs = sum(int(np.prod(dense.kernel.shape)) for dense in head.dense_layers)
    return 3 * 2 * (nominal + head_macs), 3 * 2 * (useful + head_macs)


def peak_gflops_per_s(size=4096, repeats=5):
    """Best GFLOP/s of a size x size float32 matmul, TensorFlow and NumPy."""
    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), np.float32)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    ta, tb = tf.constant(a), tf.constant(b)
    matmul(ta, tb)
    best = 0.0
    for run in (lambda: matmul(ta, tb).numpy(), lambda: a @ b):
        run()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    keras.utils.set_random_seed(0)
    result = common.run_info("bench/throughput.py")
    result.update(vars(args))
    result.pop("results")

    # The train step alone, on one batch of views held in memory.
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    views = {key: tf.random.uniform(shape, seed=i) for i, key in enumerate(("view_1", "view_2"))}
    in_memory = tf.data.Dataset.from_tensors((views, tf.zeros([args.batch_size], tf.int64)))
    step_model = build_model(args, augment_in_model=False)
    result["step_views_per_s"] = median_views_per_s(step_model, in_memory.repeat(), args)

    if not args.skip_end_to_end:
        augment_in_model = args.augment_in == "model"
        pipeline = data.pretrain_dataset(
            args.dataset, args.split, image_size=args.image_size,
            global_batch_size=args.batch_size, cache=True,
            augmenter=None if augment_in_model else SimCLRAugment(args.image_size))
        model = build_model(args, augment_in_model)
        result["views_per_s"] = median_views_per_s(model, pipeline.repeat(), args)
        result["end_to_end_over_step"] = result["views_per_s"] / result["step_views_per_s"]

    nominal, useful = training_flops_per_view(args)
    result["training_gflops_per_view"] = nominal / 1e9
    result["useful_training_gflops_per_view"] = useful / 1e9
    result["gflops_per_s"] = result["training_gflops_per_view"] * result["step_views_per_s"]
    result["useful_gflops_per_s"] = result["useful_training_gflops_per_view"] * result["step_views_per_s"]
    result["peak_gflops_per_s"] = peak_gflops_per_s()
    result["utilization"] = result["gflops_per_s"] / result["peak_gflops_per_s"]
    result["useful_utilization"] = result["useful_gflops_per_s"] / result["peak_gflops_per_s"]

    print(f"train step: {result['step_views_per_s']:.0f} views/s, "
          f"{result['gflops_per_s']:.1f} GFLOP/s nominal ({result['useful_gflops_per_s']:.1f} useful) "
          f"of a {result['peak_gflops_per_s']:.1f} GFLOP/s matmul peak "
          f"({100 * result['utilization']:.0f}%, {100 * result['useful_utilization']:.0f}% useful)")
    if "views_per_s" in result:
        print(f"end to end (augmentation in the {args.augment_in}): {result['views_per_s']:.0f} "
              f"views/s = {100 * result['end_to_end_over_step']:.0f}% of the train step")
    if args.json:
        print(json.dumps(result))
    if args.results:
        common.append_row(args.results, SECTION, HEADER, [
            result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            f"{result['views_per_s']:.0f}" if "views_per_s" in result else "-",
            f"{result['step_views_per_s']:.0f}",
            f"{100 * result['end_to_end_over_step']:.0f}%" if "views_per_s" in result else "-",
            f"{result['gflops_per_s']:.1f}", f"{result['useful_gflops_per_s']:.1f}",
            f"{result['peak_gflops_per_s']:.1f}", f"{100 * result['utilization']:.0f}%",
            f"{100 * result['useful_utilization']:.0f}%"])
    return result


if __name__ == "__main__":
    main()
