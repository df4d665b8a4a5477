"""nt_xent against an independent per-anchor loop, its symmetries and numerical safety."""
import math

import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import losses


def naive_nt_xent(z1, z2, temperature):
    """The paper's formula written anchor by anchor, in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = [z[i] @ z[k] / temperature for k in range(2 * n) if k != i]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        total += -(z[i] @ z[positive] / temperature - log_denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("n,d", [(2, 3), (7, 16), (32, 128)])
def test_matches_naive_loop(temperature, n, d):
    rng = np.random.default_rng(n * 100 + d)
    # Unnormalised inputs with very different scales per row.
    z1 = rng.normal(size=(n, d)) * rng.uniform(0.1, 50, size=(n, 1))
    z2 = rng.normal(size=(n, d)) * rng.uniform(0.1, 50, size=(n, 1))
    got = float(losses.nt_xent(z1.astype(np.float32), z2.astype(np.float32), temperature))
    want = naive_nt_xent(z1, z2, temperature)
    assert got == pytest.approx(want, rel=1e-5)


def test_invariant_to_batch_permutation_and_view_swap():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(2, 10, 8)).astype(np.float32)
    base = float(losses.nt_xent(z1, z2, 0.5))
    perm = rng.permutation(10)
    assert float(losses.nt_xent(z1[perm], z2[perm], 0.5)) == pytest.approx(base, rel=1e-6)
    assert float(losses.nt_xent(z2, z1, 0.5)) == pytest.approx(base, rel=1e-6)
    # An inconsistent permutation breaks the pairs and must change the loss.
    assert float(losses.nt_xent(z1, z2[perm], 0.5)) != pytest.approx(base, rel=1e-3)


def test_identical_and_zero_vectors_are_finite():
    same = np.ones((4, 8), np.float32)
    zeros = np.zeros((4, 8), np.float32)
    for z1, z2 in [(same, same), (zeros, zeros), (zeros, same)]:
        z1, z2 = tf.constant(z1), tf.constant(z2)
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            loss = losses.nt_xent(z1, z2, 0.1)
        grads = tape.gradient(loss, [z1, z2])
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    # All views identical: every candidate is equally similar, loss = log(2N - 1).
    assert float(losses.nt_xent(same, same, 0.1)) == pytest.approx(math.log(7), rel=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_inputs_computed_in_float32(dtype):
    # The reference takes the same rounded inputs in float32; a loss computed in `dtype` and
    # cast at the end misses it by ~1e-4 (float16) / ~1e-3 (bfloat16), far above 1e-6.
    rng = np.random.default_rng(2)
    z1, z2 = (tf.cast(z, dtype) for z in rng.normal(size=(2, 16, 32)).astype(np.float32))
    want = float(losses.nt_xent(tf.cast(z1, tf.float32), tf.cast(z2, tf.float32), 0.05))
    got = losses.nt_xent(z1, z2, 0.05)
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(got) == pytest.approx(naive_nt_xent(*(z.numpy() for z in (z1, z2)), 0.05),
                                       rel=1e-5)


def test_contrastive_accuracy_counts_positive_as_nearest():
    z = np.eye(4, dtype=np.float32)
    logits, labels = losses.contrastive_logits(z, z, z, z, 0, 0.5)
    assert float(losses.contrastive_accuracy(logits, labels, 1)) == 1.0
    shuffled = z[[1, 2, 3, 0]]
    logits, labels = losses.contrastive_logits(z, shuffled, z, shuffled, 0, 0.5)
    assert float(losses.contrastive_accuracy(logits, labels, 1)) == 0.0
