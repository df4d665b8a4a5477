"""BatchNormalization that trains bfloat16 activations with TensorFlow's fused kernel.

Keras' BatchNormalization casts bfloat16 and float16 inputs to float32, computes the
moments and the normalisation with separate element-wise ops and reductions (and as many
again for the gradient), and casts back: on a CPU, in a mixed_bfloat16 train step of a small
ResNet, that is more CPU time than the float32 step spends on BatchNormalization
(bench/profile_step.py). `FusedBatchNormalization` runs such inputs in training through
`FusedBatchNormV3` instead, which oneDNN implements for bfloat16 with float32 statistics:
one op forward, one backward. float32 inputs, inference, synchronized BN, masks and renorm
take Keras' own path, so float32 training computes exactly what Keras computes.
"""
import keras
import tensorflow as tf

_HALF = ("bfloat16", "float16")


@keras.saving.register_keras_serializable(package="keras_simclr")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with the fused path for half-precision training.

    Same arguments, weights and config; the moving statistics are updated as Keras does
    (with the biased batch variance).
    """

    def _fuses(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None
                and keras.backend.backend() == "tensorflow"
                and keras.backend.standardize_dtype(inputs.dtype) in _HALF
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and not self.synchronized and not self.renorm
                and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        empty = tf.constant([], tf.float32)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32), mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel returns the unbiased variance (n / (n - 1)); Keras averages the biased.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return outputs
