"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

For 2N views (two per image) and sim(u, v) = u.v / (|u||v|), the loss of anchor i with
positive j is

    l(i, j) = -log( exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t) )

over every other view k (the positive and 2N-2 negatives); the loss is the mean over all
2N anchors. Under tf.distribute the candidates k come from every replica (the projections are
all-gathered), so negatives span the global batch while each replica scores its own anchors.
Logits are computed in float32 and reduced with log-sum-exp, so float16/bfloat16 inputs,
identical views and all-zero vectors give finite values.
"""
import tensorflow as tf

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
    z1, z2 = _normalize(z1), _normalize(z2)
    c1, c2 = _normalize(z1_candidates), _normalize(z2_candidates)
    n = tf.shape(z1)[0]
    m = tf.shape(c1)[0]
    local = tf.range(n) + offset
    self_mask = tf.one_hot(local, m, on_value=_SELF_MASK, off_value=0.0)
    inv_t = 1.0 / temperature
    logits_ab = tf.matmul(z1, c2, transpose_b=True) * inv_t
    logits_aa = tf.matmul(z1, c1, transpose_b=True) * inv_t - self_mask
    logits_ba = tf.matmul(z2, c1, transpose_b=True) * inv_t
    logits_bb = tf.matmul(z2, c2, transpose_b=True) * inv_t - self_mask
    logits = tf.concat(
        [tf.concat([logits_ab, logits_aa], axis=1), tf.concat([logits_ba, logits_bb], axis=1)],
        axis=0,
    )
    # View-1 anchors find their positive among view-2 candidates (first block) and vice
    # versa; with the blocks ordered [other view, same view] both positives sit at `local`.
    labels = tf.concat([local, local], axis=0)
    return logits, labels


def per_anchor_loss(logits, labels):
    """Cross-entropy of each anchor's positive, (2n,)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def nt_xent(z1, z2, temperature=0.5):
    """NT-Xent on one device: z1, z2 (N, D) are the two views of the same N images.

    Inputs need not be normalised. Returns the scalar mean over the 2N anchors.
    """
    logits, labels = contrastive_logits(z1, z2, z1, z2, 0, temperature)
    return tf.reduce_mean(per_anchor_loss(logits, labels))


def cross_replica_logits(z1, z2, temperature, global_negatives=True):
    """contrastive_logits with candidates gathered from every replica in sync.

    Must run in a replica context (inside `strategy.run`, as Keras' train_step does).
    `ctx.all_gather` passes gradients back to the replica that produced each projection.
    With `global_negatives=False` (or one replica) only the local batch serves as negatives.
    """
    ctx = tf.distribute.get_replica_context()
    if not global_negatives or ctx is None or ctx.num_replicas_in_sync == 1:
        return contrastive_logits(z1, z2, z1, z2, 0, temperature)
    z1_all = ctx.all_gather(z1, axis=0)
    z2_all = ctx.all_gather(z2, axis=0)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    offset = replica_id * tf.shape(z1)[0]
    return contrastive_logits(z1, z2, z1_all, z2_all, offset, temperature)


def contrastive_accuracy(logits, labels, k=1):
    """Fraction of anchors whose positive is among the k most similar candidates."""
    return tf.reduce_mean(
        tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)
    )
