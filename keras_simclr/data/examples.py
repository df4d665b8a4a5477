"""Decoded examples of a split: decoding, resizing, caching and seeded shuffling.

What every pipeline of `pipelines.py` starts from: `(uint8 image, int64 label)` examples
of a source's split, resized to the views' size (or capped at their own size for crops
from the originals), cached in memory when they fit, and shuffled with seeds that make a
pass's order depend on its index alone, so that a resumed run sees the same data order.
"""
import os

import tensorflow as tf

from keras_simclr.data import originals
from keras_simclr.data.source import DataError

CENTRE_CROP_FRACTION = 0.875
CENTRE_CROP_MIN_SIDE = 64  # evaluation centre-crops images whose shorter side is larger

_AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER_BYTES = 512 * 2**20  # decoded images held by a shuffle buffer


def decoded(source, split, image_size, input_context, *, shuffle=None, seed=None,
            central_crop=False, subset=None, cap=None):
    """`(uint8 image, int64 label)` examples of `split`, resized when `image_size`.

    `shuffle`: None keeps the dataset order; "once" permutes the records once (seeded);
    "every_epoch" draws a new permutation on every pass. `subset`: sorted indices of the
    examples to keep (None: all). `cap`: without `image_size`, the largest shorter side
    kept (`originals.cap_size`).
    """
    num_examples = count(source, split, subset)  # a DataError for a missing split
    # a seed tensor (one pass of `_seeded_passes`) shuffles the records, not the files
    ds = source.records(split=split, input_context=input_context,
                        shuffle_files=shuffle is not None and not tf.is_tensor(seed),
                        seed=None if tf.is_tensor(seed) else seed, subset=subset)
    if shuffle is not None:
        ds = ds.shuffle(source.record_buffer(num_examples=num_examples), seed=seed,
                        reshuffle_each_iteration=shuffle == "every_epoch")

    def decode(*record):
        image, label = source.decode(record=record)
        if image_size is not None:
            image = resize(image, image_size, central_crop)
        elif cap is not None:
            image = originals.cap_size(image, cap)
        return image, label

    ds = ds.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=True)
    if not source.strict:
        # Files passed the up-front checks; a decoder that still fails (corruption inside
        # the data) is skipped, with TensorFlow logging each one, rather than killing
        # training hours in.
        ds = ds.ignore_errors(log_warning=True)
    return ds


def seeded_passes(source, split, batches, batch_size, start_batch, *, image_size, cache,
                  seed, input_context, cap=None, image_bytes=None):
    """Endless `batches(images)` of passes p = 0, 1, ... from batch `start_batch` on.

    Pass p shuffles the images with the seed `seed * 1000003 + p` (unseeded: fresh
    randomness), so its order depends on p alone (and on TensorFlow's global seed, as every
    seeded tf.data op), not on how many passes this pipeline made before; the first pass
    skips the images of the batches before `start_batch` before they are cropped or batched.
    Cached images are cached once (first permuted by `seed`, as in `_training_images`);
    uncached ones reshuffle their records every pass.
    """
    num_examples = count(source, split, None)
    if input_context is not None:
        num_examples //= input_context.num_input_pipelines
    per_pass = num_examples // batch_size
    if per_pass < 1:
        raise DataError(f"{num_examples} images of {source.info.name}:{split} make no batch "
                        f"of {batch_size}")
    first_pass, skipped = divmod(int(start_batch), per_pass)
    if image_bytes is None:
        image_bytes = image_size * image_size * 3
    if should_cache(num_examples, image_bytes, cache):
        cached = decoded(source, split, image_size, input_context, shuffle="once",
                         seed=seed, cap=cap).cache()
        buffer = max(1, min(num_examples, SHUFFLE_BUFFER_BYTES // image_bytes))

        def shuffled(pass_seed):
            return cached.shuffle(buffer, seed=pass_seed, reshuffle_each_iteration=False)
    else:
        def shuffled(pass_seed):
            return decoded(source, split, image_size, input_context, shuffle="once",
                           seed=pass_seed, cap=cap)

    def one_pass(index):
        # TensorFlow's get_seed compares the (global, op) seed pair with (0, 0), which fails
        # on a tensor op seed when the global seed is 0: the pass ignores the global seed.
        graph = tf.compat.v1.get_default_graph()
        global_seed, graph.seed = graph.seed, None
        try:
            images = shuffled(None if seed is None else seed * 1000003 + index)
        finally:
            graph.seed = global_seed
        skip = tf.where(index == first_pass, skipped * batch_size, 0)
        return batches(images.skip(tf.cast(skip, tf.int64)))

    return tf.data.Dataset.counter(first_pass).flat_map(one_pass)


def training_images(source, split, image_size, shuffle, cache, seed, input_context,
                    subset=None, cap=None, image_bytes=None):
    """Resized uint8 examples, cached when `cache`, reshuffled every epoch when `shuffle`.

    Before a cache the records are permuted once, so that a cache filled from files
    sorted by class is in random order and a bounded shuffle buffer after it mixes well.
    With `image_size` None the images keep their size (shorter side capped at `cap`) and
    `image_bytes` estimates one cached image.
    """
    num_examples = count(source, split, subset)
    if image_bytes is None:
        image_bytes = image_size * image_size * 3
    cached = should_cache(num_examples, image_bytes, cache)
    which = dict(subset=subset, cap=cap)
    if not shuffle:
        ds = decoded(source, split, image_size, input_context, **which)
        return ds.cache() if cached else ds
    if not cached:
        return decoded(source, split, image_size, input_context, shuffle="every_epoch",
                       seed=seed, **which)
    ds = decoded(source, split, image_size, input_context, shuffle="once", seed=seed, **which)
    buffer = min(num_examples, SHUFFLE_BUFFER_BYTES // image_bytes)
    return ds.cache().shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)


def should_cache(num_examples, image_bytes, cache):
    if cache == "auto":
        return num_examples * image_bytes < available_memory() // 2
    if cache not in (True, False):
        raise ValueError(f'cache must be True, False or "auto", got {cache!r}')
    return cache


def available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resize(image, size, central_crop):
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


def count(source, split, subset):
    """Examples read from `split`: all, or the `subset`; a DataError for a missing split."""
    count = source.count(split=split)
    return count if subset is None else len(subset)
