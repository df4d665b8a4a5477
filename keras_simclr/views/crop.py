"""The random resized crop: the paper's box sampler and the two ways of resampling boxes.

`sample_boxes` draws the crop boxes of Chen et al. 2020 (appendix A) and of the official
code (google-research/simclr `data_util.py`, `distorted_bounding_box_crop`): area
U(0.08, 1) of the image's own area, aspect ratio log-uniform in (3/4, 4/3); 10 attempts
then the whole image, as torchvision (the official code tries up to 100 times). It takes
the random source as a function, so that the same sampler serves a batch of equally
sized images (`SimCLRAugment`'s `tf.random.Generator`) and one image of any size in a
tf.data map (`stateless_uniform`, seeded per example).

Resampling a box to the view, "bilinear" or "bicubic" (the paper's, as in the official
`crop_and_resize`: crop whole pixels, then `tf.image.resize(method="bicubic")`, Keys'
kernel with a = -0.5, no antialiasing): `crop_and_resize_one` for one image of any size
(a crop from the original, in a tf.data map), and `bicubic_crop_and_resize` for a batch
of equally sized images (the 32-px CIFAR path), vectorised over the batch with the same
numbers, because `tf.image.crop_and_resize` only does bilinear and nearest and
`tf.image.resize` resizes whole images.
"""
import itertools
import math
from typing import Callable

import tensorflow as tf

CROP_ATTEMPTS = 10
_KEYS_TABLE_SIZE = 1024  # ResizeBicubic's sample positions are multiples of 1/1024 px
RESIZE_METHODS = ("bicubic", "bilinear")

# uniform(shape, low, high) -> float32 tensor of independent U(low, high) draws
Uniform = Callable[[tuple, float, float], tf.Tensor]


def sample_boxes(uniform: Uniform, height, width, count, area: tuple = (0.08, 1.0),
                 aspect: tuple = (3 / 4, 4 / 3)) -> tf.Tensor:
    """Normalised [y1, x1, y2, x2] random resized crop boxes of an H x W image.

    Args:
        uniform: the random source, `uniform(shape, low, high)`.
        height, width: the image's size in pixels (scalars; all boxes are on one size).
        count: number of boxes (a Python int or a scalar tensor).
        area: (min, max) fraction of the image area a box covers.
        aspect: (min, max) width / height of a box in pixels (log-uniform).

    Returns:
        float32 [count, 4] boxes inside [0, 1]; a box whose `CROP_ATTEMPTS` draws all fell
        outside the image is the whole image.
    """
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    attempts = (count, CROP_ATTEMPTS)
    area_fraction = uniform(attempts, area[0], area[1])
    ratio = tf.exp(uniform(attempts, math.log(aspect[0]), math.log(aspect[1])))
    # Box sides as fractions of the image height and width: area fraction a and
    # pixel aspect w/h = r give h_px = sqrt(a H W / r), w_px = sqrt(a H W r).
    crop_h = tf.sqrt(area_fraction * width / (ratio * height))
    crop_w = tf.sqrt(area_fraction * height * ratio / width)
    fits = (crop_h <= 1.0) & (crop_w <= 1.0)
    first_fit = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fit = tf.reduce_any(fits, axis=1)
    crop_h = tf.where(any_fit, tf.gather(crop_h, first_fit, batch_dims=1), 1.0)
    crop_w = tf.where(any_fit, tf.gather(crop_w, first_fit, batch_dims=1), 1.0)
    y1 = uniform((count,), 0.0, 1.0) * (1.0 - crop_h)
    x1 = uniform((count,), 0.0, 1.0) * (1.0 - crop_w)
    return tf.stack([y1, x1, y1 + crop_h, x1 + crop_w], axis=1)


def stateless_uniform(seed) -> Uniform:
    """A `Uniform` of stateless draws from `seed` (int [2]): the same seed, the same draws.

    Each call folds a call counter into the seed, so successive calls differ.
    """
    counter = itertools.count()

    def uniform(shape, low, high):
        call_seed = tf.random.experimental.stateless_fold_in(seed, next(counter))
        return tf.random.stateless_uniform(shape, call_seed, low, high)
    return uniform


def pixel_boxes(boxes: tf.Tensor, height, width) -> tf.Tensor:
    """Normalised boxes -> whole-pixel boxes [top, left, rows, columns] inside the image.

    Args:
        boxes: float [N, 4] normalised [y1, x1, y2, x2].
        height, width: the image size in pixels (scalars).

    Returns:
        int32 [N, 4]; every box at least 1 x 1 pixel.
    """
    def side(start, end, size):
        size_f = tf.cast(size, tf.float32)
        extent = tf.clip_by_value(tf.cast(tf.round((end - start) * size_f), tf.int32), 1, size)
        offset = tf.clip_by_value(tf.cast(tf.round(start * size_f), tf.int32), 0, size - extent)
        return offset, extent

    top, rows = side(boxes[:, 0], boxes[:, 2], tf.cast(height, tf.int32))
    left, columns = side(boxes[:, 1], boxes[:, 3], tf.cast(width, tf.int32))
    return tf.stack([top, left, rows, columns], axis=1)


def crop_and_resize_one(image: tf.Tensor, box: tf.Tensor, size: int,
                        method: str = "bicubic") -> tf.Tensor:
    """One view of one image: its whole-pixel `box`, resized to `size` x `size`.

    Args:
        image: uint8 [H, W, C] (or float in [0, 1]) of any size.
        box: int32 [4] whole-pixel box [top, left, rows, columns] (`pixel_boxes`).
        size: side of the view.
        method: "bilinear" or "bicubic" (`tf.image.resize`, no antialiasing, as the
            official code).

    Returns:
        float32 [size, size, C] in [0, 1].
    """
    crop = tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])
    crop = tf.cast(crop, tf.float32) / (255.0 if image.dtype == tf.uint8 else 1.0)
    resized = tf.image.resize(crop, [size, size], method=method)
    return tf.clip_by_value(resized, 0.0, 1.0)


def random_resized_crop_one(image: tf.Tensor, seed: tf.Tensor, size: int, area: tuple,
                            aspect: tuple, method: str) -> tf.Tensor:
    """One random resized crop of one image [H, W, C] of any size (a tf.data map).

    Args:
        image: uint8 [H, W, C] (or float in [0, 1]).
        seed: int [2]; the box is drawn statelessly from it.
        size, area, aspect, method: the view's side, the crop's area and aspect ranges and
            the resize method.

    Returns:
        float32 [size, size, C] in [0, 1].
    """
    shape = tf.shape(image)
    box = sample_boxes(stateless_uniform(seed), shape[0], shape[1], 1, area, aspect)
    box = pixel_boxes(box, shape[0], shape[1])[0]
    view = crop_and_resize_one(image, box, size, method)
    return tf.ensure_shape(view, [size, size, None])


def resize_boxes(images: tf.Tensor, boxes: tf.Tensor, size: int, method: str) -> tf.Tensor:
    """The normalised `boxes` [B, 4] of a batch of float images [B, H, W, C], at size x size."""
    if method == "bicubic":
        return bicubic_crop_and_resize(images, boxes, size)
    return tf.image.crop_and_resize(images, boxes, tf.range(tf.shape(images)[0]), [size, size])


@tf.function(jit_compile=True)
def bicubic_crop_and_resize(images: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Bicubic views of a batch of equally sized images, one box per image, vectorised.

    The same numbers as `crop_and_resize_one(..., "bicubic")` of each image (within float
    rounding) without a loop over images: bicubic resizing is separable, so each view is
    Wr @ image @ Wc^T per channel, with Wr and Wc the [size, H] and [size, W] weight
    matrices of its box (`_bicubic_weights`). Two batched matmuls cost about twice
    `tf.image.crop_and_resize`'s bilinear crop, a third of gathering the 4 x 4 taps.
    XLA-compiled (one function per `size`): TensorFlow's kernels for the weights' broadcast
    element-wise work and the 3 x B small matmuls take about 2.4x as long on the CPU.

    Args:
        images: float32 [B, H, W, C] in [0, 1].
        boxes: float32 [B, 4] normalised boxes (`sample_boxes`), snapped to whole pixels.
        size: side of the views.

    Returns:
        float32 [B, size, size, C] in [0, 1].
    """
    shape = tf.shape(images)
    pixels = pixel_boxes(boxes, shape[1], shape[2])
    rows = _bicubic_weights(pixels[:, 0], pixels[:, 2], size, shape[1])
    columns = _bicubic_weights(pixels[:, 1], pixels[:, 3], size, shape[2])
    channels_first = tf.transpose(images, [0, 3, 1, 2])  # [B, C, H, W]
    views = tf.matmul(tf.matmul(rows[:, None], channels_first), columns[:, None],
                      transpose_b=True)
    return tf.clip_by_value(tf.transpose(views, [0, 2, 3, 1]), 0.0, 1.0)


def _keys_kernel(x: tf.Tensor) -> tf.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (Keys 1981), the "bicubic" of
    `tf.image.resize` and of PIL."""
    x = tf.abs(x)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def _bicubic_weights(start: tf.Tensor, extent: tf.Tensor, size: int, length) -> tf.Tensor:
    """The weight of each image pixel in each output pixel along one axis, per box.

    As TensorFlow's ResizeBicubic (half-pixel centres): output pixel i samples the box at
    (i + 0.5) x extent / size - 0.5, rounded to 1/1024 pixel as its weight table is; pixels
    outside the box get no weight and the others are renormalised.

    Args:
        start, extent: int32 [B], each box's first pixel and side along the axis.
        size: the output side.
        length: the image's side along the axis.

    Returns:
        float32 [B, size, length]; each row sums to 1 and has at most 4 non-zero weights.
    """
    extent_f = tf.cast(extent, tf.float32)[:, None]
    position = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * (extent_f / size) - 0.5
    base = tf.floor(position)
    position = base + tf.round((position - base) * _KEYS_TABLE_SIZE) / _KEYS_TABLE_SIZE
    pixel = (tf.range(length, dtype=tf.float32)[None, :]
             - tf.cast(start, tf.float32)[:, None])  # box coordinates [B, length]
    inside = (pixel >= 0.0) & (pixel < extent_f)
    weights = tf.where(inside[:, None, :],
                       _keys_kernel(pixel[:, None, :] - position[..., None]), 0.0)
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)
