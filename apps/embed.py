"""Embeddings of a dataset split into an NPZ: `python -m apps.embed --model=... --output=x.npz`.

`--model` is a SavedModel directory (from apps.export) or a pretraining `--model_dir`.
Writes `x` float32 (N, D) and `y` int64 (N,) labels (-1 where the data has none), in the
dataset's order, without augmentation. `x` is h, or for a run whose classifier reads a layer
of the projection head (an imported fine-tuned SimCLRv2 release) that layer's output.
"""
import io
import os

import numpy as np
from absl import flags

from apps import common
import tensorflow as tf  # noqa: E402  (after apps.common, which sets the runtime flags first)

from keras_simclr import data, evaluation
from keras_simclr.utils import storage
from keras_simclr.exchange.export import read_metadata

FLAGS = flags.FLAGS
common.define_data_flags(("split",))
flags.DEFINE_string("model", None, "SavedModel directory or pretraining model_dir.")
flags.DEFINE_string("output", None, "NPZ file to write.")
flags.DEFINE_integer("image_size", None, "Image size for a SavedModel (default: from the run).")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.mark_flags_as_required(["model", "output"])
common.positive("batch_size")


def embedding_fn(path):
    """(function from float images in [0, 1] to the features, image size, default dataset)."""
    if not tf.io.gfile.isdir(path):
        raise common.AppError(f"--model {path} is not a directory")
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        serve = tf.saved_model.load(path).signatures["serving_float"]
        size = FLAGS.image_size or read_metadata(path).get("image_size")
        if size is None:
            raise common.AppError("pass --image_size for a SavedModel (the size it was trained on)")
        return (lambda x: serve(images=tf.cast(x, tf.float32))["embedding"]), size, None
    model = common.load_pretrained(path)
    features_model = common.features_of(model)
    return ((lambda x: features_model(x, training=False)),
            FLAGS.image_size or common.image_size_of(path, model), path)


def main(argv):
    del argv
    embed, image_size, model_dir = embedding_fn(FLAGS.model)
    dataset = common.dataset_name(model_dir)
    common.say(f"embedding {dataset}:{FLAGS.split} at {image_size} px with {FLAGS.model}")
    ds = data.embed_dataset(dataset, FLAGS.split, image_size=image_size,
                            batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir,
                            strict=FLAGS.strict)
    x, y = evaluation.extract_features(embed, ds)
    npz = io.BytesIO()  # np.savez writes local files only; storage any TF filesystem
    np.savez(npz, x=x.astype(np.float32), y=y.astype(np.int64))
    storage.write_bytes(FLAGS.output, npz.getvalue())
    common.say(f"wrote {FLAGS.output}: x {x.shape} float32, y {y.shape} int64 "
               f"({dataset}:{FLAGS.split})")


run = common.run(main)

if __name__ == "__main__":
    run()
