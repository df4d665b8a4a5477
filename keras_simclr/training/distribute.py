"""Distribution strategies for SimCLR: one device, several GPUs or CPUs, several machines, TPU.

SimCLR needs the global batch: `SimCLR.train_step` all-gathers the projections of every
replica (negatives span the global batch), differentiates `loss / num_replicas_in_sync`
(Keras sums the replicas' gradients), and every BatchNormalization layer must be
synchronized (`synchronized_bn=True` in the encoder and the head) for N replicas to train
as one device on the same global batch (tests/test_distribute.py: 1, 2 and 4 replicas
agree to about 1e-5). This module picks the strategy and the per-process settings:

    from keras_simclr.training import callbacks, distribute
    strategy = distribute.make_strategy(FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas)
    distribute.per_replica_batch_size(FLAGS.batch_size, strategy)   # or a ValueError
    global_bn = distribute.resolve_global_bn(FLAGS.global_bn, strategy)  # None: auto
    path, done = callbacks.latest_checkpoint(ckpt_dir, strategy)  # same epoch everywhere
    with strategy.scope():  # a new model: synchronized_bn=global_bn in encoder and head
        model = keras.saving.load_model(path) if path else build_and_compile(global_bn)
    dataset = distribute.training_input(  # each worker reads its share of the data
        strategy, lambda ctx: data.pretrain_dataset(..., input_context=ctx))
    model.fit(dataset, initial_epoch=done,  # every worker saves, the chief writes
              callbacks=[callbacks.EpochCheckpoint(ckpt_dir, strategy=strategy)])

Strategy names (`STRATEGIES`):
- `auto`: mirrored over all GPUs when there are several, mirrored over `cpu_replicas`
  logical CPUs when `cpu_replicas > 1`, else the default strategy;
- `default`: no distribution (TensorFlow's default strategy);
- `one_device`: everything on the first GPU, or the CPU;
- `mirrored`: `MirroredStrategy` over all GPUs (or `cpu_replicas` logical CPUs);
- `multi_worker`: `MultiWorkerMirroredStrategy`, cluster and task from the
  `cluster_resolver` given (`keras_simclr.training.cluster`: `TF_CONFIG` or Slurm), else
  from `TF_CONFIG` (one replica per CPU worker, one per GPU on GPU workers); `auto` with a
  `cluster_resolver` is the same;
- `tpu`: `TPUStrategy` on the TPU found by `TPUClusterResolver` (`tpu_address`).

Logical CPUs and `MultiWorkerMirroredStrategy` must be set up at program start, before
TensorFlow initialises its devices: call `make_strategy` first.

Multi-worker: every worker runs the same program with its own task in the cluster and
reads its share of the input (`input_context`). All workers save (saving reads
distributed variables) but only the chief writes into the model directory (`write_path`,
as in the Keras multi-worker tutorial), which must be on a filesystem every worker reads
(NFS, GCS): after a restart all workers resume from the chief's checkpoints, after
checking that they agree on the epoch and step (`check_same_on_all_workers`). A restart
may have another number of workers: `set_global_bn` then turns synchronized BN on or
off to match. When a worker dies, the others fail in their next collective (TensorFlow's
coordination service misses its heartbeats, about 10-30 s on 127.0.0.1) and
`resilience.fit_from` names it; restart them all. The Keras 3.15 `fit` workarounds for
multi-worker runs are in `keras_simclr.training.keras_compat`.
"""
import atexit
import json
import os
import re
import shutil
import tempfile

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


# ----------------------------------------------------------------------------------------
# Devices and strategies


def configure_cpu_replicas(n: int) -> list[str]:
    """Split the (first) physical CPU into `n` logical devices; returns their names.

    Must run before TensorFlow initialises its devices (before any tensor, model or
    strategy is created); raises RuntimeError otherwise, unless the CPU is already split
    into at least `n` devices (then all of them are returned; use the first `n`).
    `n <= 1` leaves the CPU as it is.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"cpu_replicas must be >= 0, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    if n <= 1:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) >= n:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"cannot split the CPU into {n} logical devices: TensorFlow has already "
            f"initialised its devices ({have} logical CPU). Call "
            "keras_simclr.training.distribute.configure_cpu_replicas (or make_strategy with "
            "cpu_replicas) at program start, before any tensor, model, dataset or "
            "strategy is created."
        ) from e
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str = "auto", cpu_replicas: int = 0, tpu_address: str | None = None,
                  cluster_resolver=None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`); logs what it got.

    Args:
        name: strategy name; see the module docstring.
        cpu_replicas: with `auto` or `mirrored`, split the CPU into this many logical
            devices and mirror over them (when there is no GPU), so the multi-replica
            path runs on a CPU-only machine. 0 or 1: no split.
        tpu_address: `tpu` only: the TPU name or `grpc://` address ("" or None: the
            TPU of this VM / the one `TPU_NAME` names).
        cluster_resolver: the cluster of a multi-worker run (`cluster.resolve`); with
            `auto` or `multi_worker`, `MultiWorkerMirroredStrategy` over it.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    cpu_replicas = int(cpu_replicas or 0)
    if cpu_replicas < 0:
        raise ValueError(f"cpu_replicas must be >= 0, got {cpu_replicas}")
    if cpu_replicas > 1 and name not in ("auto", "mirrored"):
        raise ValueError(
            f"cpu_replicas={cpu_replicas} only applies to --strategy=mirrored or auto, "
            f"not {name!r}"
            + (" (a CPU worker always has one replica)" if name == "multi_worker" else "")
        )
    if cluster_resolver is not None:
        if name not in ("auto", "multi_worker"):
            raise ValueError(f"a cluster trains with strategy 'multi_worker' (or 'auto'), "
                             f"not {name!r}")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    elif name == "auto":
        if os.environ.get("TF_CONFIG"):
            logging.warning(
                "TF_CONFIG is set but strategy 'auto' trains on this machine only; "
                "pass strategy 'multi_worker' to train with the cluster"
            )
        if len(tf.config.list_physical_devices("GPU")) > 1:
            strategy = tf.distribute.MirroredStrategy()
        else:
            strategy = _cpu_replicas_or(cpu_replicas, tf.distribute.get_strategy)
    elif name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        strategy = _cpu_replicas_or(cpu_replicas, tf.distribute.MirroredStrategy)
    elif name == "multi_worker":
        parse_tf_config()  # clear error before TensorFlow's own
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = _tpu_strategy(tpu_address)
    logging.info("%s", describe(strategy))
    return strategy


def _cpu_replicas_or(cpu_replicas, make_strategy):
    """Mirrored over `cpu_replicas` logical CPUs when asked and there is no GPU, else
    `make_strategy()`."""
    if cpu_replicas > 1:
        if not tf.config.list_physical_devices("GPU"):
            devices = configure_cpu_replicas(cpu_replicas)
            return tf.distribute.MirroredStrategy(devices=devices[:cpu_replicas])
        logging.warning("cpu_replicas=%d ignored: this machine has a GPU", cpu_replicas)
    return make_strategy()


def _tpu_strategy(tpu_address):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        where = f"at {tpu_address!r}" if tpu_address else "on this machine (TPU_NAME unset)"
        raise RuntimeError(
            f"strategy 'tpu': no TPU found {where}: {str(e).rstrip('.')}. Run on a TPU VM, "
            "or pass the TPU "
            "name/grpc address, or choose another strategy."
        ) from e
    return tf.distribute.TPUStrategy(resolver)


def parse_tf_config(environ: dict | None = None) -> dict:
    """The `TF_CONFIG` of a multi-worker run as a dict; ValueError when missing or invalid.

    Expected: `{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
    "index": i}}` (a `chief` job may be listed too). `environ` defaults to `os.environ`.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable describing "
            f"the cluster and this worker's task, {example}"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}; {example}") from e
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no 'cluster' mapping job names to addresses; {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' with 'type' and 'index'; {example}")
    jobs = set(cluster) - {"ps", "evaluator"}
    if not jobs <= {"chief", "worker"}:
        raise ValueError(
            f"TF_CONFIG cluster jobs {sorted(cluster)}: multi_worker takes 'worker' (and "
            "optionally one 'chief')"
        )
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and re.fullmatch(r"\S+:\d+", a) for a in addresses
        ):
            raise ValueError(
                f"TF_CONFIG cluster[{job!r}] must be a list of 'host:port', got {addresses!r}"
            )
    kind, index = task["type"], task["index"]
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(
            f"TF_CONFIG task {task!r} is not in the cluster {cluster!r}"
        )
    return config


def _strategy_name(strategy):
    for cls, name in ((tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                      (tf.distribute.MirroredStrategy, "MirroredStrategy"),
                      (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy"),
                      (tf.distribute.TPUStrategy, "TPUStrategy")):
        if isinstance(strategy, cls):
            return name
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return "the default strategy (no distribution)"
    return type(strategy).__name__


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line naming the strategy, its replica count and devices (what gets logged)."""
    try:
        devices = tuple(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError):  # the default strategy has none
        devices = ()
    text = (
        f"distribution strategy {_strategy_name(strategy)} with "
        f"{strategy.num_replicas_in_sync} replica(s) in sync"
    )
    if is_multi_worker(strategy):
        kind, index = task_id(strategy)
        text += f"; this is {kind} {index}{' (chief)' if is_chief(strategy) else ''}"
        text += f" with local device(s) {', '.join(devices)}"
    elif devices:
        text += f" on {', '.join(devices)}"
    return text


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` trains across processes (where `keras_compat` is needed).

    Args:
        strategy: any strategy.
    Returns:
        True for a MultiWorkerMirroredStrategy whose cluster has more than one worker.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if in_multi_worker_mode is not None:  # what Keras itself tests
        return bool(in_multi_worker_mode())
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return len(spec.get("worker", [])) + len(spec.get("chief", [])) > 1


def training_input(strategy: tf.distribute.Strategy, dataset_fn):
    """The input `model.fit` takes under `strategy`, from `dataset_fn(input_context)`.

    Across workers, `strategy.distribute_datasets_from_function(dataset_fn)`: each worker
    reads only its shard of the source and batches per replica (`input_context`), instead
    of every worker reading and decoding all the data for Keras to drop all but its share.
    On one machine, `dataset_fn(None)`, whose global batches Keras splits among the local
    replicas.

    Args:
        strategy: the training strategy.
        dataset_fn: `input_context or None -> tf.data.Dataset`.
    """
    if is_multi_worker(strategy):
        return strategy.distribute_datasets_from_function(dataset_fn)
    return dataset_fn(None)


# ----------------------------------------------------------------------------------------
# Batch size and BatchNormalization


def num_replicas(strategy: tf.distribute.Strategy | int | None = None) -> int:
    """Replicas in sync of `strategy` (default: the current strategy); an int is returned."""
    if isinstance(strategy, int):
        return strategy
    strategy = strategy or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


def per_replica_batch_size(global_batch_size: int,
                           strategy: tf.distribute.Strategy | int | None = None) -> int:
    """The batch each replica gets; ValueError unless it divides the global batch evenly.

    `strategy` may be a strategy or a replica count. SimCLR's loss and synchronized BN
    equal one device's only when every replica has the same local batch.
    """
    replicas = num_replicas(strategy)
    global_batch_size = int(global_batch_size)
    if global_batch_size < 1:
        raise ValueError(f"global batch size must be positive, got {global_batch_size}")
    if global_batch_size % replicas:
        below = global_batch_size - global_batch_size % replicas
        suggestion = f"{below} or {below + replicas}" if below else f"{replicas}"
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {replicas} "
            f"replicas in sync; use a multiple of {replicas} (e.g. {suggestion})"
        )
    return global_batch_size // replicas


def resolve_global_bn(global_bn: bool | None = None,
                      strategy: tf.distribute.Strategy | int | None = None) -> bool:
    """Whether BatchNormalization is synchronized across replicas (SimCLR's global BN).

    `global_bn=None` (the default of `--global_bn`): on with more than one replica in
    sync, off otherwise (there it changes nothing). An explicit True/False is kept; False
    with several replicas is logged, because then each replica normalises its own slice
    and the run no longer matches one device (information can also leak through local
    batch statistics, which global BN exists to prevent).
    """
    replicas = num_replicas(strategy)
    if global_bn is None:
        return replicas > 1
    global_bn = bool(global_bn)
    if not global_bn and replicas > 1:
        logging.warning(
            "global_bn is off with %d replicas: BatchNormalization uses per-replica "
            "statistics", replicas
        )
    return global_bn


def set_global_bn(model, global_bn: bool) -> bool:
    """Make every BatchNormalization layer of `model` synchronized or not; True if any
    changed.

    For a checkpoint resumed on another number of replicas: its layers keep the setting
    of the run that built them (a 1-replica run does not synchronize, which a 2-worker
    run must). Layers with a `synchronized_bn` option (`ProjectionHead`) get it too, so
    the next checkpoint records the new setting.
    """
    changed = False
    for layer in model._flatten_layers(include_self=False):
        for name in ("synchronized", "synchronized_bn"):
            if isinstance(getattr(layer, name, None), bool) and getattr(layer, name) != global_bn:
                setattr(layer, name, bool(global_bn))
                changed = True
    return changed


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes that read their own share of the input: the cluster's tasks, else 1."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(spec.get("chief", [])) + len(spec.get("worker", []))


# ----------------------------------------------------------------------------------------
# Chief-only writing and agreement between workers


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True where checkpoints and summaries are written: everywhere except non-chief
    workers of a multi-worker run."""
    strategy = strategy or tf.distribute.get_strategy()
    try:
        return bool(strategy.extended.should_checkpoint)
    except NotImplementedError:
        return True


def task_id(strategy: tf.distribute.Strategy | None = None) -> tuple[str, int]:
    """(task type, task index) of this worker; ("worker", 0) outside multi-worker runs."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "worker", 0
    return str(resolver.task_type), int(resolver.task_id or 0)


_worker_temp_root = None


def write_path(path: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Where this process writes `path` (a file or directory): the one place that decides
    chief-only writing.

    Every worker should still call the save: saving can read distributed variables, and
    the Keras multi-worker recipe saves everywhere, keeping the chief's copy only.

    Args:
        path: a local path or a TensorFlow filesystem URL (`gs://...`, `ram://...`).
        strategy: the strategy (default: the current one).
    Returns:
        `path` itself on the chief; on other workers a path under a private local
        temporary directory (removed at exit), whose parent exists.
    """
    if is_chief(strategy):
        return path
    global _worker_temp_root
    if _worker_temp_root is None:
        kind, index = task_id(strategy)
        _worker_temp_root = tempfile.mkdtemp(prefix=f"keras_simclr_{kind}{index}_")
        atexit.register(shutil.rmtree, _worker_temp_root, ignore_errors=True)
    scheme, separator, rest = path.partition("://")
    if separator:  # gs://bucket/run -> TMP/gs/bucket/run, never a local "gs:" folder
        relative = os.path.join(scheme, rest.lstrip("/"))
    else:
        relative = os.path.abspath(path).lstrip(os.sep) or "root"
    target = os.path.join(_worker_temp_root, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return target


def check_same_on_all_workers(values, strategy: tf.distribute.Strategy | None = None,
                              what: str = "value", hint: str = "") -> None:
    """Raise RuntimeError unless every worker passes the same integers `values`.

    For values that decide how much work follows (the epoch and step to resume from):
    workers that disagree would otherwise wait for each other forever. One all-reduce in
    a `tf.function` (run eagerly, a collective costs more and TensorFlow warns), so every
    worker must call it; does nothing outside multi-worker runs.

    Args:
        values: this worker's integer, or a tuple of them.
        strategy: the strategy (default: the current one).
        what: what the values are, for the error message.
        hint: how to fix a disagreement, appended to the error message.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return
    values = tuple(int(v) for v in (values if isinstance(values, tuple) else (values,)))
    local = tf.constant([x for v in values for x in (v, v * v)], tf.int64)
    total = tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(local)), axis=None))()
    total, n = total.numpy().reshape(-1, 2), strategy.num_replicas_in_sync
    # n * sum(v^2) == sum(v)^2 exactly when all the values are equal
    if any(n * int(squares) != int(sums) ** 2 for sums, squares in total):
        kind, index = task_id(strategy)
        means = ", ".join(f"{int(sums) / n:g}" for sums, _ in total)
        shown = values[0] if len(values) == 1 else values
        raise RuntimeError(
            f"workers disagree on {what}: {kind} {index} has {shown}, the mean over "
            f"workers is {means}" + (f"; {hint}" if hint else "")
        )
