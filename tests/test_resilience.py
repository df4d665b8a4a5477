"""Non-finite guard, saving on SIGTERM/SIGINT and every N steps, resuming inside an epoch."""
import os
import re
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import blob_images
from keras_simclr import NTXent, ProjectionHead, SimCLR, data, optimizers
from keras_simclr.training import resilience
from keras_simclr.training.callbacks import EpochCheckpoint, checkpoint_position, latest_checkpoint
from keras_simclr.exchange.export import export_encoder

STEPS = 4  # steps per epoch of the tiny runs


def dense_model(learning_rate=0.01):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def batches_with(bad_step, value=np.nan):
    """2 epochs x STEPS batches of 2 examples; the 1-based step `bad_step` reads `value`."""
    x = np.ones((2 * STEPS * 2, 4), np.float32)
    x[2 * (bad_step - 1)] = value
    return tf.data.Dataset.from_tensor_slices((x, np.zeros((len(x), 2), np.float32))).batch(2)


def test_the_first_non_finite_loss_stops_training_before_the_checkpoint(tmp_path):
    directory = str(tmp_path / "ckpt")
    batches = batches_with(bad_step=STEPS + 2)  # epoch 2, its second step
    model = dense_model()
    with pytest.raises(resilience.NonFiniteError) as stopped:
        model.fit(batches, steps_per_epoch=STEPS, epochs=2, verbose=0, shuffle=False,
                  callbacks=[resilience.NonFiniteGuard("try X"), EpochCheckpoint(directory)])
    message = str(stopped.value)
    assert "became nan at step 6 (epoch 2, learning rate 0.01)" in message, message
    assert message.endswith("try X") and "\n" not in message
    assert os.listdir(directory) == ["ckpt-1.keras"]  # the last good one stays the newest


def test_non_finite_weights_after_a_finite_loss_are_never_saved(tmp_path):
    # The loss of a step is computed before its update: an update that overflows shows
    # only in the weights, and the epoch checkpoint right after it must not take them.
    directory = str(tmp_path / "ckpt")
    model = dense_model(learning_rate=1e38)
    with pytest.raises(resilience.NonFiniteError,
                       match=r"weights became non-finite \(2 variables, .*\) at step 1 \(epoch 1,"):
        model.fit(np.ones((2, 4)) * 1e3, np.zeros((2, 2)), batch_size=2, epochs=1, verbose=0,
                  callbacks=[resilience.NonFiniteGuard(), EpochCheckpoint(directory)])
    assert not os.path.exists(directory)
    assert resilience.non_finite_variables(model)[0].endswith("/kernel")


def test_learning_rate_at_a_step_follows_the_schedule():
    schedule = optimizers.WarmupCosine(1.0, warmup_steps=10, total_steps=20)
    optimizer = keras.optimizers.SGD(schedule)
    assert resilience.learning_rate_at(optimizer, 4) == pytest.approx(0.4)  # 4 of 10 warm-up
    assert resilience.learning_rate_at(keras.optimizers.SGD(0.25), 99) == 0.25


def test_export_refuses_non_finite_weights(tmp_path):
    encoder = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                                keras.layers.GlobalAveragePooling2D()])
    kernel = encoder.layers[0].kernel
    kernel.assign(np.where(np.arange(kernel.shape[-1]) == 1, np.nan, kernel.numpy()))
    with pytest.raises(resilience.NonFiniteError, match="encoder has non-finite weights"):
        export_encoder(encoder, str(tmp_path / "exported"), 8)
    assert os.listdir(tmp_path) == []  # nothing written, not even a staging directory


class Signal(keras.callbacks.Callback):
    """Sends this process `signum` after global step `step` (1-based)."""

    def __init__(self, step, signum=signal.SIGTERM):
        super().__init__()
        self.step, self.signum, self.seen = step, signum, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), self.signum)


class Crash(Signal):
    """Ends training at once after global step `step`, running no other callback: what
    a kill -9 leaves is what was saved before it."""

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------
# A tiny SimCLR on real pipelines, deterministic: the two views are the image and its
# mirror image, so a run's weights depend only on the initial weights and the data order.


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("resilience_images")
    images, labels = blob_images(40, size=8, seed=3)  # 2 full batches of 16 per pass
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / "train" / f"class_{label}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return f"folder:{root}"


def dataset_from(folder):
    def views(images, labels):
        image = tf.cast(images, tf.float32) / 255.0
        return {"view_1": image, "view_2": tf.reverse(image, axis=[2])}, labels

    def make(start):
        keras.utils.set_random_seed(0)
        return data.pretrain_dataset(folder, image_size=8, global_batch_size=16, seed=1,
                                     start_batch=start).map(views)
    return make


def tiny_simclr(epochs=3):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = SimCLR(encoder, ProjectionHead(2, output_dim=8), loss=NTXent(0.5))
    model.build({k: (None, 8, 8, 3) for k in ("view_1", "view_2")})
    schedule = optimizers.warmup_cosine_for(0.5, 16, "linear", epochs, STEPS, 1)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=schedule,
                                                       weight_decay=1e-4, momentum=0.9))
    return model


def train(model, folder, directory, epoch=0, batch=0, extra=(), every=None):
    checkpoint = EpochCheckpoint(directory, keep=10)
    callbacks = [resilience.NonFiniteGuard(), checkpoint, *extra,
                 resilience.Preemption(checkpoint, STEPS, every=every)]
    return resilience.fit_from(model, dataset_from(folder), epoch=epoch, batch=batch, epochs=3,
                               steps_per_epoch=STEPS, callbacks=callbacks, verbose=0,
                               shuffle=False)


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory):
    model = tiny_simclr()
    history = train(model, folder, str(tmp_path_factory.mktemp("whole")))
    assert np.all(np.isfinite(history["loss"])) and len(history["loss"]) == 3
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_and_the_resumed_run_ends_where_an_uninterrupted_one_does(
        folder, uninterrupted, tmp_path, signum):
    directory = str(tmp_path / "ckpt")
    before = signal.getsignal(signum)
    model = tiny_simclr()
    with pytest.raises(resilience.Preempted) as stopped:
        train(model, folder, directory, extra=[Signal(STEPS + 2, signum)])
    name = signal.Signals(signum).name
    assert str(stopped.value).startswith(f"{name} received: saved step 6 (epoch 2, step 2 of 4) "
                                         f"to {directory}/ckpt-1-2.keras")
    assert signal.getsignal(signum) is before  # the handler is gone with the run
    assert sorted(os.listdir(directory)) == ["ckpt-1-2.keras", "ckpt-1.keras"]

    path, epoch = latest_checkpoint(directory)
    assert (epoch, checkpoint_position(path)) == (1, (1, 2))
    resumed = keras.saving.load_model(path)
    assert int(resumed.optimizer.iterations) == 6
    history = train(resumed, folder, directory, epoch=1, batch=2)
    assert len(history["loss"]) == 2  # the rest of epoch 2, then epoch 3
    assert int(resumed.optimizer.iterations) == 3 * STEPS
    for got, expected in zip(resumed.get_weights(), uninterrupted):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_every_n_steps_a_crash_loses_at_most_n_steps(folder, tmp_path):
    directory = str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_simclr(), folder, directory, extra=[Crash(7)], every=3)
    # steps 3 and 6 inside epochs, epoch 1 at step 4; the crash after step 7 loses 1
    assert sorted(os.listdir(directory)) == ["ckpt-0-3.keras", "ckpt-1-2.keras", "ckpt-1.keras"]
    path, _ = latest_checkpoint(directory)
    assert checkpoint_position(path) == (1, 2)
    assert int(keras.saving.load_model(path).optimizer.iterations) == 6


def test_a_second_signal_interrupts_at_once(folder, tmp_path):
    # A second Ctrl-C while the first is handled gets Python's own handler back.
    class Twice(Signal):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self.seen == self.step:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_simclr(), folder, str(tmp_path / "ckpt"),
                  extra=[Twice(2, signal.SIGINT)])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_non_finite_model_is_not_saved_on_a_signal(folder, tmp_path):
    class Poison(Signal):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self.seen == self.step:
                self.model.encoder.weights[0].assign(
                    tf.fill(self.model.encoder.weights[0].shape, np.nan))

    directory = str(tmp_path / "ckpt")
    with pytest.raises(resilience.NonFiniteError, match="model at step 2 has non-finite"):
        train(tiny_simclr(), folder, directory, extra=[Poison(2)])
    assert not os.path.exists(directory)


def test_a_signal_between_the_two_fits_of_a_resumed_run_stops_it_at_the_next_step(
        folder, tmp_path):
    # fit_from runs the rest of an interrupted epoch and the later epochs as two fits; the
    # handlers were put back between them, so a signal there took the previous handler.
    class SignalAfterTheFirstFit(keras.callbacks.Callback):
        sent = False

        def on_train_end(self, logs=None):  # after Preemption's own on_train_end
            if not self.sent:
                SignalAfterTheFirstFit.sent = True
                os.kill(os.getpid(), signal.SIGUSR1)

    outside = []
    before = signal.signal(signal.SIGUSR1, lambda *_: outside.append("previous handler"))
    try:
        model = tiny_simclr()
        model.optimizer.iterations.assign(2)  # as if resumed 2 steps into epoch 1
        checkpoint = EpochCheckpoint(str(tmp_path / "ckpt"), keep=10)
        stop = resilience.Preemption(checkpoint, STEPS, signals=(signal.SIGUSR1,))
        with pytest.raises(resilience.Preempted,
                           match=r"^SIGUSR1 received: saved step 5 \(epoch 2, step 1 of 4\)"):
            resilience.fit_from(model, dataset_from(folder), epoch=0, batch=2, epochs=3,
                                steps_per_epoch=STEPS, verbose=0, shuffle=False,
                                callbacks=[checkpoint, stop, SignalAfterTheFirstFit()])
        assert outside == [] and signal.getsignal(signal.SIGUSR1) is not stop._handle
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_resume_step_past_a_shorter_epoch_counts_on_into_the_next():
    # ckpt-1-6.keras read with --steps_per_epoch=4 asked fit for -2 steps.
    starts = []

    def dataset_from(start):
        starts.append(start)
        return tf.data.Dataset.from_tensors((np.ones((2, 4)), np.zeros((2, 2)))).repeat()

    model = dense_model()
    history = resilience.fit_from(model, dataset_from, epoch=1, batch=6, epochs=4,
                                  steps_per_epoch=STEPS, verbose=0, shuffle=False)
    assert starts == [10, 12]  # the rest of epoch 3 from its step 3, then epoch 4
    assert int(model.optimizer.iterations) == 2 + STEPS and len(history["loss"]) == 2


def test_a_mid_epoch_resume_shows_the_epochs_true_number_and_the_runs_total(capsys):
    # Resumed 2 steps into epoch 2 of 4, Keras printed "Epoch 2/2" for the rest of it.
    def dataset_from(start):
        return tf.data.Dataset.from_tensors((np.ones((2, 4)), np.zeros((2, 2)))).repeat()

    resilience.fit_from(dense_model(), dataset_from, epoch=1, batch=2, epochs=4,
                        steps_per_epoch=STEPS, verbose=2, shuffle=False)
    shown = re.findall(r"Epoch (\d+)/(\d+)", capsys.readouterr().out)
    assert shown == [("2", "4"), ("3", "4"), ("4", "4")]


@pytest.mark.parametrize("message, lost", [
    # what TensorFlow 2.21 said on the survivor when a worker was killed on 127.0.0.1
    ("Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
     "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe "
     "tasks have crashed.", ["worker 1"]),
    ("Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error "
     "information from remote target /job:worker/replica:0/task:0 while calling "
     "/tensorflow.WorkerService/CompleteInstance:", ["worker 0"]),
    ("Graph execution error: /job:worker/replica:0/task:1 ran out of memory", []),
])
def test_a_lost_worker_is_named_from_the_collective_error(message, lost):
    assert resilience.lost_tasks(tf.errors.UnavailableError(None, None, message)) == lost
