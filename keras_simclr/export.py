"""SavedModel export of an encoder (and optionally its linear classifier) for serving.

The SavedModel has two signatures, both accepting any batch and image size and resizing
to the training size inside:
- `serving_default`: uint8 images [batch, H, W, 3] in [0, 255];
- `serving_float`: float32 images [batch, H, W, 3] in [0, 1].
Each returns {"embedding": h} and, for a linear-evaluation model, also "logits".
`keras.export.ExportArchive` is used because `model.export()` offers only one float32
signature (DESIGN section 4).

The export is atomic: it is written to a temporary directory beside the target, reloaded
with `tf.saved_model.load`, its outputs checked against the Keras model, and only then
renamed into place, so an interrupted or failed export never leaves a half-written model.
`keras_simclr.json` beside `saved_model.pb` records the image size the encoder was
trained on (the signatures resize to it) and the output sizes.
"""
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_simclr.augment import to_float_images


METADATA_FILE = "keras_simclr.json"  # image size and outputs, beside saved_model.pb


def read_metadata(export_dir):
    """The metadata an export wrote ({} for other SavedModels)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


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


def export_encoder(encoder, export_dir, image_size, classifier=None, check_batch=4, atol=1e-4):
    """Write `encoder` (and `classifier`, a layer on h) as a SavedModel at `export_dir`.

    Returns the path. Raises ExportError, leaving any previous export in place, when the
    reloaded model's outputs differ from the Keras model's by more than `atol`.
    """
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
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
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump({"image_size": int(image_size),
                       "embedding_dim": int(encoder.output.shape[-1]),
                       "logits": classifier is not None}, f)
        if os.path.exists(export_dir):
            previous = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old-", dir=parent)
            os.replace(export_dir, os.path.join(previous, "model"))
            os.replace(staging, export_dir)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def _check_reload(path, serve, image_size, batch, atol):
    images = np.random.default_rng(0).integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
    expected = serve(tf.constant(images))
    loaded = tf.saved_model.load(path)
    for signature, inputs in [("serving_default", images),
                              ("serving_float", images.astype(np.float32) / 255.0)]:
        got = loaded.signatures[signature](images=tf.constant(inputs))
        for key, want in expected.items():
            error = float(np.max(np.abs(got[key].numpy() - want.numpy())))
            if error > atol:
                raise ExportError(
                    f"reloaded SavedModel {signature}[{key}] differs from the Keras model "
                    f"by {error:.2e} (> {atol})"
                )
