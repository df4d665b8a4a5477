"""Mixed precision: policies, the CPU's bfloat16 support, and numerics of a step on CPU."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr import ProjectionHead, SimCLR, losses
from keras_simclr.networks import backbones
from keras_simclr.training import precision
from keras_simclr.views.makers import views_of_input


@pytest.fixture
def policy():
    yield precision.set_precision
    keras.config.set_dtype_policy("float32")


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125)
    model = SimCLR(encoder, ProjectionHead(2, output_dim=16), loss=losses.NTXent(0.5))
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.build({"view_1": (None, 8, 8, 3), "view_2": (None, 8, 8, 3)})
    return model


def _views(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32") for k in ("view_1", "view_2")}


def _sgd_step(model, views):
    """(loss, update of every trainable variable) of one train step; SGD's update is -lr x grad."""
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss = model.train_on_batch(views, return_dict=True)["loss"]
    update = [(v.numpy() - b).ravel() for v, b in zip(model.trainable_variables, before)]
    return loss, np.concatenate(update)


@pytest.fixture(scope="module")
def float32_step():
    """Weights four float32 steps in (loss ~2.95 against log(31) ~3.43 untrained), and the
    float32 loss and update of one more step from them."""
    views = _views()
    reference = _model()
    reference.fit(views, batch_size=16, epochs=4, verbose=0)
    weights = reference.get_weights()
    model = _model()
    model.set_weights(weights)
    return weights, *_sgd_step(model, views)


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_matches_float32(policy, float32_step, name):
    views = _views()
    weights, want_loss, want_update = float32_step
    assert policy(name) == name
    model = _model()
    model.set_weights(weights)
    assert model.encoder.layers[1].compute_dtype == name.split("_")[1]
    assert model.encoder.layers[1].variable_dtype == "float32"
    loss, update = _sgd_step(model, views)
    # Measured on this model: the loss within 0.2 eps and the update within 10 eps (relative
    # norm of the difference) for both formats, eps = 2^-7 (bfloat16) or 2^-10 (float16).
    eps = {"mixed_bfloat16": 2.0 ** -7, "mixed_float16": 2.0 ** -10}[name]
    assert abs(loss - want_loss) / want_loss < 2 * eps
    cosine = update @ want_update / np.linalg.norm(update) / np.linalg.norm(want_update)
    assert cosine > 0.99
    assert np.linalg.norm(update - want_update) / np.linalg.norm(want_update) < 20 * eps
    terms = model.objective(model._project(views_of_input(
        None, {k: tf.constant(v) for k, v in views.items()}), training=False)[0])
    assert terms.logits.dtype == tf.float32 and terms.per_anchor.dtype == tf.float32
    history = model.fit(views, batch_size=16, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    if name == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_cpu_bfloat16_support_reads_the_flags(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert precision.cpu_bfloat16_support(str(amx)) == "amx_bf16"
    assert precision.cpu_bfloat16_support(str(avx2)) == "none"
    assert precision.cpu_bfloat16_support(str(tmp_path / "missing")) == "unknown"


def test_auto_precision_and_bad_names(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bfloat16_support", lambda: "amx_bf16")
    assert precision.resolve("auto") == "mixed_bfloat16"
    assert precision.resolve("auto", has_gpu=True) == "float32"
    monkeypatch.setattr(precision, "cpu_bfloat16_support", lambda: "none")
    assert precision.resolve("auto") == "float32"
    assert precision.resolve("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("float8")
