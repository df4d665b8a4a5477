"""Views cropped from the original images (keras_simclr/data/originals.py), on tiny folders."""
import os

import keras_simclr  # noqa: F401  (before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_simclr import data
from keras_simclr.views.augment import SimCLRAugment
from keras_simclr.data import originals
from keras_simclr.views.multicrop import MultiCropAugment

HEIGHT, WIDTH = 300, 400
STRIPE = 8  # period, in original pixels, of the stripes in the blue channel


def coordinate_image():
    """A 400 x 300 image whose red and green encode x and y, with fine blue stripes."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = np.round(255 * x / (WIDTH - 1))
    image[..., 1] = np.round(255 * y / (HEIGHT - 1))
    image[..., 2] = np.where((x // (STRIPE // 2)) % 2 == 0, 40, 215)
    return image


def image_folder(root, count=16, image=None):
    image = coordinate_image() if image is None else image
    for k in range(count):
        path = os.path.join(root, "train", "c", f"{k}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
    return data.FOLDER_PREFIX + str(root)


def crop_only(size, **kwargs):
    return SimCLRAugment(size, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, **kwargs)


def all_views(ds, batches):
    views = []
    for (made, _), _ in zip(ds, range(batches)):
        views.extend(np.concatenate([made[k].numpy() for k in sorted(made)]))
    return np.stack(views)


@pytest.mark.parametrize("crop_from_original", ["auto", False])
def test_views_are_cropped_from_the_original_at_its_own_scale(tmp_path, crop_from_original):
    """Each view's red/green tell which region of the 400 x 300 original it shows.

    Cropped from the original, the regions have the paper's aspect ratios (3/4 to 4/3 in
    original pixels) and keep the 8-px stripes; cropped after resizing the image whole to
    64 x 64 (the old path, `crop_from_original=False`), the ratios are stretched by 4/3
    and the stripes were averaged away.
    """
    dataset = image_folder(tmp_path)
    ds = data.pretrain_dataset(dataset, image_size=64, global_batch_size=16, seed=0,
                               augmenter=crop_only(64, seed=1),
                               crop_from_original=crop_from_original)
    views = all_views(ds.repeat(), 3)  # 96 views
    x = views[..., 0] * (WIDTH - 1)
    y = views[..., 1] * (HEIGHT - 1)
    # The sampled region spans about one view pixel more than the samples' centres.
    width = np.ptp(x, axis=(1, 2)) * 64 / 63
    height = np.ptp(y, axis=(1, 2)) * 64 / 63
    aspect = width / height
    area = width * height / (WIDTH * HEIGHT)
    stripes = views[..., 2].std(axis=(1, 2))
    if crop_from_original == "auto":
        assert np.all((aspect > 0.75 * 0.95) & (aspect < 4 / 3 * 1.05)), aspect
        assert np.mean(aspect < 0.95) > 0.2  # impossible after resizing a 4:3 image square
        assert area.min() > 0.08 * 0.9 and area.max() < 1.02
        assert area.min() < 0.2  # small crops come from the original too
        assert stripes.min() > 0.1  # 8-px stripes survive in every crop
    else:
        assert aspect.min() > 0.95  # squashed: the sampled ratios times 4/3
        assert stripes.max() < 0.05  # detail lost in the resize to 64 x 64


def test_auto_keeps_the_batched_path_for_squares_no_larger_than_the_views(tmp_path):
    small = image_folder(tmp_path / "small", count=4,
                         image=np.zeros((32, 32, 3), np.uint8))
    large = image_folder(tmp_path / "large", count=4,
                         image=np.zeros((40, 32, 3), np.uint8))  # not square
    for dataset, per_example in ((small, False), (large, True), ("shapes", False)):
        ds = data.pretrain_dataset(dataset, "train" if dataset != "shapes" else "test",
                                   image_size=32, global_batch_size=4, seed=0,
                                   augmenter=SimCLRAugment(32))
        batched = ds._input_dataset._input_dataset  # under the prefetch and the views map
        assert type(batched).__name__ == "_BatchDataset"
        under_batch = type(batched._input_dataset).__name__
        assert (under_batch == "_ParallelMapDataset") == per_example, dataset
    with pytest.raises(ValueError, match="example_crops"):
        data.pretrain_dataset(small, image_size=32, global_batch_size=4,
                              augmenter=lambda images: images, crop_from_original=True)


def test_crops_from_originals_repeat_with_seeds_and_run_in_parallel(tmp_path):
    dataset = image_folder(tmp_path, count=8)

    def pipeline(augmenter_seed):
        return data.pretrain_dataset(dataset, image_size=32, global_batch_size=8, seed=3,
                                     augmenter=crop_only(32, seed=augmenter_seed))

    ds = pipeline(5)
    crops = ds._input_dataset._input_dataset._input_dataset  # prefetch > views > batch
    assert type(crops).__name__ == "_ParallelMapDataset"  # stateless: parallel, in order
    first, again = next(iter(ds))[0], next(iter(pipeline(5)))[0]
    for key in ("view_1", "view_2"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.allclose(first["view_1"], first["view_2"])
    assert not np.allclose(first["view_1"], next(iter(pipeline(6)))[0]["view_1"])


def test_multicrop_views_are_cropped_from_the_original(tmp_path):
    dataset = image_folder(tmp_path, count=4)
    augmenter = MultiCropAugment(crop_only(32, seed=1), small_views=2, small_view_size=16)
    ds = data.pretrain_dataset(dataset, image_size=32, global_batch_size=4, seed=0,
                               augmenter=augmenter)
    views, labels = next(iter(ds))
    assert sorted(views) == ["view_1", "view_2", "view_3", "view_4"]
    assert views["view_1"].shape == (4, 32, 32, 3) and views["view_4"].shape == (4, 16, 16, 3)
    assert labels.shape == (4,)


def test_cap_shrinks_the_shorter_side_and_keeps_the_aspect_ratio():
    image = tf.zeros((300, 400, 3), tf.uint8)
    assert originals.cap_size(image, 150).shape == (150, 200, 3)
    assert originals.cap_size(image, 300).shape == (300, 400, 3)  # not larger: unchanged
    assert originals.cap_size(tf.zeros((90, 30, 3), tf.uint8), 20).shape == (60, 20, 3)
    assert originals.cached_image_bytes([(300, 400), (100, 100)], 150) == (
        150 * 200 * 3 + 100 * 100 * 3) // 2
    assert originals.cached_image_bytes([(300, 400)], None) == 300 * 400 * 3


def test_the_cap_shrinks_originals_before_the_crops(tmp_path):
    """Capped at 2 x 32 px (to 85 x 64) the 8-px stripes are averaged away before any crop;
    uncapped, every crop samples them."""
    dataset = image_folder(tmp_path, count=4)
    stripes = {}
    for cap in (2.0, None):
        ds = data.pretrain_dataset(dataset, image_size=32, global_batch_size=4, seed=0,
                                   augmenter=crop_only(32, seed=1), original_cap=cap)
        views = all_views(ds.repeat(), 4)
        stripes[cap] = views[..., 2].std(axis=(1, 2))
        assert np.ptp(views[..., 0] * (WIDTH - 1), axis=(1, 2)).max() < WIDTH  # inside
    assert stripes[2.0].max() < 0.1
    assert stripes[None].mean() > 0.15


def test_with_views_in_model_the_pipeline_only_crops_large_originals(tmp_path):
    """augment_in=model: the crops from the originals, as the pipeline's views would start
    (same seeds), in uint8 for the model's augmenter; images no larger than the views
    come whole, as without an augmenter."""
    dataset = image_folder(tmp_path, count=8)

    def first_batch(source, split="train", **kwargs):
        return next(iter(data.pretrain_dataset(source, split, image_size=32,
                                               global_batch_size=8, seed=0, **kwargs)))

    crops, labels = first_batch(dataset, augmenter=crop_only(32, seed=1), views_in_model=True)
    assert sorted(crops) == ["crop_1", "crop_2"] and labels.shape == (8,)
    assert crops["crop_1"].dtype == tf.uint8 and crops["crop_1"].shape == (8, 32, 32, 3)
    views, _ = first_batch(dataset, augmenter=crop_only(32, seed=1))
    for i in (1, 2):
        np.testing.assert_allclose(crops[f"crop_{i}"].numpy() / 255.0, views[f"view_{i}"],
                                   atol=1e-6)
    images, _ = first_batch("shapes", "test", augmenter=SimCLRAugment(32), views_in_model=True)
    assert images.dtype == tf.uint8 and images.shape == (8, 32, 32, 3)
