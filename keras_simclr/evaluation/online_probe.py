"""The online linear probe: a Dense layer on stop_gradient(h), trained during pretraining.

It shows the representation's quality while the encoder trains, without touching the
encoder: its loss reaches no encoder weight. Examples whose label is negative (unlabelled
images) are left out of the loss and the accuracy. The probe stays a plain
`keras.layers.Dense`: Keras names a saved layer's weights after its class, so a subclass
would not load the probes of saved models.
"""
import keras
import tensorflow as tf


def online_probe(num_classes: int) -> keras.layers.Dense:
    """The probe layer: `num_classes` logits from h."""
    return keras.layers.Dense(num_classes, name="probe")


def masked_cross_entropy(logits, labels):
    """(mean cross-entropy over the examples with labels >= 0, labels with negatives at 0,
    the float32 label mask): unlabelled examples (label < 0) take no part."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    mask = tf.cast(labels >= 0, tf.float32)
    safe_labels = tf.maximum(labels, 0)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=tf.cast(logits, tf.float32))
    loss = tf.reduce_sum(per_example * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
    return loss, safe_labels, mask


def probe_loss_terms(probe: keras.layers.Layer, h, labels):
    """(mean cross-entropy, float32 logits, labels with negatives at 0, label mask).

    Args:
        probe: the probe layer.
        h: the representation [B, D] (no gradient flows back into it).
        labels: int [B] or [B, 1]; labels < 0 are ignored.
    """
    logits = tf.cast(probe(tf.stop_gradient(h)), tf.float32)
    loss, safe_labels, mask = masked_cross_entropy(logits, labels)
    return loss, logits, safe_labels, mask
