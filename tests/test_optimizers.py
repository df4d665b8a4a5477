"""Tests for keras_simclr.optimizers: LARS against a NumPy reference, schedules, recipes."""
import keras_simclr  # noqa: F401  (sets runtime options before TensorFlow is imported)

import json
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import optimizers as opt_lib

LR, MOMENTUM, WD, ETA = 0.5, 0.9, 0.05, 0.1  # large enough that decay and trust matter


def _model(seed=0):
    """Dense + BN + Dense with every trainable variable random and non-zero."""
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),  # tanh: bias not
         keras.layers.BatchNormalization(), keras.layers.Dense(3)]  # cancelled by BN
    )
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32") + 0.5)
    return model


def _is_kernel(variable):
    return variable.path.endswith("/kernel")


def _lars_reference(weights, grad_steps, included, nesterov):
    """The update of the module docstring, in float64."""
    w = [x.astype(np.float64) for x in weights]
    v = [np.zeros_like(x) for x in w]
    for grads in grad_steps:
        for i, g in enumerate(grads):
            g = g.astype(np.float64)
            lr = LR
            if included[i]:
                g = g + WD * w[i]
                w_norm, g_norm = np.linalg.norm(w[i]), np.linalg.norm(g)
                lr = LR * (ETA * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
            v[i] = MOMENTUM * v[i] + lr * g
            w[i] = w[i] - (MOMENTUM * v[i] + lr * g if nesterov else v[i])
    return w


def _apply(optimizer, model, grad_steps):
    for grads in grad_steps:
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [v.numpy() for v in model.trainable_variables]


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_three_steps_match_numpy_reference_and_momentum_sgd(nesterov):
    model = _model()
    w0 = [v.numpy() for v in model.trainable_variables]
    lars = opt_lib.LARS(LR, momentum=MOMENTUM, weight_decay=WD, eta=ETA, nesterov=nesterov)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    grad_steps = []
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
        grad_steps.append(grads)
        lars.apply_gradients(zip(grads, model.trainable_variables))
    got = [v.numpy() for v in model.trainable_variables]

    included = [_is_kernel(v) for v in model.trainable_variables]
    assert included == [True, False, False, False, True, False]  # kernel, bias, gamma, beta, ...
    want = _lars_reference(w0, grad_steps, included, nesterov)
    for g, w, start in zip(got, want, w0):
        np.testing.assert_allclose(g, w, rtol=1e-5)
        assert _rel(g - start, w - start) < 1e-5  # the update itself, not only the weights

    # Excluded variables follow Keras' momentum SGD given the same gradients.
    sgd_model = _model()
    sgd = keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=nesterov)
    sgd_got = _apply(sgd, sgd_model, grad_steps)
    for g, s, inc in zip(got, sgd_got, included):
        if not inc:
            np.testing.assert_allclose(g, s, rtol=1e-5)


@pytest.mark.parametrize("name", list(opt_lib.OPTIMIZERS))
def test_weight_decay_skips_excluded_variables(name):
    model = _model()
    w0 = [v.numpy() for v in model.trainable_variables]
    optimizer = opt_lib.build_optimizer(name, learning_rate=0.1, weight_decay=0.1)
    zeros = [np.zeros_like(w) for w in w0]
    got = _apply(optimizer, model, [zeros, zeros])
    for v, g, start in zip(model.trainable_variables, got, w0):
        if _is_kernel(v):
            assert _rel(g, start) > 1e-4, v.path  # decayed
        else:
            np.testing.assert_array_equal(g, start, err_msg=v.path)
    assert optimizer.iterations.numpy() == 2


def test_lars_trust_ratio_is_one_for_zero_weights():
    model = _model()
    kernel = model.trainable_variables[0]
    kernel.assign(np.zeros(kernel.shape, "float32"))
    grads = [np.full(v.shape, 0.3, "float32") for v in model.trainable_variables]
    _apply(opt_lib.LARS(LR, weight_decay=WD, eta=ETA), model, [grads])
    np.testing.assert_allclose(kernel.numpy(), -LR * grads[0], rtol=1e-6)


def test_lars_does_not_use_base_class_decay():
    lars = opt_lib.LARS(0.1, weight_decay=1e-4)
    assert lars.weight_decay is None and lars.lars_weight_decay == 1e-4


@pytest.mark.parametrize(
    "path, excluded",
    [("dense/bias", True), ("probe/bias", True), ("batch_normalization/gamma", True),
     ("conv1_bn/gamma", True), ("head_bn_0/beta", True), ("sync_bn/moving_variance", True),
     ("layer_normalization/beta", True), ("dense/kernel", False),
     ("conv1_conv/kernel", False), ("gamma_proj/kernel", False), ("bias_head/kernel", False)],
)
def test_default_exclude(path, excluded):
    assert (re.search(opt_lib.DEFAULT_EXCLUDE, path) is not None) == excluded


def test_lars_config_round_trip():
    lars = opt_lib.LARS(
        opt_lib.WarmupCosine(0.3, 100, 10), momentum=0.8, weight_decay=1e-6, eta=2e-3,
        nesterov=True, exclude="bias", clipnorm=1.0,
    )
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(lars))
    assert isinstance(again, opt_lib.LARS)
    assert isinstance(again._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    assert again.get_config() == lars.get_config()
    assert again.get_config()["weight_decay"] == 1e-6 and again.weight_decay is None


@pytest.mark.parametrize(
    "kwargs",
    [dict(learning_rate=-0.1), dict(learning_rate=0.1, momentum=1.5),
     dict(learning_rate=0.1, weight_decay=-1.0), dict(learning_rate=0.1, eta=0.0),
     dict(learning_rate=0.1, exclude="(")],
)
def test_lars_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        opt_lib.LARS(**kwargs)


def test_save_load_keeps_optimizer_state(tmp_path):
    model = _model()
    model.compile(opt_lib.LARS(opt_lib.WarmupCosine(0.5, 20, 2), eta=ETA), "mse")
    rng = np.random.default_rng(2)
    model.fit(rng.normal(size=(12, 5)), rng.normal(size=(12, 3)), batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, opt_lib.LARS)
    assert int(loaded.optimizer.iterations.numpy()) == 3
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    momenta = [v for v in model.optimizer.variables if v.path.endswith("_momentum")]
    assert len(momenta) == 6 and all(np.any(v.numpy() != 0) for v in momenta)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_warmup_cosine_values():
    schedule = opt_lib.WarmupCosine(2.0, total_steps=110, warmup_steps=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 1.0, 2.0, 1.0, 0.0, 0.0], atol=1e-6)
    assert float(opt_lib.WarmupCosine(2.0, 10, 0)(0)) == pytest.approx(2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert again.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        opt_lib.WarmupCosine(1.0, total_steps=10, warmup_steps=11)


def test_warmup_cosine_ends_at_its_final_fraction():
    schedule = opt_lib.WarmupCosine(2.0, total_steps=110, warmup_steps=10, final_fraction=0.25)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 1.0, 2.0, 1.25, 0.5, 0.5], atol=1e-6)
    no_cosine = opt_lib.WarmupCosine(2.0, total_steps=10, warmup_steps=10, final_fraction=0.5)
    np.testing.assert_allclose([float(no_cosine(s)) for s in (5, 10, 20)], [1.0, 1.0, 1.0])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert again.get_config()["final_fraction"] == 0.25
    # configs saved before the option existed load as the decay to zero
    old = {k: v for k, v in schedule.get_config().items() if k != "final_fraction"}
    assert opt_lib.WarmupCosine.from_config(old).final_fraction == 0.0
    with pytest.raises(ValueError, match="final_fraction"):
        opt_lib.WarmupCosine(1.0, total_steps=10, warmup_steps=1, final_fraction=1.5)


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in range(steps)])


def test_a_fitted_schedule_planned_at_the_start_is_the_warmup_cosine():
    schedule = opt_lib.FittedWarmupCosine(2.0, final_fraction=0.1)
    assert float(schedule(5)) == 0.0  # progress held at 0 before a plan
    schedule.refit(0, 110, warmup_fraction=10 / 110)
    expected = _rates(opt_lib.WarmupCosine(2.0, 110, 10, final_fraction=0.1), 120)
    np.testing.assert_allclose(_rates(schedule, 120), expected, rtol=1e-6, atol=1e-6)
    assert schedule.largest_step_change(110) == pytest.approx(0.2)  # the warm-up's 2 / 10
    assert np.max(np.abs(np.diff(expected))) <= 0.2 + 1e-6


@pytest.mark.parametrize("end,steeper", [(170, False), (140, True)])
def test_refits_keep_the_rate_and_bound_every_step(end, steeper):
    schedule = opt_lib.FittedWarmupCosine(1.0)
    schedule.refit(0, 200, warmup_fraction=0.4)
    before = schedule.value_at(100)
    rates = []
    for step in range(100, end + 1):  # re-fitted after every step, as TimeBudget does
        schedule.refit(step, end)
        assert step > 100 or schedule.value_at(100) == pytest.approx(before, abs=1e-12)
        rates.append(float(schedule(step)))
    assert abs(rates[0] - before) < 1e-6 and rates[-1] == pytest.approx(0.0, abs=1e-6)
    # The last 100 steps now fit in 70 (or 40), the rest of the cosine steeper; no step
    # changes the rate more than a schedule of `end` steps does at its steepest, except
    # where the steps left are too few even for a straight descent to 0: then by as much
    # as that descent's steps.
    cosine = opt_lib.largest_step_change(end, 0.4, 1.0)
    changes = np.abs(np.diff(rates))
    straight = np.array(rates[:-1]) / (end - np.arange(100, end))
    assert np.all(changes <= np.maximum(cosine, straight) * (1 + 1e-5))
    assert (changes.max() > cosine * 1.01) == steeper


def test_the_fitted_plan_travels_in_the_optimizer_config():
    schedule = opt_lib.FittedWarmupCosine(0.5, warmup_fraction=0.0, plan={"steps": 90})
    schedule.refit(30, 90)
    optimizer = opt_lib.LARS(schedule)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    restored = opt_lib.FittedWarmupCosine.of(clone)
    assert restored.end_step == 90 and restored.plan == {"steps": 90}
    np.testing.assert_allclose(_rates(restored, 100), _rates(schedule, 100))
    assert opt_lib.FittedWarmupCosine.of(opt_lib.LARS(0.1)) is None


def test_learning_rate_helpers():
    assert opt_lib.scaled_learning_rate(1.0, 512) == pytest.approx(2.0)
    assert opt_lib.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    schedule = opt_lib.warmup_cosine_for(1.0, 512, "linear", epochs=100, steps_per_epoch=10,
                                         warmup_epochs=10)
    assert schedule.get_config() == dict(base_learning_rate=2.0, total_steps=1000,
                                         warmup_steps=100, final_fraction=0.0)
    assert opt_lib.warmup_cosine_for(1.0, 256, "linear", 10, 10, 1, 0.1).final_fraction == 0.1
    with pytest.raises(ValueError, match="scaling"):
        opt_lib.scaled_learning_rate(1.0, 512, "log")
    with pytest.raises(ValueError, match="warmup_epochs"):
        opt_lib.warmup_cosine_for(1.0, 512, "linear", 10, 10, warmup_epochs=11)


def test_build_optimizer():
    lars = opt_lib.build_optimizer("lars", learning_rate=1, weight_decay=1e-4)
    assert isinstance(lars, opt_lib.LARS)
    sgd = opt_lib.build_optimizer("sgd", learning_rate=0.1, weight_decay=1e-4)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and not sgd.nesterov
    adamw = opt_lib.build_optimizer("adamw", learning_rate=1e-3, weight_decay=0.0)
    assert isinstance(adamw, keras.optimizers.AdamW)
    for name in ("sgd", "adamw"):  # the exclusions survive serialization
        opt = opt_lib.build_optimizer(name, learning_rate=0.1, weight_decay=1e-4,
                                      exclude="bias")
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
        assert type(again) is type(opt) and again.exclude == "bias"
    with pytest.raises(ValueError, match="Unknown optimizer"):
        opt_lib.build_optimizer("adam", learning_rate=0.1, weight_decay=1e-4)
    with pytest.raises(TypeError):  # keyword arguments beyond the name
        opt_lib.build_optimizer("sgd", 0.1, 1e-4)
    assert set(opt_lib.OPTIMIZERS) == {"lars", "sgd", "adamw"}
    with pytest.raises(ValueError, match="learning_rate"):
        opt_lib.build_optimizer("sgd", learning_rate=-0.1, weight_decay=1e-4)


_MIRRORED = textwrap.dedent(
    """
    import json
    import keras_simclr
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_simclr import optimizers as opt_lib

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")

    def train(strategy, make_optimizer):
        with strategy.scope():
            model = keras.Sequential([
                keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                keras.layers.BatchNormalization(synchronized=True), keras.layers.Dense(3)])
            model.set_weights([np.full(w.shape, 0.5, "float32") + 0.1 * np.arange(w.size,
                               dtype="float32").reshape(w.shape) for w in model.get_weights()])
            model.compile(make_optimizer(), "mse")
        start = [w.copy() for w in model.get_weights()]
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        return start, model.get_weights()

    makers = {
        "lars": lambda: opt_lib.LARS(0.5, weight_decay=0.05, eta=0.1),
        "sgd": lambda: opt_lib.build_optimizer("sgd", learning_rate=0.5, weight_decay=0.05),
    }
    # One MirroredStrategy for both runs: a second one in the same process can clash with
    # the first one's collective-op keys (synchronized BN).
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {}
    for name, make in makers.items():
        start, one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), make)
        _, two = train(mirrored, make)
        rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
        result[name] = dict(
            weights=max(rel(b, a) for a, b in zip(one, two)),
            updates=max(rel(b - s, a - s) for s, a, b in zip(start, one, two)))
    print(json.dumps(result))
    """
)


def test_mirrored_strategy_two_devices_match_one():
    out = subprocess.run(
        [sys.executable, "-c", _MIRRORED], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("lars", "sgd"):
        assert result[name]["weights"] < 1e-5 and result[name]["updates"] < 1e-4, result
