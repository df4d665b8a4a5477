"""Contrastive objectives as objects: NT-Xent, its scale, the decoupled loss, multi-crop."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_simclr import losses
from toy_objective import Alignment

losses.register_objective("toy_alignment", Alignment)  # the one line that adds an objective


def _unit(z):
    z = np.asarray(z, np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def reference_pair_terms(views, pairs, temperature, decoupled=False):
    """Per-anchor losses by explicit loops over anchors and candidates, in float64.

    For pair (a, b), anchor a_i has positive b_i and candidates {b_k} and {a_k, k != i};
    the decoupled loss leaves the positive out of the denominator.
    """
    views = [_unit(v) for v in views]
    terms = []
    for a, b in pairs:
        for i in range(len(views[a])):
            anchor = views[a][i]
            positive = anchor @ views[b][i] / temperature
            candidates = [anchor @ views[b][k] / temperature for k in range(len(views[b]))]
            candidates += [anchor @ views[a][k] / temperature
                           for k in range(len(views[a])) if k != i]
            if decoupled:
                candidates.remove(positive)
            terms.append(np.log(np.sum(np.exp(candidates))) - positive)
    return np.array(terms)


def official_scale_loss(z1, z2, temperature):
    """google-research/simclr's convention: the sum of the two directions' mean losses."""
    one_way = reference_pair_terms([z1, z2], [(0, 1)], temperature)
    other_way = reference_pair_terms([z1, z2], [(1, 0)], temperature)
    return one_way.mean() + other_way.mean()


def _random_views(count, n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)).astype(np.float32) for _ in range(count)]


def test_ntxent_object_matches_the_function_and_the_official_scale():
    z1, z2 = _random_views(2)
    objective = losses.NTXent(0.5)
    terms = objective([z1, z2])
    assert float(objective.loss(terms)) == pytest.approx(float(losses.nt_xent(z1, z2, 0.5)),
                                                         rel=1e-6)
    official = losses.NTXent(0.5, scale=2.0)
    assert float(official.loss(official([z1, z2]))) == pytest.approx(
        official_scale_loss(z1, z2, 0.5), rel=1e-6)
    np.testing.assert_allclose(terms.per_anchor, reference_pair_terms(
        [z1, z2], [(0, 1), (1, 0)], 0.5), rtol=1e-5)


def test_official_scale_doubles_the_gradient():
    z1, z2 = (tf.constant(z) for z in _random_views(2, seed=3))
    grads = []
    for scale in (1.0, 2.0):
        objective = losses.NTXent(0.2, scale=scale)
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            loss = objective.loss(objective([z1, z2]))
        grads.append(tape.gradient(loss, [z1, z2]))
    for single, double in zip(*grads):
        np.testing.assert_allclose(double, 2.0 * single, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_decoupled_loss_leaves_the_positive_out(temperature):
    z1, z2 = _random_views(2, n=7, d=4, seed=1)
    objective = losses.DecoupledNTXent(temperature)
    got = objective([z1, z2]).per_anchor
    want = reference_pair_terms([z1, z2], [(0, 1), (1, 0)], temperature, decoupled=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert float(objective.loss(objective([z1, z2]))) < float(
        losses.NTXent(temperature).loss(losses.NTXent(temperature)([z1, z2])))


def test_multi_crop_contrasts_every_view_with_the_full_views():
    views = _random_views(5, n=4, d=6, seed=2)  # 2 full + 3 small
    objective = losses.NTXent(0.3)
    pairs = objective.pairs(5)
    assert pairs == [(0, 1), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1)]
    got = objective(views)
    np.testing.assert_allclose(got.per_anchor, reference_pair_terms(views, pairs, 0.3),
                               rtol=1e-5)
    assert got.logits.shape == (8 * 4, 2 * 4)
    decoupled = losses.DecoupledNTXent(0.3)(views).per_anchor
    np.testing.assert_allclose(
        decoupled, reference_pair_terms(views, pairs, 0.3, decoupled=True), rtol=1e-4,
        atol=1e-5)


def test_objectives_serialise_and_validate():
    for objective in (losses.NTXent(0.2, global_negatives=False, scale=2.0),
                      losses.DecoupledNTXent(0.1)):
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(objective))
        assert type(restored) is type(objective)
        assert restored.get_config() == objective.get_config()
    assert isinstance(losses.get("dcl", temperature=0.2), losses.DecoupledNTXent)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("nope")
    with pytest.raises(ValueError, match="temperature"):
        losses.NTXent(0.0)
    with pytest.raises(ValueError, match="2 or more views"):
        losses.NTXent(0.5)(_random_views(1))


def test_a_new_objective_is_one_file_and_one_registry_line(tmp_path):
    """tests/toy_objective.py plus the `register_objective` line at the top of this file:
    an objective without a temperature, given only the arguments it declares."""
    from conftest import blob_images

    from keras_simclr import ProjectionHead, SimCLR, SimCLRAugment
    from keras_simclr.networks import backbones

    objective = losses.get("toy_alignment", temperature=0.5, scale=2.0)  # as apps.pretrain
    assert isinstance(objective, Alignment) and objective.get_config() == {"scale": 2.0}
    z1, z2 = _random_views(2)
    terms = objective([z1, z2])
    want = -np.sum(_unit(z1) * _unit(z2), axis=1)
    np.testing.assert_allclose(terms.per_anchor, np.concatenate([want, want]), rtol=1e-5)
    np.testing.assert_allclose(objective.loss(terms), 2 * np.mean(want), rtol=1e-5)
    images, _ = blob_images(32)
    model = SimCLR(backbones.resnet(18, width_multiplier=0.125), ProjectionHead(2, output_dim=8),
                   SimCLRAugment(16, seed=0), loss=objective)
    model.compile(optimizer="adam")
    history = model.fit(images, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    model.save(tmp_path / "toy.keras")
    assert isinstance(keras.saving.load_model(tmp_path / "toy.keras").objective, Alignment)


def test_register_objective_rejects_taken_names_non_objectives_and_unknown_arguments():
    with pytest.raises(ValueError, match="'dcl' is already registered"):
        losses.register_objective("dcl", Alignment)
    for not_an_objective in (int, Alignment(), lambda projections: None):
        with pytest.raises(TypeError, match="an objective is a class with"):
            losses.register_objective("other", not_an_objective)
    assert "other" not in losses.OBJECTIVES
    with pytest.raises(TypeError, match=r"no loss takes the argument\(s\) \['temprature'\]"):
        losses.get("ntxent", temprature=0.5)  # misspelt: no objective declares it
    assert losses.get("ntxent", scale=2.0).get_config()["temperature"] == 0.5
