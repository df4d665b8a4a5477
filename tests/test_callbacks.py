"""Checkpoint rotation, discovery and resume, and the throughput callback."""
import logging
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.training import callbacks, distribute
from keras_simclr.training.callbacks import (EpochCheckpoint, Throughput, checkpoint_position,
                                    latest_checkpoint)


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def fit(model, directory, epochs, **kwargs):
    model.fit(np.zeros((8, 4)), np.zeros((8, 2)), epochs=epochs, verbose=0,
              callbacks=[EpochCheckpoint(directory, **kwargs)])


def test_keeps_the_last_checkpoints_and_finds_the_newest(tmp_path):
    directory = str(tmp_path / "ckpt")
    fit(tiny_model(), directory, 5, keep=2)
    assert sorted(os.listdir(directory)) == ["ckpt-4.keras", "ckpt-5.keras"]
    # A partial file left by a kill during saving is never taken for a checkpoint.
    open(os.path.join(directory, ".ckpt-6.partial-0123abcd.keras"), "wb").close()
    open(os.path.join(directory, "ckpt-7.keras.tmp"), "wb").close()
    path, epoch = latest_checkpoint(directory)
    assert epoch == 5 and path.endswith("ckpt-5.keras")
    assert int(keras.saving.load_model(path).optimizer.iterations) == 5
    assert latest_checkpoint(str(tmp_path / "empty")) == (None, 0)


def test_checkpoints_inside_epochs_sort_between_the_epochs_and_rotate_with_them(tmp_path):
    directory = str(tmp_path / "ckpt")
    checkpoint = EpochCheckpoint(directory, keep=3)
    checkpoint.set_model(tiny_model())
    for epoch, batch in [(1, 0), (1, 2), (1, 10), (2, 0), (0, 5)]:
        checkpoint.save(epoch, batch)
    # by position, not by name: ckpt-1-10 after ckpt-1-2; ckpt-0-5 the oldest, deleted
    assert sorted(os.listdir(directory)) == ["ckpt-1-10.keras", "ckpt-1-2.keras", "ckpt-2.keras"]
    path, epoch = latest_checkpoint(directory)
    assert (os.path.basename(path), epoch, checkpoint_position(path)) == ("ckpt-2.keras", 2, (2, 0))
    os.remove(path)
    path, epoch = latest_checkpoint(directory)
    assert (os.path.basename(path), epoch, checkpoint_position(path)) == (
        "ckpt-1-10.keras", 1, (1, 10))
    assert checkpoint_position(None) == (0, 0)
    with pytest.raises(ValueError, match="not named like a checkpoint"):
        checkpoint_position("model.keras")


class StopAt(keras.callbacks.Callback):
    """Stops training after global step `step` (as a time budget's end does)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            self.model.stop_training = True


def test_a_checkpoint_where_training_stopped_inside_an_epoch_is_named_by_its_step(tmp_path):
    directory = str(tmp_path / "ckpt")
    model = tiny_model()
    model.fit(np.zeros((16, 4)), np.zeros((16, 2)), batch_size=2, epochs=3, verbose=0,
              callbacks=[StopAt(11), EpochCheckpoint(directory, steps_per_epoch=8)])
    assert sorted(os.listdir(directory)) == ["ckpt-1-3.keras", "ckpt-1.keras"]


def test_the_next_save_removes_partial_files_of_an_interrupted_one(tmp_path):
    directory = str(tmp_path / "ckpt")
    os.makedirs(directory)
    open(os.path.join(directory, ".ckpt-1.partial-0123abcd.keras"), "wb").close()
    fit(tiny_model(), directory, 1)
    assert os.listdir(directory) == ["ckpt-1.keras"]


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, caplog):
    """A damaged newest checkpoint stopped the resume with Keras' "File not found"."""
    directory = str(tmp_path / "ckpt")
    fit(tiny_model(), directory, 2)
    newest = os.path.join(directory, "ckpt-2.keras")
    with open(newest, "r+b") as f:  # as a full disk or an interrupted copy leaves it
        f.truncate(os.path.getsize(newest) // 2)
    with caplog.at_level(logging.WARNING):
        path, epoch = latest_checkpoint(directory)
    assert (os.path.basename(path), epoch) == ("ckpt-1.keras", 1)
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "ckpt-2.keras" in skipped[0] and "truncated" in skipped[0]
    resumed = keras.saving.load_model(path)
    assert int(resumed.optimizer.iterations) == 1
    # training on from there writes a good epoch 2 over the damaged one
    resumed.fit(np.zeros((8, 4)), np.zeros((8, 2)), initial_epoch=1, epochs=2, verbose=0,
                callbacks=[EpochCheckpoint(directory)])
    assert latest_checkpoint(directory)[1] == 2


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "ckpt-3.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="none of the 1 checkpoints in .* is readable"):
        latest_checkpoint(str(directory))


def _non_chief():
    """What `distribute.is_chief`/`task_id` read of worker 1 of a multi-worker run."""
    return types.SimpleNamespace(
        extended=types.SimpleNamespace(should_checkpoint=False),
        cluster_resolver=types.SimpleNamespace(task_type="worker", task_id=1))


def test_non_chief_writes_nothing_in_the_model_directory(tmp_path):
    directory = str(tmp_path / "ckpt")
    fit(tiny_model(), directory, 2, keep=1, strategy=_non_chief())
    assert not os.path.exists(directory)
    private = distribute.write_path(directory, _non_chief())
    assert not private.startswith(str(tmp_path)) and os.listdir(private) == ["ckpt-2.keras"]


def test_checkpoints_on_an_in_memory_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = "ram://test_callbacks/run/checkpoints"
    fit(tiny_model(), directory, 3, keep=2)
    assert sorted(tf.io.gfile.listdir(directory)) == ["ckpt-2.keras", "ckpt-3.keras"]
    path, epoch = latest_checkpoint(directory)
    assert (path, epoch) == (f"{directory}/ckpt-3.keras", 3)
    assert int(keras.saving.load_model(path).optimizer.iterations) == 3
    # a non-chief worker's private copy of a URL is a local temporary path, never "ram:"
    private = distribute.write_path(directory, _non_chief())
    assert "ram:" not in private and private.endswith(os.path.join("ram", "test_callbacks",
                                                                     "run", "checkpoints"))
    assert os.listdir(tmp_path) == []


def test_throughput_reports_views_per_second(monkeypatch):
    # A clock read at each epoch's begin and end: the epochs take 2, 0.5 and 4 seconds.
    clock = iter([10.0, 12.0, 20.0, 20.5, 30.0, 34.0])
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    throughput = Throughput(global_batch_size=4, views_per_image=3)
    history = tiny_model().fit(np.zeros((16, 4)), np.zeros((16, 2)), batch_size=4, epochs=3,
                               verbose=0, callbacks=[throughput]).history
    want = [4 * 4 * 3 / seconds for seconds in (2.0, 0.5, 4.0)]  # steps x views / seconds
    assert history["views_per_s"] == pytest.approx(want, rel=1e-12)
    assert [entry["seconds"] for entry in throughput.history] == [2.0, 0.5, 4.0]
    rates = [entry["views_per_s"] for entry in throughput.history]
    assert throughput.median_views_per_s() == float(np.median(rates[1:])) == 54.0
