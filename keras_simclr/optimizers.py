"""LARS, the warm-up + cosine learning-rate schedule, and the optimizer recipes of SimCLR.

LARS (You et al. 2017), as in google-research/simclr `tf2/lars_optimizer.py` with classic
momentum. For every variable w with gradient g, learning rate lr and momentum m:

    g     = g + weight_decay * w                        (weight decay, L2 added to g)
    trust = eta * |w| / |g|  if |w| > 0 and |g| > 0 else 1
    v     = m * v + lr * trust * g
    w     = w - v                                       (Nesterov: w - (m * v + lr * trust * g))

Variables whose path matches `exclude` (every bias and every BatchNormalization variable by
default) get neither the weight decay nor the trust ratio, so for them LARS is momentum SGD.
The trust ratio gives every layer a step proportional to its weight norm, which is what keeps
training stable at the large batches (up to 4096) and learning rates SimCLR uses.

The learning rate follows the official recipe: the base rate is scaled by the global batch
(`base * batch / 256`, or `base * sqrt(batch)`), warmed up linearly from 0 and then decayed
to 0 along a cosine (`WarmupCosine`; optionally to a fraction of the peak instead). For a
run given a time instead of epochs, `FittedWarmupCosine` is the same curve over a progress
whose mapping onto the steps is re-fitted while training, without a jump in the rate.
"""
from __future__ import annotations

import math
import re

import keras
import numpy as np
from keras import ops

# Matched (re.search) against a variable's path, e.g. `head/dense/bias`, `conv1_bn/gamma`.
# A BatchNormalization layer's variables are gamma, beta and the (non-trainable) moving
# statistics whatever the layer is called, so the pattern looks at the last path component
# only: `gamma_proj/kernel` stays included. (LayerNormalization's gamma/beta match too.)
DEFAULT_EXCLUDE = r"(^|/)(bias|beta|gamma|moving_mean|moving_variance)$"


def _excluded_by(exclude, variable):
    return bool(exclude) and re.search(exclude, variable.path) is not None


def _check_learning_rate(learning_rate):
    if isinstance(learning_rate, (int, float)) and learning_rate < 0:
        raise ValueError(f"`learning_rate` must be >= 0, got {learning_rate}.")


@keras.saving.register_keras_serializable(package="keras_simclr")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with classic momentum (formula in the module docstring).

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: momentum m in [0, 1].
        weight_decay: L2 coefficient added to the gradient of included variables. It is
            not the base class's decoupled `weight_decay` (that one stays None).
        eta: trust coefficient.
        nesterov: use the Nesterov form of the update.
        exclude: regex searched in each variable's `path`; matching variables get no
            weight decay and no trust ratio. None or "" excludes nothing.
        **kwargs: the base optimizer's keyword arguments (clipnorm, use_ema, ...).
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=1e-4,
        eta=1e-3,
        nesterov=False,
        exclude=DEFAULT_EXCLUDE,
        name="lars",
        **kwargs,
    ):
        _check_learning_rate(learning_rate)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1], got {momentum}.")
        if weight_decay is None or weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        if eta <= 0:
            raise ValueError(f"`eta` must be > 0, got {eta}.")
        if exclude:
            try:
                re.compile(exclude)  # fail now, not at the first training step
            except re.error as e:
                raise ValueError(f"`exclude` {exclude!r} is not a valid regex: {e}") from e
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        self.exclude = exclude

    def build(self, variables):
        # Exclusions are decided here from the Keras variables' paths: in `update_step`
        # under tf.distribute the variable is a per-replica tf.Variable without a path.
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # True where the variable gets weight decay and the trust ratio.
        self._included = tuple(not _excluded_by(self.exclude, v) for v in variables)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        if self._included[index]:
            if self.lars_weight_decay:
                g = ops.add(g, ops.multiply(ops.cast(self.lars_weight_decay, dtype), variable))
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(g)))
            trust = ops.where(
                ops.logical_and(ops.greater(w_norm, 0), ops.greater(g_norm, 0)),
                ops.divide_no_nan(ops.multiply(ops.cast(self.eta, dtype), w_norm), g_norm),
                ops.cast(1.0, dtype),
            )
            lr = ops.multiply(lr, trust)
        step = ops.multiply(lr, g)
        v = self.momentums[index]
        m = ops.cast(self.momentum, dtype)
        self.assign(v, ops.add(ops.multiply(m, v), step))
        if self.nesterov:
            self.assign_sub(variable, ops.add(ops.multiply(m, v), step))
        else:
            self.assign_sub(variable, v)

    def get_config(self):
        config = super().get_config()
        config.update(
            weight_decay=self.lars_weight_decay,
            momentum=self.momentum,
            eta=self.eta,
            nesterov=self.nesterov,
            exclude=self.exclude,
        )
        return config


class _DecoupledDecayExclusion:
    """Makes a Keras optimizer's decoupled weight decay skip variables whose path matches
    `exclude` (decided in `build`), and keeps `exclude` in the config so a reloaded
    optimizer still skips them. Keras' own `exclude_from_weight_decay(var_names=...)`
    matches only the last name component and is not saved."""

    def __init__(self, *args, exclude=DEFAULT_EXCLUDE, **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude = exclude

    def build(self, variables):
        if not self.built:
            self.exclude_from_weight_decay(
                var_list=[v for v in variables if _excluded_by(self.exclude, v)]
            )
        super().build(variables)

    def get_config(self):
        config = super().get_config()
        config["exclude"] = self.exclude
        return config


@keras.saving.register_keras_serializable(package="keras_simclr")
class SGDW(_DecoupledDecayExclusion, keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose decoupled decay (w -= lr * weight_decay * w each step)
    skips variables matching `exclude`."""


@keras.saving.register_keras_serializable(package="keras_simclr")
class AdamW(_DecoupledDecayExclusion, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose decoupled decay skips variables matching `exclude`."""


def warmup_cosine_curve(step, total_steps, warmup_steps, base, final_fraction=0.0, xp=ops):
    """The learning rate of `WarmupCosine` at `step` (its docstring has the formula).

    Every argument may be a tensor and `step` fractional (`FittedWarmupCosine` decides its
    shape while training); `xp=numpy` computes with NumPy instead of `keras.ops`.
    """
    final = final_fraction * base
    warm = step / xp.maximum(warmup_steps, 1e-9) * base
    decay = total_steps - warmup_steps
    progress = xp.minimum(step - warmup_steps, decay) / xp.maximum(decay, 1e-9)
    cosine = final + 0.5 * (base - final) * (1.0 + xp.cos(math.pi * progress))
    return xp.where(step < warmup_steps, warm, xp.where(decay > 0, cosine, final))


def largest_step_change(steps: int, warmup_fraction: float, base: float,
                        final_fraction: float = 0.0) -> float:
    """The most a warm-up + cosine of `steps` steps changes the learning rate in one step.

    Its warm-up rises by base / (warm-up steps) per step; its cosine falls by at most
    (1 - final_fraction) * base * sin(pi / (2 * decay steps)), at its middle.
    """
    warmup = warmup_fraction * steps
    decay = steps - warmup
    rise = base / warmup if warmup >= 1 else (base if warmup_fraction else 0.0)
    fall = (1 - final_fraction) * base * (math.sin(math.pi / (2 * decay)) if decay >= 1 else 1)
    return max(rise, fall)


@keras.saving.register_keras_serializable(package="keras_simclr")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay (official `WarmUpAndCosineDecay`).

        lr(step) = base * step / warmup_steps                                 step < warmup
        lr(step) = base * (f + (1 - f) * c(step))                             otherwise
        c(step)  = 0.5 * (1 + cos(pi * min(step - warmup, decay) / decay))

    with decay = total_steps - warmup_steps and f = `final_fraction`, so lr is 0 at step 0
    (if warming up), `base` at the end of warm-up and `f * base` from `total_steps` on (also
    when warmup_steps == total_steps, where there is no cosine part). f = 0, the default, is
    the paper's decay to zero; f > 0 (Keras' `CosineDecay(alpha=f)`) ends the run above it.
    """

    def __init__(self, base_learning_rate, total_steps, warmup_steps, final_fraction=0.0):
        _check_learning_rate(base_learning_rate)
        if total_steps <= 0:
            raise ValueError(f"`total_steps` must be > 0, got {total_steps}.")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"`warmup_steps` must be in [0, total_steps={total_steps}], got {warmup_steps}."
            )
        if not 0 <= final_fraction <= 1:
            raise ValueError(f"`final_fraction` must be in [0, 1], got {final_fraction}.")
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        return warmup_cosine_curve(ops.cast(step, "float32"), self.total_steps,
                                   self.warmup_steps, self.base_learning_rate,
                                   self.final_fraction)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
        }


@keras.saving.register_keras_serializable(package="keras_simclr")
class FittedWarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up + cosine over a progress p in [0, 1] that `refit` maps onto the steps.

    lr(step) is `warmup_cosine_curve` at p(step) = anchor_progress + (step - anchor_step)
    * rate (at most 1), the warm-up a `warmup_fraction` of the progress: a `WarmupCosine`
    whose length can change while training, for a time budget
    (`keras_simclr.training.budget.TimeBudget` re-fits it after every step). `refit(step,
    end_step)` re-anchors at `step`, where p and so the rate do not move, and sets the rate
    so that p reaches 1 at `end_step`, but with no step changing the learning rate by more
    than a warm-up + cosine of `end_step` steps does at its steepest
    (`largest_step_change`), unless the way left (up to the peak in the warm-up, then down
    to the final rate) is more than that times the steps left: then by that way over those
    steps, the least any schedule ending on time needs. The state is a variable the
    compiled step reads, and the config: a checkpoint holds the plan as it stood.

    Args:
        base_learning_rate: the peak, at the end of the warm-up.
        final_fraction: the rate at progress 1, as a fraction of the peak.
        end_step: the step where progress reaches 1 (0: not planned yet).
        anchor_step, anchor_progress, rate: the map from steps to progress.
        warmup_fraction: the warm-up's share of the progress. Before a plan, progress
            stays at 0, where the rate is 0 with a warm-up (the default, 1) and the peak
            without (0).
        plan: what the plan was when made (a dict, kept for the summary of a resumed run).
    """

    def __init__(self, base_learning_rate, final_fraction=0.0, end_step=0, anchor_step=0,
                 anchor_progress=0.0, rate=0.0, warmup_fraction=1.0, plan=None):
        _check_learning_rate(base_learning_rate)
        self.base_learning_rate = float(base_learning_rate)
        self.final_fraction = float(final_fraction)
        self.end_step = int(end_step)
        self.plan = plan
        self._state = keras.Variable(np.zeros(4), dtype="float64", trainable=False,
                                     name="fitted_warmup_cosine")
        self._set(anchor_step, anchor_progress, rate, warmup_fraction)

    @staticmethod
    def of(optimizer) -> FittedWarmupCosine | None:
        """The one an optimizer (or the optimizer a `LossScaleOptimizer` wraps) follows."""
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        schedule = getattr(optimizer, "_learning_rate", None)
        return schedule if isinstance(schedule, FittedWarmupCosine) else None

    def _set(self, anchor_step, anchor_progress, rate, warmup_fraction):
        self.anchor_step, self.anchor_progress = int(anchor_step), float(anchor_progress)
        self.rate, self.warmup_fraction = float(rate), float(warmup_fraction)
        self._state.assign(np.array([anchor_step, anchor_progress, rate, warmup_fraction]))

    def progress_at(self, step: int) -> float:
        """Progress in [0, 1] at a step, on the current map."""
        return min(1.0, self.anchor_progress + (step - self.anchor_step) * self.rate)

    def _curve(self, progress: float, warmup_fraction: float) -> float:
        return float(warmup_cosine_curve(min(progress, 1.0), 1.0, warmup_fraction,
                                         self.base_learning_rate, self.final_fraction, xp=np))

    def value_at(self, step: int) -> float:
        """The learning rate at a step, on the current map, computed in Python."""
        return self._curve(self.progress_at(step), self.warmup_fraction)

    def largest_step_change(self, steps: int) -> float:
        """`largest_step_change` of a warm-up + cosine of `steps` steps of this shape."""
        return largest_step_change(steps, self.warmup_fraction, self.base_learning_rate,
                                   self.final_fraction)

    def __call__(self, step):
        state = ops.convert_to_tensor(self._state)
        progress = ops.minimum(state[1] + (ops.cast(step, "float64") - state[0]) * state[2], 1.0)
        return ops.cast(warmup_cosine_curve(progress, 1.0, state[3], self.base_learning_rate,
                                            self.final_fraction), "float32")

    def refit(self, step: int, end_step: int, warmup_fraction: float | None = None) -> None:
        """Reach progress 1 at `end_step`, from `step` on (see the class docstring); the
        limit holds for the step after `step`, so re-fit after every step. A new
        `warmup_fraction` belongs to the plan, made at progress 0 where it moves no rate."""
        progress = self.progress_at(step)
        w = self.warmup_fraction if warmup_fraction is None else warmup_fraction
        here, base = self._curve(progress, w), self.base_learning_rate
        steps_left = max(end_step - step, 1)
        way_left = here - self.final_fraction * base + (2 * (base - here) if progress < w else 0)
        limit = max(largest_step_change(end_step, w, base, self.final_fraction),
                    way_left / steps_left) * (1 + 1e-9)

        def within(rate):
            return abs(self._curve(progress + rate, w) - here) <= limit

        rate = (1.0 - progress) / steps_left if end_step > step else 0.0
        if not within(rate):  # bisect for the largest rate within the limit
            low, high = 0.0, rate
            for _ in range(60):
                low, high = ((low + high) / 2, high) if within((low + high) / 2) else (
                    low, (low + high) / 2)
            rate = low
        self.end_step = int(end_step)
        self._set(step, progress, rate, w)

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate,
                "final_fraction": self.final_fraction, "end_step": self.end_step,
                "anchor_step": self.anchor_step, "anchor_progress": self.anchor_progress,
                "rate": self.rate, "warmup_fraction": self.warmup_fraction, "plan": self.plan}


def scaled_learning_rate(base_lr, global_batch_size, scaling="linear"):
    """The official rule: `base * batch / 256` ("linear") or `base * sqrt(batch)` ("sqrt")."""
    _check_learning_rate(base_lr)
    if global_batch_size <= 0:
        raise ValueError(f"`global_batch_size` must be > 0, got {global_batch_size}.")
    if scaling == "linear":
        return base_lr * global_batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(global_batch_size)
    raise ValueError(f"Unknown `scaling` {scaling!r}; use 'linear' or 'sqrt'.")


def warmup_cosine_for(base_lr, global_batch_size, scaling, epochs, steps_per_epoch, warmup_epochs,
                      final_fraction=0.0):
    """`WarmupCosine` for a run given in epochs, with the base rate scaled by the batch."""
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"`epochs` and `steps_per_epoch` must be > 0, got {epochs}, {steps_per_epoch}."
        )
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"`warmup_epochs` must be in [0, epochs={epochs}], got {warmup_epochs}.")
    return WarmupCosine(
        scaled_learning_rate(base_lr, global_batch_size, scaling),
        total_steps=int(epochs * steps_per_epoch),
        warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
        final_fraction=final_fraction,
    )


def _lars(learning_rate, weight_decay, momentum, exclude):
    return LARS(learning_rate, momentum=momentum, weight_decay=weight_decay, exclude=exclude)


def _sgd(learning_rate, weight_decay, momentum, exclude):
    # weight_decay None (not 0.0) skips the decay ops altogether
    return SGDW(learning_rate, momentum=momentum, weight_decay=weight_decay or None,
                exclude=exclude)


def _adamw(learning_rate, weight_decay, momentum, exclude):
    del momentum  # Adam's moments have their own rates
    return AdamW(learning_rate, weight_decay=float(weight_decay), exclude=exclude)  # a float


# The optimizers `build_optimizer` knows, by name (the choices of apps.pretrain --optimizer).
OPTIMIZERS = {"lars": _lars, "sgd": _sgd, "adamw": _adamw}


def build_optimizer(name: str, *,
                    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
                    weight_decay: float, momentum: float = 0.9,
                    exclude: str | None = DEFAULT_EXCLUDE) -> keras.optimizers.Optimizer:
    """The optimizer called `name`, with weight decay on the variables not matching `exclude`.

    - "lars": `LARS` (decay added to the gradient, trust ratio; the SimCLR default).
    - "sgd": `SGDW`, Keras SGD with momentum, not Nesterov. Its decay is decoupled
      (w -= lr * weight_decay * w), whereas the official code adds an L2 loss to momentum
      SGD, which after momentum accumulation decays about 1 / (1 - momentum) times more.
    - "adamw": `AdamW` (decoupled decay, as AdamW defines it; `momentum` is not used).

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: float >= 0 or a `LearningRateSchedule`.
        weight_decay: decay coefficient >= 0.
        momentum: momentum of LARS and SGD.
        exclude: regex searched in each variable's path; matching variables get no decay
            (and no LARS trust ratio).

    Returns:
        The optimizer, not yet built.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; use one of {tuple(OPTIMIZERS)}.")
    _check_learning_rate(learning_rate)
    if weight_decay is None or weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
    if isinstance(learning_rate, int):
        learning_rate = float(learning_rate)  # Keras optimizers accept floats only
    return OPTIMIZERS[name](learning_rate, weight_decay, momentum, exclude)
