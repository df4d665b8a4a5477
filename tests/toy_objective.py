"""A toy contrastive objective, the shape of a new objective: one new file, one registry line.

Alignment only (the negative of the positive's scaled similarity): it shows how a variant
overrides `NTXent.anchor_loss` without touching the model; it is not a useful loss.
"""
import keras
import tensorflow as tf

from keras_simclr import losses


@keras.saving.register_keras_serializable(package="keras_simclr_tests")
class AlignmentOnly(losses.NTXent):
    def anchor_loss(self, logits, labels):
        return -tf.gather(logits, labels, batch_dims=1)
