"""The two-stream mixing of selective kernel convolutions (Li et al. 2019, SKNet).

SimCLRv2's SK ResNets (google-research/simclr `tf2/resnet.py`, `SK_Conv2D`) replace the
3x3 convolution of each bottleneck by one convolution to twice the channels, read as two
streams a and b. A squeeze of mean(a + b) over the map, through a 1x1 convolution, BN,
ReLU and a 1x1 convolution to twice the channels, gives per-channel logits for each
stream; the output is the softmax-weighted sum of the two streams. The convolutions and BN
are ordinary Keras layers in `backbones`; these layers are the two steps between them.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_simclr")
class SumOfHalves(keras.layers.Layer):
    """a + b for x = concat(a, b) along the channels: the streams' sum before the squeeze."""

    def call(self, inputs):
        first, second = ops.split(inputs, 2, axis=-1)
        return first + second

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@keras.saving.register_keras_serializable(package="keras_simclr")
class SelectiveMix(keras.layers.Layer):
    """[streams, logits] -> softmax-weighted sum of the two halves of `streams`.

    `streams` is (batch, H, W, 2C), `logits` (batch, 1, 1, 2C): the first C logits weigh
    the first stream, the last C the second, normalised against each other per channel.
    """

    def call(self, inputs):
        streams, logits = inputs
        weights = ops.softmax(ops.stack(ops.split(logits, 2, axis=-1)), axis=0)
        return ops.sum(ops.stack(ops.split(streams, 2, axis=-1)) * weights, axis=0)

    def compute_output_shape(self, input_shape):
        streams = input_shape[0]
        return (*streams[:-1], streams[-1] // 2)
