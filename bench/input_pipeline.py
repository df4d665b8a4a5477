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

The pipeline must deliver at least 3x the train step's views/s (issue 3). Prints a summary,
a JSON line with `--json`, and appends a row to bench/RESULTS.md (`--results=` to skip).
Run it on an otherwise idle machine: both halves use every core.

    python bench/input_pipeline.py --json
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402  (before TensorFlow)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr import SimCLRAugment, build_simclr, data, optimizers  # noqa: E402

SECTION = "## Input pipeline (bench/input_pipeline.py)"
HEADER = ("| date | CPU | cores | command | pipeline views/s (cached) | first epoch views/s "
          "| images/s (no augmentation) | train step views/s | pipeline / train step "
          "| training fed by the pipeline, views/s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


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
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--results", default=common.RESULTS,
                        help="Markdown file to append a row to ('' to skip)")
    return parser.parse_args(argv)


def timed(iterable, limit):
    """(items, seconds) for iterating up to `limit` items (0: all) of `iterable`."""
    count, start = 0, time.perf_counter()
    for _ in iterable:
        count += 1
        if count == limit:
            break
    return count, time.perf_counter() - start


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
    first_batches, first_seconds = timed(ds, 0)
    batches, seconds = timed(ds, args.pipeline_batches)
    plain = pretrain_dataset(args, augment=False)
    timed(plain, 0)
    plain_batches, plain_seconds = timed(plain, args.pipeline_batches)
    return {
        "first_epoch_views_per_s": first_batches * views_per_batch / first_seconds,
        "first_epoch_s": first_seconds,
        "pipeline_views_per_s": batches * views_per_batch / seconds,
        "images_per_s": plain_batches * args.batch_size / plain_seconds,
    }


def build_model(args):
    model = build_simclr(f"resnet{args.backbone_depth}", args.stem)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=0.3,
                                                       weight_decay=1e-6))
    return model


def train_step_rate(args, model):
    """Views/s of `train_step` on one batch of views held in memory."""
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    views = {key: tf.random.uniform(shape, seed=i) for i, key in enumerate(("view_1", "view_2"))}
    batch = tf.data.Dataset.from_tensors((views, tf.zeros([args.batch_size], tf.int64)))
    model.fit(batch.repeat(), steps_per_epoch=2, epochs=1, verbose=0)  # trace, warm up
    start = time.perf_counter()
    model.fit(batch.repeat(), steps_per_epoch=args.train_steps, epochs=1, verbose=0)
    return 2 * args.batch_size * args.train_steps / (time.perf_counter() - start)


def fed_rate(args, model, ds):
    """Views/s of training on the pipeline `ds` (its cache filled), both running at once."""
    ds = ds.repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=args.fed_steps, epochs=1, verbose=0)
    return 2 * args.batch_size * args.fed_steps / (time.perf_counter() - start)


def append_row(path, result):
    common.append_row(path, SECTION, HEADER, [
        result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
        f"{result['pipeline_views_per_s']:.0f}", f"{result['first_epoch_views_per_s']:.0f}",
        f"{result['images_per_s']:.0f}", f"{result['train_step_views_per_s']:.0f}",
        f"{result['pipeline_over_train_step']:.1f}x",
        f"{result['fed_views_per_s']:.0f}" if result["fed_views_per_s"] else "-",
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
    result["train_step_views_per_s"] = train_step_rate(args, model)
    result["pipeline_over_train_step"] = (result["pipeline_views_per_s"]
                                          / result["train_step_views_per_s"])
    result["fed_views_per_s"] = fed_rate(args, model, views) if args.fed_steps else None
    print(f"pipeline: {result['pipeline_views_per_s']:.0f} views/s cached "
          f"({result['first_epoch_views_per_s']:.0f} over the first epoch, "
          f"{result['first_epoch_s']:.1f} s; {result['images_per_s']:.0f} images/s without "
          f"augmentation)")
    print(f"train step ({result['model']}, {args.image_size} px, batch {args.batch_size}): "
          f"{result['train_step_views_per_s']:.0f} views/s; pipeline / train step = "
          f"{result['pipeline_over_train_step']:.1f}x (target >= 3x)")
    if result["fed_views_per_s"]:
        print(f"training fed by the pipeline: {result['fed_views_per_s']:.0f} views/s")
    if args.json:
        print(json.dumps(result))
    if args.results:
        append_row(args.results, result)
    return result


if __name__ == "__main__":
    main()
