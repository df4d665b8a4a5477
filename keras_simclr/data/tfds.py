"""TFDS datasets: every dataset name that no other source is registered for.

Any TFDS dataset with an `image` feature and, when present, a `label` ClassLabel
(`cifar10`, `cifar100`, `stl10` with its `unlabelled` split, `imagenette`,
`imagenet2012`, ...); `data_dir` is the TFDS data directory and splits may be sliced
(`train[:10%]`). Images are read encoded and decoded in the pipeline. A dataset that is not
prepared fails at once with instructions instead of downloading.
"""
import os

import numpy as np
import tensorflow as tf

from keras_simclr.data.folder import FOLDER_PREFIX
from keras_simclr.data.source import (DataError, DatasetInfo, UNLABELLED, check_split,
                                      shard, unknown_dataset_message)

_RECORD_SHUFFLE_BUFFER = 10_000  # encoded TFDS examples held by a shuffle buffer


class TfdsSource:
    """A prepared TFDS dataset; records are `(encoded image, int64 label)`."""

    strict = True

    def __init__(self, *, name, data_dir=None, strict=False):
        del strict  # TFDS records are whole; a failing decode is a real error
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except ValueError:  # DatasetNotFoundError, or not a valid TFDS name at all
            raise DataError(_unknown_dataset_message(name, tfds)) from None
        if not builder.is_prepared():
            raise DataError(_not_prepared_message(name, builder, data_dir))
        features = builder.info.features
        if "image" not in features:
            raise DataError(f"TFDS dataset {name} has no 'image' feature; features: "
                            f"{', '.join(features.keys())}")
        label = features["label"] if "label" in features else None
        self.has_label = isinstance(label, tfds.features.ClassLabel)
        shape = features["image"].shape
        size = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
        self.info = DatasetInfo(
            name,
            {split: info.num_examples for split, info in builder.info.splits.items()},
            tuple(label.names) if self.has_label else (),
            size,
        )
        self.builder = builder
        self.image_feature = features["image"]
        self._tfds = tfds

    def count(self, *, split):
        if split.split("[", 1)[0] not in self.info.splits:  # TFDS slicing: train[:10%]
            check_split(self.info, split)  # raises, naming the split as given
        return self.builder.info.splits[split].num_examples

    def records(self, *, split, input_context=None, shuffle_files=False, seed=None,
                subset=None):
        tfds = self._tfds
        if subset is not None:  # indices count in file order: read it all, then shard
            shuffle_files, shard_files = False, None
        else:
            shard_files = input_context
        read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=shard_files,
                                      try_autocache=False)
        ds = self.builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                     read_config=read_config,
                                     decoders={"image": tfds.decode.SkipDecoding()})
        has_label = self.has_label
        ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int64) if has_label
                                else tf.constant(UNLABELLED, tf.int64)))
        if subset is None:
            return ds
        keep = np.zeros(self.count(split=split), bool)
        keep[subset] = True
        ds = ds.enumerate().filter(lambda index, record: tf.gather(keep, index))
        return shard(ds.map(lambda index, record: record), input_context)

    def record_buffer(self, *, num_examples):
        return min(num_examples, _RECORD_SHUFFLE_BUFFER)

    def labels(self, *, split):
        ds = self.records(split=split).map(lambda image, label: label)
        return np.concatenate([[]] + list(ds.batch(8192).as_numpy_iterator())).astype(
            np.int64)

    def decode(self, *, record):
        encoded, label = record
        return to_rgb_uint8(self.image_feature.decode_example(encoded)), label


def to_rgb_uint8(image: tf.Tensor) -> tf.Tensor:
    """Any decoded image [H, W, C] (C in 1..4, uint8/uint16/float) -> uint8 [H, W, 3]."""
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels is None:
        gray = tf.less(tf.shape(image)[-1], 3)
        image = tf.cond(gray, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                        lambda: image[..., :3])
    elif channels < 3:
        image = tf.repeat(image[..., :1], 3, axis=-1)
    else:
        image = image[..., :3]
    return tf.ensure_shape(image, [None, None, 3])


def _unknown_dataset_message(name, tfds):
    known = tfds.list_builders(with_community_datasets=False)
    try:
        is_folder = tf.io.gfile.isdir(name)
    except tf.errors.OpError:  # e.g. a scheme TensorFlow has no filesystem for
        is_folder = False
    hint = f"did you mean {FOLDER_PREFIX}{name}? " if is_folder else ""
    return (unknown_dataset_message(name, known, "a TFDS dataset", hint)
            + f" ({len(known)} TFDS datasets are known, see tfds.list_builders())")


def _not_prepared_message(name, builder, data_dir):
    where = data_dir or "the default TFDS data directory"
    message = (f"TFDS dataset {name} is not prepared in {builder.data_dir} ({where}); "
               f"this library does not download. With network access, run: "
               f"tfds build {name}" + (f" --data_dir={data_dir}" if data_dir else ""))
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        message += (f" after placing the manual download files in "
                    f"{os.path.join(builder.data_dir_root, 'downloads', 'manual')}: "
                    + " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
    return message
