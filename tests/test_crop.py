"""The random resized crop (keras_simclr/views/crop.py): whole-pixel boxes and bicubic resizing.

Bicubic is checked against PIL's BICUBIC, an independent implementation of the same
definition: Keys' cubic kernel with a = -0.5, pixel centres at half-integers, taps outside
the image dropped and the others renormalised. The two agree when upsampling (PIL widens
its kernel, antialiasing, only when downsampling; TensorFlow, like the official code, never
does), so the comparisons are of crops upsampled to the view.
"""
import keras_simclr  # noqa: F401  (before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_simclr.views import crop
from keras_simclr.views.augment import SimCLRAugment

# TensorFlow reads Keys' weights from a table at multiples of 1/1024 pixel. Where the
# sample positions fall on the table (any box resized to 32 px: output pixel i samples
# (2i + 1) x side / 64 - 0.5, a multiple of 1/64 px) the weights are exact, and float32
# rounding of a 16-tap sum of values in [0, 1] stays far below 1e-5. Elsewhere a position is off by up to 0.5/1024 px; the
# kernel's slope is at most 1.39, so one axis' 4 weights move by at most 4 x 1.39 x 0.5/1024
# = 2.7e-3 in sum, with a zero total (both sets sum to 1): at most half that, 1.4e-3, on
# values spanning [0, 1], and about twice as much after the second axis: 3e-3.
EXACT_TOLERANCE = 1e-5
TABLE_TOLERANCE = 3e-3


def pil_bicubic(channel: np.ndarray, size: int) -> np.ndarray:
    """PIL's BICUBIC resize of one float32 channel to size x size."""
    return np.asarray(Image.fromarray(channel, mode="F").resize((size, size), Image.BICUBIC))


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (height, width, 3)).astype(np.float32)


def reference(image, box, size, resize=pil_bicubic):
    top, left, rows, columns = box
    region = image[top:top + rows, left:left + columns]
    return np.clip(np.stack([resize(region[..., c], size) for c in range(3)], -1), 0, 1)


@pytest.mark.parametrize("rows,columns,size,tolerance", [
    (16, 16, 32, EXACT_TOLERANCE),    # 2x
    (13, 21, 32, EXACT_TOLERANCE),    # 2.46x and 1.52x, on the table
    (13, 21, 48, TABLE_TOLERANCE),    # 3.7x and 2.3x: positions between table entries
])
def test_bicubic_is_keys_cubic_convolution_as_pil(rows, columns, size, tolerance):
    image = random_image(40, 50)
    box = (5, 7, rows, columns)
    expected = reference(image, box, size)
    one = crop.crop_and_resize_one(tf.constant(image), tf.constant(box), size).numpy()
    # the batched path: the same box as a normalised box of a batch of two images
    normalised = tf.constant([[5 / 40, 7 / 50, (5 + rows) / 40, (7 + columns) / 50]] * 2)
    batch = crop.bicubic_crop_and_resize(tf.constant(np.stack([image, image[::-1]])),
                                         normalised, size).numpy()
    np.testing.assert_allclose(one, expected, atol=tolerance)
    np.testing.assert_allclose(batch[0], expected, atol=tolerance)
    np.testing.assert_allclose(batch[1], reference(image[::-1], box, size), atol=tolerance)
    # The comparison can tell kernels apart: bilinear is far outside the tolerance.
    bilinear = reference(image, box, size, lambda c, s: np.asarray(
        Image.fromarray(c, mode="F").resize((s, s), Image.BILINEAR)))
    assert np.abs(bilinear - expected).max() > 10 * TABLE_TOLERANCE


def test_batched_bicubic_is_tf_image_resize_of_the_whole_pixel_box():
    """Also when shrinking (no antialiasing, as the official code), where PIL differs."""
    rng = np.random.default_rng(3)
    images = tf.constant(rng.uniform(0, 1, (16, 30, 40, 3)).astype(np.float32))
    for size in (24, 50):  # mostly downsampling, upsampling
        boxes = SimCLRAugment(size, seed=9)._crop_boxes(images)  # the same draws as below
        views = SimCLRAugment(size, seed=9, resize_method="bicubic")._crop(images).numpy()
        pixels = crop.pixel_boxes(boxes, 30, 40).numpy()
        for image, view, (top, left, rows, columns) in zip(images, views, pixels):
            expected = tf.image.resize(image[top:top + rows, left:left + columns],
                                       [size, size], method="bicubic")
            np.testing.assert_allclose(view, np.clip(expected, 0, 1), atol=EXACT_TOLERANCE)
        bilinear = SimCLRAugment(size, seed=9, resize_method="bilinear")._crop(images)
        assert np.abs(bilinear.numpy() - views).max() > 0.05  # a different interpolation


def test_batched_bicubic_keeps_a_static_batch_size():
    """Gradient caching splits the views by their static batch size."""
    for method in crop.RESIZE_METHODS:
        traced = tf.function(SimCLRAugment(16, resize_method=method)).get_concrete_function(
            tf.TensorSpec([32, 20, 20, 3], tf.uint8))
        assert traced.output_shapes.as_list() == [32, 16, 16, 3], method


def test_pixel_boxes_snap_inside_the_image():
    boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 0.75, 0.5], [0.99, 0.0, 1.0, 0.001]])
    np.testing.assert_array_equal(crop.pixel_boxes(boxes, 300, 400).numpy(),
                                  [[0, 0, 300, 400], [150, 100, 75, 100], [297, 0, 3, 1]])


def test_boxes_are_drawn_on_the_image_size_given():
    """Area fractions and pixel aspect ratios of the boxes of a 300 x 400 image."""
    boxes = crop.sample_boxes(crop.stateless_uniform(tf.constant([1, 2])), 300, 400, 4000,
                              area=(0.2, 0.6)).numpy()
    heights = (boxes[:, 2] - boxes[:, 0]) * 300
    widths = (boxes[:, 3] - boxes[:, 1]) * 400
    area = heights * widths / (300 * 400)
    aspect = widths / heights
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert aspect.min() >= 0.75 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert aspect.min() < 0.8 and aspect.max() > 1.25  # the whole range, in pixels
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
