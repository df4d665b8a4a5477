"""FusedBatchNormalization: Keras' numbers through the fused kernel, in float32 and bfloat16."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.networks import batchnorm
from keras_simclr.networks.batchnorm import FusedBatchNormalization, fuses
from keras_simclr.networks.heads import ProjectionHead

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "_distribute_helper.py")
FIXTURES = os.path.join(HERE, "fixtures", "release_0_1_0")


def on_keras_batch_normalization(model):
    """A copy of `model` with Keras' BatchNormalization for every fused one, same weights."""
    def as_keras(layer):
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=as_keras)
    copy.set_weights(model.get_weights())
    return copy


def _run_once(layer, x, training=True):
    """Output, input/gamma/beta gradients of a weighted sum and the moving statistics
    after one call (in a tf.function, as in training)."""
    layer.build(x.shape)
    channels = x.shape[-1]
    layer.gamma.assign(tf.linspace(0.5, 1.5, channels))
    layer.beta.assign(tf.linspace(-0.2, 0.2, channels))
    layer.moving_mean.assign(tf.linspace(-1.0, 1.0, channels))
    layer.moving_variance.assign(tf.linspace(0.5, 2.0, channels))
    x = tf.cast(x, layer.compute_dtype)
    weights = tf.random.stateless_normal(x.shape, [1, 2])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))

    return [tf.cast(t, tf.float32).numpy() for t in
            (*step(x), layer.moving_mean, layer.moving_variance)]


def _fused_ops(layer, x, training):
    """Op types of the layer's graph (forward and gradient)."""
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return tape.gradient(y, x)

    graph = step.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.fixture
def activations():
    return tf.random.stateless_normal((32, 6, 6, 8), [0, 1]) * 3.0 + 1.0


@pytest.fixture
def policy():
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def _assert_close(got, expected, tolerance=1e-5):
    """Within `tolerance` of the expected tensor's scale (its largest magnitude)."""
    for g, e in zip(got, expected):
        assert np.max(np.abs(g - e)) <= tolerance * max(np.max(np.abs(e)), 1e-30)


@pytest.mark.parametrize("training", [True, False])
def test_float32_is_keras_batch_normalization_through_the_fused_kernel(activations, training):
    keras_bn = _run_once(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                         activations, training)
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    _assert_close(_run_once(layer, activations, training), keras_bn)
    ops = _fused_ops(FusedBatchNormalization(), activations, training)
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= ops
    assert not {"SquaredDifference", "Rsqrt"} & ops


def test_float32_moments_keep_their_digits_when_the_mean_dwarfs_the_spread():
    # 1,000 standard deviations from zero: the kernel's one-pass variance alone puts the
    # outputs 2.9e-4 off (6.7e-5 of their scale), shifted first 7.8e-7.
    x = tf.random.stateless_normal((32, 6, 6, 8), [5, 6]) + 1000.0
    x64 = x.numpy().astype(np.float64)
    mean, variance = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    layer = FusedBatchNormalization(momentum=0.0, epsilon=1e-5)
    outputs = layer(x, training=True).numpy()
    _assert_close([outputs], [(x64 - mean) / np.sqrt(variance + 1e-5)])
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4)


def test_a_frozen_layer_infers_as_keras_does(activations):
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    keras_bn.trainable = layer.trainable = False
    expected = _run_once(keras_bn, activations)
    _assert_close(_run_once(layer, activations), expected)
    assert np.array_equal(expected[4], tf.linspace(-1.0, 1.0, 8).numpy())  # not updated


def test_bfloat16_training_is_fused_and_close_to_keras(activations, policy):
    policy("mixed_bfloat16")
    keras_bn = _run_once(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                         activations)
    fused = _run_once(FusedBatchNormalization(momentum=0.9, epsilon=1e-5), activations)
    assert "FusedBatchNormV3" in _fused_ops(FusedBatchNormalization(),
                                            tf.cast(activations, tf.bfloat16), True)
    y, dx, dgamma, dbeta, moving_mean, moving_variance = fused
    # bfloat16 keeps 8 bits: outputs of about unit size agree to a few of its steps.
    np.testing.assert_allclose(y, keras_bn[0], atol=0.05)
    np.testing.assert_allclose(dx, keras_bn[1], atol=0.02)
    np.testing.assert_allclose(dgamma, keras_bn[2], rtol=0.02, atol=0.5)
    np.testing.assert_allclose(dbeta, keras_bn[3], rtol=0.02, atol=0.5)
    # The moving statistics use the biased batch variance, as Keras does.
    np.testing.assert_allclose(moving_mean, keras_bn[4], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(moving_variance, keras_bn[5], rtol=1e-2)


def test_which_layers_and_inputs_take_the_fused_kernel(activations):
    assert fuses(FusedBatchNormalization(), activations)
    assert fuses(FusedBatchNormalization(), tf.zeros((4, 8)))  # vectors, as 1x1 maps
    assert fuses(FusedBatchNormalization(center=False), activations)  # offset 0
    assert not fuses(FusedBatchNormalization(synchronized=True), activations)
    assert not fuses(FusedBatchNormalization(), activations, tf.ones((32, 6, 6)))
    assert not fuses(FusedBatchNormalization(), tf.zeros((4, 5, 8)))
    assert not fuses(FusedBatchNormalization(scale=False), activations)
    assert not fuses(FusedBatchNormalization(), tf.cast(activations, tf.float64))


def test_ordinary_activations_take_the_kernel_unshifted(activations):
    # The shift is a pass over the whole tensor: where the first examples' means lie within
    # ten standard deviations, the outputs are the bare kernel's, bit for bit.
    layer = FusedBatchNormalization(epsilon=1e-5)
    layer.build(activations.shape)
    bare, *_ = tf.raw_ops.FusedBatchNormV3(
        x=activations, scale=layer.gamma, offset=layer.beta, mean=tf.constant([]),
        variance=tf.constant([]), epsilon=1e-5, exponential_avg_factor=1.0,
        data_format="NHWC", is_training=True)
    assert np.array_equal(layer(activations, training=True).numpy(), bare.numpy())


def test_the_projection_head_normalises_through_the_fused_kernel(monkeypatch):
    # Its BN layers stay Keras' class (saved weights are addressed by the class name) and
    # compute Keras' numbers through the fused kernel, the last one without an offset.
    h = tf.random.stateless_normal((32, 12), [7, 8]) * 2.0 + 0.5

    def one_step():
        keras.utils.set_random_seed(0)
        head = ProjectionHead(depth=3, hidden_dim=16, output_dim=8)
        head.build(h.shape)
        with tf.GradientTape() as tape:
            tape.watch(h)
            z = head(h, training=True)
            loss = tf.reduce_sum(z * tf.random.stateless_normal(z.shape, [1, 2]))
        gradients = tape.gradient(loss, [h, *head.trainable_weights])
        values = [t.numpy() for t in (z, *gradients, *head.non_trainable_weights)]
        graph = tf.function(lambda h: head(h, training=True)).get_concrete_function(h).graph
        return values, {op.type for op in graph.get_operations()}

    fused, fused_ops = one_step()
    assert "FusedBatchNormV3" in fused_ops
    monkeypatch.setattr(batchnorm, "fuses", lambda *args: False)
    reference, reference_ops = one_step()
    assert "FusedBatchNormV3" not in reference_ops
    _assert_close(fused, reference)


def test_two_synchronized_replicas_normalise_with_the_global_batch(tmp_path):
    # Each replica holds half the batch, its halves shifted apart: per-replica moments
    # would differ from the global ones by far more than the tolerance.
    out = str(tmp_path / "batchnorm.npz")
    result = subprocess.run([sys.executable, HELPER, "batchnorm", out], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = dict(np.load(out))
    one_device = [runs[f"one_device/{i}"] for i in range(6)]
    _assert_close([runs[f"synchronized/{i}"] for i in range(6)], one_device)
    for i in (0, 5):  # outputs and moving variance with per-replica moments: far off
        assert np.max(np.abs(runs[f"unsynchronized/{i}"] - one_device[i])) > 0.1


def test_the_previous_release_model_computes_what_keras_batch_normalization_does():
    # a model saved by release 0.1.0 (FusedBatchNormalization fused bfloat16 only then)
    encoder = keras.saving.load_model(os.path.join(FIXTURES, "model.keras")).encoder
    assert sum(isinstance(layer, FusedBatchNormalization) for layer in encoder.layers) == 12

    reference = on_keras_batch_normalization(encoder)
    images = tf.random.stateless_uniform((8, 16, 16, 3), [3, 4])
    for training in (False, True):
        _assert_close([encoder(images, training=training).numpy()],
                      [reference(images, training=training).numpy()])


def test_config_round_trip():
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer="zeros")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is FusedBatchNormalization
    assert clone.get_config() == layer.get_config()
