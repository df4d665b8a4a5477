"""Checkpoint rotation and discovery, and the throughput callback."""
import os

import keras
import numpy as np

from keras_simclr.callbacks import EpochCheckpoint, Throughput, latest_checkpoint


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_keeps_the_last_checkpoints_and_finds_the_newest(tmp_path):
    directory = str(tmp_path / "ckpt")
    model = tiny_model()
    x, y = np.zeros((8, 4)), np.zeros((8, 2))
    model.fit(x, y, epochs=5, verbose=0, callbacks=[EpochCheckpoint(directory, keep=2)])
    assert sorted(os.listdir(directory)) == ["ckpt-4.keras", "ckpt-5.keras"]
    # A partial file left by a kill during saving is never taken for a checkpoint.
    open(os.path.join(directory, ".ckpt-6.partial.keras"), "wb").close()
    open(os.path.join(directory, "ckpt-7.keras.tmp"), "wb").close()
    path, epoch = latest_checkpoint(directory)
    assert epoch == 5 and path.endswith("ckpt-5.keras")
    assert int(keras.saving.load_model(path).optimizer.iterations) == 5
    assert latest_checkpoint(str(tmp_path / "empty")) == (None, 0)


def test_non_chief_writes_nothing_in_the_model_directory(tmp_path):
    directory = str(tmp_path / "ckpt")
    tiny_model().fit(np.zeros((4, 4)), np.zeros((4, 2)), epochs=1, verbose=0,
                     callbacks=[EpochCheckpoint(directory, is_chief=False)])
    assert not os.path.exists(directory) or not os.listdir(directory)


def test_throughput_reports_views_per_second():
    throughput = Throughput(global_batch_size=4)
    history = tiny_model().fit(np.zeros((16, 4)), np.zeros((16, 2)), batch_size=4, epochs=3,
                               verbose=0, callbacks=[throughput]).history
    assert len(history["views_per_s"]) == 3 and min(history["views_per_s"]) > 0
    rates = [entry["views_per_s"] for entry in throughput.history]
    assert throughput.median_views_per_s() == float(np.median(rates[1:]))
