"""What `fit` needs beside the model: distribution, side concerns, numerics.

- `distribute`: choosing and describing the `tf.distribute` strategy, per-replica batches,
  chief-only writes, multi-worker checks.
- `cluster`: the cluster of a multi-worker run, from `TF_CONFIG` or a Slurm step.
- `preemption`: the flag every worker's train step sums, so that all stop after one step.
- `keras_compat`: workarounds for Keras 3 `fit`/`evaluate` under multi-worker strategies.
- `callbacks`: resumable checkpoints and throughput as Keras callbacks.
- `resilience`: the non-finite guard, saving on a signal, resuming mid-epoch (`fit_from`).
- `precision`: Keras dtype policies and what the CPU supports natively.
- `gradient_cache`: the exact gradient of a batch-coupled loss computed in chunks.
- `budget`: training for a wall-clock budget (`TimeBudget` fits the steps and the schedule
  to the host's measured speed).

A side concern of training (logging, stopping, saving) is a callback here; a change of the
step's arithmetic belongs to the model. Imports: `utils` only.
"""
