"""Judging representations: frozen-feature evaluations, the linear classifier, pictures.

- `features`: features of a frozen encoder over a dataset, top-k accuracy, class-balanced
  label fractions, the random-initialised baseline encoder.
- `linear_probe`: logistic regression on features computed once (the fast linear
  evaluation) and its regularisation chosen on held-out training features.
- `knn`: weighted kNN classification of features.
- `classifier`: `LinearClassifier`, an encoder plus one Dense layer (linear evaluation and
  fine-tuning through `fit`).
- `viz`: PNG pictures of views, neighbours and 2-D maps of embeddings.

The evaluation functions are importable from here (`evaluation.knn_accuracy`, ...). A new
evaluation of frozen features is one module taking arrays of features and labels.
Imports: `utils`, `views`, `training`.
"""
from keras_simclr.evaluation.features import (balanced_subset, extract_features, labelled,
                                              random_init_like, top_k_accuracy)
from keras_simclr.evaluation.knn import knn_accuracy, knn_classify
from keras_simclr.evaluation.linear_probe import choose_regularization, linear_probe_on_features

__all__ = [
    "balanced_subset", "choose_regularization", "extract_features", "knn_accuracy",
    "knn_classify", "labelled", "linear_probe_on_features", "random_init_like",
    "top_k_accuracy",
]
