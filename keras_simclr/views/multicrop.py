"""Multi-crop views (Caron et al. 2020): two full views plus k small, cheap ones per image.

A view's cost in the encoder falls with the square of its side, so k small views (for
example 4 at 16 px beside two at 32 px) contrast each image more often for little compute.
The objective (`losses.NTXent`) contrasts every view with the two full views of its image;
the small views are never each other's positives.
"""
from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from keras_simclr.views.augment import SimCLRAugment


def views_per_image(small_views: int) -> int:
    """Views the encoder sees per image: the 2 full ones and `small_views` small ones."""
    return 2 + small_views


@keras.saving.register_keras_serializable(package="keras_simclr")
class MultiCropAugment(keras.layers.Layer):
    """View maker of 2 full views from `full` and `small_views` views at `small_view_size`.

    Args:
        full: the augmenter of the two full views (its settings are reused for the small
            ones, except size and crop area).
        small_views: number k of small views per image.
        small_view_size: side of the small views, in pixels.
        small_crop_area: (min, max) area fraction of the small views' crops; None keeps the
            full views' range.
    """

    def __init__(self, full: SimCLRAugment, small_views: int = 4, small_view_size: int = 16,
                 small_crop_area: tuple[float, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(full, dict):
            full = keras.saving.deserialize_keras_object(full)
        if small_views < 0 or small_view_size < 1:
            raise ValueError(f"small_views must be >= 0 and small_view_size positive, got "
                             f"{small_views} and {small_view_size}")
        self.full = full
        self.small_views = int(small_views)
        self.small_view_size = int(small_view_size)
        self.small_crop_area = None if small_crop_area is None else tuple(small_crop_area)
        small_config = dict(full.get_config(), image_size=self.small_view_size,
                            name=f"{self.name}_small")
        if self.small_crop_area is not None:
            small_config["crop_area"] = self.small_crop_area
        if full.seed is not None:
            small_config["seed"] = full.seed + 1
        self.small = SimCLRAugment.from_config(small_config)

    @property
    def image_size(self) -> int:
        """Side of the full views (what evaluation resizes images to)."""
        return self.full.image_size

    @property
    def seed(self):
        return self.full.seed

    @property
    def num_views(self) -> int:
        return views_per_image(self.small_views)

    def build(self, input_shape):
        self.full.build(input_shape)
        self.small.build(input_shape)
        self.built = True

    def views(self, images) -> list:
        """[full view, full view, small view x k] of `images`."""
        return self.full.views(images) + [self.small(images) for _ in range(self.small_views)]

    def example_crops(self, image, seed) -> list:
        """Crops of one image of any size: 2 full, then k small (`SimCLRAugment`'s).

        Args:
            image: uint8 [H, W, 3], the original (see `SimCLRAugment.example_crops`).
            seed: int [2], this example's seed.

        Returns:
            2 + k float32 crops, [S, S, 3] then [s, s, 3].
        """
        fold = tf.random.experimental.stateless_fold_in
        return self.full.example_crops(image, fold(seed, 0)) + [
            self.small.crop_example(image, fold(seed, i + 1)) for i in range(self.small_views)]

    def views_of_crops(self, crops: list) -> list:
        """The views of batched `example_crops`, in the order of `views`."""
        return self.full.views_of_crops(crops[:2]) + self.small.views_of_crops(crops[2:])

    def call(self, images):
        return self.full(images)

    def compute_output_shape(self, input_shape):
        return self.full.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(full=keras.saving.serialize_keras_object(self.full),
                      small_views=self.small_views, small_view_size=self.small_view_size,
                      small_crop_area=self.small_crop_area)
        return config


def multi_crop(image_size: int, small_views: int = 4, small_view_size: int = 16,
               small_crop_area: tuple[float, float] | None = None, **full) -> MultiCropAugment:
    """`MultiCropAugment` of `SimCLRAugment(image_size, **full)`: the "multicrop" view maker.

    Its signature (`__signature__`, set below) also names every `SimCLRAugment` argument,
    so `views.make_view_maker` passes it the augmentation options as it does to "simclr".
    """
    return MultiCropAugment(SimCLRAugment(image_size, **full), small_views, small_view_size,
                            small_crop_area)


def _with_full_arguments(factory):
    own = [p for p in inspect.signature(factory).parameters.values()
           if p.kind != inspect.Parameter.VAR_KEYWORD]
    full = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for name, p in inspect.signature(SimCLRAugment).parameters.items()
            if name != "image_size" and p.kind != inspect.Parameter.VAR_KEYWORD]
    factory.__signature__ = inspect.Signature(own + full)
    return factory


_with_full_arguments(multi_crop)
