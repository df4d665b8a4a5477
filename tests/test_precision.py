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


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_matches_float32(policy, name):
    views = _views()
    reference = _model()
    want = reference.evaluate(views, batch_size=16, verbose=0, return_dict=True)["loss"]
    weights = reference.get_weights()
    assert policy(name) == name
    model = _model()
    model.set_weights(weights)
    assert model.encoder.layers[1].compute_dtype == name.split("_")[1]
    assert model.encoder.layers[1].variable_dtype == "float32"
    got = model.evaluate(views, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx(want, rel=0.02)  # bfloat16 keeps ~3 significant digits
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
