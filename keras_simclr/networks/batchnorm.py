"""BatchNormalization through TensorFlow's fused kernel, in training and in inference.

Keras' BatchNormalization computes the moments and the normalisation with separate
element-wise ops and reductions (`Mean`, `SquaredDifference`, `Mul`, ...; as many again for
the gradient), and for bfloat16 or float16 inputs casts to float32 and back around them: in
the train step of a small ResNet on a CPU that is about a third of the step's CPU time
(bench/profile_step.py). `FusedBatchNormalization` runs 4-D channels-last inputs through
`FusedBatchNormV3` instead (float32, bfloat16 and float16 inputs, float32 statistics): one
op forward, one backward, in training (batch moments) and in inference (moving statistics).
It computes what Keras' layer computes, to float32 rounding: outputs, gradients and moving
statistics agree within 1e-5 of their scale (tests/test_batchnorm.py).

The CPU kernel takes the variance in one pass, E[x^2] - E[x]^2, which loses float32's
digits where a channel's mean is large against its spread (1,000 standard deviations: the
outputs 2.9e-4 off a float64 reference; it moved the official selective-kernel ResNet-50's
head output 5e-2 on 3-example batch statistics). Float32 inputs are therefore shifted first
by a per-channel constant near the mean (the first example's spatial mean, outside the
gradient): the normalisation does not depend on the shift, and the error falls to 8e-7.
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
without scale or center also keep Keras' path.
"""
import keras
import tensorflow as tf

_FUSED_DTYPES = ("float32", "bfloat16", "float16")  # what FusedBatchNormV3 takes


@keras.saving.register_keras_serializable(package="keras_simclr")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` through the fused kernel where it applies.

    Same arguments, weights and config; the moving statistics are updated as Keras does
    (with the biased batch variance).
    """

    def _fuses(self, inputs, mask) -> bool:
        return (mask is None and keras.backend.backend() == "tensorflow"
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and not self.synchronized and not self.renorm
                and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        scale = tf.cast(self.gamma, tf.float32)
        offset = tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):  # Keras' rule: frozen layers infer
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
            return outputs
        shift = 0.0
        if inputs.dtype == tf.float32:  # see the module's docstring
            shift = tf.stop_gradient(tf.reduce_mean(inputs[:1], axis=[0, 1, 2]))
        empty = tf.constant([], tf.float32)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs - shift, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        mean = mean + shift
        # The kernel returns the unbiased variance (n / (n - 1)); Keras averages the biased.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return outputs
