"""Training side concerns as Keras callbacks: resumable checkpoints and throughput.

`EpochCheckpoint` saves the whole model (weights, optimizer state and iteration count, hence
the learning-rate schedule position) as `ckpt-EPOCH.keras` after every epoch, writing to a
temporary file and renaming it, so a `kill -9` at any moment leaves only complete
checkpoints; it keeps the last `keep`. `latest_checkpoint` finds the newest one to resume
from. Under multi-worker training every worker saves (saving reads distributed variables
collectively) but only the chief writes into the model directory.
"""
import glob
import os
import re
import shutil
import statistics
import tempfile
import time

import keras

_CHECKPOINT = re.compile(r"ckpt-(\d+)\.keras")


def _checkpoints(directory):
    """[(epoch, path)] of the complete checkpoints in `directory`, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.keras")):
        match = _CHECKPOINT.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory):
    """(path, epoch) of the newest complete checkpoint in `directory`, or (None, 0)."""
    found = _checkpoints(directory)
    if not found:
        return None, 0
    epoch, path = found[-1]
    return path, epoch


class EpochCheckpoint(keras.callbacks.Callback):
    """Atomically save the model to `directory/ckpt-EPOCH.keras` each epoch, keep the last few."""

    def __init__(self, directory, keep=3, is_chief=True):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.is_chief = is_chief

    def on_epoch_end(self, epoch, logs=None):
        target_dir = self.directory if self.is_chief else tempfile.mkdtemp()
        os.makedirs(target_dir, exist_ok=True)
        final = os.path.join(target_dir, f"ckpt-{epoch + 1}.keras")
        partial = os.path.join(target_dir, f".ckpt-{epoch + 1}.partial.keras")
        self.model.save(partial)
        os.replace(partial, final)
        if not self.is_chief:
            shutil.rmtree(target_dir, ignore_errors=True)
            return
        for _, path in _checkpoints(self.directory)[:-self.keep]:
            os.remove(path)


class Throughput(keras.callbacks.Callback):
    """Views per second of each epoch (2 views per image), reported in the epoch logs."""

    def __init__(self, global_batch_size, views_per_image=2):
        super().__init__()
        self.views_per_batch = global_batch_size * views_per_image
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        views_per_s = self._steps * self.views_per_batch / max(seconds, 1e-9)
        self.history.append({"epoch": epoch + 1, "seconds": seconds, "views_per_s": views_per_s})
        if logs is not None:
            logs["views_per_s"] = views_per_s

    def median_views_per_s(self):
        """Median over epochs, leaving out the first (graph tracing) when there are more."""
        rates = [entry["views_per_s"] for entry in self.history]
        rates = rates[1:] if len(rates) > 1 else rates
        return float(statistics.median(rates)) if rates else None
