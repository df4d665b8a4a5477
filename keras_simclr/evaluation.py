"""Evaluating frozen representations: feature extraction, linear probe on features, kNN.

- `extract_features`: h for every example of a dataset, in order (with a progress bar on
  a terminal).
- `linear_probe_on_features`: the fast linear evaluation, multinomial logistic regression
  (L-BFGS, as the SimCLR paper's transfer experiments) on standardised features computed
  once, instead of training a Dense layer through the frozen encoder for many epochs. It
  reports whether L-BFGS converged instead of warning.
- `choose_regularization`: the probe's L2 strength from a grid, scored on a held-out part
  of the training features, so the evaluation split never guides it.
- `knn_classify`: weighted kNN of Wu et al. 2018 as used by lightly and solo-learn: cosine
  similarity, the k nearest training features vote with weight exp(sim / temperature).
- `balanced_subset`: a seeded, class-balanced fraction of a labelled split (fine-tuning).
- `random_init_like`: the random-initialised encoder that pretraining is compared with.
"""
import sys
import warnings
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


def _labelled(*arrays):
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


def linear_probe_on_features(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                             eval_y: np.ndarray, regularization: float = 1e-4,
                             max_iter: int = 1000) -> dict:
    """Multinomial logistic regression on standardised frozen features.

    L-BFGS stops after `max_iter` iterations; scikit-learn's ConvergenceWarning is not
    shown, the result says instead whether it converged (an unconverged fit is close to
    the optimum already, and its accuracy usually within a fraction of a point of it).

    Args:
        train_x, train_y: training features [N, D] and labels [N] (< 0: no label, dropped).
        eval_x, eval_y: evaluation features and labels (< 0 dropped).
        regularization: L2 strength per example (C = 1 / (regularization * N)).
        max_iter: L-BFGS iteration limit.

    Returns:
        {"top1", "top5", "num_train", "num_eval", "iterations", "converged"}.
    """
    from sklearn.exceptions import ConvergenceWarning  # heavy imports, only needed here
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, eval_x, eval_y = _labelled(train_x, train_y, eval_x, eval_y)
    if len(np.unique(train_y)) < 2:
        raise ValueError("linear evaluation needs labelled data of at least two classes")
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    model = LogisticRegression(C=1.0 / (regularization * len(train_x)), max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in the result
        model.fit((train_x - mean) / std, train_y)
    iterations = int(np.max(model.n_iter_))
    scores = np.full((len(eval_x), int(max(train_y.max(), eval_y.max())) + 1), -np.inf)
    # Logits rank classes as the probabilities do, without underflowing to log(0) = -inf
    # ties (and warnings) for confidently wrong classes; a binary model has one column.
    logits = model.decision_function((eval_x - mean) / std)
    scores[:, model.classes_] = logits[:, None] * [-1, 1] if logits.ndim == 1 else logits
    return {
        "top1": top_k_accuracy(scores, eval_y, 1),
        "top5": top_k_accuracy(scores, eval_y, 5),
        "num_train": int(len(train_x)),
        "num_eval": int(len(eval_x)),
        "iterations": iterations,
        "converged": iterations < max_iter,
    }


def choose_regularization(train_x: np.ndarray, train_y: np.ndarray, grid, *,
                          holdout_fraction: float = 0.1, seed: int = 0,
                          max_iter: int = 1000) -> dict:
    """The L2 strength of `grid` whose probe scores best on a held-out part of train.

    Each value is fitted on the training features outside a class-balanced
    `holdout_fraction` of them and scored on that part; the evaluation split is not read.
    Ties go to the stronger value.

    Args:
        train_x, train_y: training features [N, D] and labels [N] (< 0: no label, dropped).
        grid: candidate strengths (`linear_probe_on_features`' `regularization`).
        holdout_fraction: the share of each class held out.
        seed: seed of the held-out choice.
        max_iter: L-BFGS iteration limit of each fit.

    Returns:
        {"regularization": the choice, "holdout_top1": {strength: top-1}, "num_holdout"}.
    """
    grid = sorted({float(value) for value in grid}, reverse=True)
    if not grid or min(grid) <= 0:
        raise ValueError(f"the regularization grid needs positive values, got {grid}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    train_x, train_y = _labelled(train_x, train_y)
    held_out = np.zeros(len(train_y), bool)
    held_out[balanced_subset(train_y, holdout_fraction, seed)] = True
    scores = {value: linear_probe_on_features(train_x[~held_out], train_y[~held_out],
                                              train_x[held_out], train_y[held_out], value,
                                              max_iter)["top1"]
              for value in grid}
    return {"regularization": max(grid, key=scores.get), "holdout_top1": scores,
            "num_holdout": int(held_out.sum())}


def knn_classify(train_x, train_y, eval_x, num_classes, k=200, temperature=0.1,
                 batch_size=1024):
    """Class scores of each eval feature from its k nearest training features (cosine)."""
    train = tf.math.l2_normalize(tf.constant(train_x, tf.float32), axis=1)
    train_y = tf.constant(train_y, tf.int64)
    k = min(k, int(train.shape[0]))
    scores = []
    for start in range(0, len(eval_x), batch_size):
        queries = tf.math.l2_normalize(tf.constant(eval_x[start:start + batch_size], tf.float32), axis=1)
        similarity, index = tf.math.top_k(tf.matmul(queries, train, transpose_b=True), k)
        weights = tf.exp(similarity / temperature)
        votes = tf.one_hot(tf.gather(train_y, index), num_classes) * weights[..., None]
        scores.append(tf.reduce_sum(votes, axis=1).numpy())
    return np.concatenate(scores)


def knn_accuracy(train_x, train_y, eval_x, eval_y, k=200, temperature=0.1):
    """Weighted kNN top-1 and top-5; examples with label < 0 are dropped."""
    train_x, train_y, eval_x, eval_y = _labelled(train_x, train_y, eval_x, eval_y)
    num_classes = int(max(train_y.max(), eval_y.max())) + 1
    scores = knn_classify(train_x, train_y, eval_x, num_classes, k, temperature)
    return {
        "top1": top_k_accuracy(scores, eval_y, 1),
        "top5": top_k_accuracy(scores, eval_y, 5),
        "k": int(min(k, len(train_x))),
        "temperature": float(temperature),
        "num_train": int(len(train_x)),
        "num_eval": int(len(eval_x)),
    }


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
