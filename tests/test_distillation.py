"""keras_simclr.distillation: the loss against NumPy, a frozen teacher, replicas."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import LinearClassifier
from keras_simclr.distillation import Distiller, distillation_loss
from keras_simclr.training import resilience

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distill_helper.py")


def numpy_loss(teacher, student, temperature):
    """mean(T^2 * CE(softmax(teacher / T), student / T)), written out in float64."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    targets = np.exp(log_softmax(teacher / temperature))
    return np.mean(temperature ** 2 * -(targets * log_softmax(student / temperature)).sum(1))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_the_loss_is_the_official_formula(temperature):
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (2, 6, 5))
    got = float(distillation_loss(teacher.astype("float32"), student.astype("float32"),
                                  temperature))
    assert got == pytest.approx(numpy_loss(teacher, student, temperature), rel=1e-5)


def test_the_loss_is_the_official_notebooks():
    # kd_loss.npz: `add_kd_loss` of the official distillation notebook, run as it is in
    # TensorFlow 2.15 on fixed logits (tools/make_official_fixtures.py)
    recorded = np.load(os.path.join(os.path.dirname(HELPER), "fixtures", "official",
                                    "kd_loss.npz"))
    for temperature, want in zip(recorded["temperatures"], recorded["losses"]):
        got = distillation_loss(recorded["teacher_logits"], recorded["student_logits"],
                                float(temperature))
        assert float(got) == pytest.approx(float(want), rel=1e-6), temperature


def _classifier(seed, classes=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    classifier = LinearClassifier(encoder, classes, fine_tune=True)
    classifier(np.zeros((1, 8, 8, 3), "float32"))
    classifier.classifier.kernel.assign(np.random.default_rng(seed).normal(size=(4, classes)))
    return classifier


def test_the_teacher_never_changes_and_gets_no_gradient():
    teacher, student = _classifier(1), _classifier(2)
    images = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 3)).astype("float32")
    labels = np.array([0, 1, 2, -1] * 4)
    before = [np.array(w) for w in teacher.weights]
    student_before = [np.array(w) for w in student.trainable_weights]
    distiller = Distiller(teacher, student, temperature=2.0, label_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    history = distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0).history
    assert {"loss", "distill_loss", "teacher_agreement", "label_acc"} <= set(history)
    # weights and the BN moving statistics, bit for bit
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, np.array(new))
    assert not any(np.array_equal(old, np.array(new))
                   for old, new in zip(student_before, student.trainable_weights))
    with tf.GradientTape(persistent=True) as tape:
        teacher_logits = distiller.teacher_logits(images)
        tape.watch(teacher_logits)
        loss = distillation_loss(teacher_logits, student(images), 2.0)
    assert all(g is None for g in tape.gradient(teacher_logits, teacher.weights))
    assert tape.gradient(loss, teacher_logits) is None


def test_a_pair_of_views_gives_the_teacher_the_first_and_the_student_the_second():
    # Noisy Student: the teacher labels the clean view, the student learns on its noised copy
    teacher, student = _classifier(1), _classifier(2)
    rng = np.random.default_rng(3)
    clean, noised = rng.uniform(0, 1, (2, 8, 8, 8, 3)).astype("float32")
    distiller = Distiller(teacher, student, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    history = distiller.fit(tf.data.Dataset.from_tensors(((clean, noised),)), epochs=1,
                            verbose=0).history
    want = distillation_loss(teacher(clean, training=False), student(noised, training=True),
                             2.0)
    assert history["distill_loss"][0] == pytest.approx(float(want), rel=1e-5)
    swapped = distillation_loss(teacher(noised, training=False),
                                student(clean, training=True), 2.0)
    assert float(swapped) != pytest.approx(float(want), rel=1e-3)


def test_the_distiller_saves_and_loads_with_its_step(tmp_path):
    distiller = Distiller(_classifier(1), _classifier(2), temperature=2.0)
    # momentum: the optimizer has a state per variable, which must load with the model
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    images = np.random.default_rng(2).uniform(0, 1, (8, 8, 8, 3)).astype("float32")
    distiller.fit(images, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.temperature == 2.0 and int(loaded.optimizer.iterations) == 1
    for saved, restored in zip(distiller.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.array(saved), np.array(restored))
    assert not loaded.teacher.trainable_weights
    np.testing.assert_allclose(loaded(images), distiller(images), atol=1e-6)


def test_a_non_finite_loss_stops_the_fit_at_that_step():
    distiller = Distiller(_classifier(1), _classifier(2))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    images = np.full((16, 8, 8, 3), np.nan, "float32")
    with pytest.raises(resilience.NonFiniteError, match="the loss became nan at step 1"):
        distiller.fit(images, batch_size=8, epochs=1, verbose=0,
                      callbacks=[resilience.NonFiniteGuard()])


def test_two_mirrored_replicas_give_the_student_the_update_of_one(tmp_path):
    out = str(tmp_path / "step.npz")
    subprocess.run([sys.executable, HELPER, out], check=True, capture_output=True,
                   timeout=300)
    saved = np.load(out)
    keys = sorted(k.split("/", 1)[1] for k in saved.files if k.startswith("1/"))
    assert keys
    for key in keys:
        for views in ("", "p"):  # one view for both, and (teacher's, student's) pairs
            np.testing.assert_allclose(saved[f"2{views}/{key}"], saved[f"1{views}/{key}"],
                                       atol=1e-5, err_msg=views + key)
    assert not np.allclose(saved[f"1p/{keys[-1]}"], saved[f"1/{keys[-1]}"])
