"""Does the input pipeline keep up when views are cropped from larger originals?

For a folder of photo-sized JPEGs (256-400 px a side, made once from the CIFAR-10 images:
upsampled, with a random tint, gradient, texture and noise, in a temporary folder), and for
each view size (96 and 224 px) and variant (resize method, cap on the cached originals'
shorter side, as multiples of the view size), this measures in one process:

1. the memory of the cache: the bytes of the capped decoded images (from the JPEG headers)
   and the growth of the process's resident memory while the first epoch fills the cache;
2. the pretraining pipeline (`data.pretrain_dataset` with `SimCLRAugment` at the ImageNet
   settings: jitter 1.0, blur 0.5; views cropped from the originals): views/s over the first
   epoch (decode, cap, cache) and over a steady state from the cache, with the process CPU
   time per view; variants alternate round by round, each on a fresh iterator;
3. the contrastive train step alone (ResNet-18, ImageNet stem, at the view size, views held
   in memory), views/s and CPU time per view;
4. training fed by the pipeline (the first variant), views/s.

The pipeline keeps up when its views/s is at least the train step's. Prints a summary, a
JSON line with `--json`, and appends one row per variant to bench/RESULTS.md.

    python bench/large_images.py --json
"""
import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402  (before TensorFlow)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench import common, input_pipeline  # noqa: E402
from keras_simclr import SimCLRAugment, data  # noqa: E402
from keras_simclr.data import originals  # noqa: E402

SECTION = "## Large images, views cropped from the originals (bench/large_images.py)"
HEADER = ("| date | CPU | cores | command | view px | resize | cap (x view) | cached MB "
          "(RSS growth MB) | first epoch views/s | first epoch CPU ms/view "
          "| pipeline views/s | pipeline CPU ms/view | train step views/s "
          "| train step CPU ms/view | pipeline / train step "
          "| training fed by the pipeline, views/s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
DEFAULT_FOLDER = "/tmp/keras_simclr_large_images"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=DEFAULT_FOLDER,
                        help="the JPEG folder (made when missing)")
    parser.add_argument("--cifar10", default=common.CIFAR10_FOLDER[len("folder:"):],
                        help="CIFAR-10 image folder the photos are made from")
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--sides", default="256,400",
                        help="min,max side in pixels of the photos made")
    parser.add_argument("--image_sizes", default="96,224", help="view sizes, comma-separated")
    parser.add_argument("--resize_methods", default="bicubic,bilinear")
    parser.add_argument("--caps", default="3",
                        help="caps on the cached shorter side, in view sides ('none': none)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch")
    parser.add_argument("--pipeline_batches", type=int, default=10,
                        help="timed batches per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=3,
                        help="timed train steps (0: skip the train step and fed training)")
    parser.add_argument("--fed_steps", type=int, default=3,
                        help="timed steps of training fed by the pipeline (0: skip)")
    common.add_output_flags(parser, "rows")
    return parser.parse_args(argv)


def make_folder(folder, cifar10, count, sides=(256, 400), seed=0):
    """Write `count` photo-like JPEGs, sides uniform in `sides`, to `folder`/train/CLASS/."""
    rng = np.random.default_rng(seed)
    train = os.path.join(cifar10, "train")
    classes = sorted(os.listdir(train))
    files = {c: sorted(os.listdir(os.path.join(train, c))) for c in classes}
    for i in range(count):
        name = classes[i % len(classes)]
        source = Image.open(os.path.join(train, name, files[name][i // len(classes)]))
        height, width = rng.integers(sides[0], sides[1] + 1, 2)
        photo = np.asarray(source.convert("RGB").resize((width, height), Image.BICUBIC),
                           np.float32)
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        gradient = 40 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y)
        frequency = rng.uniform(20, 80)
        texture = 12 * np.sin(2 * np.pi * frequency * (x + rng.uniform(0.5, 1.5) * y))
        photo = (photo * rng.uniform(0.8, 1.2, 3) + (gradient + texture)[..., None]
                 + rng.normal(0, 6, photo.shape))
        path = os.path.join(folder, "train", name, f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path, quality=90)


def image_sizes(folder):
    """(height, width) of every JPEG of the folder, from its header."""
    sizes = []
    for root, _, names in os.walk(folder):
        for name in names:
            with Image.open(os.path.join(root, name)) as image:
                sizes.append(image.size[::-1])
    return sizes


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(iterator, count):
    """(wall s, process CPU s) of taking `count` items."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        next(iterator)
    return time.perf_counter() - wall, time.process_time() - cpu


def augmenter(size, resize_method):
    return SimCLRAugment(size, jitter_strength=1.0, blur_prob=0.5, resize_method=resize_method)


def pipelines(args, size, sizes):
    """{variant: (dataset, measures)}: each cache filled over a timed first epoch."""
    views_per_batch = 2 * args.batch_size
    variants = {}
    for method in args.resize_methods.split(","):
        for cap in args.caps.split(","):
            cap_value = None if cap == "none" else float(cap)
            ds = data.pretrain_dataset(
                "folder:" + args.folder, image_size=size, global_batch_size=args.batch_size,
                cache=True, augmenter=augmenter(size, method), original_cap=cap_value,
                crop_from_original=True)
            gc.collect()
            rss = rss_bytes()
            wall, cpu = time.perf_counter(), time.process_time()
            batches = sum(1 for _ in ds)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            cap_side = None if cap_value is None else round(cap_value * size)
            variants[(method, cap)] = (ds, {
                "image_size": size, "resize_method": method, "cap": cap,
                "cached_mb": originals.cached_image_bytes(sizes, cap_side) * len(sizes) / 2**20,
                "rss_growth_mb": (rss_bytes() - rss) / 2**20,
                "first_epoch_views_per_s": batches * views_per_batch / wall,
                "first_epoch_cpu_ms_per_view": 1e3 * cpu / (batches * views_per_batch),
                "rounds": []})
    return variants


def steady_rates(args, variants):
    """Alternate the variants round by round; median views/s and CPU ms/view of each."""
    views = args.pipeline_batches * 2 * args.batch_size
    for _ in range(args.rounds):
        for ds, measures in variants.values():
            iterator = iter(ds.repeat())
            next(iterator)  # the shuffle buffer refills from the cache
            wall, cpu = timed(iterator, args.pipeline_batches)
            del iterator
            gc.collect()
            measures["rounds"].append((views / wall, 1e3 * cpu / views))
    for _, measures in variants.values():
        rounds = np.array(measures.pop("rounds"))
        measures["pipeline_views_per_s"] = float(np.median(rounds[:, 0]))
        measures["pipeline_cpu_ms_per_view"] = float(np.median(rounds[:, 1]))


def train_step_rate(args, size):
    """(model, views/s, CPU ms/view) of the train step on views held in memory
    (ResNet-18, ImageNet stem: `bench/input_pipeline.py`'s)."""
    step_args = step_arguments(args, size)
    model = input_pipeline.build_model(step_args)
    rates = input_pipeline.train_step_rate(step_args, model)
    # CPU s per 1000 views are CPU ms per view.
    return model, rates["train_step_views_per_s"], rates["train_step_cpu_s_per_1000_views"]


def step_arguments(args, size):
    """`args` as `bench/input_pipeline.py`'s functions read them, at view size `size`."""
    return argparse.Namespace(**dict(vars(args), image_size=size, backbone_depth=18,
                                     stem="imagenet"))


def append_row(path, info, m):
    common.append_row(path, SECTION, HEADER, [
        info["date"], info["cpu"], str(info["cores"]), f"`{info['command']}`",
        str(m["image_size"]), m["resize_method"], m["cap"],
        f"{m['cached_mb']:.0f} ({m['rss_growth_mb']:.0f})",
        f"{m['first_epoch_views_per_s']:.0f}", f"{m['first_epoch_cpu_ms_per_view']:.2f}",
        f"{m['pipeline_views_per_s']:.0f}",
        f"{m['pipeline_cpu_ms_per_view']:.2f}",
        *([f"{m['train_step_views_per_s']:.1f}", f"{m['train_step_cpu_ms_per_view']:.1f}",
           f"{m['pipeline_over_train_step']:.1f}x"] if "train_step_views_per_s" in m
          else ["-"] * 3),
        f"{m['fed_views_per_s']:.1f}" if m.get("fed_views_per_s") else "-",
    ])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keras.utils.set_random_seed(0)
    info = common.run_info("bench/large_images.py")
    if not os.path.isdir(os.path.join(args.folder, "train")):
        make_folder(args.folder, args.cifar10, args.num_images,
                    tuple(int(s) for s in args.sides.split(",")))
    sizes = image_sizes(args.folder)
    rows = []
    for size in (int(s) for s in args.image_sizes.split(",")):
        variants = pipelines(args, size, sizes)
        steady_rates(args, variants)
        model, step_rate, step_cpu = (train_step_rate(args, size) if args.train_steps
                                      else (None, None, None))
        for i, (ds, m) in enumerate(variants.values()):
            if model is not None:
                m.update(train_step_views_per_s=step_rate,
                         train_step_cpu_ms_per_view=step_cpu,
                         pipeline_over_train_step=m["pipeline_views_per_s"] / step_rate)
                if i == 0 and args.fed_steps:
                    m["fed_views_per_s"] = input_pipeline.fed_rate(
                        step_arguments(args, size), model, ds)
            rows.append(m)
            print(f"{size} px, {m['resize_method']}, cap {m['cap']}: cache "
                  f"{m['cached_mb']:.0f} MB (RSS +{m['rss_growth_mb']:.0f} MB); pipeline "
                  f"{m['pipeline_views_per_s']:.0f} views/s, "
                  f"{m['pipeline_cpu_ms_per_view']:.2f} CPU ms/view (first epoch "
                  f"{m['first_epoch_views_per_s']:.0f} views/s, "
                  f"{m['first_epoch_cpu_ms_per_view']:.2f} CPU ms/view); train step "
                  f"{step_rate or 0:.1f} views/s, {step_cpu or 0:.1f} CPU ms/view", flush=True)
        del model, variants
        gc.collect()
    if args.json:
        print(json.dumps(dict(info, rows=rows, folder=args.folder, images=len(sizes),
                              batch_size=args.batch_size)))
    if args.results:
        for m in rows:
            append_row(args.results, info, m)
    return rows


if __name__ == "__main__":
    main()
