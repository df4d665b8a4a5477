"""apps.distill end to end on a tiny folder: a run stopped by SIGTERM and resumed, bad input.

The teacher is built in-process and saved as apps.finetune saves one (`classifier.keras` in
a directory beside the run's config.json), which is much faster than running two apps.
"""
import json
import os
import signal

import keras
import numpy as np
import pytest

import keras_simclr as ks
from keras_simclr.training.callbacks import latest_checkpoint
from keras_simclr.utils import storage
import _app_server as app_server
from test_apps import run_app, write_folder
from test_apps_resilience import wait_for


def _save_teacher(directory, classes=4, image_size=16, head_layers=0):
    """A tiny fine-tuned-style teacher: directory/run/{config.json, finetune_1/classifier.keras},
    reading h or, with head_layers, that layer of a 3-layer projection head."""
    keras.utils.set_random_seed(0)
    encoder = ks.resnet(18, stem="cifar", width_multiplier=0.125, input_shape=(None, None, 3))
    head = ks.ProjectionHead(3, output_dim=8) if head_layers else None
    teacher = ks.LinearClassifier(encoder, classes, fine_tune=True, head=head,
                                  head_layers=head_layers)
    teacher(np.zeros((1, image_size, image_size, 3), "float32"))
    teacher.classifier.kernel.assign(np.random.default_rng(0).normal(
        size=teacher.classifier.kernel.shape))
    run = os.path.join(directory, "run")
    storage.write_json(os.path.join(run, "config.json"), {"image_size": image_size})
    storage.save_model(teacher, os.path.join(run, "finetune_1", "classifier.keras"))
    return os.path.join(run, "finetune_1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    dataset = write_folder(str(base / "images"))  # 96 train images: 6 steps of 16
    return dataset, _save_teacher(str(base / "teacher")), base


def test_sigterm_then_resume_gives_a_classifier_the_apps_take(setup, tmp_path):
    dataset, teacher, _ = setup
    out = str(tmp_path / "student")
    args = [f"--teacher={teacher}", f"--model_dir={out}", f"--dataset={dataset}",
            "--epochs=2", "--batch_size=16", "--temperature=2"]
    process = app_server.start(["apps.distill", *args])
    wait_for(os.path.join(out, "checkpoints", "ckpt-1.keras"), process)
    process.send_signal(signal.SIGTERM)  # early in epoch 2
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("stopped: SIGTERM received")
    assert not os.path.exists(os.path.join(out, "classifier.keras"))

    rerun = run_app("distill", *args, "--json")
    assert "resuming from" in rerun.stdout
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert 0 <= result["top1"] <= result["top5"] <= 1 and 0 <= result["teacher_top1"] <= 1
    assert result["temperature"] == 2.0
    student = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    assert isinstance(student, ks.LinearClassifier) and student.fine_tune
    assert student(np.zeros((2, 16, 16, 3), "float32")).shape == (2, 4)
    final = keras.saving.load_model(os.path.join(out, "checkpoints", "ckpt-2.keras"))
    assert isinstance(final, ks.Distiller)
    assert int(final.optimizer.iterations) == 2 * 6  # no step lost or repeated


def test_kill_minus_nine_then_resume_repeats_no_step(setup, tmp_path):
    # with the student's own noise: batches of (teacher's view, student's view) resume too
    dataset, teacher, _ = setup
    out = str(tmp_path / "student")
    args = [f"--teacher={teacher}", f"--model_dir={out}", f"--dataset={dataset}",
            "--epochs=3", "--batch_size=16", "--student_color_jitter=0.5"]
    process = app_server.start(["apps.distill", *args])
    wait_for(os.path.join(out, "checkpoints", "ckpt-1.keras"), process)
    process.kill()  # no handler runs: the epoch checkpoints are what is left
    process.communicate(timeout=120)
    done = latest_checkpoint(os.path.join(out, "checkpoints"))[1]
    assert 1 <= done < 3 and not os.path.exists(os.path.join(out, "classifier.keras"))

    rerun = run_app("distill", *args)
    assert f"resuming from {out}/checkpoints/ckpt-{done}.keras" in rerun.stdout
    final = keras.saving.load_model(os.path.join(out, "checkpoints", "ckpt-3.keras"))
    assert int(final.optimizer.iterations) == 3 * 6  # no step lost or repeated
    assert os.path.exists(os.path.join(out, "classifier.keras"))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["student_color_jitter"] == 0.5


def _no_classifier_run(directory, image_size):
    """A pretraining-run directory whose SimCLR has no probe (no classifier)."""
    encoder = ks.resnet(18, stem="cifar", width_multiplier=0.125, input_shape=(None, None, 3))
    model = ks.SimCLR(encoder, ks.ProjectionHead(2, output_dim=8))
    model.build({key: (None, image_size, image_size, 3) for key in ("view_1", "view_2")})
    storage.write_json(os.path.join(directory, "config.json"), {"image_size": image_size})
    storage.save_model(model, os.path.join(directory, "model.keras"))
    return directory


@pytest.mark.parametrize("case, message", [
    ("no_classifier", "has no classifier"),
    ("classes", "the teacher has 3 classes"),
    ("image_size", "was trained at 8 px, the teacher at 16 px"),
    ("empty", "holds no readable images"),
    ("head_layer", "the teacher reads projection head layer 3; --student_from"),
])
def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path, case, message):
    dataset, teacher, _ = setup
    args = [f"--teacher={teacher}", f"--dataset={dataset}"]
    if case == "no_classifier":
        args[0] = f"--teacher={_no_classifier_run(str(tmp_path / 'run'), 16)}"
    elif case == "classes":
        args[0] = f"--teacher={_save_teacher(str(tmp_path / 't3'), classes=3)}"
    elif case == "image_size":
        args.append(f"--student_from={_no_classifier_run(str(tmp_path / 'run8'), 8)}")
    elif case == "head_layer":  # the run's head has 2 layers
        args[0] = f"--teacher={_save_teacher(str(tmp_path / 'th'), head_layers=3)}"
        args.append(f"--student_from={_no_classifier_run(str(tmp_path / 'run'), 16)}")
    else:
        os.makedirs(tmp_path / "empty" / "train")
        args[1] = f"--dataset=folder:{tmp_path / 'empty'}"
    out = tmp_path / "out"
    result = run_app("distill", *args, f"--model_dir={out}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_student_from_a_run_reads_the_teachers_head_layer_from_the_runs_weights(setup,
                                                                                  tmp_path):
    # Self-distillation: a teacher fine-tuned from head layer 1 (SimCLRv2) gets a student of
    # its architecture, the run's encoder and first head layer (not h, not new weights).
    dataset, _, _ = setup
    run = _no_classifier_run(str(tmp_path / "run"), 16)
    out = str(tmp_path / "student")
    run_app("distill", f"--teacher={_save_teacher(str(tmp_path / 't'), head_layers=1)}",
            f"--student_from={run}", f"--model_dir={out}", f"--dataset={dataset}",
            "--epochs=1", "--batch_size=16", "--learning_rate=1e-9")
    student = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    pretrained = keras.saving.load_model(os.path.join(run, "model.keras"))
    assert student.head_layers == 1
    for got, start in ((student.head.dense_layers[0], pretrained.head.dense_layers[0]),
                       (student.encoder, pretrained.encoder)):
        np.testing.assert_allclose(got.weights[0].numpy(), start.weights[0].numpy(), atol=1e-6)
