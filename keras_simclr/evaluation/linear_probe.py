"""The fast linear evaluation: logistic regression on features computed once.

- `linear_probe_on_features`: multinomial logistic regression (L-BFGS, as the SimCLR
  paper's transfer experiments) on standardised features computed once, instead of training
  a Dense layer through the frozen encoder for many epochs. It reports whether L-BFGS
  converged instead of warning.
- `choose_regularization`: the probe's L2 strength from a grid, scored on a held-out part
  of the training features, so the evaluation split never guides it.
"""
import warnings

import numpy as np

from keras_simclr.evaluation.features import balanced_subset, labelled, top_k_accuracy


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

    train_x, train_y, eval_x, eval_y = labelled(train_x, train_y, eval_x, eval_y)
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
    train_x, train_y = labelled(train_x, train_y)
    held_out = np.zeros(len(train_y), bool)
    held_out[balanced_subset(train_y, holdout_fraction, seed)] = True
    scores = {value: linear_probe_on_features(train_x[~held_out], train_y[~held_out],
                                              train_x[held_out], train_y[held_out], value,
                                              max_iter)["top1"]
              for value in grid}
    return {"regularization": max(grid, key=scores.get), "holdout_top1": scores,
            "num_holdout": int(held_out.sum())}
