"""Importing the official SimCLR models, checked against the official code's own outputs.

tests/fixtures/official/ holds three tiny ResNet-50s (width 1/16, 64 px) that the official
implementation built, filled with random weights, saved as its SavedModels and ran
(tools/make_official_fixtures.py says how): SimCLRv2 layouts with and without selective
kernels, and a SimCLRv1 release without projection head.
"""
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import backbones, official
from keras_simclr.export import export_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "official")
NAMES = ("r50_sk0_v2", "r50_sk1_v2", "r50_v1")
LAST_BLOCKS = (3, 4, 6, 3)  # ResNet-50


def source(name):
    return os.path.join(FIXTURES, name, "saved_model")


def recorded(name):
    return dict(np.load(os.path.join(FIXTURES, name, "outputs.npz")))


def relative_error(got, want):
    """Largest difference relative to the largest official value of the tensor."""
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def encoder_outputs(encoder, images, training=False):
    """The official output dict's encoder tensors, from the native encoder's layers."""
    names = {"initial_conv": "stem_conv", "initial_max_pool": "stem_pool"}
    names.update({f"block_group{g + 1}": f"stage{g + 1}_block{count}_out"
                  for g, count in enumerate(LAST_BLOCKS)})
    probe = keras.Model(encoder.input, [encoder.get_layer(n).output for n in names.values()]
                        + [encoder.output])
    return dict(zip([*names, "final_avg_pool"], probe(images, training=training)))


@pytest.mark.parametrize("name", NAMES)
def test_imported_model_reproduces_every_official_output(name):
    want = recorded(name)
    model, arch = official.load(source(name))
    images = want["images"].astype(np.float32) / 255.0
    got = encoder_outputs(model.encoder, images)
    got["logits_sup"] = model.probe(got["final_avg_pool"])
    if arch.head_depth:
        got["proj_head_output"] = model.head(got["final_avg_pool"], training=False)
    expected = {"initial_conv", "initial_max_pool", "block_group1", "block_group2",
                "block_group3", "block_group4", "final_avg_pool", "logits_sup"}
    assert expected | ({"proj_head_output"} if arch.head_depth else set()) == set(got)
    for key, value in got.items():
        assert relative_error(value, want[key]) < 1e-4, key
    # BN on batch statistics (the official `trainable=True`), after the inference checks:
    # a training-mode call moves the moving averages. 1e-2, not 1e-4: BN over 1x1 maps
    # (the head, the selective kernels' squeeze) divides by the spread of 3 examples,
    # which multiplies float32 rounding differences where the 3 nearly agree (measured up
    # to 1.3e-3); BN on moving statistics instead would be off by more than 1.
    h = model.encoder(images, training=True)
    trained = {"final_avg_pool": h, "logits_sup": model.probe(h)}
    if arch.head_depth:
        trained["proj_head_output"] = model.head(h, training=True)
    for key, value in trained.items():
        assert relative_error(value, want[f"{key}_trainable"]) < 1e-2, key


@pytest.mark.parametrize("name,sk_ratio,head_depth", [
    ("r50_sk0_v2", 0.0, 3), ("r50_sk1_v2", 0.0625, 3), ("r50_v1", 0.0, 0)])
def test_architecture_is_read_from_the_shapes(name, sk_ratio, head_depth):
    arch = official.infer_architecture(official.Source(source(name)))
    assert (arch.depth, arch.width_multiplier, arch.stem) == (50, 0.0625, "imagenet")
    assert (arch.sk_ratio, arch.head_depth, arch.num_classes) == (sk_ratio, head_depth, 10)
    assert arch.proj_dim == (32 if head_depth else 0)


def test_keras_same_padding_would_not_reproduce_the_official_model():
    """The official strided convolutions pad (k - 1) // 2 before; Keras' "same" pads the
    end more on even sides, which shifts every strided layer by a pixel."""
    model, arch = official.load(source("r50_sk0_v2"))
    same = backbones.resnet(50, width_multiplier=arch.width_multiplier, padding="same")
    for layer in same.layers:
        if layer.weights:
            layer.set_weights(model.encoder.get_layer(layer.name).get_weights())
    images = recorded("r50_sk0_v2")["images"].astype(np.float32) / 255.0
    want = recorded("r50_sk0_v2")["final_avg_pool"]
    assert relative_error(same(images, training=False), want) > 1e-2
    assert relative_error(model.encoder(images, training=False), want) < 1e-4


def test_fit_step_under_two_replica_mirrored_strategy(tmp_path):
    out = tmp_path / "fit.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_official_helper.py"),
                    source("r50_sk1_v2"), str(out)], check=True, cwd=ROOT, timeout=600,
                   capture_output=True)
    result = json.loads(out.read_text())
    assert result["replicas"] == 2 and result["mirrored"]
    assert result["changed"] == result["variables"]  # every encoder weight trained
    assert np.isfinite(result["loss"]) and np.isfinite(result["probe_loss"])


def test_import_export_reload_serves_the_official_embeddings(tmp_path):
    model, _ = official.load(source("r50_sk1_v2"))
    export_dir = export_encoder(model.encoder, str(tmp_path / "export"), image_size=64)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    want = recorded("r50_sk1_v2")
    got = serve(images=tf.constant(want["images"]))["embedding"]
    assert relative_error(got, want["final_avg_pool"]) < 1e-4


def test_the_imported_model_saves_and_reloads_as_keras(tmp_path):
    model, _ = official.load(source("r50_sk1_v2"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    want = recorded("r50_sk1_v2")
    images = want["images"].astype(np.float32) / 255.0
    assert relative_error(reloaded.encoder(images), want["final_avg_pool"]) < 1e-4
