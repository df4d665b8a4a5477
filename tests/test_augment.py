"""SimCLRAugment: shapes and range, randomness and seeds, and the paper's parameter ranges."""
import colorsys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.views import augment, color
from keras_simclr.views.augment import SimCLRAugment
from keras_simclr.views.multicrop import MultiCropAugment


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


def _one_op(op, value, batch=1):
    """Jitter parameters that change nothing but operation `op`, set to `value`."""
    params = {"brightness_delta": tf.zeros((batch, 1, 1, 1)),
              "contrast_multiplier": tf.ones((batch, 1, 1, 1)),
              "saturation_multiplier": tf.ones((batch,)), "hue_delta": tf.zeros((batch,))}
    name = ("brightness_delta", "contrast_multiplier", "saturation_multiplier", "hue_delta")[op]
    params[name] = tf.fill(params[name].shape, value)
    return params


def test_jitter_ops_apply_paper_multipliers():
    """Saturation multiplies S, hue adds to H (colorsys), brightness adds to every channel."""
    rgb = (0.8, 0.4, 0.3)  # saturation 0.625
    pixel = tf.constant(np.array(rgb, np.float32).reshape(1, 1, 1, 3))
    h0, s0, _ = colorsys.rgb_to_hsv(*rgb)
    order = tf.zeros((1,), tf.int64)
    for multiplier in (0.6, 1.4):
        out = color.color_jitter(pixel, _one_op(color.SATURATION, multiplier), order)
        saturation = colorsys.rgb_to_hsv(*out.numpy().ravel())[1]
        assert saturation == pytest.approx(s0 * multiplier, abs=1e-4)
    out = color.color_jitter(pixel, _one_op(color.HUE, 0.1), order)
    assert colorsys.rgb_to_hsv(*out.numpy().ravel())[0] == pytest.approx((h0 + 0.1) % 1, abs=1e-4)
    out = color.color_jitter(pixel, _one_op(color.BRIGHTNESS, 0.1), order)
    np.testing.assert_allclose(out.numpy().ravel(), np.array(rgb) + 0.1, atol=1e-6)


def test_jitter_order_is_drawn_per_image():
    """`_color_jitter` applies the four operations with the drawn parameters, each image in
    its own drawn order: the same seed's draws, applied one image at a time with tf.image."""
    images = tf.constant(np.random.default_rng(3).uniform(0, 1, (64, 6, 6, 3)), tf.float32)
    views = SimCLRAugment(6, jitter_strength=1.0, seed=9)._color_jitter(images).numpy()
    twin = SimCLRAugment(6, jitter_strength=1.0, seed=9)
    params = twin.jitter_parameters(64)
    order = twin._rng.uniform((64,), 0, 24, dtype=tf.int64).numpy()
    assert len(set(order)) > 12  # many orders in one batch
    for i in range(64):
        expected = reference_jitter(images[i], {k: v[i] for k, v in params.items()},
                                    color.ORDERS[order[i]])
        np.testing.assert_allclose(views[i], expected, atol=1e-3)


def reference_jitter(image, params, order):
    """TensorFlow's own operations, one by one, each clipped to [0, 1] (as keras-cv's)."""
    ops = {
        color.BRIGHTNESS: (
            lambda x: x * tf.reshape(params["brightness_multiplier"], [])
            if "brightness_multiplier" in params else
            tf.image.adjust_brightness(x, tf.reshape(params["brightness_delta"], []))),
        color.CONTRAST: lambda x: tf.image.adjust_contrast(
            x, tf.reshape(params["contrast_multiplier"], [])),
        color.SATURATION: lambda x: tf.image.adjust_saturation(
            x, tf.reshape(params["saturation_multiplier"], [])),
        color.HUE: lambda x: tf.image.adjust_hue(x, tf.reshape(params["hue_delta"], [])),
    }
    for op in order:
        image = tf.clip_by_value(ops[op](image), 0.0, 1.0)
    return image.numpy()


@pytest.mark.parametrize("brightness", ["additive", "multiplicative"])
def test_one_pass_jitter_matches_tf_image_in_every_order(brightness):
    """Every one of the 24 orders, on random images (saturated, grey and clipped pixels
    included) with the strongest jitter the paper uses: within 1e-3 of tf.image.adjust_*."""
    rng = np.random.default_rng(1)
    batch = 96
    images = rng.uniform(0, 1, (batch, 8, 8, 3)).astype(np.float32)
    images[::5, :2] = images[::5, :2, :, :1]  # grey pixels
    images[1::5, :2, :, 0] = 1.0  # saturated red
    augment = SimCLRAugment(8, jitter_strength=1.0, brightness=brightness, seed=2)
    params = augment.jitter_parameters(batch)
    order = np.arange(batch) % len(color.ORDERS)
    views = color.color_jitter(tf.constant(images), params, tf.constant(order)).numpy()
    for i in range(batch):
        expected = reference_jitter(tf.constant(images[i]), {k: v[i] for k, v in params.items()},
                                    color.ORDERS[order[i]])
        np.testing.assert_allclose(views[i], expected, atol=1e-3,
                                   err_msg=str(color.ORDERS[order[i]]))


def test_phase_table_runs_every_order_in_order():
    """Each order's operations go to phases of their kind, in the order's sequence; two
    operations share a phase only if they are saturation and hue next to each other."""
    table = color.phase_table()
    for order, phases in zip(color.ORDERS, table):
        sequence = [phases[op] for op in order]
        assert sequence == sorted(sequence)
        for op in order:
            kind = "rgb" if op in (color.BRIGHTNESS, color.CONTRAST) else "hsv"
            assert color.PHASES[phases[op]] == kind
        for first, second in zip(order, order[1:]):
            if phases[first] == phases[second]:
                assert {first, second} == {color.SATURATION, color.HUE}


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


def test_color_distortion_changes_colours_in_place():
    # A distilled student's noise: each image's pixels go through one colour map, so the
    # picture stays where it was (no flip, no crop) while its colours change
    images = np.zeros((32, 8, 8, 3), "float32")
    images[:, :, 0] = [0.9, 0.2, 0.1]  # a red left column on dark blue
    images[:, :, 1:] = [0.1, 0.2, 0.6]
    noised = augment.color_distortion(8, 0.5, seed=0).after_crop(images).numpy()
    assert not np.allclose(noised, images, atol=1e-3)
    np.testing.assert_allclose(noised[:, :, 1:], noised[:, :, 1:2].repeat(7, 2), atol=1e-6)
    assert np.abs(noised[:, :, 0] - noised[:, :, 1]).max(axis=(1, 2)).min() > 1e-3
