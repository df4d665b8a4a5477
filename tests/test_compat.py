"""Runs written by the previous release (0.1.0, before the package was grouped into
subpackages) still load, resume and export: a tiny pretraining run of that release is kept in
tests/fixtures/release_0_1_0 (model.keras, the epoch-1 checkpoint and config.json)."""
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_simclr import ProjectionHead, SimCLR
from keras_simclr.exchange.export import export_encoder
from test_apps import run_app

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "release_0_1_0")
# the recipe the fixture was trained with (its config.json), as flags
RECIPE = ["--dataset=shapes", "--image_size=16", "--width_multiplier=0.125", "--batch_size=16",
          "--head_depth=2", "--proj_dim=16", "--backbone=resnet10", "--steps_per_epoch=4",
          "--seed=0", "--verbose=0"]


def test_the_old_release_model_loads_with_every_part():
    model = keras.saving.load_model(os.path.join(FIXTURE, "model.keras"))
    assert isinstance(model, SimCLR) and isinstance(model.head, ProjectionHead)
    assert model.augmenter is None  # the views were made in the input pipeline
    assert isinstance(model.probe, keras.layers.Dense)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    h = model(images)
    assert h.shape == (4, 64) and np.all(np.isfinite(h))  # ResNet-10 at width 1/8
    # the probe read its kernel from the old plain Dense layer: not a fresh initialisation
    checkpoint = keras.saving.load_model(os.path.join(FIXTURE, "checkpoints", "ckpt-1.keras"))
    assert not np.allclose(model.probe.kernel, checkpoint.probe.kernel)
    assert int(checkpoint.optimizer.iterations) == 4


def test_the_old_release_run_resumes_and_exports(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    os.remove(run / "model.keras")  # resume from the epoch-1 checkpoint, as after a kill
    result = run_app("pretrain", f"--model_dir={run}", "--epochs=2", *RECIPE)
    assert "resuming from" in result.stdout
    with open(run / "summary.json") as f:
        summary = json.load(f)
    assert summary["resumed_from_epoch"] == 1 and np.isfinite(summary["loss"])
    model = keras.saving.load_model(run / "model.keras")
    assert int(model.optimizer.iterations) == 8  # 4 steps of the old run, 4 of this one
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    export_dir = export_encoder(model.encoder, str(tmp_path / "export"), image_size=16)
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    embedding = served(tf.constant(images))["embedding"]
    np.testing.assert_allclose(embedding, model(images), atol=1e-4)
