"""Importing the official SimCLR models, checked against the official code's own outputs.

tests/fixtures/official/ holds five tiny ResNet-50s (width 1/16, 64 px) that the official
implementation built, filled with random weights, saved as its SavedModels and ran
(tools/make_official_fixtures.py says how): SimCLRv2 layouts with and without selective
kernels, a SimCLRv1 release without projection head, and two SimCLRv2 models of the
official fine-tuning mode whose supervised head reads layer 1 or 2 of the projection head.
Their graphs are committed gzipped; the tests import unpacked copies.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_simclr.networks import backbones
from keras_simclr.exchange import official
from keras_simclr.exchange.export import export_encoder, read_metadata
from test_apps import run_app, write_folder
from test_batchnorm import on_keras_batch_normalization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "official")
# fixture: the projection-head layer its supervised head reads (0: h)
HEAD_LAYERS = {"r50_sk0_v2": 0, "r50_sk1_v2": 0, "r50_v1": 0, "r50_sk0_v2_ft1": 1,
               "r50_sk0_v2_ft2": 2}
NAMES = tuple(HEAD_LAYERS)
LAST_BLOCKS = (3, 4, 6, 3)  # ResNet-50
SOURCES = {}


@pytest.fixture(scope="module", autouse=True)
def unpacked_sources(tmp_path_factory):
    """Each fixture's SavedModel with its saved_model.pb unpacked beside the variables."""
    root = tmp_path_factory.mktemp("official")
    for name in NAMES:
        target = root / name
        shutil.copytree(os.path.join(FIXTURES, name, "saved_model"), target)
        with gzip.open(target / "saved_model.pb.gz") as packed:
            (target / "saved_model.pb").write_bytes(packed.read())
        SOURCES[name] = str(target)
    yield
    SOURCES.clear()


def source(name):
    return SOURCES[name]


def recorded(name):
    return dict(np.load(os.path.join(FIXTURES, name, "outputs.npz")))


def relative_error(got, want):
    """Largest difference relative to the largest official value of the tensor."""
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def encoder_outputs(encoder, images, training=False):
    """The official output dict's encoder tensors, from the native encoder's layers."""
    names = {"initial_conv": "stem_conv", "initial_max_pool": "stem_pool"}
    names.update({f"block_group{g + 1}": f"stage{g + 1}_block{count}_out"
                  for g, count in enumerate(LAST_BLOCKS)})
    probe = keras.Model(encoder.input, [encoder.get_layer(n).output for n in names.values()]
                        + [encoder.output])
    return dict(zip([*names, "final_avg_pool"], probe(images, training=training)))


@pytest.mark.parametrize("name", NAMES)
def test_imported_model_reproduces_every_official_output(name):
    want = recorded(name)
    model, arch = official.load(source(name))
    assert model.classifier_head_layer == HEAD_LAYERS[name]
    images = want["images"].astype(np.float32) / 255.0
    got = encoder_outputs(model.encoder, images)
    got["logits_sup"] = model.probe(model.classifier_features(got["final_avg_pool"]))
    if arch.head_depth:
        got["proj_head_output"] = model.head(got["final_avg_pool"], training=False)
    expected = {"initial_conv", "initial_max_pool", "block_group1", "block_group2",
                "block_group3", "block_group4", "final_avg_pool", "logits_sup"}
    assert expected | ({"proj_head_output"} if arch.head_depth else set()) == set(got)
    for key, value in got.items():
        assert relative_error(value, want[key]) < 1e-4, key
    # BN on batch statistics (the official `trainable=True`), after the inference checks:
    # a training-mode call moves the moving averages. 1e-2, not 1e-4: BN over 1x1 maps
    # (the head, the selective kernels' squeeze) divides by the spread of 3 examples,
    # which multiplies float32 rounding differences where the 3 nearly agree (measured up
    # to 1.3e-3); BN on moving statistics instead would be off by more than 1. The encoder
    # runs on Keras' BN arithmetic, the official code's (unfused); test_batchnorm holds
    # the fused kernel to it within 1e-5, which the 3 examples would multiply past 1e-2.
    h = on_keras_batch_normalization(model.encoder)(images, training=True)
    trained = {"final_avg_pool": h,
               "logits_sup": model.probe(model.classifier_features(h, training=True))}
    if arch.head_depth:
        trained["proj_head_output"] = model.head(h, training=True)
    for key, value in trained.items():
        assert relative_error(value, want[f"{key}_trainable"]) < 1e-2, key


@pytest.mark.parametrize("name,sk_ratio,head_depth", [
    ("r50_sk0_v2", 0.0, 3), ("r50_sk1_v2", 0.0625, 3), ("r50_v1", 0.0, 0),
    ("r50_sk0_v2_ft1", 0.0, 3), ("r50_sk0_v2_ft2", 0.0, 3)])
def test_architecture_is_read_from_the_shapes_and_the_graph(name, sk_ratio, head_depth):
    arch = official.infer_architecture(official.Source(source(name)))
    assert (arch.depth, arch.width_multiplier, arch.stem) == (50, 0.0625, "imagenet")
    assert (arch.sk_ratio, arch.head_depth, arch.num_classes) == (sk_ratio, head_depth, 10)
    assert arch.proj_dim == (32 if head_depth else 0)
    assert arch.classifier_head_layer == HEAD_LAYERS[name]


def test_keras_same_padding_would_not_reproduce_the_official_model():
    """The official strided convolutions pad (k - 1) // 2 before; Keras' "same" pads the
    end more on even sides, which shifts every strided layer by a pixel."""
    model, arch = official.load(source("r50_sk0_v2"))
    same = backbones.resnet(50, width_multiplier=arch.width_multiplier, padding="same")
    for layer in same.layers:
        if layer.weights:
            layer.set_weights(model.encoder.get_layer(layer.name).get_weights())
    images = recorded("r50_sk0_v2")["images"].astype(np.float32) / 255.0
    want = recorded("r50_sk0_v2")["final_avg_pool"]
    assert relative_error(same(images, training=False), want) > 1e-2
    assert relative_error(model.encoder(images, training=False), want) < 1e-4


def test_fit_step_under_two_replica_mirrored_strategy(tmp_path):
    out = tmp_path / "fit.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_official_helper.py"),
                    source("r50_sk1_v2"), str(out)], check=True, cwd=ROOT, timeout=600,
                   capture_output=True)
    result = json.loads(out.read_text())
    assert result["replicas"] == 2 and result["mirrored"]
    assert result["changed"] == result["variables"]  # every encoder weight trained
    assert np.isfinite(result["loss"]) and np.isfinite(result["probe_loss"])


def test_import_export_reload_serves_the_official_embeddings(tmp_path):
    """The v1 fixture's embeddings reach 335: the export's reload check compared them to
    an absolute 1e-4 and refused a correct export (float32 rounding: 1.8e-4)."""
    model, _ = official.load(source("r50_v1"))
    export_dir = export_encoder(model.encoder, str(tmp_path / "export"), image_size=64)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    want = recorded("r50_v1")
    got = serve(images=tf.constant(want["images"]))["embedding"]
    assert relative_error(got, want["final_avg_pool"]) < 1e-4


def test_the_imported_model_saves_and_reloads_as_keras(tmp_path):
    model, _ = official.load(source("r50_sk1_v2"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    want = recorded("r50_sk1_v2")
    images = want["images"].astype(np.float32) / 255.0
    h = reloaded.encoder(images)
    assert relative_error(h, want["final_avg_pool"]) < 1e-4
    assert relative_error(reloaded.head(h, training=False), want["proj_head_output"]) < 1e-4
    assert relative_error(reloaded.probe(h), want["logits_sup"]) < 1e-4


def test_the_online_probe_of_a_finetuned_release_reads_its_layer():
    """evaluate() scores the probe on what the release's classifier reads: its loss is the
    cross-entropy of the official logits (training reads it through the same method)."""
    want = recorded("r50_sk0_v2_ft1")
    model, _ = official.load(source("r50_sk0_v2_ft1"))
    model.compile()
    views = {f"view_{i}": want["images"].astype(np.float32) / 255.0 for i in (1, 2)}
    labels = np.array([0, 3, 7])
    logs = model.evaluate(views, labels, verbose=0, return_dict=True)
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, want["logits_sup"])
    assert logs["probe_loss"] == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-4)


def _edited_graph(tmp_path, edit):
    """The ft1 fixture with `edit(index, nodes, supervised MatMul)` applied to each of the
    two functions of its graph that compute logits_sup (trainable True and False)."""
    target = _copy_fixture("r50_sk0_v2_ft1", tmp_path)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((target / "saved_model.pb").read_bytes())
    functions = [function for function in saved.meta_graphs[0].graph_def.library.function
                 if any(node.name == "head_supervised/logits_sup" for node in function.node_def)]
    assert len(functions) == 2
    for index, function in enumerate(functions):
        nodes = {node.name: node for node in function.node_def}
        edit(index, nodes, next(node for node in function.node_def if node.op == "MatMul"
                                and node.name.startswith("head_supervised/")))
    (target / "saved_model.pb").write_bytes(saved.SerializeToString())
    return target


def _without_graph(tmp_path):
    target = _copy_fixture("r50_sk0_v2_ft1", tmp_path)
    (target / "saved_model.pb").unlink()
    return target, {}, "it has no saved_model.pb"


def _head_input_renamed(tmp_path):
    def edit(index, nodes, matmul):
        for node in nodes.values():
            node.name = node.name.replace("proj_head_input", "renamed")
            node.input[:] = [i.replace("proj_head_input", "renamed") for i in node.input]
    return (_edited_graph(tmp_path, edit), {},
            "does not lead back to projection_head/proj_head_input")


def _functions_disagree(tmp_path):
    def edit(index, nodes, matmul):
        if index == 0:
            matmul.input[0] = "projection_head/proj_head_input:output:0"
    return _edited_graph(tmp_path, edit), {}, "its functions disagree (layers 0 and 1)"


def _before_the_relu(tmp_path):
    def edit(index, nodes, matmul):
        matmul.input[0] = nodes[matmul.input[0].split(":")[0]].input[0]
    return (_edited_graph(tmp_path, edit), {},
            "reading 1 MatMuls above h, no layer of the 3-layer projection head")


def _finetuned_without_its_head(tmp_path):
    return (source("r50_sk0_v2_ft1"), {"projection_head": False},
            "reads layer 1 of its projection head: import it with the projection head")


@pytest.mark.parametrize("case", [_without_graph, _head_input_renamed, _functions_disagree,
                                  _before_the_relu, _finetuned_without_its_head])
def test_an_undecidable_classifier_layer_is_refused_in_one_line(case, tmp_path):
    path, kwargs, reason = case(tmp_path)
    with pytest.raises(official.OfficialModelError) as caught:
        official.load(str(path), **kwargs)
    message = str(caught.value)
    assert "\n" not in message and reason in message, message
    if case is not _finetuned_without_its_head:
        assert message.startswith("cannot tell which layer of the projection head the "
                                  "supervised head of "), message


def _copy_fixture(name, tmp_path):
    target = tmp_path / name
    shutil.copytree(source(name), target)
    return target


def _not_a_saved_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "readme.txt").write_text("not a model")
    return tmp_path / "photos", [], "is not a SavedModel: expected variables/variables.index"


def _another_saved_model(tmp_path):
    module = tf.Module()
    module.weights = tf.Variable(np.ones((2, 2), np.float32))
    tf.saved_model.save(module, str(tmp_path / "other"))
    return (tmp_path / "other", [],
            "is not an official SimCLR model: expected variables under model/resnet_model/")


def _v1_asked_for_its_head(tmp_path):
    return (source("r50_v1"), ["--projection_head"],
            "has no projection head (as the SimCLRv1 and supervised releases)")


def _truncated(tmp_path):
    target = _copy_fixture("r50_sk0_v2", tmp_path)
    data = target / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    return target, [], "truncated"


def _mismatched(tmp_path):
    """The sk0 fixture with one 3x3 convolution kernel of 9 output channels, not 8."""
    target = _copy_fixture("r50_sk0_v2", tmp_path)
    prefix = str(target / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    wrong = official.Source(str(target)).keys[
        "model/resnet_model/block_groups/1/layers/0/conv_relu_dropblock_layers/3/conv2d/kernel"]
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [reader.get_tensor(n) if n != wrong else np.zeros((3, 3, 8, 9), np.float32)
               for n in names]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    return target, [], ("weights do not match the architecture: model/resnet_model/"
                        "block_groups/1/layers/0/conv_relu_dropblock_layers/3/conv2d/kernel "
                        "has shape [3, 3, 8, 9]")


@pytest.mark.parametrize("case", [_not_a_saved_model, _another_saved_model,
                                  _v1_asked_for_its_head, _truncated, _mismatched])
def test_bad_sources_end_with_one_error_line_and_write_nothing(case, tmp_path):
    path, flags, message = case(tmp_path)
    model_dir = tmp_path / "imported"
    result = run_app("import_official", f"--source={path}", f"--model_dir={model_dir}",
                     *flags, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, last
    assert not model_dir.exists()
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def _import_app(name, model_dir):
    return ("import_official", f"--source={source(name)}", f"--model_dir={model_dir}",
            "--image_size=64")


def test_import_then_every_app_on_a_folder_of_images(tmp_path):
    """The SimCLRv2 release with selective kernels and its projection head through every
    app that reads a model (the other releases: the tests below). The export takes the
    classifier fine-tuned from layer 1 of the head: its served logits were those of its
    Dense layer on h, not on that layer's output."""
    dataset = write_folder(str(tmp_path / "images"), {"train": 32, "test": 32})
    model_dir = str(tmp_path / "imported")
    classifier = str(tmp_path / "imported" / "finetune_0.5" / "classifier.keras")
    stages = [
        _import_app("r50_sk1_v2", model_dir),
        ("linear_eval", f"--model_dir={model_dir}", f"--dataset={dataset}", "--batch_size=32"),
        ("finetune", f"--model_dir={model_dir}", f"--dataset={dataset}", "--epochs=1",
         "--batch_size=32", "--label_fraction=0.5", "--finetune_from_head_layer=1"),
        ("embed", f"--model={model_dir}", f"--dataset={dataset}",
         f"--output={tmp_path / 'x.npz'}", "--batch_size=32"),
        ("export", f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'export'}",
         f"--classifier={classifier}"),
    ]
    for app, *args in stages:
        assert run_app(app, *args).returncode == 0
    assert np.load(tmp_path / "x.npz")["x"].shape == (32, 128)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["image_size"] == 64 and config["projection_head_imported"]
    images = recorded("r50_sk1_v2")["images"]
    served = _serve(tmp_path / "export", images)["logits"]
    want = keras.saving.load_model(classifier)(images.astype(np.float32) / 255.0)
    assert relative_error(served, want) < 1e-4


def _serve(export_dir, images):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return serve(images=tf.constant(images))


def test_a_finetuned_release_keeps_its_classifier_through_the_apps(tmp_path):
    """The release fine-tuned from layer 1 of its projection head: the import records the
    layer (config.json, the model), apps.finetune starts from it by default, and the
    export's embedding is its output, on which the imported classifier gives the
    release's logits."""
    dataset = write_folder(str(tmp_path / "images"), {"train": 16, "test": 8})
    model_dir = tmp_path / "imported"
    run_app(*_import_app("r50_sk0_v2_ft1", model_dir))
    assert json.loads((model_dir / "config.json").read_text())["classifier_head_layer"] == 1
    # apps.distill takes the imported release as a teacher with the release's logits
    teacher_logits = tmp_path / "teacher_logits.npy"
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, numpy as np; from absl import flags; from apps import distill; "
        "flags.FLAGS(['distill', '--teacher=' + sys.argv[1], '--model_dir=unused']); "
        "teacher = distill.load_teacher(sys.argv[1]); "
        "images = np.load(sys.argv[2])['images']; "
        "np.save(sys.argv[3], teacher(images, training=False).numpy())"),
        str(model_dir), os.path.join(FIXTURES, "r50_sk0_v2_ft1", "outputs.npz"),
        str(teacher_logits)], cwd=ROOT, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    want = recorded("r50_sk0_v2_ft1")
    assert relative_error(np.load(teacher_logits), want["logits_sup"]) < 1e-4
    run_app("finetune", f"--model_dir={model_dir}", f"--dataset={dataset}", "--epochs=1",
            "--batch_size=8", "--label_fraction=0.5")
    result = json.loads((model_dir / "finetune_0.5" / "result.json").read_text())
    assert result["finetune_from_head_layer"] == 1
    run_app("export", f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'export'}")
    model = keras.saving.load_model(model_dir / "model.keras")
    assert model.classifier_head_layer == 1
    assert read_metadata(str(tmp_path / "export"))["embedding_dim"] == 128  # not 32, z's
    embedding = _serve(tmp_path / "export", want["images"])["embedding"]
    assert relative_error(model.probe(embedding), want["logits_sup"]) < 1e-4


def test_the_release_without_projection_head_finetunes_from_the_encoder_only(tmp_path):
    """SimCLRv1 has no projection head: fine-tuning from its layer 1 is refused with a
    clear line, from layer 0 (the encoder) it trains."""
    dataset = write_folder(str(tmp_path / "images"), {"train": 16, "test": 8})
    model_dir = str(tmp_path / "v1")
    run_app(*_import_app("r50_v1", model_dir))
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    assert not config["projection_head_imported"]
    result = run_app("finetune", f"--model_dir={model_dir}", f"--dataset={dataset}",
                     "--finetune_from_head_layer=1", check=False)
    assert result.returncode == 2
    assert "imported from a release without projection head" in result.stderr
    run_app("finetune", f"--model_dir={model_dir}", f"--dataset={dataset}", "--epochs=1",
            "--batch_size=8", "--label_fraction=0.5", "--finetune_from_head_layer=0")
    assert os.path.exists(os.path.join(model_dir, "finetune_0.5", "result.json"))


def test_model_dir_may_be_an_existing_empty_directory(tmp_path):
    from apps import import_official

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model_dir = tmp_path / "empty"
    model_dir.mkdir()
    import_official._write_model_dir(model, {"image_size": 64}, str(model_dir))
    assert sorted(os.listdir(model_dir)) == ["config.json", "model.keras"]
    assert os.listdir(tmp_path) == ["empty"]  # no staging directory left


def test_an_unreachable_source_is_one_line(monkeypatch):
    """Offline, gs:// failed with TensorFlow's two-line message (the URL on a second line)."""
    def unreachable(path):
        raise tf.errors.UnavailableError(None, None, "Could not resolve host\n\t when reading "
                                                     f"metadata of {path}")
    monkeypatch.setattr(tf.io.gfile, "exists", unreachable)
    with pytest.raises(official.OfficialModelError) as caught:
        official.load("gs://bucket/simclrv2/pretrained/r50_1x_sk0/saved_model")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("cannot reach gs://bucket/")
