"""Is the input pipeline fast enough? Views/s of the pretraining pipeline against the train step.

Measures, in one run on this machine:

1. the pretraining pipeline alone (`data.pretrain_dataset` with the SimCLR augmenter in
   tf.data, as in `apps.pretrain`): views/s over its first epoch (decoding every file and
   filling the cache) and over a steady-state epoch from the cache; also decoded images/s
   without augmentation (the rate when the model augments instead);
2. the contrastive train step alone (`SimCLR` on ready-made views held in memory), for the
   CPU reference configuration: ResNet-18, ImageNet stem, 32 px, batch 256 (512 views);
3. training fed by the pipeline (both running at once), which shows whether the train step
   waits for input.

The pipeline must deliver at least 3x the train step's views/s (issue 3). Each rate comes
with the process CPU seconds per 1000 views (all threads) and the ratio CPU / wall (about
the cores kept busy); on a shared machine wall-clock rates are inflated by other work, and
the pipeline / train step ratio by CPU time (train step CPU per view over pipeline CPU per
view) is the one to trust. Prints a summary,
a JSON line with `--json`, and appends a row to bench/RESULTS.md (`--results=` to skip).
Run it on an otherwise idle machine: both halves use every core.

    python bench/input_pipeline.py --json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402  (before TensorFlow)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr import SimCLRAugment, build_simclr, data, optimizers  # noqa: E402

SECTION = "## Input pipeline (bench/input_pipeline.py)"
HEADER = ("| date | CPU | cores | command | pipeline views/s (cached) | first epoch views/s "
          "| images/s (no augmentation) | train step views/s | pipeline / train step "
          "| training fed by the pipeline, views/s | pipeline CPU s per 1000 views (CPU/wall) "
          "| train step CPU s per 1000 views (CPU/wall) | pipeline / train step by CPU time |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=common.CIFAR10_FOLDER)
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=256, help="images per batch")
    parser.add_argument("--backbone_depth", type=int, default=18)
    parser.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    parser.add_argument("--jitter_strength", type=float, default=0.5)
    parser.add_argument("--pipeline_batches", type=int, default=0,
                        help="batches timed per pipeline pass (0: a whole epoch)")
    parser.add_argument("--train_steps", type=int, default=5, help="timed train steps")
    parser.add_argument("--fed_steps", type=int, default=5,
                        help="timed steps of training fed by the pipeline (0: skip)")
    common.add_output_flags(parser)
    return parser.parse_args(argv)


def timed(iterable, limit: int) -> tuple[int, common.Stopwatch]:
    """(items, wall and CPU `Stopwatch`) for iterating up to `limit` items (0: all)."""
    count = 0
    with common.Stopwatch() as watch:
        for _ in iterable:
            count += 1
            if count == limit:
                break
    return count, watch


def per_1000_views(watch: common.Stopwatch, views: int, prefix: str) -> dict:
    """Wall and CPU seconds per 1000 views of `watch` and their ratio, keys `prefix...`."""
    return {f"{prefix}wall_s_per_1000_views": 1000 * watch.wall_s / views,
            f"{prefix}cpu_s_per_1000_views": 1000 * watch.cpu_s / views,
            f"{prefix}cpu_over_wall": watch.cpu_over_wall}


def pretrain_dataset(args, augment):
    augmenter = (SimCLRAugment(args.image_size, jitter_strength=args.jitter_strength)
                 if augment else None)
    return data.pretrain_dataset(args.dataset, args.split, image_size=args.image_size,
                                 global_batch_size=args.batch_size, data_dir=args.data_dir,
                                 cache=True, augmenter=augmenter)


def pipeline_rates(args, ds):
    """Views/s of `ds` (views made in the pipeline) over its first epoch, which decodes
    every file and fills the cache, and over a cached epoch; images/s without views."""
    views_per_batch = 2 * args.batch_size
    first_batches, first = timed(ds, 0)
    batches, cached = timed(ds, args.pipeline_batches)
    plain = pretrain_dataset(args, augment=False)
    timed(plain, 0)
    plain_batches, plain_watch = timed(plain, args.pipeline_batches)
    return {
        "first_epoch_views_per_s": first_batches * views_per_batch / first.wall_s,
        "first_epoch_s": first.wall_s, "first_epoch_cpu_s": first.cpu_s,
        "pipeline_views_per_s": batches * views_per_batch / cached.wall_s,
        **per_1000_views(cached, batches * views_per_batch, "pipeline_"),
        "images_per_s": plain_batches * args.batch_size / plain_watch.wall_s,
    }


def build_model(args):
    model = build_simclr(backbone=f"resnet{args.backbone_depth}", stem=args.stem)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=0.3,
                                                       weight_decay=1e-6))
    return model


def train_step_rate(args, model) -> dict:
    """Views/s and time per 1000 views of `train_step` on a batch of views in memory."""
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    views = {key: tf.random.uniform(shape, seed=i) for i, key in enumerate(("view_1", "view_2"))}
    batch = tf.data.Dataset.from_tensors((views, tf.zeros([args.batch_size], tf.int64)))
    model.fit(batch.repeat(), steps_per_epoch=2, epochs=1, verbose=0)  # trace, warm up
    with common.Stopwatch() as watch:
        model.fit(batch.repeat(), steps_per_epoch=args.train_steps, epochs=1, verbose=0)
    views = 2 * args.batch_size * args.train_steps
    return {"train_step_views_per_s": views / watch.wall_s,
            **per_1000_views(watch, views, "train_step_")}


def fed_rate(args, model, ds):
    """Views/s of training on the pipeline `ds` (its cache filled), both running at once."""
    ds = ds.repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    with common.Stopwatch() as watch:
        model.fit(ds, steps_per_epoch=args.fed_steps, epochs=1, verbose=0)
    return 2 * args.batch_size * args.fed_steps / watch.wall_s


def append_row(path, result):
    common.append_row(path, SECTION, HEADER, [
        result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
        f"{result['pipeline_views_per_s']:.0f}", f"{result['first_epoch_views_per_s']:.0f}",
        f"{result['images_per_s']:.0f}", f"{result['train_step_views_per_s']:.0f}",
        f"{result['pipeline_over_train_step']:.1f}x",
        f"{result['fed_views_per_s']:.0f}" if result["fed_views_per_s"] else "-",
        *(f"{result[p + 'cpu_s_per_1000_views']:.2f} ({result[p + 'cpu_over_wall']:.2f})"
          for p in ("pipeline_", "train_step_")),
        f"{result['pipeline_over_train_step_by_cpu']:.1f}x",
    ])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keras.utils.set_random_seed(0)
    result = common.run_info("bench/input_pipeline.py")
    result.update({"dataset": args.dataset, "image_size": args.image_size,
              "batch_size": args.batch_size,
                   "model": f"resnet{args.backbone_depth}_{args.stem}"})
    views = pretrain_dataset(args, augment=True)
    result.update(pipeline_rates(args, views))
    model = build_model(args)
    result.update(train_step_rate(args, model))
    result["pipeline_over_train_step"] = (result["pipeline_views_per_s"]
                                          / result["train_step_views_per_s"])
    result["pipeline_over_train_step_by_cpu"] = (result["train_step_cpu_s_per_1000_views"]
                                                 / result["pipeline_cpu_s_per_1000_views"])
    result["fed_views_per_s"] = fed_rate(args, model, views) if args.fed_steps else None
    print(f"pipeline: {result['pipeline_views_per_s']:.0f} views/s cached "
          f"({result['first_epoch_views_per_s']:.0f} over the first epoch, "
          f"{result['first_epoch_s']:.1f} s; {result['images_per_s']:.0f} images/s without "
          f"augmentation)")
    print(f"train step ({result['model']}, {args.image_size} px, batch {args.batch_size}): "
          f"{result['train_step_views_per_s']:.0f} views/s; pipeline / train step = "
          f"{result['pipeline_over_train_step']:.1f}x (target >= 3x)")
    print(f"CPU s per 1000 views: pipeline {result['pipeline_cpu_s_per_1000_views']:.2f} "
          f"(CPU/wall {result['pipeline_cpu_over_wall']:.2f}), train step "
          f"{result['train_step_cpu_s_per_1000_views']:.2f} (CPU/wall "
          f"{result['train_step_cpu_over_wall']:.2f}); pipeline / train step by CPU time = "
          f"{result['pipeline_over_train_step_by_cpu']:.1f}x")
    if result["fed_views_per_s"]:
        print(f"training fed by the pipeline: {result['fed_views_per_s']:.0f} views/s")
    if args.json:
        print(json.dumps(result))
    if args.results:
        append_row(args.results, result)
    return result


if __name__ == "__main__":
    main()
