"""BatchNormalization through TensorFlow's fused kernel, in training and in inference.

Keras' BatchNormalization computes the moments and the normalisation with separate
element-wise ops and reductions (`Mean`, `SquaredDifference`, `Mul`, ...; as many again for
the gradient), and for bfloat16 or float16 inputs casts to float32 and back around them: in
the train step of a small ResNet on a CPU that is about a third of the step's CPU time
(bench/profile_step.py). `normalize(layer, inputs, training)` runs a Keras
BatchNormalization layer's arithmetic through `FusedBatchNormV3` instead (float32, bfloat16
and float16 inputs, float32 statistics; channels-last maps, and (batch, channels) vectors
as 1x1 maps): one op forward, one backward, in training (batch moments) and in inference
(moving statistics). It computes what Keras' layer computes, to float32 rounding: outputs,
gradients and moving statistics agree within 1e-5 of their scale (tests/test_batchnorm.py).
`FusedBatchNormalization` is the layer that calls it (the backbones'); the projection head
calls it on its Keras BatchNormalization layers, whose saved weights are addressed by that
class's name and so keep loading.

The CPU kernel takes the variance in one pass, E[x^2] - E[x]^2, which loses float32's
digits where a channel's mean is large against its spread (1,000 standard deviations: the
outputs 2.9e-4 off a float64 reference; it moved the official selective-kernel ResNet-50's
head output 5e-2 on 3-example batch statistics). Where the first examples of a float32 batch
show a channel's mean beyond ten of its standard deviations, the inputs are therefore shifted
first by those examples' per-channel mean (outside the gradient): the normalisation does not
depend on the shift, and the error falls to 8e-7. Elsewhere the error is below 1e-7 and the
shift, a pass over the whole tensor (3% of the preset's train step), is skipped.
Low-precision inputs carry fewer digits than the cancellation costs and are not shifted.
The official code builds its BN unfused, so a model imported from it computes its numbers
to float32 rounding, not bit for bit; in training mode, statistics of a few examples that
nearly agree multiply such differences (3 examples: the official SK ResNet-50 fixture's
head output ends 1.1e-2 from the release's on this path with two threads and 1.5e-2 with
one, 1.3e-3 on Keras' arithmetic), so tests/test_official.py
compares training-mode outputs with the layers on Keras' arithmetic, and this module's
tests hold the fused path to Keras' within 1e-5.

Synchronized BN keeps Keras' path: its moments come from an all-reduce over the replicas,
and the fused kernel given those moments (its inference form) would not pass gradients
through them, which training needs. Masks, renorm, other ranks and layouts, and layers
without scale also keep Keras' path.
"""
import keras
import tensorflow as tf

_FUSED_DTYPES = ("float32", "bfloat16", "float16")  # what FusedBatchNormV3 takes
_SHIFT_SAMPLE = 8  # examples whose moments decide the shift
_SHIFT_RATIO = 100.0  # shift where mean^2 > ratio * variance: beyond ten standard deviations


def fuses(layer, inputs, mask=None) -> bool:
    """Whether `normalize` takes the fused kernel for this layer and input."""
    return (mask is None and keras.backend.backend() == "tensorflow"
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
            and len(inputs.shape) in (2, 4) and layer.axis in (-1, len(inputs.shape) - 1)
            and not layer.synchronized and not layer.renorm and layer.scale)


def _shifted(maps):
    """(maps - shift, shift): the first examples' per-channel mean where it lies beyond ten
    standard deviations in some channel, else (maps, zeros); see the module's docstring."""
    sample = tf.stop_gradient(maps[:_SHIFT_SAMPLE])
    mean = tf.reduce_mean(sample, axis=[0, 1, 2])
    variance = tf.reduce_mean(tf.square(sample - mean), axis=[0, 1, 2])
    far = tf.reduce_any(tf.square(mean) > _SHIFT_RATIO * variance)
    shift = tf.where(far, mean, tf.zeros_like(mean))
    return tf.cond(far, lambda: maps - shift, lambda: maps), shift


def normalize(layer, inputs, training=None):
    """`layer(inputs, training=training)` of a built `keras.layers.BatchNormalization`
    through the fused kernel; only where `fuses(layer, inputs)`."""
    training = training and layer.trainable  # Keras' rule: frozen layers infer
    with tf.name_scope(layer.name):
        if len(inputs.shape) == 4:
            return _fused(layer, inputs, training)
        maps = tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        return tf.reshape(_fused(layer, maps, training), tf.shape(inputs))


def _fused(layer, maps, training):
    scale = tf.cast(layer.gamma, tf.float32)
    offset = (tf.cast(layer.beta, tf.float32) if layer.center
              else tf.zeros_like(scale))
    if not training:
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=maps, scale=scale, offset=offset,
            mean=tf.cast(layer.moving_mean, tf.float32),
            variance=tf.cast(layer.moving_variance, tf.float32),
            epsilon=layer.epsilon, data_format="NHWC", is_training=False)
        return outputs
    shift = 0.0
    if maps.dtype == tf.float32:
        maps, shift = _shifted(maps)
    empty = tf.constant([], tf.float32)
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=maps, scale=scale, offset=offset, mean=empty, variance=empty,
        epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True)
    mean = mean + shift
    # The kernel returns the unbiased variance (n / (n - 1)); Keras averages the biased.
    count = tf.cast(tf.size(maps) // tf.shape(maps)[-1], tf.float32)
    variance = variance * (count - 1.0) / count
    layer.moving_mean.assign(layer.moving_mean * layer.momentum
                             + tf.cast(mean, layer.moving_mean.dtype) * (1.0 - layer.momentum))
    layer.moving_variance.assign(
        layer.moving_variance * layer.momentum
        + tf.cast(variance, layer.moving_variance.dtype) * (1.0 - layer.momentum))
    return outputs


@keras.saving.register_keras_serializable(package="keras_simclr")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` through the fused kernel where it applies.

    Same arguments, weights and config; the moving statistics are updated as Keras does
    (with the biased batch variance).
    """

    def call(self, inputs, training=None, mask=None):
        if not fuses(self, inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return normalize(self, inputs, training)
