"""tf.data pipelines from any registered source to batches for training and evaluation.

Images are decoded to 3-channel uint8 (grayscale, alpha, palette and 16-bit images
included), brought to `image_size` x `image_size`, cached in memory when asked or when they
fit (`cache="auto"`), then shuffled (seeded), batched and prefetched; decoding, resizing
and augmentation run in parallel (`AUTOTUNE`).

- `pretrain_dataset`: batches `(uint8 images [B, S, S, 3], int64 labels [B])`, or with an
  `augmenter` `({"view_1": v1, "view_2": v2}, labels)` with float views made in the
  pipeline; `drop_remainder=True`. With an augmenter and stored images larger than the
  views, each view is cropped from the original image (`originals.py`); with
  `views_in_model`, only those crops are made here (`{"crop_1": c1, ...}`).
- `classifier_dataset(training=True)`: random resized crop and flip only
  (`SimCLRAugment.crop_and_flip`), float32 in [0, 1], `drop_remainder=True`.
- `classifier_dataset(training=False)` and `embed_dataset`: resized images (large images
  are centre-cropped to 87.5% first), float32 in [0, 1], in dataset order, no shuffle,
  last partial batch kept.
- `classifier_dataset(subset=indices)` reads only those examples (a labelled fraction for
  fine-tuning); `labels` gives a split's labels in dataset order without decoding images.

Training images that are squares no larger than the views (CIFAR at 32 px) are resized
whole to S x S and cropped in batches; larger ones, with an augmenter that crops single
images (a `views.CropViewMaker`: `SimCLRAugment`, `MultiCropAugment`), are cached at their
own size (the shorter side capped at `original_cap` x S) and each view is cropped from them
before batching; without such an augmenter they are resized whole. Evaluation images keep
their aspect ratio (central square crop).

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
from typing import Callable

import numpy as np
import tensorflow as tf

from keras_simclr.data import examples, originals
from keras_simclr.data.shapes import DEFAULT_DATASET
from keras_simclr.data.source import DataError, DatasetInfo, open_source
from keras_simclr.views.augment import SimCLRAugment
from keras_simclr.views.makers import ViewMaker, make_views
from keras_simclr.views.view_dict import view_keys

_AUTOTUNE = tf.data.AUTOTUNE

_InputContext = tf.distribute.InputContext  # for type hints


def describe(dataset: str = DEFAULT_DATASET, data_dir: str | None = None,
             strict: bool = False) -> DatasetInfo:
    """`DatasetInfo` of a `--dataset` string, without decoding images.

    For `folder:` datasets this lists and checks the files (once per process and folder
    listing; about a second for 50,000 files).

    Args:
        dataset: `shapes`, `folder:PATH`, a TFDS name or another registered name.
        data_dir: the TFDS data directory (None: the TFDS default).
        strict: raise `DataError` for unreadable files instead of skipping them.

    Returns:
        The `DatasetInfo`: splits and their sizes, class names, stored image size.
    """
    return open_source(dataset, data_dir=data_dir, strict=strict).info


def load(dataset: str = DEFAULT_DATASET, split: str = "train", data_dir: str | None = None,
         strict: bool = False, input_context: _InputContext | None = None
         ) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Decoded examples of one split, in dataset order.

    Args:
        dataset, data_dir, strict: as for `describe`.
        split: a split name (TFDS datasets also take slices such as `train[:10%]`).
        input_context: shards the examples across input pipelines.

    Returns:
        (`tf.data.Dataset` of `(uint8 image [H, W, 3], int64 label)` at the stored size,
        unbatched; `DatasetInfo`).
    """
    source = open_source(dataset, data_dir=data_dir, strict=strict)
    return examples.decoded(source, split, None, input_context), source.info


def labels(dataset: str = DEFAULT_DATASET, split: str = "train",
           data_dir: str | None = None, strict: bool = False) -> np.ndarray:
    """The labels of `split` in dataset order, images not decoded.

    The positions index the `subset` argument of `classifier_dataset`.

    Args:
        dataset, split, data_dir, strict: as for `load`.

    Returns:
        int64 numpy labels (-1: unlabelled).
    """
    source = open_source(dataset, data_dir=data_dir, strict=strict)
    source.count(split=split)  # a DataError for a split that does not exist
    return source.labels(split=split)


def pretrain_dataset(dataset: str = DEFAULT_DATASET, split: str = "train", *,
                     image_size: int, global_batch_size: int, data_dir: str | None = None,
                     shuffle: bool = True, cache: bool | str = "auto",
                     seed: int | None = None, augmenter: Callable | None = None,
                     strict: bool = False, input_context: _InputContext | None = None,
                     crop_from_original: bool | str = "auto",
                     original_cap: float | None = originals.DEFAULT_CAP,
                     views_in_model: bool = False,
                     start_batch: int | None = None) -> tf.data.Dataset:
    """Batches for contrastive pretraining; see the module docstring.

    Args:
        dataset, split, data_dir, strict, input_context: as for `load`.
        image_size: side S of the square images.
        global_batch_size: batch size over all replicas (per replica with an
            `input_context`); the last partial batch is dropped.
        shuffle: shuffle (seeded by `seed`) and reshuffle every epoch (always, with
            `start_batch`).
        cache: True, False or "auto" (cache decoded images when they fit in memory).
        seed: makes the order (and nothing else) reproducible.
        augmenter: optional view maker on a uint8 batch [B, S, S, 3]: a
            `views.ViewMaker` (e.g. `SimCLRAugment`: two views; `MultiCropAugment`:
            2 + k), or a plain callable called twice.
        crop_from_original: with a `views.CropViewMaker`, crop each view from the stored
            image rather than from it
            resized whole to S x S. "auto": when any of the first `originals.SIZE_SAMPLE`
            stored images (or the source's stated size) is not a square of side <= S.
        original_cap: when cropping from the original, images whose shorter side is
            above `original_cap` x S are first shrunk to it (aspect ratio kept), to bound
            the cache and the per-crop work; None keeps them whole.
        views_in_model: `augmenter` is (a copy of) the model's, which makes the views in
            its train step: the pipeline only crops from the originals when it would
            (uint8 `{"crop_1": ..., ...}` batches for the model's `views_of_crops`), and
            otherwise gives the images, as without an augmenter.
        start_batch: None: one pass. N: endless passes, each shuffled by `seed` and its
            index, from global batch N on: the batches a run from batch 0 sees there.

    Returns:
        Batches `(uint8 images [B, S, S, 3], int64 labels [B])`, or with an augmenter
        `({"view_1": v1, "view_2": v2, ...}, labels)` with float views (with
        `views_in_model`, the images or `({"crop_1": c1, ...}, labels)`).
    """
    source = open_source(dataset, data_dir=data_dir, strict=strict)
    batch_size = _batch_size(global_batch_size, input_context)
    plan = originals.plan(source, split, image_size, augmenter, crop_from_original,
                          original_cap)
    stored = (dict(image_size=None, cap=plan.cap, image_bytes=plan.image_bytes) if plan
              else dict(image_size=image_size))
    batches = _batcher(plan, augmenter, batch_size, input_context, views_in_model)
    if start_batch is None:
        ds = batches(examples.training_images(source, split, shuffle=shuffle, cache=cache,
                                              seed=seed, input_context=input_context, **stored))
    else:
        ds = examples.seeded_passes(source, split, batches, batch_size, start_batch,
                                    cache=cache, seed=seed, input_context=input_context,
                                    **stored)
    if plan is None and augmenter is not None and not views_in_model:
        ds = _with_views(ds, augmenter)
    return ds.prefetch(_AUTOTUNE)


def _with_views(ds, augmenter):
    """Batches `({"view_1": ..., ...}, labels)` of the augmenter's views of image batches."""
    def views(images, labels):
        made = make_views(augmenter, images)
        return dict(zip(view_keys(len(made)), made)), labels
    return ds.map(views, num_parallel_calls=_augment_parallelism(augmenter))


def classifier_dataset(dataset: str = DEFAULT_DATASET, split: str = "train", *,
                       image_size: int, batch_size: int, training: bool,
                       data_dir: str | None = None, cache: bool | str = "auto",
                       seed: int | None = None, strict: bool = False,
                       input_context: _InputContext | None = None, subset=None,
                       resize_method: str = "bicubic") -> tf.data.Dataset:
    """Batches for training or evaluating a classifier.

    Args:
        dataset, split, data_dir, strict, input_context: as for `load`.
        image_size, cache, seed: as for `pretrain_dataset`.
        batch_size: global batch size.
        training: True: shuffled, random resized crop and flip, full batches only (linear
            evaluation and fine-tuning). False: resized (large images centre-cropped),
            dataset order, last partial batch kept.
        subset: indices (in dataset order, see `labels`) of the only examples to read,
            e.g. the labelled fraction used for fine-tuning; they are selected before
            decoding.
        resize_method: "bicubic" or "bilinear" resizing of the training crops (the
            pretraining run's, `SimCLRAugment`).

    Returns:
        Batches `(float32 images [B, S, S, 3] in [0, 1], int64 labels [B])`.
    """
    source = open_source(dataset, data_dir=data_dir, strict=strict)
    per_replica = _batch_size(batch_size, input_context)
    subset = _check_subset(source, split, subset)
    if training and subset is not None and len(subset) < per_replica:
        raise DataError(f"a subset of {len(subset)} examples is smaller than one batch of "
                        f"{per_replica}")
    if not training:
        ds = examples.decoded(source, split, image_size, input_context, central_crop=True,
                              subset=subset)
        image_bytes = image_size * image_size * 3
        if examples.should_cache(examples.count(source, split, subset), image_bytes, cache):
            ds = ds.cache()
        ds = ds.batch(per_replica).map(_to_float, num_parallel_calls=_AUTOTUNE)
        return ds.prefetch(_AUTOTUNE)
    crop_and_flip = SimCLRAugment.crop_and_flip(image_size, seed=seed,
                                                resize_method=resize_method)
    ds = examples.training_images(source, split, image_size, True, cache, seed, input_context,
                                  subset)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.map(lambda images, labels: (crop_and_flip(images), labels),
                num_parallel_calls=_augment_parallelism(crop_and_flip))
    return ds.prefetch(_AUTOTUNE)


def linear_eval_datasets(dataset: str = DEFAULT_DATASET, *, image_size: int,
                         batch_size: int, train_split: str = "train",
                         eval_split: str = "test", data_dir: str | None = None,
                         cache: bool | str = "auto", seed: int | None = None,
                         strict: bool = False, resize_method: str = "bicubic"
                         ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(training, evaluation) `classifier_dataset`s for linear evaluation.

    Under a distribution strategy, build each with `classifier_dataset(input_context=...)`.

    Args:
        train_split, eval_split: the splits of the two datasets.
        The others: as for `classifier_dataset`.

    Returns:
        (`classifier_dataset(training=True)`, `classifier_dataset(training=False)`).
    """
    common = dict(image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                  cache=cache, seed=seed, strict=strict)
    source = open_source(dataset, data_dir=data_dir, strict=strict)
    for split in (train_split, eval_split):  # fail on either split before building
        source.count(split=split)
    return (classifier_dataset(dataset, train_split, training=True,
                               resize_method=resize_method, **common),
            classifier_dataset(dataset, eval_split, training=False, **common))


def embed_dataset(dataset: str = DEFAULT_DATASET, split: str = "test", *, image_size: int,
                  batch_size: int, data_dir: str | None = None, strict: bool = False,
                  input_context: _InputContext | None = None) -> tf.data.Dataset:
    """Evaluation batches of one pass over `split`, in dataset order, not cached.

    Args:
        As for `classifier_dataset`.

    Returns:
        `classifier_dataset(training=False, cache=False)`.
    """
    return classifier_dataset(dataset, split, image_size=image_size, batch_size=batch_size,
                              training=False, data_dir=data_dir, cache=False,
                              strict=strict, input_context=input_context)


# ----------------------------------------------------------------------------------------
# Pieces shared by the public functions: batching, shuffling, caching, resizing


def _batch_size(global_batch_size, input_context):
    if global_batch_size < 1:
        raise ValueError(f"batch size must be positive, got {global_batch_size}")
    if input_context is None:
        return int(global_batch_size)
    return input_context.get_per_replica_batch_size(global_batch_size)


def _augment_parallelism(augmenter):
    """Sequential for a seeded augmenter (reproducible views), parallel otherwise."""
    seeded = isinstance(augmenter, ViewMaker) and augmenter.seed is not None
    return None if seeded else _AUTOTUNE


def _batcher(plan, augmenter, batch_size, input_context, views_in_model):
    """images -> their batches: of whole images, or with an `originals.plan` of the
    views (or crops) cropped from them (`originals.crop_views`)."""
    if plan is None:
        return lambda images: images.batch(batch_size, drop_remainder=True)
    return lambda images: originals.crop_views(
        images, augmenter, batch_size, _augment_parallelism(augmenter),
        input_context.input_pipeline_id if input_context is not None else 0,
        views=not views_in_model)


def _to_float(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _check_subset(source, split, subset):
    """Sorted unique int64 indices, all inside the split; None stays None."""
    if subset is None:
        return None
    subset = np.unique(np.asarray(subset, np.int64))
    count = source.count(split=split)
    if subset.size == 0 or subset[0] < 0 or subset[-1] >= count:
        raise DataError(f"subset indices must lie in [0, {count}) for split {split!r} of "
                        f"{source.info.name}; got {subset.size} indices"
                        + (f" from {subset[0]} to {subset[-1]}" if subset.size else ""))
    return subset
