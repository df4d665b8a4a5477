"""Views cropped from the original images, for stored images larger than the views.

Resizing a 400 x 300 photo whole to 224 x 224 before the random crop distorts its aspect
ratio and throws detail away: an 8%-area crop is then upsampled from about 63 px. The paper
and the official code crop the decoded original and resize the crop. Images of different
sizes cannot be batched before cropping, so here each example is cropped on its own in a
tf.data map, at its own size (`example_crops` of the view maker, with stateless draws from
a per-example seed, so the map runs in parallel and stays reproducible), the fixed-size
crops are batched, and the rest of the augmentation (`views_of_crops`: flip, colour
jitter, grayscale, blur) runs vectorised per batch, here or in the model's train step.

Decoded images are kept (and cached) at their own size, except that an image whose shorter
side exceeds `cap` x the view size S is first shrunk (antialiased, aspect ratio kept) to
that side. With the default cap of 3, the smallest (8%-area) crop of a capped image holds
at least 0.08 x 3 x 3 S^2 = 0.72 S^2 pixels (0.85 S a side when square), so it is
upsampled sqrt(1 / 0.72) = 1.18x at most by area (1.36x along the short side of the most
elongated crops); a smaller image's crops are upsampled as its size requires
(2.3x for a 400 x 300 photo at 224 px, against 3.5x from that photo resized whole to
224 x 224). The cap bounds the cache, at most 3 x cap^2 x S^2 x (the longer side over the
shorter) bytes an image (1.8 MB for a 4:3 photo at 224 px, 0.33 MB at 96 px, instead of
3.6 MB for a whole 1200 x 1000 photo), and how far the crop's resize (not antialiased, as
in the official code) shrinks: a whole 4000 x 3000 photo would go to 224 px 13x down,
aliasing. Capping costs one antialiased resize of each image when it is decoded.
"""
from typing import NamedTuple

import tensorflow as tf

from keras_simclr.views.view_dict import CROP_PREFIX, VIEW_PREFIX, view_keys
from keras_simclr.views.makers import CropViewMaker

DEFAULT_CAP = 3.0
SIZE_SAMPLE = 32  # images decoded to tell whether a dataset's images exceed the views

_AUTOTUNE = tf.data.AUTOTUNE


def sample_sizes(source, split: str, count: int = SIZE_SAMPLE) -> list[tuple[int, int]]:
    """(height, width) of the stored images: the source's one size, or `count` decoded.

    Args:
        source: an opened `Source`.
        split: the split to look at.
        count: how many of its first images to decode when the source does not say.

    Returns:
        [(height, width), ...] of the sampled images.
    """
    if source.info.image_size is not None:
        return [(source.info.image_size,) * 2]
    ds = source.records(split=split).take(count)
    ds = ds.map(lambda *record: tf.shape(source.decode(record=record)[0])[:2])
    if not source.strict:
        ds = ds.ignore_errors()
    return [tuple(int(v) for v in shape) for shape in ds.as_numpy_iterator()]


def needs_original(sizes: list[tuple[int, int]], view_size: int) -> bool:
    """True unless every image is a square no larger than the views.

    Such images lose nothing when resized whole to the view size before the crop (their
    aspect ratio is kept, no detail is dropped), which the batched fast path does.

    Args:
        sizes: (height, width) of stored images (`sample_sizes`).
        view_size: side S of the views.

    Returns:
        Whether to crop from the originals.
    """
    return any(h != w or h > view_size for h, w in sizes)


class Plan(NamedTuple):
    """How `pretrain_dataset` caches originals: the shorter-side cap (None: none) and the
    estimated bytes of one cached image."""

    cap: int | None
    image_bytes: int


def plan(source, split: str, view_size: int, augmenter, crop_from_original: bool | str,
         cap: float | None) -> Plan | None:
    """Whether and how `pretrain_dataset` crops the views from the stored images.

    Args:
        source, split: the opened `Source` and the split read.
        view_size: side S of the views.
        augmenter: the view maker, or None.
        crop_from_original: True, False or "auto" (`needs_original` of `sample_sizes`).
        cap: the cap on the cached shorter side, in multiples of S (None: none).

    Returns:
        None (resize whole, crop in batches) without an augmenter, or with one that cannot
        crop single examples (an error when `crop_from_original` is True), or when "auto"
        finds no image larger than the views; else the `Plan`.
    """
    if crop_from_original not in (True, False, "auto"):
        raise ValueError(f'crop_from_original must be True, False or "auto", got '
                         f'{crop_from_original!r}')
    if augmenter is None or crop_from_original is False:
        return None
    if not isinstance(augmenter, CropViewMaker):
        if crop_from_original is True:
            raise ValueError(f"crop_from_original=True needs a view maker with "
                             f"example_crops and views_of_crops, got {augmenter!r}")
        return None
    sizes = sample_sizes(source, split)
    if crop_from_original == "auto" and not needs_original(sizes, view_size):
        return None
    cap_side = None if cap is None else max(1, round(cap * view_size))
    return Plan(cap_side, cached_image_bytes(sizes, cap_side))


def cap_size(image: tf.Tensor, max_short_side: int) -> tf.Tensor:
    """Shrink `image` (uint8 [H, W, 3]) so its shorter side is at most `max_short_side`.

    The aspect ratio is kept; the resize is antialiased; smaller images pass unchanged.

    Args:
        image: uint8 [H, W, 3].
        max_short_side: the largest shorter side kept.

    Returns:
        uint8 [H', W', 3].
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)

    def shrink():
        scale = max_short_side / tf.cast(short, tf.float32)
        size = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
        resized = tf.image.resize(image, tf.maximum(size, 1), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    return tf.cond(short > max_short_side, shrink, lambda: image)


def cached_image_bytes(sizes: list[tuple[int, int]], max_short_side: int | None) -> int:
    """Mean bytes of a cached image, estimated from sampled sizes and the cap.

    Args:
        sizes: (height, width) of sampled stored images.
        max_short_side: the cap on the shorter side (None: no cap).

    Returns:
        Estimated bytes per cached uint8 RGB image (at least 1).
    """
    total = 0.0
    for h, w in sizes:
        scale = 1.0 if max_short_side is None else min(1.0, max_short_side / min(h, w))
        total += round(h * scale) * round(w * scale) * 3
    return max(1, int(total / max(1, len(sizes))))


def crop_views(ds: tf.data.Dataset, augmenter, batch_size: int, parallelism: int | None,
               pipeline_id: int = 0, views: bool = True) -> tf.data.Dataset:
    """Batches of views (or only crops) of `(uint8 image [H, W, 3], label)` examples of any size.

    Args:
        ds: unbatched examples, the images at their own sizes.
        augmenter: a `views.CropViewMaker`.
        batch_size: examples per batch; the last partial batch is dropped.
        parallelism: `num_parallel_calls` of the batched step (None: sequential, for a
            seeded augmenter's stateful generator); the per-example crops are stateless
            and run in parallel, in order.
        pipeline_id: this input pipeline's index (`InputContext.input_pipeline_id`),
            part of every example's seed, so that workers draw different crops.
        views: True: the whole views, made here. False: only the crops, for a model whose
            augmenter makes the views of them (`views_of_crops` in its train step).

    Returns:
        Batches `({"view_1": ..., "view_2": ...}, labels)` of float32 views, or with
        `views=False` `({"crop_1": ..., "crop_2": ...}, labels)` of uint8 crops.
    """
    seeds = tf.data.Dataset.random(seed=augmenter.seed,
                                   rerandomize_each_iteration=True)

    def crop(example, random):
        image, label = example
        seed = tf.stack([random, tf.constant(pipeline_id, tf.int64)])
        crops = augmenter.example_crops(image, seed)
        # uint8 crops: a quarter of the float32 bytes to batch and buffer (within 0.5/255).
        return tuple(tf.cast(tf.round(c * 255.0), tf.uint8) for c in crops), label

    def keyed(crops, labels):
        made = augmenter.views_of_crops(list(crops)) if views else crops
        prefix = VIEW_PREFIX if views else CROP_PREFIX
        return dict(zip(view_keys(len(made), prefix), made)), labels

    ds = tf.data.Dataset.zip((ds, seeds)).map(crop, num_parallel_calls=_AUTOTUNE,
                                             deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(keyed, num_parallel_calls=parallelism if views else _AUTOTUNE)
