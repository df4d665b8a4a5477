"""Training that survives divergence, preemption and lost workers: a non-finite guard, saves
on a signal.

- `NonFiniteGuard` stops `fit` at the first step whose loss is NaN or infinite, and before
  any checkpoint or final save of weights that are not finite (a finite loss can still
  come with an update that overflows), with `NonFiniteError`: one line giving the step,
  the epoch, the learning rate of that step and what to try. Put it first among the
  callbacks, so that it runs before `callbacks.EpochCheckpoint` saves. Nothing it stopped
  is written, so the newest checkpoint stays the last good one.
- `Preemption` saves a checkpoint at the current step when the process gets SIGTERM (what
  spot or preemptible machines get before they stop) or SIGINT (Ctrl-C), then raises
  `Preempted`; with `every=N` it also saves every N steps, which bounds what a `kill -9`
  loses. The checkpoint is `ckpt-EPOCH-BATCH.keras` beside the epoch checkpoints (same
  rotation, same damaged-file skipping on resume), so the rerun resumes at that step.
  Across workers the signal reaches one of them, and all stop after the same step
  (`preemption.StopAgreement`).
- `fit_from` resumes inside an epoch: Keras' `fit` starts epochs at their first step, so
  the rest of the interrupted epoch is one short `fit` and the remaining epochs another,
  each on data that starts at its global batch (`data.pretrain_dataset(start_batch=...)`).
  When another worker dies (its collectives fail: TensorFlow's coordination service misses
  its heartbeats, or its connections drop), it raises `WorkerLost` naming that worker.

Keras' `BackupAndRestore(save_freq=N)` is not used: on restore it reruns the interrupted
epoch from its first step (its training metadata records the batch but `_load_model` sets
only the epoch), it overwrites its one backup in place, and it has no save on a signal.
Why not TensorFlow's `PreemptionCheckpointHandler`: `keras_simclr.training.preemption`.
"""
import contextlib
import math
import re
import signal

import keras
import numpy as np
import tensorflow as tf

from keras_simclr.training import distribute, preemption

EXIT_NON_FINITE = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (rerun the same command to resume)
EXIT_WORKER_LOST = 69  # EX_UNAVAILABLE: a worker died; relaunch them all to resume
PRETRAIN_HINT = ("rerun with a lower --learning_rate (it resumes from the newest "
                 "checkpoint), --precision=float32 or --chunk_size")


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinite loss or weights; nothing of it was saved."""


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run died or hung; this one stopped, saving nothing."""


class Preempted(Exception):
    """A signal stopped training after a checkpoint was saved at the current step."""


def non_finite_variables(model: keras.Model) -> list[str]:
    """Paths of the model's and its optimizer's variables holding NaN or infinity.

    Args:
        model: a built Keras model (its optimizer's variables are checked when it has one).
    Returns:
        The variable paths, in order; [] when everything is finite.
    """
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    finite = [keras.ops.all(keras.ops.isfinite(v)) for v in variables]  # no copy to NumPy
    if bool(keras.ops.all(keras.ops.stack(finite))):
        return []
    return [v.path for v, ok in zip(variables, finite) if not bool(ok)]


def _describe(bad: list[str]) -> str:
    """How many variables of `non_finite_variables` are bad, and the first."""
    return f"{len(bad)} variables, the first {bad[0]}"


def check_finite(model: keras.Model, what: str = "the model") -> None:
    """Raise `NonFiniteError` naming the first non-finite variable of `model`, if any."""
    bad = non_finite_variables(model)
    if bad:
        raise NonFiniteError(f"{what} has non-finite weights ({_describe(bad)}): refusing "
                             "to write it")


def learning_rate_at(optimizer, step: int) -> float:
    """The learning rate `optimizer` applies at its 0-based iteration `step`."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(rate(step)))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class _StepCounter(keras.callbacks.Callback):
    """Counts global steps from the optimizer's iterations at the start of `fit`."""

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class NonFiniteGuard(_StepCounter):
    """Stop training with `NonFiniteError` at the first non-finite loss or weights.

    The loss is checked after every step (Keras hands callbacks numbers already when any
    callback has a per-step hook), the weights and optimizer state at the end of every
    epoch and of training: before the checkpoint callbacks after it and the caller save.

    Args:
        hint: what the error line suggests trying.
    """

    def __init__(self, hint: str = "rerun with a lower --learning_rate"):
        super().__init__()
        self.hint = hint

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.mean(loss))):
            self._stop(f"the loss became {float(np.mean(loss))}")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._checked = None

    def on_epoch_end(self, epoch, logs=None):
        self._check_weights()

    def on_train_end(self, logs=None):
        self._check_weights()

    def _check_weights(self):
        if self._checked == self.step:  # the end of training right after an epoch's end
            return
        self._checked = self.step
        bad = non_finite_variables(self.model)
        if bad:
            self._stop(f"the weights became non-finite ({_describe(bad)})")

    def _stop(self, what):
        rate = learning_rate_at(self.model.optimizer, self.step - 1)
        raise NonFiniteError(
            f"{what} at step {self.step} (epoch {self.epoch + 1}, learning rate {rate:.4g}); "
            f"training stopped and nothing of it was saved: {self.hint}")


class Preemption(_StepCounter):
    """Save at the current step on SIGTERM/SIGINT and raise `Preempted`; save every N steps.

    The signal handlers are installed for the duration of `fit` (main thread only), or of
    all the `fit` calls of `fit_from`, so that a signal between them still stops training
    at the next step; a second signal while the first is being handled gets the previous
    handler, so a second Ctrl-C still interrupts at once. The checkpoint is checked
    finite first. Across workers a signal reaches one of them: it asks all to stop
    (`preemption.StopAgreement`), the next train step sums the requests, and every worker
    saves after that same step (the chief writes).

    Args:
        checkpoint: the run's `callbacks.EpochCheckpoint` (directory and rotation).
        steps_per_epoch: steps of every epoch, to name the step inside its epoch.
        every: also save every this many global steps (None: only on a signal).
        signals: the signals that stop training.
    """

    def __init__(self, checkpoint, steps_per_epoch: int, every: int | None = None,
                 signals=(signal.SIGTERM, signal.SIGINT)):
        super().__init__()
        self.checkpoint = checkpoint
        self.steps_per_epoch = steps_per_epoch
        self.every = every
        self.signals = signals
        self.received = None
        self.agreement = None
        self._previous = {}
        self._held = False

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum)
        self._restore_handlers()

    def _install_handlers(self):
        if self._previous or self.received:  # installed, or the first signal came
            return
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = {}

    def _restore_handlers(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @contextlib.contextmanager
    def held(self):
        """Keep the signal handlers installed between the `fit` calls inside."""
        self._install_handlers()
        self._held = True
        try:
            yield self
        finally:
            self._held = False
            self._restore_handlers()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        strategy = self.model.distribute_strategy
        if distribute.is_multi_worker(strategy):
            self.agreement = preemption.StopAgreement.current(strategy)
        self._install_handlers()

    def on_train_end(self, logs=None):
        if not self._held:
            self._restore_handlers()

    def _stop_reason(self):
        """What stops training after this step, or None: this process's signal on one
        machine, every worker's requests across workers."""
        if self.agreement is None:
            return self.received and f"{self.received.name} received"
        if not self.agreement.traced:
            raise RuntimeError("the model's train step does not take part in the stop "
                               "agreement across workers: call keras_simclr.training."
                               "preemption.take_part() in it (DistributedFitMixin does)")
        if self.received and not self.agreement.requested.numpy():
            self.agreement.request(self.received)  # the next step tells every worker
        stopping = self.agreement.stopping(self.model.distribute_strategy)
        return stopping and "; ".join(f"{signal.Signals(number).name} received by {task}"
                                      for task, number in stopping.items())

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        epoch, batch = divmod(self.step, self.steps_per_epoch)
        reason = self._stop_reason()
        periodic = self.every and self.step % self.every == 0 and batch
        if not (reason or periodic):
            return
        check_finite(self.model, f"the model at step {self.step}")
        path = self.checkpoint.save(epoch, batch)
        if reason:
            self._restore_handlers()
            rerun = "the same command" if self.agreement is None else "every worker"
            raise Preempted(f"{reason}: saved step {self.step} (epoch "
                            f"{epoch + 1 if batch else epoch}, step {batch or self.steps_per_epoch}"
                            f" of {self.steps_per_epoch}) to {path}; rerun {rerun} to resume "
                            "there")


class _StopAfterEpoch(keras.callbacks.Callback):
    """Ends `fit` after its first epoch (the rest of an interrupted one)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def fit_from(model: keras.Model, dataset_from, *, epoch: int, batch: int, epochs: int,
             steps_per_epoch: int, **fit_kwargs) -> dict:
    """`model.fit` from `batch` steps into `epoch` (0-based) to `epochs`; the merged history.

    Args:
        model: the compiled model, at global step `epoch * steps_per_epoch + batch`.
        dataset_from: global batch index -> an endless dataset starting at that batch.
        epoch, batch: where training resumes (`callbacks.checkpoint_position`); a batch
            past the end of the epoch (a smaller --steps_per_epoch on resume) counts on
            into the next epochs.
        epochs: the total epochs.
        steps_per_epoch: steps of every epoch.
        **fit_kwargs: the other `fit` arguments (callbacks, verbose, ...).
    Returns:
        {metric: [one value per epoch trained]} as `History.history`.
    """
    stops = [c for c in fit_kwargs.get("callbacks") or () if isinstance(c, Preemption)]
    try:
        with stops[0].held() if stops else contextlib.nullcontext():
            parts = _fits(model, dataset_from, epoch, batch, epochs, steps_per_epoch,
                          fit_kwargs)
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.DeadlineExceededError) as error:
        lost = lost_tasks(error)
        if not lost:
            raise
        raise WorkerLost(f"lost contact with {' and '.join(lost)}: training stopped; "
                         "relaunch every worker to resume from the newest checkpoint") from None
    merged = {}
    for history in parts:
        for key, values in history.items():
            merged.setdefault(key, []).extend(values)
    return merged


def lost_tasks(error: Exception) -> list[str]:
    """The tasks a collective error says are gone ("worker 1"), [] when it names none.

    The coordination service names the tasks that stopped sending heartbeats; a worker
    whose collective peer vanished names the remote target it could not reach.
    """
    text = str(error)
    for marker in ("tasks are unhealthy", "remote target "):
        if marker in text:
            found = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text.split(marker, 1)[1])
            if found:
                return sorted({f"{job} {index}" for job, index in found})
    return []


def _fits(model, dataset_from, epoch, batch, epochs, steps_per_epoch, fit_kwargs):
    """The histories of `fit_from`'s one or two `fit` calls."""
    epoch, batch = epoch + batch // steps_per_epoch, batch % steps_per_epoch
    parts = []
    if batch and epoch < epochs:
        # The rest of the interrupted epoch, shown as epoch `epoch + 1` of all `epochs`.
        rest = dict(fit_kwargs, callbacks=[*fit_kwargs.get("callbacks", []), _StopAfterEpoch()])
        parts.append(model.fit(dataset_from(epoch * steps_per_epoch + batch),
                               initial_epoch=epoch, epochs=epochs,
                               steps_per_epoch=steps_per_epoch - batch, **rest).history)
        epoch += 1
    if epoch < epochs:
        parts.append(model.fit(dataset_from(epoch * steps_per_epoch), initial_epoch=epoch,
                               epochs=epochs, steps_per_epoch=steps_per_epoch,
                               **fit_kwargs).history)
    return parts
