"""View makers: what turns a batch of images into the views SimCLR contrasts, and their registry.

A view maker is any object with the `ViewMaker` members (a `typing.Protocol`, so it needs no
base class): `views(images)` returns the list of views of a batch, full-size ones first;
`image_size` is the side of the full views (evaluation resizes images to it); `num_views`
counts the views per image (what throughput counts); `seed` makes the views repeat, and a
seeded view maker runs sequentially in the input pipeline (a stateful generator called in
parallel draws in a nondeterministic order). A `CropViewMaker` can also crop one stored image
of any size (`example_crops`) and finish the batched crops (`views_of_crops`), which the
pipelines use to crop large images from their originals.

The registry maps a name (`--view_maker`) to a factory; `make_view_maker(name, **kwargs)`
passes the factory the arguments it declares (see `registry.Registry.build`). `SimCLRAugment`
is "simclr" and `multicrop.multi_crop` is "multicrop"; a new view maker is one module with
its class plus one `register_view_maker` line.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import tensorflow as tf

from keras_simclr.utils.registry import Registry
from keras_simclr.views.augment import SimCLRAugment
from keras_simclr.views.multicrop import multi_crop
from keras_simclr.views.view_dict import CROP_PREFIX, dict_prefix, to_float_images, views_from_dict


@runtime_checkable
class ViewMaker(Protocol):
    """What the model and the pipelines need from a view maker; see the module docstring.

    Attributes:
        image_size: side of the full views.
        num_views: views made of each image (2 for SimCLR, 2 + k with multi-crop).
        seed: None, or an integer that makes the views reproducible.
    """

    image_size: int
    num_views: int
    seed: int | None

    def views(self, images: tf.Tensor) -> list:
        """`num_views` float32 views in [0, 1] of a batch (uint8 or float in [0, 1])."""


@runtime_checkable
class CropViewMaker(ViewMaker, Protocol):
    """A view maker that can crop single stored images of any size before batching."""

    def example_crops(self, image: tf.Tensor, seed: tf.Tensor) -> list:
        """`num_views` crops of one image [H, W, 3], drawn statelessly from `seed` (int [2])."""

    def views_of_crops(self, crops: list) -> list:
        """The views made of the batched `example_crops` (flip, colour, blur, ...)."""


VIEW_MAKERS = Registry("view maker")


def register_view_maker(name: str, factory: Callable[..., ViewMaker]) -> Callable:
    """Offer `factory(**kwargs) -> ViewMaker` as `make_view_maker(name)` and `--view_maker`.

    Raises:
        ValueError: `name` is already registered.
        TypeError: `factory` is not callable.
    """
    return VIEW_MAKERS.register(name, factory)


def make_view_maker(name: str, **kwargs) -> ViewMaker:
    """The view maker registered as `name`, given the `kwargs` its factory declares.

    Raises:
        ValueError: no view maker is registered as `name`.
        TypeError: an argument no view maker takes, or a factory that made no `ViewMaker`.
    """
    maker = VIEW_MAKERS.build(name, **kwargs)
    if not isinstance(maker, ViewMaker):
        raise TypeError(f"view maker {name!r} made {maker!r}, which lacks the ViewMaker "
                        f"members image_size, num_views, seed and views(images)")
    return maker


def make_views(view_maker, images) -> list:
    """The views of a batch: `view_maker.views(images)`, or two calls of a plain layer."""
    if isinstance(view_maker, ViewMaker):
        return list(view_maker.views(images))
    return [view_maker(images), view_maker(images)]


def views_of_input(view_maker, x) -> list:
    """The views of a model's input `x`: images, a view dict, or a dict of crops.

    Images are made into views by `view_maker`; `{"view_1": ...}` are taken as they are;
    `{"crop_1": ...}` are finished by a `CropViewMaker` (`views_of_crops`).
    """
    if isinstance(x, dict) and dict_prefix(x) == CROP_PREFIX:
        if not isinstance(view_maker, CropViewMaker):
            raise ValueError("crops {'crop_1': ..., ...} need a model whose augmenter "
                             "makes views of crops (a views.CropViewMaker with "
                             "views_of_crops)")
        return list(view_maker.views_of_crops(views_from_dict(x, CROP_PREFIX)))
    if isinstance(x, dict):
        return [to_float_images(v) for v in views_from_dict(x)]
    if view_maker is None:
        raise ValueError("this SimCLR model has no augmenter: feed {'view_1': ..., "
                         "'view_2': ...}")
    return make_views(view_maker, x)


register_view_maker("simclr", SimCLRAugment)
register_view_maker("multicrop", multi_crop)
