"""SmallMapConv2D: the matmul path equals Conv2D in outputs and gradients, and is taken where meant."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.networks import backbones, conv
from keras_simclr.networks.conv import SmallMapConv2D, tap_matrix_1d

CASES = [  # (height, width, in, out, kernel, strides, padding)
    (1, 1, 8, 5, 3, 1, "same"),
    (2, 2, 4, 6, 3, 1, "same"),
    (2, 2, 4, 6, 3, 2, "same"),
    (3, 3, 2, 3, 3, 1, "same"),
    (3, 3, 2, 3, 3, 2, "valid"),
    (2, 2, 3, 4, 2, 1, "same"),  # even kernel: "same" pads the end more
    (1, 2, 3, 4, 3, 1, "same"),  # rectangular map
    (2, 3, 3, 4, (3, 2), (1, 2), "same"),
    (1, 1, 3, 4, 7, 2, "same"),
]


@pytest.mark.parametrize("height,width,cin,cout,kernel,strides,padding", CASES)
def test_matmul_path_matches_conv2d_outputs_and_gradients(height, width, cin, cout, kernel, strides, padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((5, height, width, cin)), tf.float32)
    fast = SmallMapConv2D(cout, kernel, strides=strides, padding=padding, activation="relu")
    reference = keras.layers.Conv2D(cout, kernel, strides=strides, padding=padding, activation="relu")
    fast.build(x.shape)
    reference.build(x.shape)
    reference.set_weights([rng.standard_normal(w.shape).astype("float32") for w in reference.weights])
    fast.set_weights(reference.get_weights())
    assert fast.uses_matmul(x.shape)

    def value_and_grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y] + tape.gradient(loss, [x] + layer.trainable_weights)

    for got, want in zip(value_and_grads(fast), value_and_grads(reference)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_matmul_path_in_bfloat16_is_close_to_float32():
    """Under mixed_bfloat16 the dense matrix is gathered in bfloat16: the outputs and kernel
    gradient stay within bfloat16's precision of the float32 convolution's."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(0, 1, (16, 2, 2, 8)), tf.float32)
    kernel = rng.standard_normal((3, 3, 8, 6)).astype("float32") * 0.3
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        layer = SmallMapConv2D(6, 3, padding="same", use_bias=False, dtype=policy)
        layer.build(x.shape)
        layer.set_weights([kernel])
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_sum(y * y)
        results[policy] = [y.numpy(), tape.gradient(loss, layer.kernel).numpy()]
    for got, want in zip(results["mixed_bfloat16"], results["float32"]):
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * np.abs(want).max())


def test_tap_index_gathers_the_tap_matrix():
    taps_h = tap_matrix_1d(2, 3, 1, "same")
    taps = np.einsum("aby,cdz->acbdyz", taps_h, taps_h).reshape(4, 4, 9)
    index = conv.tap_index(taps)
    blocks = np.concatenate([np.eye(9), np.zeros((1, 9))])
    np.testing.assert_array_equal(blocks[index], taps)


def test_tap_matrix_follows_same_padding():
    # size 2, kernel 3, stride 2, "same": one output, padded after only, so taps 0 and 1 read data.
    taps = tap_matrix_1d(2, 3, 2, "same")
    assert taps.shape == (2, 1, 3)
    np.testing.assert_array_equal(taps[:, 0, :], [[1, 0, 0], [0, 1, 0]])
    # size 1, kernel 3, stride 1: only the centre tap meets the pixel.
    np.testing.assert_array_equal(tap_matrix_1d(1, 3, 1, "same")[0, 0], [0, 1, 0])


def test_matmul_path_only_for_maps_no_larger_than_the_kernel():
    conv3 = SmallMapConv2D(4, 3)
    assert conv3.uses_matmul((None, 3, 3, 8))
    assert not conv3.uses_matmul((None, 4, 4, 8))
    assert not conv3.uses_matmul((None, None, None, 8))
    assert not SmallMapConv2D(4, 1).uses_matmul((None, 1, 1, 8))
    assert not SmallMapConv2D(4, 3, dilation_rate=2).uses_matmul((None, 2, 2, 8))


def test_unknown_spatial_size_takes_the_convolution_path(monkeypatch):
    matmuls, original = [], conv.conv_as_matmul

    def spy(*args):
        matmuls.append(tuple(args[0].shape))
        return original(*args)

    monkeypatch.setattr(conv, "conv_as_matmul", spy)
    layer = SmallMapConv2D(4, 3, padding="same")
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2))])
    x = tf.random.uniform((2, 1, 1, 2))
    got = fn(x).numpy()
    assert matmuls == []  # traced with an unknown height and width: the convolution
    np.testing.assert_allclose(got, layer(x).numpy(), rtol=1e-5, atol=1e-6)
    assert matmuls == [(2, 1, 1, 2)]  # the known 1x1 map: the matmul, seen by the spy


def test_resnet_at_32px_runs_its_last_stages_as_matmuls_and_reloads(tmp_path):
    encoder = backbones.resnet(18, stem="imagenet", width_multiplier=0.125, input_shape=(32, 32, 3))
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(isinstance(layer, SmallMapConv2D) for layer in convs)
    on_matmul = {layer.name for layer in convs if layer.uses_matmul(layer.input.shape)}
    assert "stage4_block2_2_conv" in on_matmul and "stage3_block2_1_conv" in on_matmul
    assert not any(name.startswith(("stem", "stage1", "stage2")) for name in on_matmul)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    restored = keras.saving.load_model(path)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(restored(x).numpy(), encoder(x).numpy(), rtol=1e-5, atol=1e-6)


def test_multiply_adds_count_padding_taps_only_as_nominal():
    layer = SmallMapConv2D(5, 3, padding="same")
    inputs = keras.Input((1, 1, 4))
    layer(inputs)
    assert conv.multiply_adds(layer) == (9 * 4 * 5, 4 * 5)  # only the centre tap reads data
