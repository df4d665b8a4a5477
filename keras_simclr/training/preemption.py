"""Stop every worker of a multi-worker run after the same step: one flag per worker, summed
inside the compiled train step.

A signal reaches one worker of a cluster (the node being preempted). Each worker holds
`requested`: 0, or the number of the signal it got. Every train step all-reduces a vector
with one slot per replica, each holding its worker's `requested`, inside the step whose
collectives already synchronise the workers, and stores the sum in `agreed`. After step N
every worker reads the same `agreed`, so all stop after step N, save the same weights and
can name the worker that got the signal. The cost is one all-reduce of a few numbers per
step (`bench/throughput.py --agreement_overhead` measures it).

TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` agrees through the
coordination service's key-value store instead, with no per-step collective, and a Keras
callback can call its `save_checkpoint_if_preempted` (tried with two workers: both saved
after the same step). It is not used because it restores a `tf.train.Checkpoint` when
created (the apps resume from `.keras` files), watches SIGTERM only, does nothing on
Google Cloud CPU machines and on Google Cloud GPU machines watches the metadata server
with a one-hour grace period instead of the signal (`failure_handling_util.detect_platform`
decides), and warns of a deprecated property at every save. `PreemptionWatcher` serves
TPUs on Google's Borg only.

A train step takes part by calling `take_part()` in replica context (`keras_compat`'s
`DistributedFitMixin` and `SimCLR` do); steps traced once `StopAgreement.current()` has
created the process's agreement take part, on several workers only.
"""
import tensorflow as tf

from keras_simclr.training.distribute import is_multi_worker


class StopAgreement:
    """This process's stop requests and what the last train step agreed on."""

    _current = None

    def __init__(self, replicas: int):
        with tf.init_scope():
            self.requested = tf.Variable(0.0, trainable=False, name="stop_requested")
            self.agreed = tf.Variable(tf.zeros([replicas]), trainable=False,
                                      name="stop_agreed")
        self.replicas = replicas
        self.traced = False

    @classmethod
    def current(cls, strategy: tf.distribute.Strategy | None = None) -> "StopAgreement":
        """The process's agreement for `strategy`'s replicas (created when there is none
        for that many)."""
        replicas = int((strategy or tf.distribute.get_strategy()).num_replicas_in_sync)
        if cls._current is None or cls._current.replicas != replicas:
            cls._current = StopAgreement(replicas)
        return cls._current

    def request(self, signum: int) -> None:
        """Ask every worker to stop after the next step, for signal `signum`."""
        self.requested.assign(float(signum))

    def stopping(self, strategy: tf.distribute.Strategy) -> dict[str, int]:
        """{"worker 1": signal number} of the workers whose request the last step summed."""
        agreed = self.agreed.numpy()
        if not agreed.any():
            return {}
        local, tasks = max(1, len(strategy.extended.worker_devices)), _tasks(strategy)
        return {tasks[i // local]: int(value) for i, value in enumerate(agreed) if value}


def _tasks(strategy):
    """Task names in replica order ("chief 0", "worker 0", ...), as the strategy numbers
    replicas: the chief's first, then the workers' by index."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    names = [f"{job} {i}" for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
    return names or ["worker 0"]


def take_part() -> None:
    """In a train step (replica context): sum the workers' stop requests into `agreed`.

    Does nothing (adds nothing to the step) before an agreement exists or on one worker.
    """
    agreement = StopAgreement._current
    context = tf.distribute.get_replica_context()
    if agreement is None or context is None or not is_multi_worker(context.strategy):
        return
    agreement.traced = True
    mine = tf.one_hot(context.replica_id_in_sync_group, agreement.replicas)
    agreement.agreed.assign(context.all_reduce(tf.distribute.ReduceOp.SUM,
                                               mine * agreement.requested))
