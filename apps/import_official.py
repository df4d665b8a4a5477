"""Import an official SimCLR model: `python -m apps.import_official --source=PATH --model_dir=DIR`.

--source is an official TF2 SavedModel (e.g. gs://simclr-checkpoints-tf2/simclrv2/
pretrained/r50_1x_sk0/saved_model, or a local copy). DIR receives `model.keras` (this
project's SimCLR model with the official weights: encoder, projection head where the
release has one, the supervised head as its linear probe, reading h or, in fine-tuned
releases, the projection-head layer the release's reads) and `config.json` (image size,
architecture, source, `classifier_head_layer`), so apps.linear_eval, finetune, knn_eval,
embed, neighbors, map and export take it like a pretraining run, with the features the
release's classifier reads. The models expect RGB in [0, 1] without mean/std
normalisation, as this project's. DIR is written aside and moved into place only once
the import is complete (see `_write_model_dir`).
"""
import os
import tempfile
import uuid

from absl import flags

from apps import common

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "Official SimCLR TF2 SavedModel directory (local or gs://).")
common.define_model_dir_flag()
flags.DEFINE_integer("image_size", 224, "Side of the images the model is used at (the "
                     "releases: 224, ImageNet's).")
flags.DEFINE_boolean("projection_head", None, "Import the projection head: default when the "
                     "source has one; --projection_head fails for releases without one "
                     "(SimCLRv1, supervised); --noprojection_head leaves it out.")
flags.mark_flag_as_required("source")
common.positive("image_size")


def run_config(arch, source: str, with_head: bool) -> dict:
    """What config.json records: what the apps read, and where the weights came from."""
    return {
        "image_size": FLAGS.image_size, "resize_method": "bicubic",
        "backbone": f"resnet{arch.depth}", "width_multiplier": arch.width_multiplier,
        "sk_ratio": arch.sk_ratio, "stem": arch.stem, "padding": "fixed",
        "head_depth": arch.head_depth if with_head else 2, "proj_dim": arch.proj_dim or 128,
        "probe_classes": arch.num_classes, "official_source": source,
        "classifier_head_layer": arch.classifier_head_layer,
        "official_architecture": arch.describe(), "projection_head_imported": with_head,
    }


def _write_model_dir(model, config: dict, model_dir: str) -> None:
    """model.keras and config.json in a staging directory, then moved to `model_dir`.

    Where directories rename atomically (`storage.has_atomic_rename`) the staging
    directory is a sibling renamed into place; elsewhere (gs://) it is local and copied
    with model.keras last, so a model directory with a model.keras is complete.
    """
    import tensorflow as tf

    from keras_simclr.utils import storage

    atomic = storage.has_atomic_rename(model_dir)
    name = os.path.basename(model_dir.rstrip("/"))
    if atomic:
        storage.makedirs(storage.parent(model_dir.rstrip("/")))
        staging = os.path.join(storage.parent(model_dir.rstrip("/")),
                               f".{name}.partial-{uuid.uuid4().hex[:8]}")
    else:
        staging = tempfile.mkdtemp(prefix=f"{name}.partial-")
    try:
        storage.write_json(os.path.join(staging, common.CONFIG_FILE), config)
        storage.save_model(model, os.path.join(staging, common.MODEL_FILE))
        if atomic:
            if tf.io.gfile.exists(model_dir) and not tf.io.gfile.listdir(model_dir):
                tf.io.gfile.rmtree(model_dir)  # an empty directory given as --model_dir
            tf.io.gfile.rename(staging, model_dir)
        else:
            storage.copy_tree(staging, model_dir, last=common.MODEL_FILE)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def main(argv):
    del argv
    import tensorflow as tf

    from keras_simclr.exchange import official

    model_dir = FLAGS.model_dir
    if tf.io.gfile.exists(model_dir) and tf.io.gfile.listdir(model_dir):
        raise common.AppError(f"--model_dir {model_dir} exists and is not empty: import "
                              f"into a new directory")
    common.say(f"reading the official model {FLAGS.source}")
    # official.OfficialModelError is a ValueError: common.run prints its one line
    model, arch = official.load(FLAGS.source, projection_head=FLAGS.projection_head)
    with_head = bool(arch.head_depth) and FLAGS.projection_head is not False
    common.say(f"found {arch.describe()}"
               + ("" if with_head else "; the model gets a new 2-layer projection head"))
    _write_model_dir(model, run_config(arch, FLAGS.source, with_head), model_dir)
    common.say(f"imported into {os.path.join(model_dir, common.MODEL_FILE)} "
               f"({FLAGS.image_size} px, RGB in [0, 1] without mean/std normalisation)")


run = common.run(main)

if __name__ == "__main__":
    run()
