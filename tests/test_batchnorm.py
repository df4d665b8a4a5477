"""FusedBatchNormalization: Keras' numbers in float32, close to them in bfloat16."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.networks.batchnorm import FusedBatchNormalization


def _train_once(layer, x):
    """Output, input and gamma gradients of a weighted sum, after one training call."""
    layer.build(x.shape)
    layer.gamma.assign(tf.linspace(0.5, 1.5, x.shape[-1]))
    layer.beta.assign(tf.linspace(-0.2, 0.2, x.shape[-1]))
    x = tf.cast(x, layer.compute_dtype)
    weights = tf.random.stateless_normal(x.shape, [1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [tf.cast(t, tf.float32).numpy() for t in
            (y, dx, dgamma, dbeta, layer.moving_mean, layer.moving_variance)]


@pytest.fixture
def activations():
    return tf.random.stateless_normal((32, 6, 6, 8), [0, 1]) * 3.0 + 1.0


@pytest.fixture
def policy():
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def test_float32_is_keras_batch_normalization_exactly(activations):
    keras_bn = _train_once(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                           activations)
    fused = _train_once(FusedBatchNormalization(momentum=0.9, epsilon=1e-5), activations)
    for expected, got in zip(keras_bn, fused):
        np.testing.assert_array_equal(got, expected)


def test_bfloat16_training_is_fused_and_close_to_keras(activations, policy):
    policy("mixed_bfloat16")
    keras_bn = _train_once(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                           activations)
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = _train_once(layer, activations)
    assert layer._fuses(tf.zeros((1, 2, 2, 8), tf.bfloat16), True, None)
    y, dx, dgamma, dbeta, moving_mean, moving_variance = fused
    # bfloat16 keeps 8 bits: outputs of about unit size agree to a few of its steps.
    np.testing.assert_allclose(y, keras_bn[0], atol=0.05)
    np.testing.assert_allclose(dx, keras_bn[1], atol=0.02)
    np.testing.assert_allclose(dgamma, keras_bn[2], rtol=0.02, atol=0.5)
    np.testing.assert_allclose(dbeta, keras_bn[3], rtol=0.02, atol=0.5)
    # The moving statistics use the biased batch variance, as Keras does.
    np.testing.assert_allclose(moving_mean, keras_bn[4], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(moving_variance, keras_bn[5], rtol=1e-2)


def test_inference_and_synchronized_take_keras_path(activations, policy):
    policy("mixed_bfloat16")
    x = tf.cast(activations, tf.bfloat16)
    assert not FusedBatchNormalization()._fuses(x, False, None)
    assert not FusedBatchNormalization(synchronized=True)._fuses(x, True, None)
    assert not FusedBatchNormalization()._fuses(tf.zeros((4, 8), tf.bfloat16), True, None)


def test_config_round_trip():
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer="zeros")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is FusedBatchNormalization
    assert clone.get_config() == layer.get_config()
