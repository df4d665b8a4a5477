"""Tests of keras_simclr.data on tiny generated data (no network, no prepared data set needed)."""
import io
import os
import re
import time
import uuid
import warnings

import keras_simclr  # noqa: F401  (before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_simclr import data
from keras_simclr.views.augment import SimCLRAugment
from toy_source import ToySource

data.register_source("toy", ToySource)  # the one line that adds a source

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30)]


# ----------------------------------------------------------------------------------------
# Helpers


def write_image(path, array, mode=None, **save_kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **save_kwargs)
    return path


def solid(colour, size=(12, 10)):
    return np.full(size + (3,), colour, np.uint8)


def make_folder(root, layout, ext=".png"):
    """layout {split: {class: count}} (labelled) or {split: count} (unlabelled).

    Images of class i (in sorted class order) are filled with COLOURS[i]; unlabelled images
    with grey. Returns the root as a `folder:` dataset string.
    """
    classes = sorted({c for v in layout.values() if isinstance(v, dict) for c in v})
    for split, content in layout.items():
        if isinstance(content, dict):
            for name, count in content.items():
                for k in range(count):
                    write_image(os.path.join(root, split, name, f"{k}{ext}"),
                                solid(COLOURS[classes.index(name)], (10 + k, 12)))
        else:
            for k in range(content):
                write_image(os.path.join(root, split, f"{k}{ext}"), solid((128, 128, 128)))
    return data.FOLDER_PREFIX + str(root)


def examples(ds):
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in ds])
    return list(images), list(labels)


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ----------------------------------------------------------------------------------------
# The embedded default data set


def test_default_dataset_is_shapes():
    info = data.describe()
    assert data.DEFAULT_DATASET == "shapes" == info.name
    assert info.splits == {"train": 10_000, "test": 2_000}
    assert info.num_classes == 10 and info.class_names == data.SHAPES_CLASSES
    assert info.image_size == 32
    assert info.num_examples("test") == 2_000


def test_shapes_are_deterministic_and_balanced():
    images, labels = data.shapes_arrays("test")
    again_images, again_labels = data.shapes_arrays.__wrapped__("test")  # not the cache
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    assert images.shape == (2000, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [200] * 10
    with pytest.raises(data.DataError, match="available splits: train, test"):
        data.shapes_arrays("validation")


def test_shapes_colour_does_not_predict_the_class():
    """Colour is a nuisance: per-image colour statistics are near chance (0.1)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = data.shapes_arrays("test")
    pixels = images.reshape(len(images), -1, 3).astype(np.float32) / 255
    features = np.concatenate([pixels.mean(1), pixels.std(1)], axis=1)
    model = LogisticRegression(max_iter=500).fit(features[:1500], labels[:1500])
    assert model.score(features[1500:], labels[1500:]) < 0.2


# ----------------------------------------------------------------------------------------
# Pipelines


def test_pretrain_batches_are_full_uint8_batches():
    ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=64, seed=0)
    got = batches(ds)
    assert len(got) == 2000 // 64
    images, labels = got[0]
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (64,) and labels.dtype == np.int64
    assert len(set(labels.tolist())) > 3
    # Shuffled: the batch's images come from all over the split, not in generation order.
    ordered, _ = data.shapes_arrays("test")
    position = {image.tobytes(): i for i, image in enumerate(ordered)}
    index = [position[image.tobytes()] for image in images]
    assert len(set(index)) == 64 and index != sorted(index) and max(index) >= 2 * 64


def test_pretrain_without_shuffle_keeps_the_dataset_order():
    ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=500,
                               shuffle=False, cache=False)
    images, labels = np.concatenate([x for x, _ in batches(ds)]), np.concatenate(
        [y for _, y in batches(ds)])
    expected_images, expected_labels = data.shapes_arrays("test")
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("cache", [True, False])
def test_pretrain_is_deterministic_with_a_seed(cache):
    def first_batches(seed):
        ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=100,
                                   seed=seed, cache=cache)
        return [next(iter(ds))[1] for _ in range(2)]  # two epochs

    epoch_1, epoch_2 = first_batches(seed=5)
    again_1, again_2 = first_batches(seed=5)
    np.testing.assert_array_equal(epoch_1, again_1)
    np.testing.assert_array_equal(epoch_2, again_2)
    assert not np.array_equal(epoch_1, epoch_2)  # reshuffled every epoch
    assert not np.array_equal(epoch_1, first_batches(seed=6)[0])


@pytest.mark.parametrize("cache", [True, False])
def test_pretrain_from_any_batch_continues_the_uninterrupted_order(cache):
    """A resumed run restarted the data order (or reshuffled with another seed): with
    start_batch the batches from any step on are those of a run from step 0."""
    import keras

    def labels(start, count):
        keras.utils.set_random_seed(0)  # as apps.pretrain sets it (to --seed)
        ds = data.pretrain_dataset(split="test", image_size=8, global_batch_size=100,
                                   seed=5, cache=cache, start_batch=start)
        return [y.numpy().tolist() for _, y in ds.take(count)]

    per_pass = data.describe().num_examples("test") // 100
    whole = labels(0, per_pass + 3)
    for start in (2, per_pass - 1, per_pass, per_pass + 1):  # across the pass boundary
        assert labels(start, per_pass + 3 - start) == whole[start:], start
    assert whole[0] != whole[per_pass]  # every pass has its own order


def test_pretrain_views_are_made_in_the_pipeline_and_repeat_with_a_seed():
    def first_batch():
        augmenter = SimCLRAugment(24, seed=1)
        ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=16,
                                   seed=3, augmenter=augmenter)
        return next(iter(ds))

    views, labels = first_batch()
    assert set(views) == {"view_1", "view_2"}
    assert views["view_1"].shape == (16, 24, 24, 3) and views["view_1"].dtype == tf.float32
    assert labels.shape == (16,)
    assert not np.allclose(views["view_1"], views["view_2"])
    again, again_labels = first_batch()
    np.testing.assert_array_equal(labels, again_labels)
    np.testing.assert_allclose(views["view_1"], again["view_1"])
    np.testing.assert_allclose(views["view_2"], again["view_2"])


@pytest.mark.parametrize("augmenter_seed,parallel", [(None, True), (1, False)])
def test_only_a_seeded_augmenter_runs_sequentially(augmenter_seed, parallel):
    # apps.pretrain seeds the data (order) but not the augmenter: its views need no
    # sequential map, which cost end-to-end speed.
    ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=16, seed=3,
                               augmenter=SimCLRAugment(24, seed=augmenter_seed))
    augment_map = ds._input_dataset  # the dataset under the final prefetch
    assert type(augment_map).__name__ == ("_ParallelMapDataset" if parallel else "_MapDataset")


def test_linear_eval_datasets():
    train, evaluation = data.linear_eval_datasets(image_size=32, batch_size=256, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (256, 32, 32, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert labels.dtype == tf.int64
    got = batches(evaluation)
    assert [len(y) for _, y in got] == [256] * 7 + [2000 - 7 * 256]  # remainder kept
    expected_images, expected_labels = data.shapes_arrays("test")
    np.testing.assert_allclose(np.concatenate([x for x, _ in got]),
                               expected_images / np.float32(255), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), expected_labels)
    with pytest.raises(data.DataError, match="no split 'val'"):
        data.linear_eval_datasets(image_size=32, batch_size=8, eval_split="val")


def test_embed_dataset_keeps_order_and_resizes():
    ds = data.embed_dataset(split="test", image_size=16, batch_size=300)
    got = batches(ds)
    assert [len(y) for _, y in got] == [300] * 6 + [200]
    assert got[0][0].shape == (300, 16, 16, 3)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]),
                                  data.shapes_arrays("test")[1])


def test_input_context_shards_the_source_and_batches_per_replica():
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        ds = data.pretrain_dataset(split="test", image_size=32, global_batch_size=64,
                                   shuffle=False, input_context=context)
        images, labels = next(iter(ds))
        assert images.shape[0] == 32  # per-replica batch
        shards.append(labels.numpy())
    labels = data.shapes_arrays("test")[1]
    np.testing.assert_array_equal(shards[0], labels[0:64:2])
    np.testing.assert_array_equal(shards[1], labels[1:64:2])


def test_labels_and_subset_select_examples_in_dataset_order():
    expected_images, expected_labels = data.shapes_arrays("test")
    np.testing.assert_array_equal(data.labels(split="test"), expected_labels)
    subset = [1999, 5, 7, 5, 100]  # unsorted, repeated: read once each, in dataset order
    ds = data.classifier_dataset(split="test", image_size=32, batch_size=8, training=False,
                                 subset=subset)
    (images, labels), = batches(ds)
    np.testing.assert_array_equal(labels, expected_labels[[5, 7, 100, 1999]])
    np.testing.assert_allclose(images, expected_images[[5, 7, 100, 1999]] / np.float32(255),
                               atol=1e-6)
    ds = data.classifier_dataset(split="test", image_size=32, batch_size=2, training=True,
                                 subset=subset, seed=0)
    assert sorted(np.concatenate([y for _, y in batches(ds)]).tolist()) == sorted(
        expected_labels[[5, 7, 100, 1999]].tolist())
    with pytest.raises(data.DataError, match="smaller than one batch"):
        data.classifier_dataset(split="test", image_size=32, batch_size=8, training=True,
                                subset=subset)
    with pytest.raises(data.DataError, match=r"subset indices must lie in \[0, 2000\)"):
        data.classifier_dataset(split="test", image_size=32, batch_size=8, training=False,
                                subset=[2000])


def test_cache_argument_is_checked():
    with pytest.raises(ValueError, match="cache must be"):
        data.pretrain_dataset(split="test", image_size=32, global_batch_size=8, cache="yes")


def test_a_missing_or_sliced_split_is_a_data_error_for_every_source(tmp_path):
    # These raised KeyError: the pipelines counted examples before checking the split, and
    # only TFDS datasets can be sliced (`train[:10%]`).
    dataset = make_folder(tmp_path, {"train": {"a": 1}})
    for name in (data.DEFAULT_DATASET, dataset):
        for split in ("val", "train[:1]"):
            no_split = f"no split {re.escape(repr(split))}; available splits: (test, )?train"
            with pytest.raises(data.DataError, match=no_split):
                data.pretrain_dataset(name, split, image_size=8, global_batch_size=1)
            with pytest.raises(data.DataError, match=no_split):
                data.classifier_dataset(name, split, image_size=8, batch_size=1,
                                        training=False, subset=[0])
            with pytest.raises(data.DataError, match=no_split):
                data.labels(name, split)
    with pytest.raises(data.DataError, match=re.escape("no split 'test[:10]'")):
        data.describe().num_examples("test[:10]")


# ----------------------------------------------------------------------------------------
# The source registry


def test_a_registered_source_works_in_every_pipeline():
    from toy_source import CLASSES, COLOURS

    assert data.describe("toy") == data.DatasetInfo("toy", {"train": 4, "test": 4},
                                                    CLASSES, 8)
    got = batches(data.pretrain_dataset("toy", image_size=8, global_batch_size=2, seed=0))
    assert len(got) == 2 and got[0][0].shape == (2, 8, 8, 3)
    assert sorted(np.concatenate([y for _, y in got]).tolist()) == [0, 1, 2, 3]
    for images, labels in got:
        np.testing.assert_array_equal(images[:, 3, 3], np.array(COLOURS)[labels])
    (images, labels), = batches(data.classifier_dataset("toy", "test", image_size=4,
                                                        batch_size=4, training=False))
    assert labels.tolist() == [0, 1, 2, 3] and images.shape == (4, 4, 4, 3)
    np.testing.assert_allclose(images[:, 0, 0], np.array(COLOURS) / 255, atol=1e-6)
    (images, labels), = batches(data.classifier_dataset("toy", image_size=8, batch_size=4,
                                                        training=True, seed=0))
    assert sorted(labels.tolist()) == [0, 1, 2, 3] and images.dtype == np.float32
    with pytest.raises(data.DataError, match="toy has no split 'val'"):
        data.labels("toy", "val")


def test_registry_prefixes_and_suggestions(tmp_path):
    @data.register_source("toy_prefix:")  # a prefix: every name that starts with it
    def toy_of(*, name, data_dir, strict):
        return ToySource(name=name)

    assert data.describe("toy_prefix:anything").name == "toy_prefix:anything"
    assert data.open_source("toy_prefix:x").labels(split="train").tolist() == [0, 1, 2, 3]
    # Registered names are suggested too (this suggested only TFDS names).
    with pytest.raises(data.DataError,
                       match=r"unknown dataset 'shapse'.*did you mean shapes[,?]"):
        data.describe("shapse", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="non-empty name or prefix"):
        data.register_source("", ToySource)


# ----------------------------------------------------------------------------------------
# Image folders


def test_folder_labels_are_the_sorted_class_folders_of_all_splits(tmp_path):
    dataset = make_folder(tmp_path, {"train": {"b": 3, "a": 2, "d": 1},
                                     "val": {"a": 1, "c": 2}})
    info = data.describe(dataset)
    assert info.class_names == ("a", "b", "c", "d")
    assert info.splits == {"train": 6, "val": 3}
    ds, info = data.load(dataset, "val")
    images, labels = examples(ds)
    assert labels == [0, 2, 2] == data.labels(dataset, "val").tolist()
    for image, label in zip(images, labels):
        assert image.shape[2] == 3
        np.testing.assert_array_equal(image[0, 0], COLOURS[label])


def test_folder_unlabelled_split_has_label_minus_one(tmp_path):
    dataset = make_folder(tmp_path, {"train": {"x": 2, "y": 2}, "unlabelled": 5})
    ds, info = data.load(dataset, "unlabelled")
    assert examples(ds)[1] == [-1] * 5
    assert info.class_names == ("x", "y")


def test_folder_decodes_every_image_mode_to_rgb_and_resizes(tmp_path):
    rgb = solid((200, 100, 50), (20, 30))
    grey = np.full((9, 7), 90, np.uint8)
    files = {
        "gray.png": (grey, None, {}),
        "gray_alpha.png": (grey, "LA", {}),
        "rgba.png": (rgb, "RGBA", {}),
        "palette.png": (rgb, "P", {}),
        "bilevel.png": (np.full((8, 8), 255, np.uint8), "1", {}),
        "rgb.jpeg": (rgb, None, {"quality": 95}),
        "cmyk.jpg": (rgb, "CMYK", {"quality": 95}),
        "grey.jpg": (grey, None, {}),
        "rgb.bmp": (rgb, None, {}),
        "palette.bmp": (rgb, "P", {}),
        "bilevel.bmp": (np.full((5, 6), 255, np.uint8), "1", {}),
        "anim.gif": (rgb, "P", {"save_all": True,
                                "append_images": [Image.fromarray(grey).convert("P")]}),
    }
    expected = {}
    for name, (array, mode, kwargs) in files.items():
        write_image(str(tmp_path / "all" / name), array, mode, **kwargs)
        expected[name] = np.asarray(Image.open(tmp_path / "all" / name).convert("RGB"))
    deep = (np.arange(12 * 14).reshape(12, 14) * 300).astype(np.uint16)
    tf.io.write_file(str(tmp_path / "all" / "deep.png"), tf.io.encode_png(deep[..., None]))
    expected["deep.png"] = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=-1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataWarning)  # nothing is skipped
        ds, info = data.load(data.FOLDER_PREFIX + str(tmp_path), "all")
    assert info.splits == {"all": len(expected)}
    images, labels = examples(ds)
    assert labels == [-1] * len(expected)
    for name, image in zip(sorted(expected), images):
        assert image.dtype == np.uint8 and image.shape == expected[name].shape, name
        tolerance = 6 if name.endswith((".jpg", ".jpeg")) else 1
        assert np.abs(image.astype(int) - expected[name]).max() <= tolerance, name

    ds = data.pretrain_dataset(data.FOLDER_PREFIX + str(tmp_path), "all", image_size=16,
                               global_batch_size=len(expected), seed=0)
    images, _ = next(iter(ds))
    assert images.shape == (len(expected), 16, 16, 3)


def test_folder_bad_files_are_skipped_with_one_warning(tmp_path):
    dataset = make_folder(tmp_path, {"train": {"a": 2, "b": 2}}, ext=".jpg")
    good = tmp_path / "train" / "a" / "0.jpg"
    jpeg = good.read_bytes()
    (tmp_path / "train" / "a" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = tmp_path / "train" / "b" / "x.png"
    write_image(str(png), solid((1, 2, 3)))
    (tmp_path / "train" / "b" / "truncated.png").write_bytes(png.read_bytes()[:-30])
    png.unlink()
    (tmp_path / "train" / "b" / "text.jpg").write_text("not an image")
    (tmp_path / "train" / "b" / "empty.gif").write_bytes(b"")
    (tmp_path / "train" / "b" / "notes.txt").write_text("hello")
    (tmp_path / "train" / "loose.jpg").write_bytes(jpeg)  # outside the class folders

    with pytest.warns(data.DataWarning) as record:
        ds, info = data.load(dataset, "train")
        data.describe(dataset)  # the same folder again: no second warning
    assert len(record) == 1
    message = str(record[0].message)
    assert "6 entries" in message and "skipped" in message
    for name in ("truncated.jpg", "empty.gif", "loose.jpg", "notes.txt", "text.jpg"):
        assert name in message
    assert "and 1 more" in message
    assert info.splits == {"train": 4}  # nothing else is dropped
    assert sorted(examples(ds)[1]) == [0, 0, 1, 1]

    with pytest.raises(data.DataError, match="6 entries .* cannot be read"):
        data.load(dataset, "train", strict=True)


def test_folder_determinism_with_a_seed(tmp_path):
    dataset = make_folder(tmp_path, {"train": {"a": 5, "b": 5, "c": 5}})

    def labels(seed):
        ds = data.pretrain_dataset(dataset, image_size=8, global_batch_size=5, seed=seed)
        return [y.tolist() for _, y in batches(ds)]

    assert labels(1) == labels(1)
    assert labels(1) != labels(2)


def test_evaluation_centre_crops_large_images_only(tmp_path):
    for name, side in (("a", 40), ("b", 128)):  # a red border of 5%, green inside
        image = solid((255, 0, 0), (side, side))
        border = side // 20
        image[border:-border, border:-border] = (0, 255, 0)
        write_image(str(tmp_path / "test" / "c" / f"{name}.png"), image)
    ds = data.classifier_dataset(data.FOLDER_PREFIX + str(tmp_path), "test", image_size=32,
                                 batch_size=2, training=False)
    (small, large), _ = next(iter(ds))
    assert small[0, 0, 0] > 0.9 and small[0, 0, 1] < 0.1  # 40 px: not cropped, red corner
    assert large[0, 0, 1] > 0.9 and large[0, 0, 0] < 0.1  # 128 px: border cropped away


def test_folder_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(data.DataError, match=f"image folder '{missing}' does not exist"):
        data.describe(data.FOLDER_PREFIX + str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="is empty: it has no split folders"):
        data.describe(data.FOLDER_PREFIX + str(tmp_path / "empty"))
    dataset = make_folder(tmp_path / "ok", {"train": {"a": 1}, "val": {"a": 1}})
    with pytest.raises(data.DataError, match="no split 'test'; available splits: train, val"):
        data.load(dataset, "test")
    (tmp_path / "ok" / "extra" / "a").mkdir(parents=True)
    (tmp_path / "ok" / "extra" / "a" / "readme.md").write_text("x")
    with pytest.raises(data.DataError, match="extra holds no readable images.*skipped 1"):
        data.describe(dataset)


def write_gfile(path, array, mode=None, **save_kwargs):
    """Writes an image with tf.io.gfile (any TensorFlow filesystem); returns its bytes."""
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(
        buffer, format={"jpg": "JPEG"}.get(path[-3:], path[-3:].upper()), **save_kwargs)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return buffer.getvalue()


def test_folder_on_a_tensorflow_filesystem():
    # ram:// keeps files in memory and has no folders: `isdir` is true of any prefix of a
    # file, while `listdir` and `glob` return files only. "[1]" checks that glob
    # characters in the root are taken literally.
    root = f"ram://keras_simclr_{uuid.uuid4().hex}[1]/images"
    red, green = solid(COLOURS[0]), solid(COLOURS[1])
    for name, image in (("train/a/0.png", red), ("train/a/1.jpg", red),
                        ("train/b/0.png", green), ("val/a/0.jpg", red),
                        ("unlabelled/0.png", green),
                        ("train/a/.hidden.png", green)):
        write_gfile(f"{root}/{name}", image)
    write_gfile(f"{root}/train/b/palette.bmp", green, "P")  # read with PIL, via GFile
    png = write_gfile(f"{root}/val/b/0.png", green)
    with tf.io.gfile.GFile(f"{root}/train/b/truncated.png", "wb") as f:  # ram:// "wb"
        f.write(png[:-30])  # appends to an existing file: write each file once
    write_gfile(f"{root}/train/loose.png", red)
    dataset = data.FOLDER_PREFIX + root

    with pytest.warns(data.DataWarning) as record:
        info = data.describe(dataset)
    message = str(record[0].message)
    assert len(record) == 1 and "2 entries" in message
    assert "train/b/truncated.png" in message and "train/loose.png" in message
    assert info.class_names == ("a", "b")
    assert info.splits == {"train": 4, "val": 2, "unlabelled": 1}
    ds, _ = data.load(dataset, "train")
    images, labels = examples(ds)
    assert labels == [0, 0, 1, 1] == data.labels(dataset, "train").tolist()
    bmp = tf.io.gfile.GFile(f"{root}/train/b/palette.bmp", "rb").read()
    expected = [red, red, green, np.asarray(Image.open(io.BytesIO(bmp)).convert("RGB"))]
    for image, want in zip(images, expected):  # png, jpg, png, palette bmp
        assert np.abs(image.astype(int) - want).max() <= 6
    assert examples(data.load(dataset, "unlabelled")[0])[1] == [-1]
    ds = data.pretrain_dataset(dataset, image_size=8, global_batch_size=4, seed=0)
    (images, labels), = batches(ds)
    assert images.shape == (4, 8, 8, 3) and sorted(labels.tolist()) == [0, 0, 1, 1]

    write_gfile(f"{root}/val/b/1.png", green)  # a new file: a new scan
    with pytest.warns(data.DataWarning):
        assert data.describe(dataset).splits["val"] == 3
    with pytest.raises(data.DataError, match="does not exist"):
        data.describe(data.FOLDER_PREFIX + root + "_missing")


# ----------------------------------------------------------------------------------------
# TFDS


def test_unknown_dataset_name_suggests_similar_names(tmp_path):
    with pytest.raises(data.DataError, match="unknown dataset 'cifar1O'.*cifar10"):
        data.describe("cifar1O", data_dir=str(tmp_path))
    with pytest.raises(data.DataError, match=f"did you mean folder:{tmp_path}"):
        data.describe(str(tmp_path), data_dir=str(tmp_path))


def test_tfds_dataset_not_downloaded_fails_fast_with_instructions(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DataError, match="cifar10 is not prepared.*tfds build cifar10"):
        data.pretrain_dataset("cifar10", image_size=32, global_batch_size=8,
                              data_dir=str(tmp_path))
    with pytest.raises(data.DataError, match="manual download.*ILSVRC2012_img_train.tar"):
        data.describe("imagenet2012", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10


class KerasSimclrTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tiny TFDS dataset of grayscale images of mixed sizes, prepared offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 1)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "extra": self._generate_examples(5)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((8 + i, 10, 1), 20 * i, np.uint8), "label": i % 3}


def test_tfds_dataset_with_image_and_label(tmp_path):
    KerasSimclrTinyImages(data_dir=str(tmp_path)).download_and_prepare()
    name = "keras_simclr_tiny_images"
    info = data.describe(name, data_dir=str(tmp_path))
    assert info.splits == {"train": 12, "extra": 5} and info.class_names == ("a", "b", "c")
    ds, _ = data.load(name, "extra", data_dir=str(tmp_path))
    images, labels = examples(ds)
    assert sorted(labels) == [0, 0, 1, 1, 2]
    assert all(image.shape[2] == 3 and image.dtype == np.uint8 for image in images)
    assert all(np.all(image == image[0, 0, 0]) for image in images)  # grey -> RGB
    order = data.labels(name, "extra", data_dir=str(tmp_path))
    assert order.tolist() == labels  # the dataset order
    ds = data.classifier_dataset(name, "extra", image_size=8, batch_size=5, training=False,
                                 data_dir=str(tmp_path), subset=[0, 3])
    assert batches(ds)[0][1].tolist() == order[[0, 3]].tolist()
    ds = data.pretrain_dataset(name, "train", image_size=8, global_batch_size=5,
                               data_dir=str(tmp_path), seed=0)
    got = batches(ds)
    assert len(got) == 2 and got[0][0].shape == (5, 8, 8, 3)
    assert [y.tolist() for _, y in got] == [y.tolist() for _, y in batches(
        data.pretrain_dataset(name, "train", image_size=8, global_batch_size=5,
                              data_dir=str(tmp_path), seed=0))]


def test_tfds_split_slices_are_read(tmp_path):
    KerasSimclrTinyImages(data_dir=str(tmp_path)).download_and_prepare()
    name, data_dir = "keras_simclr_tiny_images", str(tmp_path)
    order = data.labels(name, "train", data_dir=data_dir)
    assert data.labels(name, "train[:5]", data_dir=data_dir).tolist() == order[:5].tolist()
    ds = data.classifier_dataset(name, "train[4:]", image_size=8, batch_size=8,
                                 training=False, data_dir=data_dir, subset=[0, 2])
    assert batches(ds)[0][1].tolist() == order[[4, 6]].tolist()
    ds = data.pretrain_dataset(name, "train[:10]", image_size=8, global_batch_size=5,
                               data_dir=data_dir, seed=0)
    assert len(batches(ds)) == 2
    with pytest.raises(data.DataError, match=re.escape("no split 'nope[:3]'")):
        data.labels(name, "nope[:3]", data_dir=data_dir)


# ----------------------------------------------------------------------------------------
# A CIFAR-10 folder as the README prepares it (train/val, one directory per class)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def test_cifar10_folder_has_the_expected_splits_and_classes(tmp_path):
    # The layout of a prepared CIFAR-10 (45,000 / 5,000 images), with 3 / 1 per class.
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 1)):
        for name in CIFAR10_CLASSES[::-1]:  # written out of order: classes sort by name
            for k in range(per_class):
                write_image(os.path.join(tmp_path, split, name, f"{k}.png"),
                            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    dataset = data.FOLDER_PREFIX + str(tmp_path)
    info = data.describe(dataset)
    assert info.splits == {"train": 30, "val": 10}
    assert info.num_classes == 10 and list(info.class_names) == CIFAR10_CLASSES
    for split, per_class in (("train", 3), ("val", 1)):
        ds, _ = data.load(dataset, split)
        labels = np.concatenate([y for y in ds.map(lambda x, y: y).batch(50)])
        assert np.bincount(labels).tolist() == [per_class] * 10
