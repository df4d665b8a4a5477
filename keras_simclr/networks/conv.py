"""Conv2D that runs convolutions over tiny feature maps as one dense matrix product.

At 32 px the ImageNet stem leaves 2x2 and 1x1 maps in the last ResNet stages, where a 3x3
"same" convolution mostly multiplies padding: on a 1x1 map only the centre tap meets data.
oneDNN still runs these as convolutions and reached 30-35 GFLOP/s there against 140 on the
8x8 maps (bench/RESULTS.md), so they took half of a ResNet-18 training step. When a map has
no more pixels than the kernel has taps, `SmallMapConv2D` instead unrolls the kernel into
the dense (H*W*C_in, H_out*W_out*C_out) matrix of the convolution and applies it with one
matmul: the same outputs and gradients, fewer multiply-adds than the convolution, and the
fastest kernel a CPU has. Larger maps, dilation and groups take the ordinary path.
"""
import keras
import numpy as np
from keras import ops


def tap_matrix_1d(size, kernel, stride, padding):
    """0/1 array [input position, output position, kernel tap] along one spatial axis.

    Entry (i, j, t) is 1 when tap t of the kernel placed for output j reads input i, with
    Keras' padding rules ("same" pads the end more when the total is odd).
    """
    if padding == "same":
        out = -(-size // stride)
        pad_before = max((out - 1) * stride + kernel - size, 0) // 2
    else:
        out = (size - kernel) // stride + 1
        pad_before = 0
    taps = np.zeros((size, out, kernel), np.float32)
    for j in range(out):
        for t in range(kernel):
            i = j * stride + t - pad_before
            if 0 <= i < size:
                taps[i, j, t] = 1.0
    return taps


def multiply_adds(layer):
    """(nominal, useful) multiply-adds of a built Conv2D's forward pass, per example.

    Nominal counts every kernel tap at every output pixel, the usual FLOP count; useful
    only the taps that read data, not "same" padding.
    """
    _, height, width, in_channels = layer.input.shape
    kernel_h, kernel_w, _, out_channels = layer.kernel.shape
    taps_h = tap_matrix_1d(height, kernel_h, layer.strides[0], layer.padding)
    taps_w = tap_matrix_1d(width, kernel_w, layer.strides[1], layer.padding)
    channel_macs = in_channels * out_channels
    nominal = taps_h.shape[1] * taps_w.shape[1] * kernel_h * kernel_w * channel_macs
    return nominal, int(taps_h.sum() * taps_w.sum()) * channel_macs


def tap_index(taps):
    """[P, Q] int: the kernel tap linking input pixel p and output pixel q, T where none.

    Without dilation one tap at most links a pair, so the convolution's dense matrix is the
    kernel's taps gathered by this index (a zero block where it is T).
    """
    kernel_taps = taps.shape[-1]
    if taps.sum(axis=-1).max() > 1:
        raise ValueError("a pixel pair linked by more than one kernel tap")
    return np.where(taps.any(axis=-1), taps.argmax(axis=-1), kernel_taps)


def conv_as_matmul(inputs, kernel, strides, padding):
    """`ops.conv(inputs, kernel, strides, padding)` (channels last) as a single matmul.

    The dense matrix is gathered from the kernel (`tap_index`); its gradient sums each
    tap's blocks. A gather keeps the matrix in the kernel's dtype without multiplying by
    the 0/1 tap pattern, which in bfloat16 ran as slow oneDNN matmuls of inner size 1 or 9.
    """
    _, height, width, in_channels = inputs.shape
    kernel_h, kernel_w, _, out_channels = kernel.shape
    taps_h = tap_matrix_1d(height, kernel_h, strides[0], padding)
    taps_w = tap_matrix_1d(width, kernel_w, strides[1], padding)
    out_h, out_w = taps_h.shape[1], taps_w.shape[1]
    # taps[(ih, iw), (oh, ow), (th, tw)]: which kernel tap links each input and output pixel.
    taps = np.einsum("aby,cdz->acbdyz", taps_h, taps_w).reshape(
        height * width, out_h * out_w, kernel_h * kernel_w)
    blocks = ops.concatenate([
        ops.reshape(kernel, (kernel_h * kernel_w, in_channels, out_channels)),
        ops.zeros((1, in_channels, out_channels), kernel.dtype)], axis=0)
    matrix = ops.take(blocks, tap_index(taps).reshape(-1), axis=0)
    matrix = ops.transpose(
        ops.reshape(matrix, (height * width, out_h * out_w, in_channels, out_channels)),
        (0, 2, 1, 3))
    matrix = ops.reshape(matrix, (height * width * in_channels, out_h * out_w * out_channels))
    outputs = ops.matmul(ops.reshape(inputs, (-1, height * width * in_channels)), matrix)
    return ops.reshape(outputs, (-1, out_h, out_w, out_channels))


@keras.saving.register_keras_serializable(package="keras_simclr")
class SmallMapConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that computes tiny maps as a matmul; see the module docstring.

    Same arguments, weights and results as Conv2D. The matmul path is taken when the input's
    height and width are known when the layer is traced and the map has at most as many
    pixels as the kernel has taps, so the dense matrix never costs more than the convolution.
    """

    def uses_matmul(self, input_shape):
        _, height, width, _ = input_shape
        kernel_h, kernel_w = self.kernel_size
        return (
            self.data_format == "channels_last"
            and height is not None and width is not None
            and kernel_h * kernel_w > 1
            and height * width <= kernel_h * kernel_w
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
        )

    def convolution_op(self, inputs, kernel):
        if self.uses_matmul(inputs.shape):
            return conv_as_matmul(inputs, kernel, self.strides, self.padding)
        return super().convolution_op(inputs, kernel)
