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
to 0 along a cosine (`WarmupCosine`; optionally to a fraction of the peak instead).
"""
import math
import re

import keras
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
        step = ops.cast(step, "float32")
        base = self.base_learning_rate
        final = self.final_fraction * base
        warm = step / self.warmup_steps * base if self.warmup_steps else base
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps:
            progress = ops.minimum(step - self.warmup_steps, decay_steps) / decay_steps
            cosine = final + 0.5 * (base - final) * (1.0 + ops.cos(math.pi * progress))
        else:
            cosine = final
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
        }


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
