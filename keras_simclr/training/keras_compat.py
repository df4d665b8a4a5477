"""Workarounds for Keras 3.15 (TensorFlow backend) `fit`/`evaluate` under multi-worker training.

Keras 3.15.1 with TensorFlow 2.21 does not run `fit` or `evaluate` under
`tf.distribute.MultiWorkerMirroredStrategy` with more than one worker as it is:

- keras-team/keras#20329 ("Tensorflow MultiWorkerMirroredStrategy and input dictionaries",
  open): before the first step Keras builds the model from a first batch that it
  all-reduces across replicas; with several workers that all-reduce fails on nested
  batches (SimCLR's dict of views, a classifier's `(x, y)` tuples).
  `DistributedFitMixin._maybe_symbolic_build` builds from this replica's share instead.
- tensorflow/tensorflow#72388 ("tf.distribute and keras 3 incompatibility: Invalid
  reduction dimension 0 for input with 0 dimensions", closed as stale, not fixed): Keras
  averages every step's logs with `strategy.reduce("MEAN", value, axis=0)`, which fails on
  the scalars a step returns. `step_logs` gives them shape [1].

When they can be deleted: once a Keras release builds the model without all-reducing the
first batch and reduces scalar logs without `axis=0` under the TensorFlow backend. To check
a new Keras, drop the mixin's base class and `step_logs` calls and run
`tests/test_distribute.py`: its two-worker run (SimCLR and LinearClassifier) fails without
them on Keras 3.15. Outside multi-worker runs both are no-ops (`step_logs` returns its
argument; the mixin only changes how the model is built before the first step).
"""
import keras
import tensorflow as tf

from keras_simclr.training import preemption
from keras_simclr.training.distribute import is_multi_worker


def step_logs(logs: dict) -> dict:
    """Return value of a `train_step`/`test_step` that Keras can reduce across workers.

    Args:
        logs: the step's metric results, name to value.

    Returns:
        `logs` itself outside multi-worker runs; with several workers, a copy whose scalar
        tensors have shape [1] (Keras' `reduce(..., axis=0)` averages them back to scalars;
        tensorflow/tensorflow#72388).
    """
    strategy = tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return logs
    return {
        name: tf.reshape(value, [1]) if tf.is_tensor(value) and value.shape.rank == 0
        else value
        for name, value in logs.items()
    }


class DistributedFitMixin:
    """Base class to put before `keras.Model` so `fit`/`evaluate` work under any strategy.

    Under a distribution strategy Keras 3.15 (TF backend) builds the model before the
    first step from a batch it all-reduces across replicas; with several workers that
    all-reduce fails on nested batches (dicts, `(x, y)` tuples; keras-team/keras#20329),
    and it costs an all-reduce of a whole batch anyway. Here the model is built from this
    replica's share of the batch instead. Keras' own `train_step`/`test_step` outputs go
    through `step_logs`; a subclass that overrides them should return `step_logs(logs)`.
    The train step also takes part in the workers' stop agreement (`preemption.take_part`,
    not a Keras workaround but needed by the same models); an overriding `train_step`
    calls it too.
    """

    def fit(self, *args, **kwargs):
        """Keras' fit, with the model and its optimizer built first where the input shape
        is known (`_input_shape_for_build`). Without a strategy Keras would build them in
        the first trace of the train step, and variables created there make tf.function
        trace the whole step a second time (3 of the 16 CPU-seconds of a tiny one-epoch
        apps.pretrain run, the first minutes of a large model's)."""
        if getattr(self, "_distribute_strategy", None) is None:  # else as Keras does
            shape = self._input_shape_for_build()
            if not self.built and shape is not None:
                self.build(shape)
            if self.built and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
        return super().fit(*args, **kwargs)

    def _input_shape_for_build(self):
        """The model's input shape where its first network knows it, else None."""
        return getattr(getattr(self, "encoder", None), "input_shape", None)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None:  # no strategy: Keras builds at the first trace
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if data_batch is None and iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        data_batch = keras.tree.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], data_batch
        )
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        preemption.take_part()
        return step_logs(super().train_step(data))

    def test_step(self, data):
        return step_logs(super().test_step(data))
