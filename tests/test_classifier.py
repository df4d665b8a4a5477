"""LinearClassifier: frozen encoder stays exactly as it was; fine-tuning changes it."""
import warnings

import keras
import numpy as np

from conftest import blob_images
from keras_simclr import LinearClassifier, ProjectionHead
from keras_simclr.networks import backbones


def encoder_state(encoder):
    return [w.numpy().copy() for w in encoder.weights]  # includes BN moving statistics


def test_linear_training_leaves_encoder_and_bn_statistics_unchanged():
    images, labels = blob_images(128)
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    encoder(images[:2].astype("float32") / 255)
    before = encoder_state(encoder)
    classifier = LinearClassifier(encoder, num_classes=4)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.
                       SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = classifier.fit(images, labels, batch_size=32, epochs=4, verbose=0).history
    after = encoder_state(encoder)
    assert len(classifier.trainable_weights) == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert history["loss"][-1] < history["loss"][0]


def test_fine_tune_mode_trains_encoder_and_bn():
    images, labels = blob_images(64)
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    classifier = LinearClassifier(encoder, num_classes=4, fine_tune=True)
    classifier(images[:2])
    before = encoder_state(encoder)
    classifier.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    changed = [not np.array_equal(a, b) for a, b in zip(before, encoder_state(encoder))]
    assert all(changed[:3])  # stem conv kernel, BN gamma/beta
    moving_mean = [i for i, w in enumerate(encoder.weights) if "moving_mean" in w.path][0]
    assert changed[moving_mean]


def test_reads_the_head_prefix_and_round_trips(tmp_path):
    images, labels = blob_images(32)
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    head = ProjectionHead(3, output_dim=16)
    head(encoder(images[:2].astype("float32") / 255))
    classifier = LinearClassifier(encoder, num_classes=4, head=head, head_layers=1)
    assert classifier.features(images[:4]).shape == (4, 64)  # hidden width = width of h
    logits = classifier(images[:4])
    path = str(tmp_path / "cls.keras")
    classifier.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(images[:4]).numpy(), logits.numpy(), atol=1e-6)


def test_fine_tuning_from_the_head_trains_only_the_layers_it_reads():
    """apps.finetune --finetune_from_head_layer=1 warned "Gradients do not exist" for the
    head's upper layers, which the classifier never reads."""
    images, labels = blob_images(16)
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    head = ProjectionHead(3, output_dim=16)
    head(encoder(images[:2].astype("float32") / 255))
    classifier = LinearClassifier(encoder, num_classes=4, fine_tune=True, head=head,
                                  head_layers=1)
    trained = {id(v) for v in classifier.trainable_weights}
    assert all(id(v) in trained for v in head.dense_layers[0].weights)
    assert not any(id(v) in trained for layer in head.dense_layers[1:] + head.bn_layers[1:]
                   for v in layer.trainable_weights + layer.non_trainable_weights)
    classifier.compile(optimizer="sgd",
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
