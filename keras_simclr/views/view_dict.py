"""The view dict: how an input pipeline that makes views hands them to the model.

A pipeline that augments (`data.pretrain_dataset(augmenter=...)`) feeds the model a dict
`{"view_1": v1, "view_2": v2, ...}` of ready views; one that only crops large originals
feeds `{"crop_1": c1, ...}` that the model's view maker finishes (`views_of_crops`). Views
are float32 in [0, 1]; images may also come as uint8 in [0, 255] (`to_float_images`).
"""
import tensorflow as tf


def to_float_images(images):
    """uint8 images in [0, 255] -> float32 in [0, 1]; float images are taken as in [0, 1]."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


VIEW_PREFIX = "view_"
CROP_PREFIX = "crop_"  # crops from the originals, made into views by the model


def view_keys(num_views: int, prefix: str = VIEW_PREFIX) -> list[str]:
    """Keys of the dict an input pipeline feeds: view_1 .. view_N (or crop_1 .. crop_N)."""
    return [f"{prefix}{i + 1}" for i in range(num_views)]


def views_from_dict(x: dict, prefix: str = VIEW_PREFIX) -> list:
    """The views (or crops) of a pipeline's dict, in order (view_1, view_2, ...)."""
    keys = sorted((k for k in x if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    if len(keys) < 2:
        raise ValueError(f"expected a dict of 2 or more views {view_keys(2)} or crops "
                         f"{view_keys(2, CROP_PREFIX)}, got {list(x)}")
    return [x[k] for k in keys]


def dict_prefix(x: dict) -> str:
    """CROP_PREFIX for a pipeline's dict of crops (`pretrain_dataset(views_in_model=True)`
    on large images), else VIEW_PREFIX."""
    return CROP_PREFIX if view_keys(1, CROP_PREFIX)[0] in x else VIEW_PREFIX


def first_view(x):
    """The first view (or crop) of a pipeline's dict; images pass through unchanged."""
    return views_from_dict(x, dict_prefix(x))[0] if isinstance(x, dict) else x
