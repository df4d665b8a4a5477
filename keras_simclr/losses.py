"""Contrastive objectives: NT-Xent (SimCLR) and its variants, as objects the model is given.

For 2N views (two per image) and sim(u, v) = u.v / (|u||v|), the NT-Xent loss of anchor i
with positive j is

    l(i, j) = -log( exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t) )

over every other view k (the positive and 2N-2 negatives); the loss is `scale` times the
mean over all 2N anchors. `scale=1` (the default, and the formula above) is the mean over
anchors; google-research/simclr's `add_contrastive_loss` returns the sum of the two
directions' means, i.e. `scale=2`. The scale matters beyond the learning rate: LARS adds
weight decay to the gradient before its trust ratio, so a loss half as large doubles the
relative weight of the decay. The official presets therefore set `--loss_scale=2`.

Under tf.distribute the candidates k come from every replica (the projections are
all-gathered, gradients flow back to the replica that made them), so negatives span the
global batch while each replica scores its own anchors. Logits are computed in float32 and
reduced with log-sum-exp, so float16/bfloat16 inputs, identical views and all-zero vectors
give finite values.

An objective takes the list of projections of all views (each (n, D), the same n images
in the same order) and returns `ContrastiveTerms`: the per-anchor loss and the logits and
labels the model's metrics use (the `Objective` protocol). A variant is a subclass that
overrides `pairs` (which views are contrasted with which) or `anchor_loss` (how one anchor's
logits become its loss), as `DecoupledNTXent` here; any other class with the protocol's
methods is an objective too. `register_objective(name, cls)` offers one as `--loss=name`;
the apps give it only the constructor arguments it declares (`temperature`, `scale`).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import keras
import tensorflow as tf

from keras_simclr.utils.registry import Registry

# Subtracted from an anchor's similarity to itself; exp() of it is exactly zero in float32,
# without the NaN gradients that -inf would produce.
_SELF_MASK = 1e9


def _normalize(z):
    return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1, epsilon=1e-12)


def contrastive_logits(z1, z2, z1_candidates, z2_candidates, offset, temperature):
    """Logits and positive indices for the local anchors against all candidates.

    z1, z2: local projections (n, D) of the two views. z1_candidates, z2_candidates: the
    projections of every view in the (global) batch, (M, D), with the local ones at rows
    offset .. offset + n. Returns logits (2n, 2M) over [view-2 candidates, view-1 candidates]
    with each anchor's own similarity masked out, and labels (2n,) giving the positive.
    """
    ab, labels = _pair_logits(z1, z2, z1_candidates, z2_candidates, offset, temperature)
    ba, _ = _pair_logits(z2, z1, z2_candidates, z1_candidates, offset, temperature)
    return tf.concat([ab, ba], axis=0), tf.concat([labels, labels], axis=0)


def _pair_logits(anchors, positives, anchor_candidates, positive_candidates, offset,
                 temperature):
    """Logits (n, 2M) of anchors against [positive-view candidates, anchor-view candidates].

    The anchor's own row among the anchor-view candidates is masked out; the positive of
    local anchor i sits at column offset + i. Returns (logits, labels).
    """
    a, c_pos = _normalize(anchors), _normalize(positive_candidates)
    c_same = _normalize(anchor_candidates)
    local = tf.range(tf.shape(a)[0]) + offset
    self_mask = tf.one_hot(local, tf.shape(c_same)[0], on_value=_SELF_MASK, off_value=0.0)
    inv_t = 1.0 / temperature
    other_view = tf.matmul(a, c_pos, transpose_b=True) * inv_t
    same_view = tf.matmul(a, c_same, transpose_b=True) * inv_t - self_mask
    return tf.concat([other_view, same_view], axis=1), local


def per_anchor_loss(logits, labels):
    """Cross-entropy of each anchor's positive, (2n,)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def nt_xent(z1, z2, temperature=0.5):
    """NT-Xent on one device: z1, z2 (N, D) are the two views of the same N images.

    Inputs need not be normalised. Returns the scalar mean over the 2N anchors.
    """
    logits, labels = contrastive_logits(z1, z2, z1, z2, 0, temperature)
    return tf.reduce_mean(per_anchor_loss(logits, labels))


def gather_candidates(projections, global_negatives=True):
    """(candidates, offset): every replica's projections of each view, and this replica's row.

    Outside a multi-replica context (or with `global_negatives=False`) the candidates are
    the local projections and the offset is 0. `ctx.all_gather` passes gradients back to
    the replica that produced each projection, so the loss of the global batch is exact.
    """
    ctx = tf.distribute.get_replica_context()
    if not global_negatives or ctx is None or ctx.num_replicas_in_sync == 1:
        return list(projections), 0
    gathered = [ctx.all_gather(z, axis=0) for z in projections]
    offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * tf.shape(projections[0])[0]
    return gathered, offset


def contrastive_accuracy(logits, labels, k=1):
    """Fraction of anchors whose positive is among the k most similar candidates."""
    return tf.reduce_mean(
        tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)
    )


class ContrastiveTerms(NamedTuple):
    """What an objective returns for this replica's anchors.

    Attributes:
        per_anchor: (A,) float32 loss of each anchor, before `scale`.
        logits: (A, C) float32 similarities / temperature (own similarity masked out).
        labels: (A,) int32 column of each anchor's positive in `logits`.
    """

    per_anchor: tf.Tensor
    logits: tf.Tensor
    labels: tf.Tensor


@runtime_checkable
class Objective(Protocol):
    """What `SimCLR` needs from its contrastive objective (`NTXent` and its subclasses).

    A saved model stores its objective through `get_config`, so an objective class is also
    registered with `keras.saving.register_keras_serializable`.
    """

    def __call__(self, projections: Sequence[tf.Tensor]) -> ContrastiveTerms:
        """This replica's terms from one (n, D) projection per view (same images, same order)."""

    def loss(self, terms: ContrastiveTerms) -> tf.Tensor:
        """The scalar loss of this replica from its terms."""

    def get_config(self) -> dict:
        """The constructor arguments that rebuild the objective."""


@keras.saving.register_keras_serializable(package="keras_simclr")
class NTXent:
    """NT-Xent (SimCLR), over two views or 2 full + k small ones; see the module docstring.

    Args:
        temperature: t in the formula; 0.5 for CIFAR-10, 0.1 for ImageNet in the paper.
        global_negatives: gather negatives from every replica (the paper); False keeps
            each replica's negatives local.
        scale: the loss is `scale` x the mean over anchors (2 reproduces the official code).
    """

    def __init__(self, temperature: float = 0.5, global_negatives: bool = True,
                 scale: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if scale <= 0:
            raise ValueError(f"loss scale must be positive, got {scale}")
        self.temperature = float(temperature)
        self.global_negatives = bool(global_negatives)
        self.scale = float(scale)

    def pairs(self, num_views: int) -> list[tuple[int, int]]:
        """(anchor view, positive view) pairs whose terms make up the loss.

        Views 0 and 1 are the full views. Every view is an anchor whose positives are the
        full views of its image other than itself: with two views the two directions of
        SimCLR; with 2 + k views multi-crop (Caron et al. 2020), where the k small views
        are contrasted with the full ones, not with each other.
        """
        if num_views < 2:
            raise ValueError(f"a contrastive objective needs 2 or more views, got {num_views}")
        return [(a, b) for a in range(num_views) for b in (0, 1) if a != b]

    def anchor_loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Loss of each anchor from its logits row and its positive's column."""
        return per_anchor_loss(logits, labels)

    def __call__(self, projections: Sequence[tf.Tensor]) -> ContrastiveTerms:
        """Per-anchor loss, logits and labels of this replica's anchors.

        Args:
            projections: one (n, D) tensor per view, the same n images in the same order.
        Returns:
            `ContrastiveTerms` with one row per (pair, local image).
        """
        candidates, offset = gather_candidates(projections, self.global_negatives)
        logits, labels = [], []
        for a, b in self.pairs(len(projections)):
            pair, pair_labels = _pair_logits(projections[a], projections[b], candidates[a],
                                             candidates[b], offset, self.temperature)
            logits.append(pair)
            labels.append(pair_labels)
        logits, labels = tf.concat(logits, axis=0), tf.concat(labels, axis=0)
        return ContrastiveTerms(self.anchor_loss(logits, labels), logits, labels)

    def loss(self, terms: ContrastiveTerms) -> tf.Tensor:
        """The scalar loss of this replica: `scale` x the mean of the per-anchor losses."""
        return self.scale * tf.reduce_mean(terms.per_anchor)

    def get_config(self) -> dict:
        return {"temperature": self.temperature, "global_negatives": self.global_negatives,
                "scale": self.scale}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_simclr")
class DecoupledNTXent(NTXent):
    """Decoupled contrastive loss (Yeh et al. 2022): the positive left out of the denominator.

        l(i, j) = -sim(z_i, z_j)/t + log sum_{k != i, k != j} exp(sim(z_i, z_k)/t)

    Without the positive in the denominator the gradient of easy positives is not damped,
    which the paper shows makes small batches and few epochs learn faster.
    """

    def anchor_loss(self, logits, labels):
        positive = tf.gather(logits, labels, batch_dims=1)
        negatives = logits - tf.one_hot(labels, tf.shape(logits)[1], on_value=_SELF_MASK,
                                        off_value=0.0)
        return tf.reduce_logsumexp(negatives, axis=1) - positive


def _check_objective(cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise TypeError(f"an objective is a class with __call__(projections) -> "
                        f"ContrastiveTerms, loss(terms) and get_config(), got {cls!r}")


OBJECTIVES = Registry("loss", _check_objective)


def register_objective(name: str, cls: type) -> type:
    """Offer the objective class `cls` as `get(name)` and `--loss=name`; returns `cls`.

    Raises:
        ValueError: `name` is already registered.
        TypeError: `cls` is not a class with the `Objective` methods.
    """
    return OBJECTIVES.register(name, cls)


register_objective("ntxent", NTXent)
register_objective("dcl", DecoupledNTXent)


def get(name: str, **kwargs) -> Objective:
    """The objective registered as `name`, e.g. `get("dcl", temperature=0.2)`.

    Of `kwargs`, the objective receives those its constructor declares; an argument that
    only another registered objective takes is left out (see `registry.Registry.build`).
    """
    return OBJECTIVES.build(name, **kwargs)
