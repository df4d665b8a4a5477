"""SavedModel export of an encoder (and optionally its linear classifier) for serving.

The SavedModel has two signatures, both accepting any batch and image size and resizing
to the training size inside:
- `serving_default`: uint8 images [batch, H, W, 3] in [0, 255];
- `serving_float`: float32 images [batch, H, W, 3] in [0, 1].
Each returns {"embedding": h} and, for a linear-evaluation model, also "logits".
`keras.export.ExportArchive` is used because `model.export()` writes a single endpoint
with one float32 input signature, and serving wants uint8 images too.
`keras_simclr.json` beside `saved_model.pb` records the image size the encoder was
trained on (the signatures resize to it) and the output sizes.

The export is written to a temporary directory, reloaded with `tf.saved_model.load` and
its outputs checked against the Keras model before it replaces anything. Then:
- where directories rename atomically (local disks, HDFS: `storage.has_atomic_rename`),
  the temporary directory is a sibling of `export_dir` and is renamed into place (a
  previous export is renamed aside just before, and deleted after): an interrupted or
  failed export never leaves a half-written model, and a reader finds the previous export
  or the new one (or, for the instant between the two renames, none);
- on object stores (`gs://`, `s3://`) and `ram://`, which cannot rename a directory
  atomically (TensorFlow copies object by object; `ram://` moves only the directory
  entry, not its files), it is written and checked in a local temporary directory and
  then copied: the previous export's `saved_model.pb` is deleted first, then the rest of
  it, and the new `saved_model.pb` is copied last, so a reader that finds a
  `saved_model.pb` finds the whole export beside it. An interruption during the copy
  leaves no loadable export (the previous one is gone already): export again.
"""
import os
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_simclr.training import resilience
from keras_simclr.utils import storage
from keras_simclr.views.view_dict import to_float_images

METADATA_FILE = "keras_simclr.json"  # image size and outputs, beside saved_model.pb
SAVED_MODEL_FILE = "saved_model.pb"


def read_metadata(export_dir: str) -> dict:
    """The metadata an export wrote.

    Args:
        export_dir: a SavedModel directory, on any TensorFlow filesystem.
    Returns:
        The content of its `keras_simclr.json`; {} for other SavedModels.
    """
    return storage.read_json(os.path.join(export_dir, METADATA_FILE))


class ExportError(RuntimeError):
    """The reloaded SavedModel does not reproduce the Keras model."""


def _serving_fn(encoder, classifier, image_size):
    def serve(images):
        images = tf.image.resize(to_float_images(images), [image_size, image_size])
        h = encoder(images, training=False)
        outputs = {"embedding": h}
        if classifier is not None:
            outputs["logits"] = classifier(h)
        return outputs
    return serve


def export_encoder(encoder: keras.Model, export_dir: str, image_size: int,
                   classifier: keras.layers.Layer | None = None, check_batch: int = 4,
                   atol: float = 1e-4) -> str:
    """Write `encoder` (and `classifier`, a layer on h) as a SavedModel at `export_dir`.

    Args:
        encoder: the Keras encoder, images in [0, 1] to h.
        export_dir: the SavedModel directory, on any TensorFlow filesystem (see the module
            docstring for what replacing an existing export guarantees on each).
        image_size: the side the encoder was trained on; the signatures resize to it.
        classifier: optional layer on h whose output is exported as "logits".
        check_batch: images in the reload check.
        atol: largest difference allowed between the reloaded and the Keras outputs, per
            unit of the largest Keras output when that exceeds 1 (float32 rounding grows
            with the values: embeddings in the hundreds differ by 2e-4 after reload).
    Returns:
        The export directory (absolute for a local path). Raises ExportError, leaving any
        previous export in place, when the reloaded model differs by more than `atol`;
        `resilience.NonFiniteError`, writing nothing, when a weight is NaN or infinite.
    """
    resilience.check_finite(encoder, "the encoder")
    if classifier is not None:
        resilience.check_finite(classifier, "the classifier")
    if not storage.scheme(export_dir):
        export_dir = os.path.abspath(export_dir)
    export_dir = export_dir.rstrip("/")
    name = os.path.basename(export_dir)
    atomic = storage.has_atomic_rename(export_dir)
    if atomic:
        storage.makedirs(storage.parent(export_dir))
        staging = os.path.join(storage.parent(export_dir), f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    else:
        staging = tempfile.mkdtemp(prefix=f"{name}.tmp-")
    try:
        serve = _serving_fn(encoder, classifier, image_size)
        archive = keras.export.ExportArchive()
        archive.track(encoder)
        if classifier is not None:
            archive.track(classifier)
        archive.add_endpoint(
            "serving_default", serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        archive.add_endpoint(
            "serving_float", serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
        )
        archive.write_out(staging, verbose=False)
        _check_reload(staging, serve, image_size, check_batch, atol)
        storage.write_json(os.path.join(staging, METADATA_FILE), {
            "image_size": int(image_size), "embedding_dim": int(encoder.output.shape[-1]),
            "logits": classifier is not None})
        if atomic:
            _rename_into_place(staging, export_dir)
        else:
            _copy_into_place(staging, export_dir)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    return export_dir


def _rename_into_place(staging, export_dir):
    """Atomic renames: the previous export aside, the new one in, the previous deleted."""
    if not tf.io.gfile.exists(export_dir):
        tf.io.gfile.rename(staging, export_dir)
        return
    previous = os.path.join(storage.parent(export_dir),
                            f".{os.path.basename(export_dir)}.old-{uuid.uuid4().hex[:8]}")
    tf.io.gfile.rename(export_dir, previous)
    try:
        tf.io.gfile.rename(staging, export_dir)
    except BaseException:
        tf.io.gfile.rename(previous, export_dir)
        raise
    tf.io.gfile.rmtree(previous)


def _copy_into_place(staging, export_dir):
    """Not atomic: the previous export made unloadable, deleted, the new one copied with
    its saved_model.pb last (see the module docstring)."""
    if tf.io.gfile.exists(os.path.join(export_dir, SAVED_MODEL_FILE)):
        tf.io.gfile.remove(os.path.join(export_dir, SAVED_MODEL_FILE))
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    storage.copy_tree(staging, export_dir, last=SAVED_MODEL_FILE)


def _check_reload(path, serve, image_size, batch, atol):
    images = np.random.default_rng(0).integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
    expected = serve(tf.constant(images))
    loaded = tf.saved_model.load(path)
    for signature, inputs in [("serving_default", images),
                              ("serving_float", images.astype(np.float32) / 255.0)]:
        got = loaded.signatures[signature](images=tf.constant(inputs))
        for key, want in expected.items():
            error = float(np.max(np.abs(got[key].numpy() - want.numpy())))
            allowed = atol * max(1.0, float(np.max(np.abs(want.numpy()))))
            if error > allowed:
                raise ExportError(
                    f"reloaded SavedModel {signature}[{key}] differs from the Keras model "
                    f"by {error:.2e} (> {allowed:.2e})"
                )
