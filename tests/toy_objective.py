"""A toy contrastive objective, the shape of a new objective: one new file, one registry line.

Alignment only, without temperature or negatives: the loss of each full view is minus its
cosine similarity with the other full view of its image. It shows the `losses.Objective`
contract (call, loss, get_config); it is not a useful loss (nothing keeps the
representations apart, so they collapse).
"""
import keras
import tensorflow as tf

from keras_simclr import losses


@keras.saving.register_keras_serializable(package="keras_simclr_tests")
class Alignment:
    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def __call__(self, projections):
        z1, z2 = (tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1) for z in projections[:2])
        logits = tf.concat([tf.matmul(z1, z2, transpose_b=True),
                            tf.matmul(z2, z1, transpose_b=True)], axis=0)
        labels = tf.tile(tf.range(tf.shape(z1)[0]), [2])
        per_anchor = -tf.gather(logits, labels, batch_dims=1)
        return losses.ContrastiveTerms(per_anchor, logits, labels)

    def loss(self, terms):
        return self.scale * tf.reduce_mean(terms.per_anchor)

    def get_config(self):
        return {"scale": self.scale}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
