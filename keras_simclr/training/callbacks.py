"""Training side concerns as Keras callbacks: resumable checkpoints and throughput.

`EpochCheckpoint` saves the whole model (weights, optimizer state and iteration count, hence
the learning-rate schedule position) as `ckpt-EPOCH.keras` after every epoch and keeps the
last `keep`. A checkpoint inside an epoch (`save(epoch, batch)`, on a signal or every N
steps: `keras_simclr.training.resilience`) is `ckpt-EPOCH-BATCH.keras`: EPOCH epochs done and BATCH
steps of the next; it sorts after `ckpt-EPOCH.keras` and before `ckpt-EPOCH+1.keras`. Each
file is written under a temporary name and renamed into place (`storage.save_model`): on
local disks and HDFS a `kill -9` at any moment leaves only complete checkpoints; on object
stores (`gs://`) the rename is a copy then a delete, not atomic, but temporary names are never
taken for checkpoints (the next save deletes them) and an unreadable newest checkpoint is
skipped. The directory may be on any TensorFlow filesystem.

`latest_checkpoint` finds the newest readable one to resume from. Under multi-worker
training every worker saves (saving reads distributed variables collectively) but only the
chief writes into the checkpoint directory (`distribute.write_path`), and every worker
resumes from the chief's checkpoints after checking that all agree on the epoch.
"""
import os
import re
import statistics
import time

import keras
import tensorflow as tf
from absl import logging

from keras_simclr.training import distribute
from keras_simclr.utils import storage

_CHECKPOINT = re.compile(r"ckpt-(\d+)(?:-(\d+))?\.keras")


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """`ckpt-EPOCH.keras` after `epoch` epochs, `ckpt-EPOCH-BATCH.keras` `batch` steps further."""
    return f"ckpt-{epoch}-{batch}.keras" if batch else f"ckpt-{epoch}.keras"


def checkpoint_position(path: str | None) -> tuple[int, int]:
    """(epochs done, steps done of the next epoch) that a checkpoint's name records.

    Args:
        path: a checkpoint path as `latest_checkpoint` returns it, or None (no checkpoint).
    Returns:
        (0, 0) for None.
    """
    if path is None:
        return 0, 0
    match = _CHECKPOINT.fullmatch(os.path.basename(path))
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (ckpt-EPOCH[-BATCH].keras)")
    return int(match.group(1)), int(match.group(2) or 0)


def _checkpoints(directory):
    """[((epoch, batch), path)] of the checkpoints in `directory` by name, oldest first."""
    found = []
    for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.keras")):
        if _CHECKPOINT.fullmatch(os.path.basename(path)):
            found.append((checkpoint_position(path), path))
    return sorted(found)


def latest_checkpoint(directory: str,
                      strategy: tf.distribute.Strategy | None = None) -> tuple[str | None, int]:
    """The newest readable checkpoint in `directory`, where training resumes.

    A damaged newer checkpoint (truncated by a full disk or an interrupted copy) is
    skipped with one warning line naming it and the reason. In a multi-worker run every
    worker must call this: they check (one all-reduce) that they all resume from the same
    epoch, and raise RuntimeError instead of waiting for each other forever.

    Args:
        directory: the checkpoint directory, on any TensorFlow filesystem.
        strategy: the distribution strategy (default: the current one).
    Returns:
        (path, epoch) of the newest complete checkpoint, or (None, 0) when there is none;
        a checkpoint inside an epoch gives the epochs done (`checkpoint_position` gives
        the steps of the next). Raises ValueError when there are checkpoints but none is
        readable.
    """
    found = _checkpoints(directory)
    path, position = None, (0, 0)
    for candidate_position, candidate in reversed(found):
        problem = storage.keras_archive_problem(candidate)
        if problem is None:
            path, position = candidate, candidate_position
            break
        logging.warning("skipping checkpoint %s: %s", candidate, problem)
    if found and path is None:
        raise ValueError(f"none of the {len(found)} checkpoints in {directory} is readable; "
                         "move them away to start over")
    hint = f"every worker must read the same {directory} (a shared filesystem)"
    distribute.check_same_on_all_workers(position, strategy, "the resumed epoch and step",
                                         hint=hint)
    return path, position[0]


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the model to `directory/ckpt-EPOCH.keras` after each epoch, keep the last few.

    Args:
        directory: where the chief writes, on any TensorFlow filesystem; other workers of
            a multi-worker run write to a private temporary copy (`distribute.write_path`).
        keep: checkpoints kept; older ones, and temporary files of interrupted saves,
            are deleted after each save.
        strategy: the distribution strategy (default: the model's).
        steps_per_epoch: with it, the checkpoint at the end of an epoch is named after the
            optimizer's step, so that one where training stopped inside an epoch (at a
            time budget's end) is `ckpt-EPOCH-BATCH.keras`, the position it holds.
    """

    def __init__(self, directory: str, keep: int = 3,
                 strategy: tf.distribute.Strategy | None = None,
                 steps_per_epoch: int | None = None):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.strategy = strategy
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if not self.steps_per_epoch:
            self.save(epoch + 1)
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.save(*divmod(step, self.steps_per_epoch))

    def save(self, epoch: int, batch: int = 0) -> str:
        """Save the model as `checkpoint_name(epoch, batch)` and rotate; returns its path.

        Every worker of a multi-worker run must call it at the same step.
        """
        strategy = self.strategy or self.model.distribute_strategy
        target_dir = distribute.write_path(self.directory, strategy)
        storage.save_model(self.model, os.path.join(target_dir, checkpoint_name(epoch, batch)))
        stale = [path for _, path in _checkpoints(target_dir)[:-self.keep]]
        stale += tf.io.gfile.glob(os.path.join(target_dir, ".ckpt-*.partial-*.keras"))
        for path in stale:
            tf.io.gfile.remove(path)
        return os.path.join(self.directory, checkpoint_name(epoch, batch))


class Throughput(keras.callbacks.Callback):
    """Views per second of each epoch (2 views per image), reported in the epoch logs.

    Args:
        global_batch_size: images per step over all replicas.
        views_per_image: views the model makes of each image.
    """

    def __init__(self, global_batch_size: int, views_per_image: int = 2):
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

    def median_views_per_s(self) -> float | None:
        """The typical speed of the run.

        Returns:
            The median views/s over epochs, leaving out the first (graph tracing) when
            there are more; None before the first epoch ends.
        """
        rates = [entry["views_per_s"] for entry in self.history]
        rates = rates[1:] if len(rates) > 1 else rates
        return float(statistics.median(rates)) if rates else None
