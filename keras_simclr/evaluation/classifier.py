"""Linear evaluation and fine-tuning: an encoder plus one Dense layer.

`LinearClassifier(encoder, num_classes)` freezes the encoder (`trainable=False`, which in
Keras 3 also runs its BatchNormalization in inference mode, so neither weights nor moving
statistics change) and trains only the Dense layer on h: the paper's linear evaluation.
With `fine_tune=True` the encoder is trainable and its BN layers train too. For SimCLRv2
fine-tuning from the middle of the projection head, pass `head` and `head_layers`: the
classifier then reads g_k(h), the output of the head's first `head_layers` layers, and
the head's layers above those are frozen (they would get no gradient).
"""
import keras

from keras_simclr.views.view_dict import to_float_images
from keras_simclr.training.keras_compat import DistributedFitMixin


@keras.saving.register_keras_serializable(package="keras_simclr")
class LinearClassifier(DistributedFitMixin, keras.Model):
    """Encoder (frozen unless `fine_tune`) followed by one Dense layer giving logits.

    `fit` and `evaluate` work under every tf.distribute strategy, MultiWorkerMirrored
    included (`keras_compat.DistributedFitMixin`).
    """

    def __init__(self, encoder, num_classes, fine_tune=False, head=None, head_layers=0, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if head_layers and head is None:
            raise ValueError("head_layers needs the projection head (head=...)")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.fine_tune = bool(fine_tune)
        self.head = head
        self.head_layers = int(head_layers)
        self.encoder.trainable = self.fine_tune
        if self.head is not None:
            self.head.trainable = self.fine_tune
            # the layers above head_layers take no part: no gradients for the optimizer
            for index in range(self.head_layers, len(getattr(self.head, "dense_layers", []))):
                self.head.dense_layers[index].trainable = False
                self.head.bn_layers[index].trainable = False
        self.classifier = keras.layers.Dense(
            self.num_classes, kernel_initializer="zeros", name="classifier"
        )

    def build(self, input_shape):
        h_shape = self.encoder.compute_output_shape(input_shape)
        if self.head_layers:
            if not self.head.built:
                self.head.build(h_shape)
            h_shape = self.head.compute_output_shape(h_shape, self.head_layers)
        if not self.classifier.built:
            self.classifier.build(h_shape)
        self.built = True

    def features(self, images, training=False):
        """The representation the Dense layer reads: h, or g_k(h) with head_layers."""
        h = self.encoder(to_float_images(images), training=training and self.fine_tune)
        if self.head_layers:
            h = self.head(h, training=training and self.fine_tune, num_layers=self.head_layers)
        return h

    def call(self, images, training=False):
        return self.classifier(self.features(images, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            num_classes=self.num_classes,
            fine_tune=self.fine_tune,
            head=keras.saving.serialize_keras_object(self.head),
            head_layers=self.head_layers,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)
