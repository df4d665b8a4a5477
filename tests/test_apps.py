"""The absl apps end to end, each through its entry point in a subprocess, on a tiny folder."""
import json
import os
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.linear_model import LogisticRegression

import _app_server as app_server
from conftest import blob_images
from keras_simclr import data, evaluation
from keras_simclr.evaluation import viz
from test_evaluation import numpy_knn_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--image_size=16", "--width_multiplier=0.125", "--batch_size=16", "--head_depth=2",
        "--proj_dim=16", "--verbose=0"]
# What used to fill the console: TensorFlow's C++ start-up lines, absl's log prefixes,
# INFO:tensorflow: lines, Python warnings with their source lines.
NOISE = ["cuInit", "oneDNN", "cuda drivers", "absl::InitializeLog", "cpu_feature_guard",
         "ConvergenceWarning", "UserWarning", "INFO:tensorflow", "I0000", "warnings.warn"]


def run_app(name, *args, check=True, timeout=300):
    """Run `python -m apps.NAME args` (forked from tests/_app_server.py); with `check`, it
    must succeed without console noise, TensorFlow's import included."""
    child = app_server.start([f"apps.{name}", *args])
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    result = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"apps.{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    if check:
        console = app_server.startup_console() + result.stdout + result.stderr
        assert not [n for n in NOISE if n in console], console[-3000:]
        assert not re.search(r"^[IWE]\d{4} ", console, re.M), console[-3000:]  # absl prefix
    return result


def write_folder(root, counts=None):
    """An image folder train/test with 4 classes of 16x16 PNGs; returns --dataset."""
    counts = counts or {"train": 96, "test": 32}
    for index, (split, count) in enumerate(counts.items()):
        images, labels = blob_images(count, size=16, seed=index)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = os.path.join(root, split, f"class_{label}", f"{i}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(image).save(path)
    return f"folder:{root}"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny pretraining run shared by the evaluation and export tests."""
    base = tmp_path_factory.mktemp("apps")
    dataset = write_folder(str(base / "images"))
    model_dir = str(base / "run")
    default_progress = [flag for flag in TINY if not flag.startswith("--verbose")]
    result = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                     "--epochs=2", *default_progress)
    return dataset, model_dir, result


@pytest.fixture(scope="module")
def exported(pretrained, tmp_path_factory):
    """The shared run exported once, for the quick start, serving and map tests; returns the
    export's directory (alone in its parent) and the app's output."""
    _, model_dir, _ = pretrained
    export_dir = str(tmp_path_factory.mktemp("export") / "exported")
    return export_dir, run_app("export", f"--model_dir={model_dir}", f"--export_dir={export_dir}")


def test_pretrain_writes_checkpoints_logs_model_and_summary(pretrained):
    dataset, model_dir, result = pretrained
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["ckpt-1.keras", "ckpt-2.keras"]
    assert os.listdir(os.path.join(model_dir, "logs"))
    assert os.path.exists(os.path.join(model_dir, "model.keras"))
    with open(os.path.join(model_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["epochs"] == 2 and np.isfinite(summary["loss"])
    assert {"contrastive_acc", "probe_acc", "views_per_s", "wall_time_s"} <= set(summary)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config["dataset"] == dataset and config["epochs"] == 2
    # the recipe only: none of absl's own flags (--help and its kin, --only_check_flags)
    assert not {"?", "help", "helpfull", "helpshort", "helpxml", "only_check_flags"} & set(config)


def test_quick_start_commands_print_a_few_readable_lines(pretrained, exported):
    # The README quick start with tiny settings: pretrain (stdout is a pipe: one line per
    # epoch), linear_eval of the pretrained and of a random-initialised encoder, export.
    dataset, model_dir, pretrain = pretrained
    export_dir, export = exported
    consoles = {"pretrain": pretrain}
    consoles["linear_eval"] = run_app("linear_eval", f"--model_dir={model_dir}")
    result = json.load(open(os.path.join(model_dir, "linear_eval.json")))
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0 and result["num_eval"] == 32
    assert result["converged"] and result["iterations"] > 0
    consoles["random_init"] = run_app("linear_eval", f"--model_dir={model_dir}", "--random_init")
    assert json.load(open(os.path.join(model_dir, "linear_eval_random.json")))["random_init"]
    consoles["export"] = export
    for name, out in consoles.items():
        assert out.stderr == "", (name, out.stderr[-2000:])  # no noise, no log lines
        lines = out.stdout.strip().splitlines()
        assert 1 <= len(lines) <= {"pretrain": 8}.get(name, 6), (name, out.stdout)
    assert pretrain.stdout.startswith("pretraining resnet18 (width 0.125, imagenet stem) on ")
    assert "Epoch 2/2" in pretrain.stdout and "done in " in pretrain.stdout
    # no progress bar redrawn with carriage returns and colour codes into a pipe or file,
    # no JSON among the readable lines (that is --json's)
    assert not [name for name, out in consoles.items()
                if "\r" in out.stdout or "\x1b[" in out.stdout or "\n{" in out.stdout]
    assert "linear evaluation top-1 (pretrained encoder" in consoles["linear_eval"].stdout
    assert "extracting features of" in consoles["linear_eval"].stdout
    assert export.stdout.startswith(f"exported SavedModel to {export_dir}")


def test_linear_eval_full_and_knn_eval(pretrained):
    dataset, model_dir, _ = pretrained
    full = run_app("linear_eval", f"--model_dir={model_dir}", "--mode=full", "--epochs=1",
                   "--batch_size=16", f"--output={model_dir}/full.json", "--json")
    assert json.loads(full.stdout.strip().splitlines()[-1])["mode"] == "full"
    stopped = run_app("linear_eval", f"--model_dir={model_dir}", "--max_iter=1",
                      f"--output={model_dir}/stopped.json")
    assert "note: the regression stopped at --max_iter=1 before converging" in stopped.stdout
    assert not json.load(open(f"{model_dir}/stopped.json"))["converged"]
    tuned = run_app("linear_eval", f"--model_dir={model_dir}", "--regularization_grid=1e-3,1e-1",
                    f"--output={model_dir}/tuned.json")
    assert "chosen on " in tuned.stdout and "held-out training images" in tuned.stdout
    tuned = json.load(open(f"{model_dir}/tuned.json"))
    assert set(tuned["holdout_top1"]) == {"0.001", "0.1"}
    assert tuned["regularization"] in (1e-3, 1e-1) and tuned["num_train"] > 0
    run_app("knn_eval", f"--model_dir={model_dir}", "--k=5")
    knn = json.load(open(os.path.join(model_dir, "knn_eval.json")))
    assert knn["k"] == 5 and 0.0 <= knn["top1"] <= 1.0
    # The reported accuracies against independent computations on the run's own features:
    # a float64 NumPy kNN, and scikit-learn's regression at the strength the grid chose.
    encoder = keras.saving.load_model(os.path.join(model_dir, "model.keras")).encoder
    train_x, train_y, eval_x, eval_y = (
        array for split in ("train", "test") for array in evaluation.extract_features(
            lambda x: encoder(x, training=False),
            data.embed_dataset(dataset, split, image_size=16, batch_size=64)))
    scores = numpy_knn_scores(train_x, train_y, eval_x, 4, 5, 0.1)
    assert knn["top1"] == np.mean(scores.argmax(axis=1) == eval_y)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    regression = LogisticRegression(C=1 / (tuned["regularization"] * len(train_x)),
                                    max_iter=1000).fit((train_x - mean) / std, train_y)
    assert tuned["top1"] == regression.score((eval_x - mean) / std, eval_y)


def test_export_reload_and_embed_agree(pretrained, exported, tmp_path):
    dataset, model_dir, _ = pretrained
    export_dir, _ = exported
    assert os.listdir(os.path.dirname(export_dir)) == ["exported"]  # no staging left behind
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 24, 3), np.uint8)
    assert served(images=tf.constant(images))["embedding"].shape == (3, 64)  # 512 * 0.125

    from_saved = str(tmp_path / "saved.npz")
    from_run = str(tmp_path / "run.npz")
    run_app("embed", f"--model={export_dir}", f"--dataset={dataset}", f"--output={from_saved}")
    run_app("embed", f"--model={model_dir}", f"--output={from_run}")
    saved, run = np.load(from_saved), np.load(from_run)
    assert saved["x"].dtype == np.float32 and saved["y"].dtype == np.int64
    assert saved["x"].shape == (32, 64)
    np.testing.assert_allclose(saved["x"], run["x"], atol=1e-4)
    np.testing.assert_array_equal(saved["y"], run["y"])
    # In dataset order: class folders sorted, so labels never decrease.
    assert np.all(np.diff(saved["y"]) >= 0)


def test_finetune_and_export_with_logits(pretrained, tmp_path):
    dataset, model_dir, _ = pretrained
    run_app("finetune", f"--model_dir={model_dir}", "--label_fraction=0.5", "--epochs=1",
            "--batch_size=16")
    result = json.load(open(os.path.join(model_dir, "finetune_0.5", "result.json")))
    assert result["num_labelled"] == pytest.approx(48, abs=2) and 0 <= result["top1"] <= 1
    export_dir = str(tmp_path / "with_logits")
    run_app("export", f"--model_dir={model_dir}", f"--export_dir={export_dir}",
            f"--classifier={model_dir}/finetune_0.5/classifier.keras")
    outputs = tf.saved_model.load(export_dir).signatures["serving_default"](
        images=tf.zeros((2, 16, 16, 3), tf.uint8))
    assert outputs["logits"].shape == (2, 4)


def test_show_augmentations_takes_one_image_of_each_class(pretrained, tmp_path):
    # It showed the first --images of the split: in a folder sorted by class, all one class.
    dataset, _, _ = pretrained
    grid = str(tmp_path / "views.png")
    run_app("show_augmentations", f"--dataset={dataset}", "--images=4", "--views=2",
            "--image_size=16", "--scale=1", "--seed=3", f"--output={grid}")
    picture = np.asarray(Image.open(grid).convert("RGB"))
    assert picture.shape == (2 + 4 * 18, 2 + 3 * 18, 3)
    ds = data.classifier_dataset(dataset, "test", image_size=16, batch_size=64, training=False)
    images = np.concatenate([np.round(x.numpy() * 255) for x, _ in ds]).astype(np.uint8)
    labels = data.labels(dataset, "test")
    shown = [picture[2 + 18 * row:18 + 18 * row, 2:18] for row in range(4)]
    chosen = viz.sample_across_classes(labels, 4, seed=3)
    for tile, index in zip(shown, chosen):
        np.testing.assert_array_equal(tile, images[index])
    assert sorted(labels[chosen].tolist()) == [0, 1, 2, 3]


def test_toy_plug_ins_run_through_the_apps_unchanged(tmp_path):
    """The toy objective, view maker and backbone family of tests/ (one file each, plus one
    registration line each in tests/_toy_apps.py) chosen by flags of the unchanged apps."""
    dataset = write_folder(str(tmp_path / "images"), {"train": 32, "test": 8})
    model_dir = str(tmp_path / "run")
    toys = ["--loss=toy_alignment", "--view_maker=toy_noisy_flips", "--backbone=toy_convnet"]
    command = [sys.executable, os.path.join("tests", "_toy_apps.py")]
    result = subprocess.run([*command, "pretrain", f"--dataset={dataset}", "--epochs=1",
                             f"--model_dir={model_dir}", "--json", *TINY, *toys],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert -1.0 <= summary["loss"] <= 1.0  # minus a cosine: the toy objective, not NT-Xent
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert {k: config[k] for k in ("loss", "view_maker", "backbone")} == {
        "loss": "toy_alignment", "view_maker": "toy_noisy_flips", "backbone": "toy_convnet"}
    with zipfile.ZipFile(os.path.join(model_dir, "model.keras")) as archive:
        model_config = json.loads(archive.read("config.json"))["config"]
    assert model_config["encoder"]["config"]["name"] == "tiny_convnet"
    assert model_config["loss"]["class_name"] == "Alignment"
    grid = str(tmp_path / "views.png")
    result = subprocess.run([*command, "show_augmentations", f"--dataset={dataset}",
                             "--images=2", "--views=4", "--image_size=8", "--scale=1",
                             "--view_maker=toy_noisy_flips", f"--output={grid}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.asarray(Image.open(grid)).shape[:2] == (2 + 2 * 10, 2 + 5 * 10)


def test_a_warning_is_one_line(tmp_path):
    # Python printed "path:line: DataWarning: ..." and then the warnings.warn source line.
    dataset = write_folder(str(tmp_path / "images"), {"train": 8, "test": 8})
    class_dir = sorted((tmp_path / "images" / "test").iterdir())[0]
    (class_dir / "broken.png").write_bytes(b"not an image")
    result = run_app("show_augmentations", f"--dataset={dataset}", "--images=2", "--views=1",
                     "--image_size=16", f"--output={tmp_path}/views.png")
    [line] = result.stderr.splitlines()
    assert line.startswith("warning: 1 entries in image folder") and "broken.png" in line


def test_neighbors_frames_the_queries(pretrained, tmp_path):
    dataset, model_dir, _ = pretrained
    neighbours = str(tmp_path / "neighbours.png")
    run_app("neighbors", f"--model_dir={model_dir}", "--queries=2", "--k=3", "--scale=1",
            f"--output={neighbours}")
    picture = np.asarray(Image.open(neighbours).convert("RGB"))
    assert picture.shape == (2 + 2 * 18, 2 + 4 * 18, 3)
    red = np.all(picture == (220, 30, 30), axis=-1)
    assert red[:, :2].all() and red[0, :20].all()  # around the query column
    assert not red[:, 21:].any()  # nowhere else


def test_map_of_embeddings(pretrained, exported, tmp_path):
    dataset, model_dir, _ = pretrained
    export_dir, _ = exported
    out = str(tmp_path / "map.png")
    run_app("map", f"--model_dir={model_dir}", "--size=200", "--thumbnails=3", f"--output={out}")
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[0] == 200 + 28 and 200 < picture.shape[1] < 300  # plot and legend
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert {viz.class_colour(c) for c in range(4)} <= colours  # the four classes
    run_app("map",  # a SavedModel works too, and t-SNE
            f"--model={export_dir}", f"--dataset={dataset}", "--method=tsne",
            "--max_points=20", "--size=200", f"--output={out}")
    assert Image.open(out).size == picture.shape[1::-1]


AUGMENT_FLAGS = {"resize_method": "bilinear", "brightness": "multiplicative",
                 "min_crop_area": 0.3}  # none of them the default


def test_pretrain_flags_reach_the_pipeline_the_model_and_the_throughput(tmp_path):
    code = """
import json, sys
import tensorflow as tf
from absl import flags
from apps import pretrain
from keras_simclr import data

flags.FLAGS(["pretrain", "--model_dir=" + sys.argv[1], *sys.argv[2:]])
calls = []
describe = data.describe("shapes")
data.pretrain_dataset = lambda *args, **kwargs: calls.append(kwargs)
for in_model in (False, True):
    pretrain.train_dataset("shapes", 0, in_model, pretrain.make_augmenter())
augmenters = {"data": calls[0]["augmenter"], "model": pretrain.build_model(
    describe, False, True).augmenter}
plan = pretrain.Plan(strategy=tf.distribute.get_strategy(), global_bn=False, dataset="shapes",
                     info=describe, steps_per_epoch=4, augment_in_model=False,
                     dtype_policy="float32", budget_s=None)
callbacks = pretrain.make_callbacks(sys.argv[1], plan, calls[0]["augmenter"].num_views,
                                    schedule=None, started=0.0)
print(json.dumps({
    "views_in_model": [c["views_in_model"] for c in calls],
    "original_cap": [c["original_cap"] for c in calls],
    "augmenters": {where: [{k: getattr(a, k) for k in ("resize_method", "brightness",
                                                       "crop_area", "image_size")}
                           for a in (m.full, m.small)] for where, m in augmenters.items()},
    "views_per_batch": callbacks[0].views_per_batch}))
"""
    flags_given = [f"--{name}={value}" for name, value in AUGMENT_FLAGS.items()]
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), "--small_views=2", "--small_view_size=8",
         "--batch_size=16", "--width_multiplier=0.125", "--original_cap=0", *flags_given],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["views_in_model"] == [False, True] and out["original_cap"] == [None, None]
    expected = dict(resize_method="bilinear", brightness="multiplicative",
                    crop_area=[0.3, 1.0])
    for where, (full, small) in out["augmenters"].items():
        assert full == dict(expected, image_size=32) and small == dict(expected, image_size=8)
    assert out["views_per_batch"] == 16 * (2 + 2)  # every view of the step, multi-crop too


def test_pretrain_in_the_model_on_large_images_records_and_keeps_the_flags(tmp_path):
    """augment_in=model on photos larger than the views: crops from the originals in the
    pipeline, views in the model; the flags in config.json and in the saved augmenter."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(32):
        path = root / "train" / f"class_{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), np.uint8)).save(path)
    model_dir = str(tmp_path / "run")
    flags_given = [f"--{name}={value}" for name, value in AUGMENT_FLAGS.items()]
    run_app("pretrain", f"--dataset=folder:{root}", f"--model_dir={model_dir}", "--epochs=1",
            "--augment_in=model", "--original_cap=2", "--small_views=1",
            "--small_view_size=8", *TINY, "--stage_widths=0.125,0.125,0.125,0.25",
            *flags_given)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert {name: config[name] for name in AUGMENT_FLAGS} == AUGMENT_FLAGS
    assert config["original_cap"] == 2.0 and config["stage_widths"] == ["0.125"] * 3 + ["0.25"]
    with zipfile.ZipFile(os.path.join(model_dir, "model.keras")) as archive:
        model_config = json.loads(archive.read("config.json"))["config"]
    filters = {layer["name"]: layer["config"].get("filters")
               for layer in model_config["encoder"]["config"]["layers"]}
    assert filters["stem_conv"] == 8 and filters["stage3_block2_2_conv"] == 32
    assert filters["stage4_block2_2_conv"] == 128  # 512 x 0.25: the wide last stage
    saved = model_config["augmenter"]["config"]
    assert saved["small_views"] == 1
    full = saved["full"]["config"]
    assert {name: full[name] for name in ("resize_method", "brightness")} == {
        "resize_method": "bilinear", "brightness": "multiplicative"}
    assert full["crop_area"] == [0.3, 1.0]


def test_evaluation_crops_with_the_runs_resize_method(tmp_path):
    from apps import common

    for recorded, expected in (({"resize_method": "bicubic"}, "bicubic"),
                               ({"resize_method": "bilinear"}, "bilinear"),
                               ({"image_size": 32}, "bilinear")):  # before the flag
        (tmp_path / "config.json").write_text(json.dumps(recorded))
        assert common.resize_method_of(str(tmp_path)) == expected


@pytest.mark.parametrize("name,args,message", [
    ("pretrain", ["--dataset=no_such_dataset_xyz", "--model_dir={tmp}/r"], "no_such_dataset_xyz"),
    ("pretrain", ["--dataset=folder:{tmp}/missing", "--model_dir={tmp}/r"], "does not exist"),
    ("pretrain", ["--epochs=0", "--model_dir={tmp}/r"], "--epochs must be positive"),
    ("pretrain", ["--batch_size=-4", "--model_dir={tmp}/r"], "--batch_size must be positive"),
    ("pretrain", ["--stage_widths=0.5,0.5,1", "--model_dir={tmp}/r"],
     "--stage_widths must be four positive numbers"),
    ("pretrain", ["--stage_widths=0.5,0.5,1,wide", "--model_dir={tmp}/r"],
     "--stage_widths must be four positive numbers"),
    ("pretrain", ["--final_lr_fraction=1.5", "--model_dir={tmp}/r"],
     "--final_lr_fraction must be in [0, 1]"),
    ("pretrain", ["--strategy=mirrored", "--cpu_replicas=2", "--batch_size=15",
                  "--model_dir={tmp}/r"], "not divisible"),
    ("pretrain", ["--epochs=1"], "--model_dir is required"),
    ("pretrain", ["--time_budget=30m", "--epochs=3", "--model_dir={tmp}/r"],
     "--epochs and --time_budget exclude each other"),
    ("pretrain", ["--time_budget=30", "--model_dir={tmp}/r"],
     "--time_budget: a duration is hours, minutes and seconds such as 30m"),
    ("linear_eval", [], "--model_dir is required"),
    ("export", [], "--model_dir is required"),
    ("linear_eval", ["--model_dir={tmp}/nowhere"], "does not exist"),
    ("linear_eval", ["--model_dir={tmp}/r", "--regularization_grid=1e-4,strong"],
     "--regularization_grid must be positive numbers"),
    ("linear_eval", ["--model_dir={tmp}/r", "--regularization_grid=1e-4", "--mode=full"],
     "--mode=full has none"),
    ("export", ["--model_dir={tmp}/corrupt"], "cannot read the model"),
    ("embed", ["--model={tmp}/nowhere", "--output={tmp}/x.npz"], "not a directory"),
    ("finetune", ["--model_dir={tmp}/corrupt", "--label_fraction=2"], "label_fraction"),
])
def test_bad_input_ends_with_one_clear_line(tmp_path, name, args, message):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"this is not a zip file")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_app(name, *args, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, result.stderr[-2000:]


def test_console_script_is_installed():
    result = subprocess.run(["simclr-pretrain", "--epochs=0", "--model_dir=unused"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: flag --epochs=0: --epochs must be positive"


def test_presets_parse_and_quickstart_is_the_defaults():
    code = """
import json, sys
from absl import flags
from apps import pretrain
defaults = {name: flags.FLAGS[name].default for name in flags.FLAGS}
parsed = {}
for preset in sys.argv[1:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["pretrain", "--model_dir=unused", "--flagfile=" + preset])
    parsed[preset] = {name: flags.FLAGS[name].value for name in flags.FLAGS}
print(json.dumps({"defaults": defaults, "parsed": parsed}, default=str))
"""
    presets = [os.path.join(ROOT, "apps", "configs", name)
               for name in sorted(os.listdir(os.path.join(ROOT, "apps", "configs")))]
    result = subprocess.run([sys.executable, "-c", code, *presets], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    quickstart = out["parsed"][os.path.join(ROOT, "apps", "configs", "quickstart.cfg")]
    with open(os.path.join(ROOT, "apps", "configs", "quickstart.cfg")) as f:
        names = [line.split("=")[0][2:] for line in f if line.startswith("--")]
    # --dataset defaults to None, meaning the embedded default data set.
    assert quickstart.pop("dataset") == "shapes" and names.remove("dataset") is None
    assert names and {n: quickstart[n] for n in names} == {n: out["defaults"][n] for n in names}
    cifar = out["parsed"][os.path.join(ROOT, "apps", "configs", "cifar10.cfg")]
    assert (cifar["stem"], cifar["temperature"], cifar["batch_size"]) == ("cifar", 0.5, 512)


def test_pretrain_flag_choices_are_the_library_registries():
    code = """
from absl import flags
from apps import pretrain
from keras_simclr import optimizers
from keras_simclr.views import augment, crop
from keras_simclr.networks import backbones
from keras_simclr.training import distribute
choices = {name: flags.FLAGS[name].parser.enum_values
           for name in ("stem", "strategy", "optimizer", "resize_method", "brightness")}
assert choices == {"stem": list(backbones.STEMS), "strategy": list(distribute.STRATEGIES),
                   "optimizer": list(optimizers.OPTIMIZERS),
                   "resize_method": list(crop.RESIZE_METHODS),
                   "brightness": list(augment.BRIGHTNESS_MODES)}, choices
# plug-in points: any name registered when the flags are parsed, and only those
from keras_simclr import losses, views
registered = {"backbone": backbones.names(), "loss": list(losses.OBJECTIVES),
              "view_maker": list(views.VIEW_MAKERS)}
assert registered["backbone"][:4] == ("resnet10", "resnet18", "resnet34", "resnet50")
assert registered["loss"] == ["ntxent", "dcl"] and registered["view_maker"] == ["simclr", "multicrop"]
valid = ["pretrain", "--model_dir=x", "--backbone=resnet18", "--loss=ntxent",
         "--view_maker=simclr", "--small_views=0"]  # a failed parse keeps the bad value
for flag, names in registered.items():
    for name in names:
        flags.FLAGS([*valid, f"--{flag}={name}"])
        assert flags.FLAGS[flag].value == name
    try:
        flags.FLAGS([*valid, f"--{flag}=nope"])
        raise AssertionError(flag)
    except flags.IllegalFlagValueError as error:
        assert f"--{flag}=nope is not registered; choose one of" in str(error), error
        assert names[0] in str(error), error
try:
    flags.FLAGS([*valid, "--small_views=2"])
    raise AssertionError("--small_views without a multi-crop view maker")
except flags.IllegalFlagValueError as error:
    assert "--small_views needs a view maker that makes small views" in str(error), error
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_tensorflow_and_absl_logs_are_quiet_and_print_once():
    # Multi-worker runs printed INFO:tensorflow: collective lines, and TensorFlow's
    # warnings twice (TensorFlow's own stderr handler, then absl's with its prefix).
    code = """
import tensorflow as tf
from absl import logging
from apps import common

def main(argv):
    tf.get_logger().info("tensorflow info")
    tf.get_logger().warning("tensorflow warning")
    logging.info("absl info")
    common.say("a stage")

common.run(main)()
"""
    quiet = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert quiet.stdout == "a stage\n"
    assert quiet.stderr.count("tensorflow warning") == 1 and "info" not in quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", code, "-v", "0"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert "tensorflow info" in verbose.stderr and "absl info" in verbose.stderr


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_export_refuses_a_model_with_non_finite_weights(pretrained, tmp_path):
    _, model_dir, _ = pretrained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes(read_bytes(os.path.join(model_dir, "config.json")))
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    weight = model.encoder.weights[0]
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    model.save(str(broken / "model.keras"))
    result = run_app("export", f"--model_dir={broken}", f"--export_dir={tmp_path}/exported",
                     check=False)
    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the encoder has non-finite weights"), line
    assert sorted(os.listdir(tmp_path)) == ["broken"]


@pytest.mark.parametrize("name,args,written", [
    ("finetune", ["--label_fraction=0.25", "--epochs=2", "--batch_size=16"], "finetune_0.25"),
    ("linear_eval", ["--mode=full", "--epochs=2", "--batch_size=16"], "diverged.json"),
])  # names no other test writes in the shared run
def test_classifier_training_stops_on_a_non_finite_loss(pretrained, tmp_path, name, args,
                                                        written):
    _, model_dir, _ = pretrained
    output = [f"--output={model_dir}/diverged.json"] if name == "linear_eval" else []
    result = run_app(name, f"--model_dir={model_dir}", "--learning_rate=1e38", *args, *output,
                     check=False)
    assert result.returncode == 3, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "--learning_rate" in line, line
    assert not os.path.exists(os.path.join(model_dir, written))
