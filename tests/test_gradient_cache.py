"""Gradient caching: chunked steps equal plain steps (no BN), on 1 and 2 replicas."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import MultiCropAugment, SimCLR, SimCLRAugment, losses
from keras_simclr.training import gradient_cache
from keras_simclr.views import multicrop


def no_bn_simclr(seed=0, augmenter=None, loss=None):
    """A tiny SimCLR without BatchNormalization, where chunking must not change anything."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    head = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)])
    model = SimCLR(encoder, head, augmenter=augmenter, loss=loss or losses.NTXent(0.5))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.build({"view_1": (None, 8, 8, 3), "view_2": (None, 8, 8, 3)})
    return model


def relative_difference(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def _views(count=2, n=12, sizes=None, seed=0):
    rng = np.random.default_rng(seed)
    sizes = sizes or [8] * count
    return [tf.constant(rng.uniform(0, 1, (n, s, s, 3)).astype("float32")) for s in sizes]


def _gradients(model, views, chunk_size):
    model.chunk_size = chunk_size
    method = model._cached_gradients if chunk_size else model._plain_gradients
    _, gradients, loss, _, _ = method(views, None, 1)
    return [g.numpy() for g in gradients], float(loss)


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 24])
def test_chunked_gradients_equal_the_plain_step_without_bn(chunk_size):
    model = no_bn_simclr()
    views = _views()
    plain, plain_loss = _gradients(model, views, None)
    chunked, chunked_loss = _gradients(model, views, chunk_size)
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-6)
    for a, b in zip(plain, chunked):
        assert relative_difference(a, b) < 1e-5


def test_chunked_multi_crop_with_the_decoupled_loss():
    model = no_bn_simclr(loss=losses.DecoupledNTXent(0.2))
    views = _views(sizes=[8, 8, 6, 6, 6])  # two full views and three small ones
    plain, plain_loss = _gradients(model, views, None)
    chunked, chunked_loss = _gradients(model, views, 7)
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-6)
    assert max(relative_difference(a, b) for a, b in zip(plain, chunked)) < 1e-5


def test_chunked_fit_step_updates_weights_as_the_plain_one():
    views = {k: v.numpy() for k, v in zip(("view_1", "view_2"), _views(n=16, seed=3))}
    dataset = tf.data.Dataset.from_tensor_slices(views).batch(16, drop_remainder=True)
    weights = []
    for chunk_size in (None, 6):
        model = no_bn_simclr(seed=4)
        model.chunk_size = chunk_size
        history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
        weights.append((model.get_weights(), history["loss"][0]))
    assert weights[1][1] == pytest.approx(weights[0][1], rel=1e-6)
    for a, b in zip(weights[0][0], weights[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bn_moving_averages_are_updated_once_per_chunk():
    def bn_model():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((None, None, 3))
        x = keras.layers.BatchNormalization(momentum=0.5)(keras.layers.Conv2D(4, 3)(inputs))
        encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        model = SimCLR(encoder, keras.layers.Dense(4), loss=losses.NTXent(0.5), chunk_size=8)
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        return model

    views = _views(n=8, seed=9)
    model = bn_model()
    model._cached_gradients(views, None, 1)
    reference = bn_model()
    for chunk in (views[0], views[1]):  # the first pass alone: one update per chunk of 8
        reference.encoder(chunk, training=True)
    for got, want in zip(model.encoder.non_trainable_weights,
                         reference.encoder.non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert not np.allclose(model.encoder.non_trainable_weights[0].numpy(), 0.0)


def test_multi_crop_views_fit_and_save(tmp_path):
    full = SimCLRAugment(8, seed=1)
    maker = MultiCropAugment(full, small_views=2, small_view_size=6)
    images = np.random.default_rng(0).integers(0, 255, (16, 12, 12, 3), dtype=np.uint8)
    views = maker.views(tf.constant(images))
    assert [tuple(v.shape) for v in views] == [(16, 8, 8, 3)] * 2 + [(16, 6, 6, 3)] * 2
    assert len(views) == multicrop.views_per_image(2)  # what throughput and budgets count
    model = no_bn_simclr(augmenter=maker, loss=losses.DecoupledNTXent(0.3))
    model.chunk_size = 10
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8, drop_remainder=True)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"][0])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.objective, losses.DecoupledNTXent)
    assert loaded.objective.temperature == 0.3 and loaded.chunk_size == 10
    assert loaded.augmenter.small_views == 2 and loaded.augmenter.image_size == 8


def test_chunk_plan_and_dynamic_batches_are_checked():
    assert gradient_cache.chunk_slices(10, 4) == [(0, 4), (4, 4), (8, 2)]
    with pytest.raises(ValueError, match="chunk_size"):
        gradient_cache.chunk_slices(10, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        no_bn_simclr().__class__(keras.Sequential([keras.layers.Dense(2)]), chunk_size=0)


def test_chunked_step_equals_plain_on_two_replicas():
    helper = os.path.join(os.path.dirname(__file__), "_chunked_helper.py")
    out = subprocess.run([sys.executable, helper, "5"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["max_relative_difference"] < 1e-5
    assert result["chunked_loss"] == pytest.approx(result["plain_loss"], rel=1e-6)
