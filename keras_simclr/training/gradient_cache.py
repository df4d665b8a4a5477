"""Gradient caching (Gao et al. 2021): the exact gradient of a batch-coupled loss, in chunks.

A contrastive loss couples every example of the batch, so accumulating gradients over
micro-batches changes the loss. Gradient caching keeps it exact with memory bounded by the
chunk size instead of the batch:

1. forward every chunk of rows without a tape and keep only the outputs (the projections);
2. compute the full-batch loss from the outputs and its gradient d loss / d outputs;
3. forward each chunk again under a tape and back-propagate that chunk's slice of the cached
   gradient (`output_gradients`), summing the parameter gradients.

The cost is one extra forward pass (about 1.3x a plain step). Layers that keep state in
training mode (BatchNormalization's moving averages) are updated by both passes; the state
after the first pass is restored after the second, so moving averages are updated once per
chunk, as a plain step of that chunk size would. BatchNormalization normalises with the
statistics of its chunk in both passes (the same rows, the same statistics), so with BN the
result equals a plain step with BN batches of `chunk_size` rows, not the full batch; without
BN, or with BN in inference mode, it equals the plain full-batch step.

Chunks run one after another (control dependencies), so only one chunk's activations are
alive at a time.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf


def chunk_slices(rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """(start, size) of consecutive chunks covering `rows` rows; the last may be smaller."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [(start, min(chunk_size, rows - start)) for start in range(0, rows, chunk_size)]


def _static_rows(tensor):
    rows = tensor.shape[0]
    if rows is None:
        raise ValueError("gradient caching needs a static batch size: batch the data with "
                         "drop_remainder=True")
    return int(rows)


def _after(dependencies, tensor):
    """`tensor`, evaluated only after `dependencies` (serialises the chunks)."""
    if not dependencies:
        return tensor
    with tf.control_dependencies(dependencies):
        return tf.identity(tensor)


def _outputs_without_gradient(forward, inputs, plan):
    """The first pass: (outputs, extras) of every input, one chunk after the other."""
    outputs, extras, previous = [], [], []
    for x, slices in zip(inputs, plan):
        chunk_outputs, chunk_extras = [], []
        for start, size in slices:
            out, extra = forward(_after(previous, x[start:start + size]))
            out, extra = tf.stop_gradient(out), tf.stop_gradient(extra)
            chunk_outputs.append(out)
            chunk_extras.append(extra)
            previous = [out]
        outputs.append(tf.concat(chunk_outputs, axis=0))
        extras.append(tf.concat(chunk_extras, axis=0))
    return outputs, extras


def cached_gradients(
    forward: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    inputs: Sequence[tf.Tensor],
    loss_fn: Callable[[list[tf.Tensor]], tuple[tf.Tensor, object]],
    variables: Sequence,
    chunk_size: int,
    state_variables: Sequence = (),
):
    """Gradients of `loss_fn(outputs)` with respect to `variables`, `chunk_size` rows at a time.

    Args:
        forward: maps a chunk of rows of one input to `(outputs, extras)`: `outputs`
            (rows, D) is what the loss sees (float32), `extras` anything per row to keep
            without gradient (e.g. the representation h for a probe).
        inputs: tensors (rows_i, ...) with static row counts, e.g. one per view size.
        loss_fn: maps the list of full outputs (one (rows_i, D) tensor per input) to
            `(scalar, aux)`; the scalar is differentiated (scale it for replicas and loss
            scaling before returning it), `aux` is passed through.
        variables: the variables to differentiate.
        chunk_size: rows per forward pass.
        state_variables: variables the forward pass updates in training mode (BN moving
            statistics); their values after the first pass are restored after the second.
    Returns:
        `(gradients, scalar, aux, extras)`: gradients aligned with `variables` (zeros
        where a variable does not affect the loss), the loss scalar, `aux`, and the extras of
        every input (concatenated over its chunks).
    """
    plan = [chunk_slices(_static_rows(x), chunk_size) for x in inputs]
    outputs, extras = _outputs_without_gradient(forward, inputs, plan)
    with tf.GradientTape() as tape:
        tape.watch(outputs)
        scalar, aux = loss_fn(outputs)
    output_gradients = tape.gradient(scalar, outputs)
    saved_state = [tf.identity(v.value) for v in state_variables]

    gradients = [tf.zeros_like(v.value) for v in variables]
    previous = saved_state + [output_gradients[0]]
    for x, slices, d_outputs in zip(inputs, plan, output_gradients):
        for start, size in slices:
            with tf.GradientTape() as tape:
                out, _ = forward(_after(previous, x[start:start + size]))
            chunk = tape.gradient(out, variables,
                                  output_gradients=d_outputs[start:start + size],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [total + tf.cast(g, total.dtype) for total, g in zip(gradients, chunk)]
            previous = gradients
    with tf.control_dependencies(gradients):
        for variable, value in zip(state_variables, saved_state):
            variable.assign(value)
    return gradients, scalar, aux, extras
