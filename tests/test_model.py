"""SimCLR model: a tiny fit learns, metrics, save/load, pipeline-made views, config."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import blob_images
from keras_simclr import LinearClassifier, ProjectionHead, SimCLR, SimCLRAugment, losses
from keras_simclr.distillation import Distiller
from keras_simclr.networks import backbones
from keras_simclr.views.makers import views_of_input


def tiny_simclr(probe_classes=4, augmenter=True, seed=0):
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    return SimCLR(
        encoder,
        ProjectionHead(2, output_dim=32),
        SimCLRAugment(16, seed=seed) if augmenter else None,
        loss=losses.NTXent(0.5),
        probe_classes=probe_classes,
    )


def test_tiny_fit_lowers_loss_and_beats_chance():
    keras.utils.set_random_seed(0)
    images, _ = blob_images(256)
    # Probe labels a few steps can learn from h: each image's dominant colour channel
    # (89/80/87 images), which the views' colour jitter mostly keeps.
    labels = images.reshape(len(images), -1, 3).mean(axis=1).argmax(axis=1)
    majority = np.bincount(labels).max() / len(labels)
    model = tiny_simclr()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(images, labels, batch_size=32, epochs=8, verbose=0).history
    chance = 1 / (2 * 32 - 1)
    print("loss per epoch:", np.round(history["loss"], 3))
    print("contrastive top-1 per epoch:", np.round(history["contrastive_acc"], 3))
    assert np.mean(history["loss"][-2:]) < history["loss"][0] - 0.2
    assert np.mean(history["contrastive_acc"][-2:]) > 4 * chance
    assert history["contrastive_top5"][-1] >= history["contrastive_acc"][-1]
    assert history["learning_rate"][-1] == pytest.approx(1e-2)
    print("probe top-1 per epoch:", np.round(history["probe_acc"], 3))
    # Measured: 0.66 over the last two epochs, 0.83 on the clean images; majority 0.35.
    assert np.mean(history["probe_acc"][-2:]) > majority + 0.2  # an untrained probe: 0.49
    result = model.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    assert set(result) >= {"loss", "contrastive_acc", "probe_acc"}
    assert result["probe_acc"] > majority + 0.25


def test_unlabelled_data_and_ignored_labels_train():
    images, labels = blob_images(64)
    model = tiny_simclr()
    model.compile(optimizer="adam")
    history = model.fit(images, np.full(64, -1), batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["probe_loss"][0] == 0.0
    probe_before = [w.numpy().copy() for w in model.probe.weights]
    history = model.fit(images, batch_size=32, epochs=1, verbose=0).history  # no labels at all
    assert np.isfinite(history["loss"][0])
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(probe_before, model.probe.weights))


def test_views_from_the_input_pipeline():
    images, _ = blob_images(64)
    augment = SimCLRAugment(16, seed=1)
    views = {"view_1": augment(images).numpy(), "view_2": augment(images).numpy()}
    model = tiny_simclr(probe_classes=None, augmenter=False)
    model.compile(optimizer="adam")
    history = model.fit(views, batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    with pytest.raises(ValueError, match="no augmenter"):
        model.train_step(images)


def test_crops_from_the_input_pipeline_are_made_into_views_by_the_augmenter():
    """augment_in=model on large images: the pipeline feeds crops, the model's augmenter
    flips and jitters them (`views_of_crops`) before the encoder."""
    images, labels = blob_images(64)
    crops = {"crop_1": images, "crop_2": images[:, ::-1]}
    model = tiny_simclr()
    views = views_of_input(model.augmenter,
                           {key: tf.constant(value) for key, value in crops.items()})
    assert [v.shape for v in views] == [(64, 16, 16, 3)] * 2 and views[0].dtype == tf.float32
    assert np.abs(views[0].numpy() - images / 255.0).max() > 0.1  # augmented, not as fed
    model.compile(optimizer="adam")
    history = model.fit(crops, labels, batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    with pytest.raises(ValueError, match="views_of_crops"):
        views_of_input(tiny_simclr(augmenter=False).augmenter, crops)


def test_save_and_load_give_identical_outputs(tmp_path):
    images, labels = blob_images(64)
    model = tiny_simclr()
    model.compile(optimizer="adam")
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "simclr.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SimCLR)
    np.testing.assert_array_equal(loaded(images[:8]).numpy(), model(images[:8]).numpy())
    np.testing.assert_array_equal(
        loaded.head(model(images[:8])).numpy(), model.head(model(images[:8])).numpy())
    assert isinstance(loaded.objective, losses.NTXent) and loaded.objective.temperature == 0.5
    assert int(loaded.optimizer.iterations) == 2
    # Training resumes from the loaded optimizer state.
    loaded.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 4


def test_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(backbones.resnet(18, width_multiplier=0.125), loss=losses.NTXent(0.0))


def test_the_objective_arguments_go_to_the_loss_and_old_configs_still_load():
    encoder = backbones.resnet(18, width_multiplier=0.125)
    assert SimCLR(encoder).objective.get_config() == losses.NTXent(0.5).get_config()
    for name, value in (("temperature", 0.2), ("global_negatives", False)):
        with pytest.raises(TypeError, match=rf"loss=keras_simclr.losses.NTXent\({name}="):
            SimCLR(encoder, **{name: value})
    with pytest.raises(TypeError):  # positionally, no argument takes its place
        SimCLR(encoder, None, None, 0.2)
    # A config saved when SimCLR took the objective's arguments: without `loss`, or with
    # `loss` beside the arguments set to None.
    model = SimCLR(encoder, loss=losses.NTXent(0.3))
    config = dict(model.get_config(), temperature=None, global_negatives=None)
    assert SimCLR.from_config(config).objective.temperature == 0.3
    config = model.get_config()  # from_config consumed the nested configs
    del config["loss"]
    config.update(temperature=0.3, global_negatives=False)
    restored = SimCLR.from_config(config)
    assert restored.objective.get_config() == losses.NTXent(0.3, False).get_config()


def _traces_of_train_step(model, *fit_args, **fit_kwargs):
    """How many times `fit` traced the model's train_step (each trace calls it once)."""
    calls = []
    step = model.train_step
    model.train_step = lambda data: calls.append(1) or step(data)
    model.fit(*fit_args, verbose=0, **fit_kwargs)
    return len(calls)


def test_fit_traces_each_models_train_step_once():
    # Built in the step's first trace (no strategy), the head, the probe, the Dense
    # layer and the optimizer's slots made tf.function trace every step twice: 3 CPU-s
    # of each tiny app run. The models now build before fit (DistributedFitMixin.fit).
    images, labels = blob_images(32)
    model = tiny_simclr()
    model.compile(optimizer="adam")
    assert _traces_of_train_step(model, images, labels, batch_size=16, epochs=2) == 1
    classifiers = [LinearClassifier(backbones.resnet(10, stem="cifar", width_multiplier=0.125,
                                                     input_shape=(16, 16, 3)), 4)
                   for _ in range(2)]
    classifiers[0].compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    assert _traces_of_train_step(classifiers[0], images, labels, batch_size=16) == 1
    distiller = Distiller(*classifiers)
    distiller.compile(optimizer="sgd")
    assert _traces_of_train_step(distiller, images, batch_size=16) == 1
