"""A toy backbone family, the shape of a new one: one new file, one `register_family` line.

Two strided convolutions and global average pooling: a builder that declares only the
arguments it uses (`width_multiplier`), so the ResNet-only ones (`stem`, `stage_widths`,
`synchronized_bn`) never reach it.
"""
import keras


def tiny_convnet(width_multiplier=1.0, input_shape=(None, None, 3), name=None):
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for index, filters in enumerate((16, 32)):
        x = keras.layers.Conv2D(max(1, round(filters * width_multiplier)), 3, strides=2,
                                padding="same", activation="relu", name=f"conv{index + 1}")(x)
    h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, h, name=name or "tiny_convnet")
