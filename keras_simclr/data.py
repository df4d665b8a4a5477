"""Input pipelines: a dataset name (`--dataset`) -> tf.data pipelines.

Sources
-------
- `shapes` (`DEFAULT_DATASET`): an embedded, procedurally generated data set that needs no
  download. 32x32 RGB images of ten shapes (`SHAPES_CLASSES`) at a random position, scale
  and rotation, with random foreground and background colours, a lighting gradient and
  noise: colour and position are nuisances, shape is the class. Splits `train` (10,000)
  and `test` (2,000), generated with numpy from a fixed seed in about a second and kept in
  memory, identical on every machine.
- `folder:PATH`: images laid out as `PATH/SPLIT/CLASS/*.{jpg,jpeg,png,bmp,gif}` (TFDS
  ImageFolder layout; labels index the sorted class folder names of all splits), or
  unlabelled as `PATH/SPLIT/*.{jpg,...}` (label -1). Files are checked up front with cheap
  header and trailer checks (a full PIL decode only for files that fail them), so that
  corrupt, truncated and non-image files are skipped with one `DataWarning` that counts
  them and names the first few (`strict=True` raises `DataError` instead).
- any other name: a TFDS dataset (`cifar10`, `cifar100`, `stl10` with its `unlabelled`
  split, `imagenette`, `imagenet2012`, ...) with an `image` feature and, when present, a
  `label` ClassLabel; `data_dir` is the TFDS data directory. A dataset that is not
  prepared fails at once with instructions instead of downloading.

Pipelines
---------
Images are decoded to 3-channel uint8 (grayscale, alpha, palette and 16-bit images
included), brought to `image_size` x `image_size`, cached in memory when asked or when they
fit (`cache="auto"`), then shuffled (seeded), batched and prefetched; decoding, resizing
and augmentation run in parallel (`AUTOTUNE`).

- `pretrain_dataset`: batches `(uint8 images [B, S, S, 3], int64 labels [B])`, or with an
  `augmenter` `({"view_1": v1, "view_2": v2}, labels)` with float views made in the
  pipeline; `drop_remainder=True`.
- `classifier_dataset(training=True)`: random resized crop and flip only
  (`SimCLRAugment.crop_and_flip`), float32 in [0, 1], `drop_remainder=True`.
- `classifier_dataset(training=False)` and `embed_dataset`: resized images (large images
  are centre-cropped to 87.5% first), float32 in [0, 1], in dataset order, no shuffle,
  last partial batch kept.
- `classifier_dataset(subset=indices)` reads only those examples (a labelled fraction for
  fine-tuning); `labels` gives a split's labels in dataset order without decoding images.

Training images are resized whole to S x S (the random crop re-samples their aspect ratio
anyway); evaluation images keep their aspect ratio (central square crop).

Every pipeline takes `input_context` (a `tf.distribute.InputContext`): given one, the
source is sharded across input pipelines and batches are per replica, so the functions
can be passed to `strategy.distribute_datasets_from_function`:

    strategy.distribute_datasets_from_function(
        lambda ctx: pretrain_dataset("cifar10", "train", image_size=32,
                                     global_batch_size=512, input_context=ctx))

With a `seed`, the same images come in the same order; with a seeded augmenter, the same
views too. A seeded augmenter runs sequentially on batches, because a stateful random
generator called in parallel draws in a nondeterministic order; an unseeded one runs in
parallel whatever the data seed.
"""
import collections
import concurrent.futures
import dataclasses
import difflib
import functools
import os
import warnings

import numpy as np
import tensorflow as tf

DEFAULT_DATASET = "shapes"
FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
UNLABELLED = -1
CENTRE_CROP_FRACTION = 0.875
CENTRE_CROP_MIN_SIDE = 64  # evaluation centre-crops images whose shorter side is larger

_AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_BUFFER_BYTES = 512 * 2**20  # decoded images held by a shuffle buffer
_RECORD_SHUFFLE_BUFFER = 10_000  # encoded TFDS examples held by a shuffle buffer
_NAMED_BAD_FILES = 5


class DataError(ValueError):
    """A dataset, split or file that cannot be used, with what exists instead."""


class DataWarning(UserWarning):
    """Files skipped while reading an image folder."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a `--dataset` string names.

    Attributes:
        name: the dataset string (`shapes`, `folder:PATH`, a TFDS name).
        splits: number of usable examples per split name.
        class_names: label i is `class_names[i]`; empty when the data has no labels.
        image_size: side of the stored images when they are all the same square size
            (32 for `shapes` and `cifar10`), else None.
    """

    name: str
    splits: dict
    class_names: tuple
    image_size: int | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def num_examples(self, split):
        """Examples in `split` (a split name, without TFDS slicing)."""
        _check_split(self, split)
        return self.splits[split]


# ----------------------------------------------------------------------------------------
# Public API


def describe(dataset=DEFAULT_DATASET, data_dir=None, strict=False):
    """`DatasetInfo` of a `--dataset` string, without decoding images.

    For `folder:` datasets this lists and checks the files (once per process and folder
    state; about a second for 50,000 files).
    """
    return _open(dataset, data_dir, strict).info


def load(dataset=DEFAULT_DATASET, split="train", data_dir=None, strict=False,
         input_context=None):
    """Decoded examples of one split, in dataset order.

    Returns:
        (`tf.data.Dataset` of `(uint8 image [H, W, 3], int64 label)` at the stored size,
        unbatched; `DatasetInfo`).
    """
    source = _open(dataset, data_dir, strict)
    return _decoded(source, split, None, input_context), source.info


def labels(dataset=DEFAULT_DATASET, split="train", data_dir=None, strict=False):
    """int64 numpy labels of `split` in dataset order (-1: unlabelled), images not decoded.

    The positions index the `subset` argument of `classifier_dataset`.
    """
    source = _open(dataset, data_dir, strict)
    _check_split(source.info, split)
    return source.labels(split)


def pretrain_dataset(dataset=DEFAULT_DATASET, split="train", *, image_size,
                     global_batch_size, data_dir=None, shuffle=True, cache="auto", seed=None,
                     augmenter=None, strict=False, input_context=None):
    """Batches for contrastive pretraining; see the module docstring.

    Args:
        augmenter: optional callable on a uint8 batch [B, S, S, 3] returning float views
            (e.g. `SimCLRAugment`); called twice per batch to make the two views.
        cache: True, False or "auto" (cache decoded images when they fit in memory).
    """
    source = _open(dataset, data_dir, strict)
    batch_size = _batch_size(global_batch_size, input_context)
    ds = _training_images(source, split, image_size, shuffle, cache, seed, input_context)
    ds = ds.batch(batch_size, drop_remainder=True)
    if augmenter is not None:
        def two_views(images, labels):
            return {"view_1": augmenter(images), "view_2": augmenter(images)}, labels
        ds = ds.map(two_views, num_parallel_calls=_augment_parallelism(augmenter))
    return ds.prefetch(_AUTOTUNE)


def classifier_dataset(dataset=DEFAULT_DATASET, split="train", *, image_size, batch_size,
                       training, data_dir=None, cache="auto", seed=None, strict=False,
                       input_context=None, subset=None):
    """Batches `(float32 images [B, S, S, 3] in [0, 1], int64 labels [B])`.

    `training=True`: shuffled, random resized crop and flip, full batches only (linear
    evaluation and fine-tuning). `training=False`: resized (large images centre-cropped),
    dataset order, last partial batch kept. `batch_size` is global. `subset`: indices (in
    dataset order, see `labels`) of the only examples to read, e.g. the labelled fraction
    used for fine-tuning; they are selected before decoding.
    """
    source = _open(dataset, data_dir, strict)
    per_replica = _batch_size(batch_size, input_context)
    subset = _check_subset(source, split, subset)
    if training and subset is not None and len(subset) < per_replica:
        raise DataError(f"a subset of {len(subset)} examples is smaller than one batch of "
                        f"{per_replica}")
    if not training:
        ds = _decoded(source, split, image_size, input_context, central_crop=True,
                      subset=subset)
        if _should_cache(_count(source, split, subset), image_size, cache):
            ds = ds.cache()
        ds = ds.batch(per_replica).map(_to_float, num_parallel_calls=_AUTOTUNE)
        return ds.prefetch(_AUTOTUNE)
    from keras_simclr.augment import SimCLRAugment

    crop_and_flip = SimCLRAugment.crop_and_flip(image_size, seed=seed)
    ds = _training_images(source, split, image_size, True, cache, seed, input_context,
                          subset)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.map(lambda images, labels: (crop_and_flip(images), labels),
                num_parallel_calls=_augment_parallelism(crop_and_flip))
    return ds.prefetch(_AUTOTUNE)


def linear_eval_datasets(dataset=DEFAULT_DATASET, *, image_size, batch_size,
                         train_split="train", eval_split="test", data_dir=None,
                         cache="auto", seed=None, strict=False):
    """(training, evaluation) `classifier_dataset`s for linear evaluation.

    Under a distribution strategy, build each with `classifier_dataset(input_context=...)`.
    """
    common = dict(image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                  cache=cache, seed=seed, strict=strict)
    source = _open(dataset, data_dir, strict)
    for split in (train_split, eval_split):  # fail on either split before building
        _check_split(source.info, split)
    return (classifier_dataset(dataset, train_split, training=True, **common),
            classifier_dataset(dataset, eval_split, training=False, **common))


def embed_dataset(dataset=DEFAULT_DATASET, split="test", *, image_size, batch_size,
                  data_dir=None, strict=False, input_context=None):
    """Evaluation batches of one pass over `split`, in dataset order, not cached."""
    return classifier_dataset(dataset, split, image_size=image_size, batch_size=batch_size,
                              training=False, data_dir=data_dir, cache=False,
                              strict=strict, input_context=input_context)


# ----------------------------------------------------------------------------------------
# Pipeline pieces shared by the public functions


def _batch_size(global_batch_size, input_context):
    if global_batch_size < 1:
        raise ValueError(f"batch size must be positive, got {global_batch_size}")
    if input_context is None:
        return int(global_batch_size)
    return input_context.get_per_replica_batch_size(global_batch_size)


def _augment_parallelism(augmenter):
    """Sequential for a seeded augmenter (reproducible views), parallel otherwise."""
    return None if getattr(augmenter, "seed", None) is not None else _AUTOTUNE


def _decoded(source, split, image_size, input_context, *, shuffle=None, seed=None,
             central_crop=False, subset=None):
    """`(uint8 image, int64 label)` examples of `split`, resized when `image_size`.

    `shuffle`: None keeps the dataset order; "once" permutes the records once (seeded);
    "every_epoch" draws a new permutation on every pass. `subset`: sorted indices of the
    examples to keep (None: all).
    """
    _check_split(source.info, split)
    ds = source.records(split, input_context, shuffle is not None, seed, subset)
    if shuffle is not None:
        ds = ds.shuffle(source.record_buffer(_count(source, split, subset)), seed=seed,
                        reshuffle_each_iteration=shuffle == "every_epoch")

    def decode(*record):
        image, label = source.decode(*record)
        if image_size is not None:
            image = _resize(image, image_size, central_crop)
        return image, label

    ds = ds.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=True)
    if not source.strict:
        # Files passed the up-front checks; a decoder that still fails (corruption inside
        # the data) is skipped, with TensorFlow logging each one, rather than killing
        # training hours in.
        ds = ds.ignore_errors(log_warning=True)
    return ds


def _training_images(source, split, image_size, shuffle, cache, seed, input_context,
                     subset=None):
    """Resized uint8 examples, cached when `cache`, reshuffled every epoch when `shuffle`.

    Before a cache the records are permuted once, so that a cache filled from files
    sorted by class is in random order and a bounded shuffle buffer after it mixes well.
    """
    num_examples = _count(source, split, subset)
    cached = _should_cache(num_examples, image_size, cache)
    if not shuffle:
        ds = _decoded(source, split, image_size, input_context, subset=subset)
        return ds.cache() if cached else ds
    if not cached:
        return _decoded(source, split, image_size, input_context, shuffle="every_epoch",
                        seed=seed, subset=subset)
    ds = _decoded(source, split, image_size, input_context, shuffle="once", seed=seed,
                  subset=subset)
    buffer = min(num_examples, _SHUFFLE_BUFFER_BYTES // (image_size * image_size * 3))
    return ds.cache().shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)


def _should_cache(num_examples, image_size, cache):
    if cache == "auto":
        return num_examples * image_size * image_size * 3 < _available_memory() // 2
    if cache not in (True, False):
        raise ValueError(f'cache must be True, False or "auto", got {cache!r}')
    return cache


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _resize(image, size, central_crop):
    """uint8 [H, W, 3] -> uint8 [size, size, 3], antialiased.

    With `central_crop`, images whose shorter side exceeds `CENTRE_CROP_MIN_SIDE` are cut
    to their central square of side `CENTRE_CROP_FRACTION` x the shorter side first;
    otherwise the whole image is resized (its aspect ratio is not kept).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if central_crop:
        short = tf.minimum(height, width)
        crop = short > CENTRE_CROP_MIN_SIDE
        side = tf.cast(tf.round(CENTRE_CROP_FRACTION * tf.cast(short, tf.float32)), tf.int32)
        new_height, new_width = tf.where(crop, side, height), tf.where(crop, side, width)
        image = tf.image.crop_to_bounding_box(
            image, (height - new_height) // 2, (width - new_width) // 2, new_height, new_width)
        height, width = new_height, new_width

    def resize():
        resized = tf.image.resize(image, [size, size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    image = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(image, [size, size, 3])


def _to_float(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _to_rgb_uint8(image):
    """Any decoded image [H, W, C] (C in 1..4, uint8/uint16/float) -> uint8 [H, W, 3]."""
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels is None:
        gray = tf.less(tf.shape(image)[-1], 3)
        image = tf.cond(gray, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                        lambda: image[..., :3])
    elif channels < 3:
        image = tf.repeat(image[..., :1], 3, axis=-1)
    else:
        image = image[..., :3]
    return tf.ensure_shape(image, [None, None, 3])


def _count(source, split, subset):
    return source.count(split) if subset is None else len(subset)


def _check_subset(source, split, subset):
    """Sorted unique int64 indices, all inside the split; None stays None."""
    if subset is None:
        return None
    subset = np.unique(np.asarray(subset, np.int64))
    count = source.count(split)
    if subset.size == 0 or subset[0] < 0 or subset[-1] >= count:
        raise DataError(f"subset indices must lie in [0, {count}) for split {split!r} of "
                        f"{source.info.name}; got {subset.size} indices"
                        + (f" from {subset[0]} to {subset[-1]}" if subset.size else ""))
    return subset


def _check_split(info, split):
    base = split.split("[", 1)[0]  # TFDS slicing such as train[:10%]
    if base not in info.splits:
        raise DataError(f"{info.name} has no split {split!r}; available splits: "
                        f"{', '.join(sorted(info.splits)) or 'none'}")


# ----------------------------------------------------------------------------------------
# Sources: `info`, `strict` (whether unreadable data raises), `count(split)`,
# `records(split, input_context, shuffle_files, seed, subset)` (a dataset of small tuples,
# the `subset` indices only when given, then sharded),
# `record_buffer(n)` (a shuffle buffer for them), `labels(split)` (numpy, dataset order) and
# `decode(*record) -> (uint8 [H, W, 3], int64 label)`.


def _open(dataset, data_dir, strict):
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"dataset must be a non-empty string, got {dataset!r}")
    if dataset == DEFAULT_DATASET:
        return _ShapesSource()
    if dataset.startswith(FOLDER_PREFIX):
        return _FolderSource(dataset[len(FOLDER_PREFIX):], strict)
    return _TfdsSource(dataset, data_dir)


def _shard(ds, input_context):
    if input_context is None or input_context.num_input_pipelines == 1:
        return ds
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _array_records(arrays, input_context, subset):
    """Records from parallel numpy arrays: selected, then sharded."""
    if subset is not None:
        arrays = tuple(array[subset] for array in arrays)
    return _shard(tf.data.Dataset.from_tensor_slices(tuple(arrays)), input_context)


class _ShapesSource:
    strict = True

    def __init__(self):
        self.info = DatasetInfo(DEFAULT_DATASET, dict(SHAPES_SPLITS), SHAPES_CLASSES,
                                SHAPES_IMAGE_SIZE)

    def count(self, split):
        return self.info.splits[split]

    def records(self, split, input_context, shuffle_files, seed, subset):
        return _array_records(shapes_arrays(split), input_context, subset)

    def record_buffer(self, num_examples):
        return num_examples

    def labels(self, split):
        return shapes_arrays(split)[1]

    def decode(self, image, label):
        return image, label


# --- image folders ----------------------------------------------------------------------

_Scan = collections.namedtuple("_Scan", "splits class_names skipped")
_Split = collections.namedtuple("_Split", "paths labels pil")


class _FolderSource:
    def __init__(self, path, strict):
        root = os.path.abspath(os.path.expanduser(path))
        if not path or not os.path.isdir(root):
            raise DataError(f"image folder {path!r} does not exist"
                            + ("" if not os.path.exists(root) else " (it is not a folder)")
                            + f"; {FOLDER_PREFIX}PATH expects PATH/SPLIT/CLASS/*.jpg")
        self.root = root
        self.strict = strict
        self.scan = _scan_folder(root, strict, _folder_signature(root))
        splits = {name: len(s.paths) for name, s in self.scan.splits.items()}
        self.info = DatasetInfo(FOLDER_PREFIX + path, splits, self.scan.class_names)
        if self.scan.skipped and strict:
            raise DataError(_skipped_message(root, self.scan.skipped, "cannot be read"))
        self.any_pil = any(s.pil.any() for s in self.scan.splits.values())

    def count(self, split):
        return self.info.splits[split]

    def records(self, split, input_context, shuffle_files, seed, subset):
        return _array_records(self.scan.splits[split], input_context, subset)

    def record_buffer(self, num_examples):
        return num_examples

    def labels(self, split):
        return self.scan.splits[split].labels.copy()

    def decode(self, path, label, pil):
        def native():
            return tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8,
                                      expand_animations=False)

        def with_pil():
            return tf.numpy_function(_pil_decode, [path], tf.uint8, stateful=False)

        if self.any_pil:
            image = tf.cond(pil, with_pil, native)
        else:
            image = native()
        return tf.ensure_shape(image, [None, None, 3]), label


def _folder_signature(root):
    """Modification times of the folder tree down to class folders: a cache key."""
    signature = []
    for dirpath in _subdirs(root):
        signature.append((dirpath, os.stat(dirpath).st_mtime_ns))
        signature.extend((d, os.stat(d).st_mtime_ns) for d in _subdirs(dirpath))
    return tuple(signature)


def _subdirs(path):
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries
                      if e.is_dir() and not e.name.startswith("."))


@functools.lru_cache(maxsize=8)
def _scan_folder(root, strict, signature):
    """List and check every file once per process and folder state; warn once."""
    split_dirs = _subdirs(root)
    if not split_dirs:
        raise DataError(f"image folder {root} is empty: it has no split folders "
                        f"(expected {root}/SPLIT/CLASS/*.jpg, e.g. train/ and test/)")
    layout = {}  # split -> (files [(path, label)], skipped [(path, reason)])
    class_names = sorted({os.path.basename(c) for s in split_dirs for c in _subdirs(s)})
    label_of = {name: i for i, name in enumerate(class_names)}
    for split_dir in split_dirs:
        files, skipped = [], []
        class_dirs = _subdirs(split_dir)
        for path in _files(split_dir):
            if class_dirs:
                skipped.append((path, "outside the class folders"))
            else:
                files.append((path, UNLABELLED))
        for class_dir in class_dirs:
            label = label_of[os.path.basename(class_dir)]
            for path in _files(class_dir):
                files.append((path, label))
            skipped.extend((d, "a folder inside a class folder") for d in _subdirs(class_dir))
        layout[os.path.basename(split_dir)] = (files, skipped)

    all_files = [path for files, _ in layout.values() for path, _ in files]
    kinds = dict(zip(all_files, _check_files(all_files)))
    splits, skipped_all = {}, []
    for split, (files, skipped) in layout.items():
        good = [(p, label) for p, label in files if kinds[p] in ("native", "pil")]
        skipped += [(p, kinds[p]) for p, _ in files if kinds[p] not in ("native", "pil")]
        skipped_all += skipped
        if not good:
            raise DataError(f"split folder {root}/{split} holds no readable images "
                            f"(*{', *'.join(IMAGE_EXTENSIONS)})"
                            + (f"; skipped {len(skipped)} entries" if skipped else ""))
        splits[split] = _Split(np.array([p for p, _ in good]),
                               np.array([label for _, label in good], np.int64),
                               np.array([kinds[p] == "pil" for p, _ in good]))
    if skipped_all and not strict:
        warnings.warn(_skipped_message(root, skipped_all, "skipped"), DataWarning)
    return _Scan(splits, tuple(class_names), tuple(skipped_all))


def _files(path):
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries if e.is_file() and not e.name.startswith("."))


def _skipped_message(root, skipped, verb):
    named = "; ".join(f"{os.path.relpath(p, root)} ({why})"
                      for p, why in skipped[:_NAMED_BAD_FILES])
    more = f"; and {len(skipped) - _NAMED_BAD_FILES} more" if len(
        skipped) > _NAMED_BAD_FILES else ""
    return (f"{len(skipped)} entries in image folder {root} {verb} "
            f"(not readable images): {named}{more}")


def _check_files(paths):
    """Classify each path: "native" (TensorFlow decodes it), "pil", or why it is bad.

    Cheap checks first: the extension, the format's magic bytes and its end marker (JPEG
    EOI, PNG IEND, GIF trailer). Only files failing them are decoded fully with PIL,
    which also reads what TensorFlow does not (palette BMPs, JPEGs with trailing data).
    Threads overlap the file reads on a cold disk cache.
    """
    chunks = [paths[i:i + 512] for i in range(0, len(paths), 512)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return [kind for chunk in pool.map(lambda c: [_check_file(p) for p in c], chunks)
                for kind in chunk]


_MAGIC_AND_END = (
    (b"\xff\xd8\xff", (b"\xff\xd9",)),
    (b"\x89PNG\r\n\x1a\n", (b"IEND\xaeB`\x82",)),
    (b"GIF87a", (b";",)),
    (b"GIF89a", (b";",)),
)


def _check_file(path):
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file name"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16))
            tail = f.read(16)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if not head:
        return "empty file"
    for magic, ends in _MAGIC_AND_END:
        if head.startswith(magic) and tail.endswith(ends):
            return "native"
    try:
        _pil_image(path)
    except Exception as e:  # PIL raises many types for bad data  # noqa: BLE001
        return f"{type(e).__name__}: {e}"[:120]
    return "pil"


def _pil_image(path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode.startswith("I;16") or image.mode == "I":
            array = np.asarray(image, np.uint32) >> (8 if image.mode != "I" else 0)
            image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        return np.asarray(image.convert("RGB"))


def _pil_decode(path):
    return _pil_image(path.decode() if isinstance(path, bytes) else path)


# --- TFDS -------------------------------------------------------------------------------


class _TfdsSource:
    strict = True

    def __init__(self, name, data_dir):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except ValueError:  # DatasetNotFoundError, or not a valid TFDS name at all
            raise DataError(_unknown_dataset_message(name, tfds)) from None
        if not builder.is_prepared():
            raise DataError(_not_prepared_message(name, builder, data_dir))
        features = builder.info.features
        if "image" not in features:
            raise DataError(f"TFDS dataset {name} has no 'image' feature; features: "
                            f"{', '.join(features.keys())}")
        label = features["label"] if "label" in features else None
        self.has_label = isinstance(label, tfds.features.ClassLabel)
        shape = features["image"].shape
        size = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
        self.info = DatasetInfo(
            name,
            {split: info.num_examples for split, info in builder.info.splits.items()},
            tuple(label.names) if self.has_label else (),
            size,
        )
        self.builder = builder
        self.image_feature = features["image"]
        self._tfds = tfds

    def count(self, split):
        return self.builder.info.splits[split].num_examples

    def records(self, split, input_context, shuffle_files, seed, subset):
        tfds = self._tfds
        if subset is not None:  # indices count in file order: read it all, then shard
            shuffle_files, shard_files = False, None
        else:
            shard_files = input_context
        read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=shard_files,
                                      try_autocache=False)
        ds = self.builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                     read_config=read_config,
                                     decoders={"image": tfds.decode.SkipDecoding()})
        has_label = self.has_label
        ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int64) if has_label
                                else tf.constant(UNLABELLED, tf.int64)))
        if subset is None:
            return ds
        keep = np.zeros(self.count(split), bool)
        keep[subset] = True
        ds = ds.enumerate().filter(lambda index, record: tf.gather(keep, index))
        return _shard(ds.map(lambda index, record: record), input_context)

    def record_buffer(self, num_examples):
        return min(num_examples, _RECORD_SHUFFLE_BUFFER)

    def labels(self, split):
        ds = self.records(split, None, False, None, None).map(lambda image, label: label)
        return np.concatenate([[]] + list(ds.batch(8192).as_numpy_iterator())).astype(
            np.int64)

    def decode(self, encoded, label):
        return _to_rgb_uint8(self.image_feature.decode_example(encoded)), label


def _unknown_dataset_message(name, tfds):
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(name.split(":")[0].split("/")[0].lower(), known, n=5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    if os.path.isdir(name):
        hint = f"did you mean {FOLDER_PREFIX}{name}? " + hint
    return (f"unknown dataset {name!r}: not {DEFAULT_DATASET!r}, not "
            f"{FOLDER_PREFIX}PATH and not a TFDS dataset; {hint}"
            f"({len(known)} TFDS datasets are known, see tfds.list_builders())")


def _not_prepared_message(name, builder, data_dir):
    where = data_dir or "the default TFDS data directory"
    message = (f"TFDS dataset {name} is not prepared in {builder.data_dir} ({where}); "
               f"this library does not download. With network access, run: "
               f"tfds build {name}" + (f" --data_dir={data_dir}" if data_dir else ""))
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        message += (f" after placing the manual download files in "
                    f"{os.path.join(builder.data_dir_root, 'downloads', 'manual')}: "
                    + " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
    return message


# ----------------------------------------------------------------------------------------
# The embedded default data set

SHAPES_CLASSES = ("disk", "square", "triangle", "plus", "ring", "frame", "stripes", "star",
                  "half_disk", "pair")
SHAPES_SPLITS = {"train": 10_000, "test": 2_000}
SHAPES_IMAGE_SIZE = 32
_SHAPES_SEED = 20200213  # SimCLR's arXiv date
_SUPERSAMPLE = 2  # anti-aliasing: masks are drawn at 2x and averaged


def _shape_masks(name, u, v):
    """Boolean mask of shape `name` in its own frame (radius about 1), arrays [N, H, W]."""
    r = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if name == "disk":
        return r <= 0.9
    if name == "square":
        return box <= 0.72
    if name == "triangle":
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        dist = np.max([u * np.cos(a) + v * np.sin(a) for a in angles], axis=0)
        return dist <= 0.5
    if name == "plus":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | (
            (np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if name == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if name == "frame":
        return (box <= 0.8) & (box >= 0.45)
    if name == "stripes":
        return (box <= 0.8) & (np.floor((v + 0.8) / 0.32) % 2 == 0)
    if name == "star":
        sector = np.mod(np.arctan2(v, u), 2 * np.pi / 5) - np.pi / 5
        edge = 0.4 + 0.6 * (np.abs(sector) / (np.pi / 5))
        return r <= edge
    if name == "half_disk":
        return (np.hypot(u, v + 0.35) <= 0.95) & (v + 0.35 >= 0)
    if name == "pair":
        return (np.hypot(u - 0.5, v) <= 0.42) | (np.hypot(u + 0.5, v) <= 0.42)
    raise ValueError(name)


def _render_shapes(labels, rng):
    """uint8 images [N, 32, 32, 3] of the given shape classes; nuisances drawn from rng."""
    n, size = len(labels), SHAPES_IMAGE_SIZE
    fine = size * _SUPERSAMPLE
    scale = rng.uniform(0.6, 0.95, n).astype(np.float32)  # large: survive small crops
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    centre = (rng.uniform(-1, 1, (n, 2)) * (1 - 0.8 * scale)[:, None]).astype(np.float32)
    grid = ((np.arange(fine) + 0.5) / fine * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / scale[:, None, None]
    v = (-dx * sin + dy * cos) / scale[:, None, None]
    mask = np.zeros((n, fine, fine), np.float32)
    for label, name in enumerate(SHAPES_CLASSES):
        idx = np.flatnonzero(labels == label)
        mask[idx] = _shape_masks(name, u[idx], v[idx])
    alpha = mask.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))

    # Colours: uniform RGB pairs whose luminance differs enough to survive grayscale.
    luma = np.array([0.299, 0.587, 0.114])
    fg, bg = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
    while True:
        low = np.abs((fg - bg) @ luma) < 0.25
        if not low.any():
            break
        fg[low], bg[low] = rng.uniform(0, 1, (low.sum(), 3)), rng.uniform(0, 1, (low.sum(), 3))
    # A linear lighting gradient across the image and pixel noise.
    direction = rng.uniform(0, 2 * np.pi, n)
    cells = (np.arange(size) + 0.5) / size * 2 - 1
    cy, cx = np.meshgrid(cells, cells, indexing="ij")
    ramp = (np.cos(direction)[:, None, None] * cx + np.sin(direction)[:, None, None] * cy)
    light = 1 + rng.uniform(0, 0.25, n)[:, None, None] * ramp
    image = (bg[:, None, None] * (1 - alpha[..., None]) + fg[:, None, None] * alpha[..., None])
    image = image * light[..., None] + rng.normal(0, 0.04, image.shape)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def shapes_arrays(split="train"):
    """The `shapes` split as numpy arrays (uint8 [N, 32, 32, 3], int64 [N]); cached."""
    if split not in SHAPES_SPLITS:
        raise DataError(f"{DEFAULT_DATASET} has no split {split!r}; available splits: "
                        f"{', '.join(SHAPES_SPLITS)}")
    index = list(SHAPES_SPLITS).index(split)
    rng = np.random.default_rng([_SHAPES_SEED, index])
    num = SHAPES_SPLITS[split]
    labels = rng.permutation(np.arange(num) % len(SHAPES_CLASSES)).astype(np.int64)
    images = np.concatenate([_render_shapes(labels[i:i + 1000], rng)
                             for i in range(0, num, 1000)])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
