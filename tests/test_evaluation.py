"""Evaluation helpers: kNN and the linear probe against hand-made cases, subsets, random init."""
import warnings

import keras
import numpy as np
import pytest

from keras_simclr import evaluation
from keras_simclr.evaluation import linear_probe
from keras_simclr.networks import backbones


def clustered(n_per_class, classes=3, dim=8, seed=0, spread=0.1):
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * 3  # shared by all sets
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    return (centres[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


def numpy_knn_scores(train_x, train_y, eval_x, num_classes, k, temperature):
    """Reference weighted kNN: cosine similarity, k nearest, exp(sim / T) votes, in float64."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit(eval_x.astype(np.float64)) @ unit(train_x.astype(np.float64)).T
    scores = np.zeros((len(eval_x), num_classes))
    for row, sim in enumerate(sims):
        for j in np.argsort(-sim, kind="stable")[:k]:
            scores[row, train_y[j]] += np.exp(sim[j] / temperature)
    return scores


def test_knn_and_linear_probe_separate_clusters():
    train_x, train_y = clustered(30)
    eval_x, eval_y = clustered(10, seed=1)
    knn = evaluation.knn_accuracy(train_x, train_y, eval_x, eval_y, k=5)
    assert knn["top1"] == 1.0 and knn["k"] == 5
    probe = evaluation.linear_probe_on_features(train_x, train_y, eval_x, eval_y)
    assert probe["top1"] == 1.0 and probe["num_eval"] == 30
    # Overlapping clusters, k below the training-set size: the reported top-1 is the NumPy
    # kNN's, and neither chance nor perfect.
    train_x, train_y = clustered(30, classes=6, spread=4.0)
    eval_x, eval_y = clustered(20, classes=6, seed=1, spread=4.0)
    knn = evaluation.knn_accuracy(train_x, train_y, eval_x, eval_y, k=7, temperature=0.2)
    want = numpy_knn_scores(train_x, train_y, eval_x, 6, 7, 0.2).argmax(axis=1) == eval_y
    assert knn["top1"] == pytest.approx(want.mean()) and 1 / 6 < knn["top1"] < 1.0


@pytest.mark.parametrize("classes", [2, 6])
def test_linear_probe_scores_confident_models_without_log_of_zero(classes):
    # Eval features far out along their class direction make predicted probabilities
    # underflow to 0; scoring by log-probabilities then warned (divide by zero in log) and
    # tied the other classes at -inf.
    train_x, train_y = clustered(30, classes=classes)
    eval_x, eval_y = clustered(10, classes=classes, seed=1)
    eval_x = train_x.mean(axis=0) + 1000 * (eval_x - train_x.mean(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = evaluation.linear_probe_on_features(train_x, train_y, eval_x, eval_y)
    assert probe["top1"] == 1.0 and probe["top5"] == 1.0


def _at_cosines(cosines):
    """2-D unit vectors at the given cosine similarities to [1, 0]."""
    cosines = np.asarray(cosines, np.float64)
    return np.stack([cosines, np.sqrt(1 - cosines ** 2)], axis=1).astype(np.float32)


def test_knn_weights_votes_by_similarity():
    # Against the query [1, 0]: one class-1 neighbour at cosine 0.99, two of class 0 at 0.6
    # and six of class 2 at 0.5. At T=0.1 the close one outvotes the rest (exp(9.9) against
    # 2 exp(6)); plain-similarity votes would give class 0 (1.2 > 0.99). At T=1 class 0 wins
    # among the k=3 nearest (2 e^0.6 > e^0.99), and class 2 (6 e^0.5) wins without the cut.
    train_x = _at_cosines([0.99, 0.6, 0.6] + [0.5] * 6)
    train_y = np.array([1, 0, 0] + [2] * 6)
    query = np.array([[1, 0]], np.float32)
    for k, temperature, winner in [(3, 0.1, 1), (3, 1.0, 0), (9, 1.0, 2)]:
        scores = evaluation.knn_classify(train_x, train_y, query, 3, k=k, temperature=temperature)
        assert scores.argmax() == winner, (k, temperature)
        np.testing.assert_allclose(
            scores, numpy_knn_scores(train_x, train_y, query, 3, k, temperature), rtol=1e-4)
    # Random features, k well below the training-set size: every class score as the reference.
    rng = np.random.default_rng(5)
    train_x, eval_x = rng.normal(size=(40, 6)), rng.normal(size=(12, 6))
    train_y = rng.integers(0, 4, 40)
    np.testing.assert_allclose(
        evaluation.knn_classify(train_x, train_y, eval_x, 4, k=5, temperature=0.3),
        numpy_knn_scores(train_x, train_y, eval_x, 4, 5, 0.3), rtol=1e-4)
    assert evaluation.top_k_accuracy(np.array([[0.1, 0.5, 0.4]]), np.array([2]), 2) == 1.0


def test_unlabelled_examples_are_ignored():
    train_x, train_y = clustered(10)
    train_y[:5] = -1
    assert evaluation.knn_accuracy(train_x, train_y, train_x, train_y, k=3)["num_train"] == 25


def test_balanced_subset_is_seeded_and_balanced():
    labels = np.repeat(np.arange(4), [100, 50, 10, 1])
    subset = evaluation.balanced_subset(labels, 0.1, seed=3)
    counts = np.bincount(labels[subset], minlength=4)
    assert counts.tolist() == [10, 5, 1, 1]
    np.testing.assert_array_equal(subset, evaluation.balanced_subset(labels, 0.1, seed=3))
    assert not np.array_equal(subset, evaluation.balanced_subset(labels, 0.1, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        evaluation.balanced_subset(labels, 0.0)


def test_random_init_like_is_fresh_with_unit_bn_scales():
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    fresh = evaluation.random_init_like(encoder, seed=1)
    gammas = [layer.gamma.numpy() for layer in fresh.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert gammas and all(np.all(g == 1.0) for g in gammas)
    kernel = encoder.get_layer("stem_conv").kernel.numpy()
    assert not np.allclose(fresh.get_layer("stem_conv").kernel.numpy(), kernel)
    # The original keeps its zero-initialised residual scales.
    assert np.all(encoder.get_layer("stage1_block1_2_bn").gamma.numpy() == 0.0)


def _random_encoder_features(n, seed):
    from conftest import blob_images

    images, labels = blob_images(n, size=16, classes=4, seed=seed)
    encoder = evaluation.random_init_like(backbones.resnet(18, width_multiplier=0.125), seed=0)
    return np.asarray(encoder(images / 255.0, training=False)), labels


def test_linear_probe_converges_on_random_encoder_features():
    # The quick start's --random_init run warned (ConvergenceWarning): L-BFGS needed about
    # 500 iterations on a random-initialised encoder's 10,000 x 256 features, the old limit.
    train_x, train_y = _random_encoder_features(256, seed=0)
    eval_x, eval_y = _random_encoder_features(64, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = evaluation.linear_probe_on_features(train_x, train_y, eval_x, eval_y)
    assert probe["converged"] and 0 < probe["iterations"] < 1000


def test_linear_probe_reports_an_early_stop_instead_of_a_warning():
    # scikit-learn's ConvergenceWarning block (with its advice to scale the data) was printed
    # by the apps; the result says it instead, and apps.linear_eval prints one line.
    train_x, train_y = clustered(30, spread=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = evaluation.linear_probe_on_features(train_x, train_y, train_x, train_y,
                                                    max_iter=2)
    assert not probe["converged"] and probe["iterations"] == 2


def test_extract_features_shows_a_progress_bar_when_asked(capsys):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.ones((10, 2), np.float32), np.arange(10)))
    x, y = evaluation.extract_features(lambda b: b * 2, ds.batch(4), progress=True)
    assert x.shape == (10, 2) and y.tolist() == list(range(10))
    assert "3/3" in capsys.readouterr().out
    evaluation.extract_features(lambda b: b, ds.batch(4))  # not a terminal: no bar
    assert capsys.readouterr().out == ""


def test_choose_regularization_fits_on_train_and_scores_a_held_out_part(monkeypatch):
    # Every value is fitted on the labelled training examples outside a class-balanced 10%
    # and scored on that 10%; unlabelled examples take no part; ties go to the stronger value.
    train_x, train_y = clustered(20)
    train_y[:3] = -1
    calls = []

    def fake_probe(fit_x, fit_y, held_x, held_y, regularization, max_iter):
        calls.append((fit_x, fit_y, held_x, held_y, regularization))
        return {"top1": 0.5}

    monkeypatch.setattr(linear_probe, "linear_probe_on_features", fake_probe)
    chosen = evaluation.choose_regularization(train_x, train_y, ["1e-4", 1e-2, 1e-3])
    assert chosen["regularization"] == 1e-2 and chosen["num_holdout"] == 6
    assert [call[4] for call in calls] == [1e-2, 1e-3, 1e-4]
    fit_x, fit_y, held_x, held_y, _ = calls[0]
    assert np.bincount(held_y).tolist() == [2, 2, 2] and len(fit_y) == 51
    rows = {tuple(row) for row in np.concatenate([fit_x, held_x])}
    assert len(rows) == 57 and not rows & {tuple(row) for row in train_x[:3]}


def test_choose_regularization_takes_the_best_held_out_score(monkeypatch):
    held_out_top1 = {1e-2: 0.60, 1e-3: 0.71, 1e-4: 0.70}
    monkeypatch.setattr(linear_probe, "linear_probe_on_features",
                        lambda *args: {"top1": held_out_top1[args[4]]})
    train_x, train_y = clustered(10)
    chosen = evaluation.choose_regularization(train_x, train_y, [1e-4, 1e-3, 1e-2])
    assert chosen["regularization"] == 1e-3 and chosen["holdout_top1"] == held_out_top1


@pytest.mark.parametrize("grid,fraction,message", [
    ([], 0.1, "positive values"), ([1e-4, 0.0], 0.1, "positive values"),
    ([1e-4], 1.0, "holdout_fraction")])
def test_choose_regularization_rejects_bad_arguments(grid, fraction, message):
    train_x, train_y = clustered(10)
    with pytest.raises(ValueError, match=message):
        evaluation.choose_regularization(train_x, train_y, grid, holdout_fraction=fraction)
