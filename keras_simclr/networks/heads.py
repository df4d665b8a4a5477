"""Projection head g(h) = z: the MLP between the representation h and the contrastive loss.

As the official code (google-research/simclr `tf2/model.py`, `ProjectionHead`): `depth`
Dense layers with BatchNormalization; the hidden ones have width `hidden_dim` (by default
the width of h), BN with a shift and ReLU; the last maps to `output_dim` (128) with BN and
neither bias nor ReLU. Depth 3 is SimCLRv2, depth 2 SimCLRv1. The BN layers are Keras'
(saved models address their weights by that class's name) and compute through the fused
kernel as the backbones' do (`batchnorm.normalize`). SimCLRv2 fine-tunes from the
middle of the head: `ProjectionHead.call(h, num_layers=k)` applies only the first k layers,
and `features_model(encoder, head, k)` is the Keras model from images to that layer's output.
"""
import keras

from keras_simclr.networks import batchnorm


@keras.saving.register_keras_serializable(package="keras_simclr")
class ProjectionHead(keras.layers.Layer):
    """MLP projection head; see the module docstring."""

    def __init__(self, depth=3, hidden_dim=None, output_dim=128, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        if depth < 1:
            raise ValueError(f"projection head depth must be at least 1, got {depth}")
        self.depth = int(depth)
        self.hidden_dim = hidden_dim
        self.output_dim = int(output_dim)
        self.synchronized_bn = bool(synchronized_bn)
        self.dense_layers = []
        self.bn_layers = []

    def build(self, input_shape):
        hidden = self.hidden_dim or int(input_shape[-1])
        for index in range(self.depth):
            last = index == self.depth - 1
            dense = keras.layers.Dense(
                self.output_dim if last else hidden,
                use_bias=False,  # followed by BN
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                name=f"dense_{index}",
            )
            bn = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, center=not last,
                synchronized=self.synchronized_bn, name=f"bn_{index}",
            )
            dense.build(input_shape)
            input_shape = (*input_shape[:-1], dense.units)
            bn.build(input_shape)
            self.dense_layers.append(dense)
            self.bn_layers.append(bn)

    def call(self, inputs, training=None, num_layers=None):
        """Apply the first `num_layers` layers (all by default)."""
        x = inputs
        for index in range(self.depth if num_layers is None else num_layers):
            x, bn = self.dense_layers[index](x), self.bn_layers[index]
            # Keras' layer (its saved weights' name) with the fused kernel's arithmetic
            x = (batchnorm.normalize(bn, x, training) if batchnorm.fuses(bn, x)
                 else bn(x, training=training))
            if index != self.depth - 1:
                x = keras.ops.relu(x)
        return x

    def compute_output_shape(self, input_shape, num_layers=None):
        layers = self.depth if num_layers is None else num_layers
        if layers == self.depth:
            width = self.output_dim
        else:
            width = (self.hidden_dim or input_shape[-1]) if layers else input_shape[-1]
        return (*input_shape[:-1], width)

    def compute_output_spec(self, inputs, training=None, num_layers=None):
        # Keras passes only the input shape to compute_output_shape: the width of a
        # symbolic call with num_layers (a SimCLRv2 classifier's input) is decided here.
        return keras.KerasTensor(self.compute_output_shape(inputs.shape, num_layers),
                                 dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            depth=self.depth,
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            synchronized_bn=self.synchronized_bn,
        )
        return config


def features_model(encoder: keras.Model, head: ProjectionHead | None = None,
                   layers: int = 0) -> keras.Model:
    """A model from images in [0, 1] to what a classifier reading `head`'s layer `layers`
    reads: `encoder` itself (h) when `layers` is 0, else h through the head's first
    `layers` layers (SimCLRv2's classifiers read layer 1).

    Args:
        encoder: images -> h.
        head: the projection head (needed when `layers` > 0).
        layers: how many of its layers the features go through.
    """
    if not layers:
        return encoder
    if head is None:
        raise ValueError("features from a head layer need the projection head (head=...)")
    images = keras.Input((None, None, 3))
    outputs = head(encoder(images), num_layers=layers)
    return keras.Model(images, outputs, name=f"{encoder.name}_head_layer{layers}")
