"""Which cluster a multi-worker run is part of: `TF_CONFIG` or a Slurm job step.

    resolver = cluster.resolve("auto")      # None on one machine
    strategy = distribute.make_strategy("auto", cluster_resolver=resolver)

`CLUSTERS`:
- `auto`: `tf_config` when `TF_CONFIG` is set, `slurm` inside an `srun` step of more than
  one task, else none; both at once is an error (say which with --cluster);
- `none`: this machine only, whatever the environment says;
- `tf_config`: TensorFlow's `TFConfigClusterResolver` (what Kubernetes recipes set);
- `slurm`: TensorFlow's `SlurmClusterResolver` on the step's `SLURM_*` variables: task i
  of the step is worker i, listening on `port + its index on the node`. Each task uses
  the GPUs Slurm gives it (`--gpus-per-task`), none on CPU nodes.
"""
import os
import re

import tensorflow as tf

from keras_simclr.training import distribute

CLUSTERS = ("auto", "none", "tf_config", "slurm")
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                   "SLURM_STEP_TASKS_PER_NODE")
DEFAULT_PORT = 8888


def detect(environ=None) -> str:
    """`tf_config`, `slurm` or `none` for `environ` (default `os.environ`); see `CLUSTERS`."""
    environ = os.environ if environ is None else environ
    slurm = (all(name in environ for name in SLURM_VARIABLES)
             and int(environ["SLURM_STEP_NUM_TASKS"]) > 1)
    if environ.get("TF_CONFIG") and slurm:
        raise ValueError("both TF_CONFIG and a Slurm step of several tasks describe a cluster: "
                         "choose one with --cluster=tf_config or --cluster=slurm")
    return "tf_config" if environ.get("TF_CONFIG") else "slurm" if slurm else "none"


def resolve(kind: str = "auto", port: int = DEFAULT_PORT, tasks_per_node: int | None = None,
            environ=None):
    """The `ClusterResolver` of cluster `kind` (one of `CLUSTERS`), or None on one machine.

    Args:
        kind: see `CLUSTERS`.
        port: Slurm: the port of each node's first task (its next tasks take the next ports).
        tasks_per_node: Slurm: tasks on every node (None: from `SLURM_STEP_TASKS_PER_NODE`).
        environ: the environment (default `os.environ`); TensorFlow's resolvers read
            `os.environ` itself, so pass another only to check it.
    Raises:
        ValueError: with one line naming what is missing or wrong.
    """
    if kind not in CLUSTERS:
        raise ValueError(f"unknown cluster {kind!r}; choose one of {', '.join(CLUSTERS)}")
    environ = os.environ if environ is None else environ
    kind = detect(environ) if kind == "auto" else kind
    if kind == "none":
        return None
    if kind == "tf_config":
        distribute.parse_tf_config(environ)  # a clear error before TensorFlow's own
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    missing = [name for name in SLURM_VARIABLES if not environ.get(name)]
    if missing:
        raise ValueError(f"--cluster=slurm needs the variables srun sets for each task; "
                         f"{', '.join(missing)} not set (run the app under srun)")
    # "2(x3),1": 2 tasks on each of 3 nodes, then 1
    counts = re.findall(r"(\d+)(?:\(x\d+\))?", environ["SLURM_STEP_TASKS_PER_NODE"])
    slots = int(tasks_per_node or max(int(count) for count in counts))
    return _SlurmResolver(len(tf.config.list_physical_devices("GPU")), port_base=int(port),
                          tasks_per_node=tasks_per_node, gpus_per_node=slots, gpus_per_task=1,
                          auto_set_gpu=False)


class _SlurmResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """TensorFlow's resolver, reporting the GPUs this task sees (as Slurm bound them).

    TensorFlow's hands out `gpus_per_task` GPUs of `gpus_per_node` to each task and asks
    `nvidia-smi` for the latter; with no GPU its slots (0 per task) break the cluster spec.
    Here it gets one slot per task and `num_accelerators`, which decides the strategy's
    local devices, says what this process sees.
    """

    def __init__(self, gpus: int, **kwargs):
        super().__init__(**kwargs)
        self._visible_gpus = gpus

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
        return {"GPU": self._visible_gpus}
