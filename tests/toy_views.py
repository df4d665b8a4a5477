"""A toy view maker, the shape of a new one: one new file, one `register_view_maker` line.

Each view is the image resized to `image_size`, flipped left-right at random, with Gaussian
noise added: the `views.ViewMaker` members (image_size, num_views, seed, views) and
nothing else, without a base class. It cannot crop single stored images, so the input
pipeline resizes large images whole before it.
"""
import tensorflow as tf

from keras_simclr.views.view_dict import to_float_images


class NoisyFlips:
    num_views = 3

    def __init__(self, image_size, seed=None, noise=0.1):
        self.image_size, self.seed, self.noise = int(image_size), seed, float(noise)
        self._rng = (tf.random.Generator.from_non_deterministic_state() if seed is None
                     else tf.random.Generator.from_seed(seed))

    def views(self, images):
        images = tf.image.resize(to_float_images(images), [self.image_size] * 2)
        return [self._view(images) for _ in range(self.num_views)]

    def _view(self, images):
        flip = self._rng.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
        images = tf.where(flip, tf.reverse(images, axis=[2]), images)
        noise = self.noise * self._rng.normal(tf.shape(images))
        return tf.clip_by_value(images + noise, 0.0, 1.0)


class Mirror:
    """Two views without randomness, the image and its mirror image: runs that see the
    same images in the same order end with the same weights (the cluster tests compare
    an interrupted and resumed run with an uninterrupted one)."""

    num_views = 2

    def __init__(self, image_size, seed=None):
        self.image_size, self.seed = int(image_size), seed

    def views(self, images):
        images = tf.image.resize(to_float_images(images), [self.image_size] * 2)
        return [images, tf.reverse(images, axis=[2])]
