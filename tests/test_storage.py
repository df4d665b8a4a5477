"""Files on any TensorFlow filesystem: storage helpers, exports, and the apps on ram://.

`ram://` is TensorFlow's in-memory filesystem: it stands in for gs:// and other URLs
here. It lives in one process's memory, so the end-to-end run of pretrain, export and
embed happens in one subprocess (tests/_ram_apps_driver.py) started from an empty working
directory, which must stay empty: `--model_dir=ram://...` used to create a local folder
`ram:/...` there.
"""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.utils import storage
from keras_simclr.exchange.export import ExportError, export_encoder, read_metadata
import _app_server as app_server
from test_apps import TINY, run_app, write_folder

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ram_apps_driver.py")


# ----------------------------------------------------------------------------------------
# pretrain, export and embed on ram://


@pytest.fixture(scope="module")
def ram_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ram_apps")
    dataset = write_folder(str(base / "images"), {"train": 64, "test": 16})
    cwd = base / "cwd"
    cwd.mkdir()
    out = base / "report.json"
    driver = app_server.start([DRIVER, dataset, str(out)], cwd=str(cwd))
    _, stderr = driver.communicate(timeout=900)
    assert driver.returncode == 0, stderr[-4000:]
    return json.loads(out.read_text()), stderr, dataset


def test_pretrain_writes_its_run_to_an_in_memory_filesystem(ram_run):
    report, _, dataset = ram_run
    files = report["run_files"]
    assert [f for f in files if not f.startswith("logs/")] == [
        "checkpoints/ckpt-1.keras", "checkpoints/ckpt-2.keras", "config.json", "model.keras",
        "summary.json"]
    assert any(f.startswith("logs/train/events.out.tfevents") for f in files)  # TensorBoard
    assert report["config_dataset"] == dataset and report["summary"]["epochs"] == 2


def test_no_local_folder_named_after_the_url(ram_run):
    report, _, _ = ram_run
    assert report["working_directory"] == []  # not "ram:" (os.makedirs("ram://runs/..."))


def test_resume_skips_a_truncated_newest_checkpoint(ram_run):
    report, stderr, _ = ram_run
    # ckpt-2 was cut in half: the run resumed from ckpt-1 (instead of stopping with
    # Keras' "File not found") and said so in one line
    assert report["resumed"]["resumed_from_epoch"] == 1 and report["resumed"]["epochs"] == 3
    skipped = [line for line in stderr.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1
    assert "ram://runs/tiny/checkpoints/ckpt-2.keras" in skipped[0] and "truncated" in skipped[0]
    # --save_every_steps=3 over steps 5-12 saved steps 6 and 9 inside epochs (keep 3)
    assert report["checkpoints_after_resume"] == ["ckpt-2-1.keras", "ckpt-2.keras", "ckpt-3.keras"]
    assert report["resumed_inside"] == [
        "resuming from ram://runs/tiny/checkpoints/ckpt-2-1.keras (epoch 2 done, 1 steps into "
        "the next)"]


def test_finetune_writes_its_classifier_and_result_to_an_in_memory_filesystem(ram_run):
    # It made its folder with os.makedirs, which left a local folder "ram:" in the working
    # directory (test_no_local_folder_named_after_the_url checks after this run too).
    report, _, _ = ram_run
    assert report["finetune_files"] == ["classifier.keras", "result.json"]


def test_export_and_embed_on_an_in_memory_filesystem(ram_run):
    report, _, _ = ram_run
    assert report["export_again"].startswith("exported SavedModel to ram://exports/tiny")
    assert report["exports"] == ["tiny"]  # no temporary or previous export left beside it
    assert {"saved_model.pb", "keras_simclr.json", "variables/variables.index"} <= set(
        report["export_files"])
    assert report["served_shape"] == [2, 64]
    # the embed app's last line says where the embeddings went (a stage line comes first)
    assert report["embed"].splitlines()[-1].startswith("wrote ram://out/x.npz")
    assert report["out_files"] == ["from_run.npz", "x.npz"]
    embedding = report["embedding"]
    assert embedding["shape"] == [16, 64] and embedding["dtype"] == "float32"
    assert embedding["labels"] == 16 and embedding["max_difference"] < 1e-4


def test_unwritable_model_dir_ends_with_one_clear_line(tmp_path):
    """tf.io.gfile raises tf.errors (not OSError) for a path below a file."""
    dataset = write_folder(str(tmp_path / "images"), {"train": 16, "test": 16})
    (tmp_path / "afile").write_text("")
    result = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={tmp_path}/afile/run",
                     "--epochs=1", *TINY, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "afile" in last, result.stderr[-2000:]


# ----------------------------------------------------------------------------------------
# storage


@pytest.mark.parametrize("root", ["local", "ram://test_storage/json"])
def test_json_round_trip(tmp_path, root):
    root = str(tmp_path) if root == "local" else root
    path = f"{root}/deeper/result.json"
    storage.write_json(path, {"b": 1, "a": [1.5, "x"]})
    assert storage.read_json(path) == {"a": [1.5, "x"], "b": 1}
    assert tf.io.gfile.listdir(f"{root}/deeper") == ["result.json"]  # no temporary left
    assert storage.read_json(f"{root}/missing.json") == {}
    storage.write_bytes(path, b"{not json")
    with pytest.raises(ValueError, match="result.json is not valid JSON"):
        storage.read_json(path)


class _DiesWhileSaving:
    """A model whose save is interrupted halfway through writing."""

    def save(self, path):
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(b"PK half a zip")
        raise KeyboardInterrupt


@pytest.mark.parametrize("root", ["local", "ram://test_storage/save"])
def test_an_interrupted_save_keeps_the_previous_file(tmp_path, root):
    root = str(tmp_path) if root == "local" else root
    path = f"{root}/model.keras"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    storage.save_model(model, path)
    with pytest.raises(KeyboardInterrupt):
        storage.save_model(_DiesWhileSaving(), path)
    assert tf.io.gfile.listdir(root) == ["model.keras"]
    assert storage.keras_archive_problem(path) is None
    assert keras.saving.load_model(path).count_params() == model.count_params()


def test_keras_archive_problems(tmp_path):
    path = str(tmp_path / "model.keras")
    assert storage.keras_archive_problem(path) == "no such file"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    assert storage.keras_archive_problem(path) is None
    data = open(path, "rb").read()
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the weights, whose CRC no longer matches
    open(path, "wb").write(bytes(damaged))
    assert "fails its CRC check" in storage.keras_archive_problem(path)
    open(path, "wb").write(data[:1000])
    assert "truncated" in storage.keras_archive_problem(path)


def test_filesystems_and_parents():
    assert [storage.has_atomic_rename(p) for p in (
        "runs/a", "/abs/a", "file:///abs/a", "hdfs://nn/a", "gs://b/a", "s3://b/a", "ram://a",
    )] == [True, True, True, True, False, False, False]
    assert storage.parent("ram://x.json") == "ram://"
    assert storage.parent("gs://bucket/run/x.json") == "gs://bucket/run"
    assert storage.parent("x.npz") == ""


def test_copy_tree_copies_the_named_file_last(monkeypatch, tmp_path):
    source = tmp_path / "source"
    (source / "variables").mkdir(parents=True)
    for name in ("saved_model.pb", "variables/variables.index", "zzz.json"):
        (source / name).write_text(name)
    copied, copy = [], storage.gfile.copy
    monkeypatch.setattr(storage.gfile, "copy", lambda a, b, overwrite: (
        copied.append(os.path.basename(b)), copy(a, b, overwrite))[1])
    storage.copy_tree(str(source), "ram://test_storage/tree", last="saved_model.pb")
    assert copied[-1] == "saved_model.pb" and len(copied) == 3
    with tf.io.gfile.GFile("ram://test_storage/tree/variables/variables.index") as f:
        assert f.read() == "variables/variables.index"


# ----------------------------------------------------------------------------------------
# export_encoder


def _encoder():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize("root", ["local", "ram://test_storage/exports"])
def test_a_failed_export_keeps_the_previous_one(tmp_path, root):
    root = str(tmp_path) if root == "local" else root
    export_dir = f"{root}/model"
    encoder = _encoder()
    assert export_encoder(encoder, export_dir, 8) == export_dir
    assert read_metadata(export_dir) == {"embedding_dim": 4, "image_size": 8, "logits": False}
    with pytest.raises(ExportError, match="differs from the Keras model"):
        export_encoder(encoder, export_dir, 12, atol=-1.0)  # every check fails
    assert tf.io.gfile.listdir(root) == ["model"]  # no staging or previous copy left
    assert read_metadata(export_dir)["image_size"] == 8
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    images = np.zeros((1, 8, 8, 3), np.uint8)
    np.testing.assert_allclose(served(images=tf.constant(images))["embedding"],
                               encoder(images.astype("float32")), atol=1e-5)
