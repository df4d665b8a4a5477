"""SimCLRAugment: shapes and range, randomness and seeds, and the paper's parameter ranges."""
import colorsys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.augment import SimCLRAugment, saturation_factor
from keras_simclr.multicrop import MultiCropAugment


@pytest.mark.parametrize("in_size,dtype", [((16, 16), np.uint8), ((40, 24), np.float32)])
@pytest.mark.parametrize("out_size", [16, 32])
def test_views_shape_range_and_dtype(in_size, dtype, out_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, *in_size, 3))
    images = (images * 255).astype(np.uint8) if dtype == np.uint8 else images.astype(dtype)
    views = SimCLRAugment(out_size, seed=1)(images).numpy()
    assert views.shape == (6, out_size, out_size, 3)
    assert views.dtype == np.float32
    assert views.min() >= 0.0 and views.max() <= 1.0


def test_views_differ_and_repeat_with_seed(tiny_images):
    images, _ = tiny_images
    augment = SimCLRAugment(16, seed=7)
    first, second = augment(images).numpy(), augment(images).numpy()
    assert not np.allclose(first, second)
    # Each image's two views differ, not just the batch as a whole.
    assert np.all(np.abs(first - second).reshape(len(images), -1).max(axis=1) > 1e-3)
    again = SimCLRAugment(16, seed=7)
    np.testing.assert_array_equal(again(images).numpy(), first)
    np.testing.assert_array_equal(again(images).numpy(), second)
    assert not np.allclose(SimCLRAugment(16, seed=8)(images).numpy(), first)


def test_runs_in_graph_without_autograph_and_in_tf_data(tiny_images):
    images, _ = tiny_images
    augment = SimCLRAugment(16, blur_prob=0.5, solarize_prob=0.2, seed=3)
    graph = tf.function(augment, autograph=False)
    assert graph(images).shape == (128, 16, 16, 3)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(32).map(augment)
    assert next(iter(dataset)).shape == (32, 16, 16, 3)


def test_jitter_parameters_cover_the_paper_ranges():
    for s in (0.5, 1.0):
        params = {k: v.numpy().ravel() for k, v in
                  SimCLRAugment(32, jitter_strength=s, seed=0).jitter_parameters(20000).items()}
        low, high = 1 - 0.8 * s, 1 + 0.8 * s
        bounds = {
            "brightness_delta": (-0.8 * s, 0.8 * s),
            "contrast_multiplier": (low, high),
            "saturation_multiplier": (low, high),
            "hue_delta": (-0.2 * s, 0.2 * s),
        }
        for name, (lo, hi) in bounds.items():
            values = params[name]
            assert values.min() >= lo and values.max() <= hi, name
            # Uniform over the whole range: both ends are reached, the mean is central.
            width = hi - lo
            assert values.min() < lo + 0.01 * width and values.max() > hi - 0.01 * width, name
            assert abs(values.mean() - (lo + hi) / 2) < 0.02 * width, name


def test_keras_cv_ops_apply_paper_multipliers():
    """The conversions to keras-cv factors give the paper's saturation and hue changes."""
    augment = SimCLRAugment(4)
    rgb = (0.8, 0.4, 0.3)  # saturation 0.625
    pixel = tf.constant(np.array(rgb, np.float32).reshape(1, 1, 1, 3))
    h0, s0, v0 = colorsys.rgb_to_hsv(*rgb)
    for multiplier in (0.6, 1.4):
        out = augment._saturation.augment_images(pixel, tf.constant([saturation_factor(multiplier)]))
        assert colorsys.rgb_to_hsv(*out.numpy().ravel())[1] == pytest.approx(s0 * multiplier, abs=1e-4)
    out = augment._hue.augment_images(pixel, tf.constant([0.1]))
    assert colorsys.rgb_to_hsv(*out.numpy().ravel())[0] == pytest.approx((h0 + 0.1) % 1, abs=1e-4)
    out = augment._brightness.augment_images(pixel, tf.constant([[[[0.1]]]]))
    np.testing.assert_allclose(out.numpy().ravel(), np.array(rgb) + 0.1, atol=1e-6)


def test_crop_area_and_aspect_within_bounds():
    augment = SimCLRAugment(32, seed=4)
    boxes = augment._crop_boxes(tf.zeros((5000, 48, 64, 3))).numpy()
    height, width = (boxes[:, 2] - boxes[:, 0]), (boxes[:, 3] - boxes[:, 1])
    area = height * width
    aspect = (width * 64) / (height * 48)
    assert np.all(boxes >= 0) and np.all(boxes <= 1 + 1e-6)
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    inside = area < 0.999  # crops that did not fall back to the whole image
    assert np.all((aspect[inside] > 0.75 - 1e-4) & (aspect[inside] < 4 / 3 + 1e-4))
    # Rejection of crops that do not fit favours smaller areas (as in torchvision and
    # tf.image.sample_distorted_bounding_box): below U(0.08, 1)'s mean, spanning the range.
    assert 0.3 < area.mean() < 0.54
    assert area.min() < 0.09 and np.quantile(area, 0.99) > 0.9


def test_probabilities_apply_per_image():
    images = np.full((2000, 8, 8, 3), 0.5, np.float32)
    images[..., 0] = 0.9  # a colourful image: grayscale is visible as equal channels
    augment = SimCLRAugment(8, crop_area=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                            grayscale_prob=0.2, seed=5)
    views = augment(images).numpy()
    gray = np.all(np.abs(views[..., 0] - views[..., 1]) < 1e-5, axis=(1, 2))
    assert gray.mean() == pytest.approx(0.2, abs=0.03)


def test_gaussian_blur_smooths_and_keeps_mean():
    rng = np.random.default_rng(6)
    images = rng.uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)
    augment = SimCLRAugment(64, crop_area=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                            grayscale_prob=0.0, blur_prob=1.0, blur_sigma=(2.0, 2.0), seed=0)
    blurred = augment(images).numpy()
    assert blurred.std() < 0.5 * images.std()
    assert blurred.mean() == pytest.approx(images.mean(), abs=0.01)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="jitter_prob"):
        SimCLRAugment(32, jitter_prob=1.5)
    with pytest.raises(ValueError, match="crop_area"):
        SimCLRAugment(32, crop_area=(0.0, 1.0))
    with pytest.raises(ValueError, match="resize_method"):
        SimCLRAugment(32, resize_method="area")
    with pytest.raises(ValueError, match="brightness"):
        SimCLRAugment(32, brightness="v2")


def test_config_round_trip():
    augment = SimCLRAugment(24, jitter_strength=1.0, blur_prob=0.5, seed=3)
    clone = SimCLRAugment.from_config(augment.get_config())
    assert clone.get_config() == augment.get_config()


def test_config_round_trip_keeps_resize_method_and_brightness():
    augment = SimCLRAugment(24, resize_method="bilinear", brightness="multiplicative")
    config = augment.get_config()
    assert config["resize_method"] == "bilinear" and config["brightness"] == "multiplicative"
    clone = SimCLRAugment.from_config(config)
    assert (clone.resize_method, clone.brightness) == ("bilinear", "multiplicative")
    assert SimCLRAugment(24).resize_method == "bicubic"  # the library default: the paper's


def test_configs_saved_before_resize_method_and_brightness_load_as_they_were(tiny_images):
    """An old `.keras` file has neither key: it keeps bilinear crops and additive brightness."""
    images, _ = tiny_images
    serialized = keras.saving.serialize_keras_object(SimCLRAugment(16, seed=2))
    for key in ("resize_method", "brightness"):
        del serialized["config"][key]
    old = keras.saving.deserialize_keras_object(serialized)
    assert (old.resize_method, old.brightness) == ("bilinear", "additive")
    same = SimCLRAugment(16, seed=2, resize_method="bilinear", brightness="additive")
    np.testing.assert_array_equal(old(images).numpy(), same(images).numpy())
    multicrop = keras.saving.serialize_keras_object(MultiCropAugment(old, small_views=1))
    for key in ("resize_method", "brightness"):
        multicrop["config"]["full"]["config"].pop(key, None)
    loaded = keras.saving.deserialize_keras_object(multicrop)
    assert loaded.full.resize_method == loaded.small.resize_method == "bilinear"


@pytest.mark.parametrize("brightness", ["additive", "multiplicative"])
def test_brightness_is_the_sampled_shift_or_factor(brightness):
    """On flat grey images contrast, saturation and hue change nothing: what is left is
    brightness. Two batches at different grey levels draw the same parameters (same seed),
    so image i became x + delta_i (additive) or x * factor_i (multiplicative)."""
    s = 0.5
    views = {}
    for level in (0.45, 0.55):
        augment = SimCLRAugment(8, jitter_strength=s, jitter_prob=1.0, grayscale_prob=0.0,
                                brightness=brightness, seed=4)
        views[level] = augment(np.full((500, 8, 8, 3), level, np.float32)).numpy()
        assert np.ptp(views[level], axis=(1, 2, 3)).max() < 1e-5  # still flat
    low, high = views[0.45][:, 0, 0, 0], views[0.55][:, 0, 0, 0]
    if brightness == "multiplicative":
        factor = high / 0.55
        np.testing.assert_allclose(low / 0.45, factor, rtol=1e-4)
        lo, hi = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
    else:
        factor = high - 0.55
        np.testing.assert_allclose(low - 0.45, factor, atol=1e-5)
        lo, hi = -0.8 * s, 0.8 * s
    assert factor.min() >= lo - 1e-5 and factor.max() <= hi + 1e-5
    assert factor.min() < lo + 0.05 * (hi - lo) and factor.max() > hi - 0.05 * (hi - lo)
    params = SimCLRAugment(8, jitter_strength=s, brightness=brightness).jitter_parameters(10)
    assert ("brightness_multiplier" in params) == (brightness == "multiplicative")


def test_example_crops_are_seeded_per_example():
    augment = SimCLRAugment(20, seed=None)
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8))
    seed = tf.constant([5, 0], tf.int64)
    first, second = augment.example_crops(image, seed)
    again = augment.example_crops(image, seed)
    assert first.shape == (20, 20, 3) and first.dtype == tf.float32
    np.testing.assert_array_equal(first, again[0])
    np.testing.assert_array_equal(second, again[1])
    assert not np.allclose(first, second)
    other = augment.example_crops(image, tf.constant([6, 0], tf.int64))[0]
    assert not np.allclose(first, other)
