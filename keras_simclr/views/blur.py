"""Gaussian blur of a batch, each image with its own sigma, as one separable convolution.

The images become the channels of one picture, so a depthwise convolution with a
per-image kernel blurs the whole batch in two passes (rows, then columns) instead of a
loop over images (keras-cv's `RandomGaussianBlur` loops). Borders are reflected.
"""
import tensorflow as tf


def gaussian_blur(images, sigma, radius: int):
    """float32 [B, S, S, 3] images blurred with per-image `sigma` [B], kernel 2 * radius + 1."""
    batch, size = tf.shape(images)[0], images.shape[1] or tf.shape(images)[1]
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(offsets)[None, :] / (2.0 * tf.square(sigma)[:, None]))
    kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)  # (B, 2r+1)
    kernel = tf.repeat(tf.transpose(kernel), 3, axis=1)  # (2r+1, B*3), channel-major
    stacked = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, size, size, -1])
    pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
    stacked = tf.pad(stacked, pad, mode="REFLECT")
    stacked = tf.nn.depthwise_conv2d(stacked, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    stacked = tf.nn.depthwise_conv2d(stacked, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(stacked, [size, size, batch, 3]), [2, 0, 1, 3])
