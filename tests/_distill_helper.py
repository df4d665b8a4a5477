"""Subprocess side of tests/test_distillation.py: one Distiller step with 1 and 2 replicas.

Logical CPU devices must be set up before TensorFlow initialises, hence a fresh process.
Usage: python tests/_distill_helper.py OUT.npz
Writes the student's weights after one SGD step on the same global batch from the same
weights: "1/..." with the default strategy, "2/..." mirrored over 2 logical CPUs; "1p/..."
and "2p/..." the same on pairs (teacher's view, student's noised view).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_simclr  # noqa: E402,F401  (sets the TensorFlow runtime flags first)
from keras_simclr.training import distribute  # noqa: E402

GLOBAL_BATCH = 16


def _classifier(seed, synchronized_bn):
    """A tiny conv + BN + Dense LinearClassifier with 3 classes, seeded."""
    import keras
    from keras_simclr import LinearClassifier

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = keras.layers.BatchNormalization(synchronized=synchronized_bn)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    classifier = LinearClassifier(keras.Model(inputs, x), 3, fine_tune=True)
    classifier(keras.ops.zeros((1, 8, 8, 3)))
    classifier.classifier.kernel.assign(keras.random.normal((8, 3), seed=seed))
    return classifier


def _student_after_one_step(strategy, x):
    import keras
    from keras_simclr.distillation import Distiller

    with strategy.scope():
        distiller = Distiller(_classifier(1, False), _classifier(2, True), temperature=2.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    distiller.fit(x, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return [w for w in distiller.student.get_weights()]


def main(out_path):
    import numpy as np

    distribute.configure_cpu_replicas(2)
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    images = np.random.default_rng(0).uniform(0, 1, (GLOBAL_BATCH, 8, 8, 3)).astype("float32")
    pairs = (images, np.sqrt(images))  # the student's view: a colour change of the teacher's
    results = {}
    for key, strategy in (("1", tf.distribute.get_strategy()),
                          ("2", tf.distribute.MirroredStrategy(devices[:2]))):
        for suffix, x in (("", images), ("p", pairs)):
            for i, weight in enumerate(_student_after_one_step(strategy, x)):
                results[f"{key}{suffix}/{i:03d}"] = weight
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
