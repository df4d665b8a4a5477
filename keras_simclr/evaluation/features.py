"""Features of a frozen encoder and what every evaluation of them shares.

- `extract_features`: h for every example of a dataset, in order (with a progress bar on
  a terminal); `labelled` keeps the examples that have a label.
- `top_k_accuracy`: the fraction of examples whose label is among their k best scores.
- `balanced_subset`: a seeded, class-balanced fraction of a labelled split (fine-tuning).
- `random_init_like`: the random-initialised encoder that pretraining is compared with.
"""
import sys
from typing import Callable

import numpy as np
import tensorflow as tf


def extract_features(embed_fn: Callable, dataset: tf.data.Dataset,
                     progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run `embed_fn` over a dataset of (images, labels) batches.

    Args:
        embed_fn: function from a batch of images to their features.
        dataset: batches of (images, labels).
        progress: show a `keras.utils.Progbar` of the batches; None: only when stdout is
            a terminal (a log file would get one line per update).

    Returns:
        (x float32 [N, D], y int64 [N]) in dataset order.
    """
    if progress is None:
        progress = sys.stdout.isatty()
    bar = None
    if progress:
        import keras

        batches = int(dataset.cardinality())
        bar = keras.utils.Progbar(batches if batches > 0 else None, unit_name="batch")
    features, labels = [], []
    for images, batch_labels in dataset:
        features.append(np.asarray(embed_fn(images), np.float32))
        labels.append(np.asarray(batch_labels, np.int64))
        if bar is not None:
            bar.add(1)
    if not features:
        raise ValueError("the dataset is empty: no features to extract")
    if bar is not None and bar.target is None:
        bar.update(len(features), finalize=True)
    return np.concatenate(features), np.concatenate(labels)


def labelled(*arrays):
    """(x, y) pairs with the examples of label < 0 (no label) dropped: x1, y1, x2, y2, ..."""
    kept = []
    for x, y in zip(arrays[::2], arrays[1::2]):
        keep = y >= 0
        kept += [x[keep], y[keep]]
    return kept


def random_init_like(encoder, seed=0):
    """A freshly initialised copy of `encoder` with every BatchNormalization scale at 1.

    The floor that pretraining must beat. Pretraining starts with the last BN of each
    residual branch at zero (as the official code), which leaves an untrained network
    little more than its shortcut path; unit scales give the usual, stronger floor.
    """
    import keras

    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(encoder)
    for layer in fresh.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            layer.gamma.assign(keras.ops.ones_like(layer.gamma))
    return fresh


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose label is among the k highest scores."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def balanced_subset(labels, fraction, seed=0):
    """Sorted indices of a class-balanced `fraction` of `labels` (at least one per class)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(chosen))
