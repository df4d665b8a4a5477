"""The pretrain app under failure: kill -9, SIGTERM and a diverging run, each in a subprocess.

Split from tests/test_apps.py so that the two test workers (which take whole files) share
the app tests evenly.
"""
import json
import os
import re
import signal
import time

import keras

from keras_simclr.optimizers import FittedWarmupCosine
from keras_simclr.training import resilience
from keras_simclr.training.callbacks import checkpoint_position, latest_checkpoint
import _app_server as app_server
from test_apps import TINY, read_bytes, run_app, write_folder


def start_pretrain(dataset, model_dir, *args):
    return app_server.start(["apps.pretrain", f"--dataset={dataset}",
                             f"--model_dir={model_dir}", *args, *TINY])


def wait_for(path, process, seconds=240):
    deadline = time.time() + seconds
    while not os.path.exists(path) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert os.path.exists(path), process.communicate()[1][-3000:]


def wait_for_line(prefix, process, seconds=240):
    """The first line `process` prints that starts with `prefix`."""
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        lines = [line for line in process.printed().splitlines() if line.startswith(prefix)]
        if lines:
            return lines[0]
        time.sleep(0.01)
    raise AssertionError(f"no line {prefix!r}: " + process.communicate()[1][-3000:])


def kill_minus_nine_after(checkpoint, dataset, model_dir, *args):
    """Start pretraining, SIGKILL it once `checkpoint` is written; the latest checkpoint
    and the epochs it completed."""
    process = start_pretrain(dataset, model_dir, *args)
    wait_for(os.path.join(model_dir, "checkpoints", checkpoint), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return latest_checkpoint(os.path.join(model_dir, "checkpoints"))


def test_resume_after_kill_minus_nine_with_more_epochs_extends_the_schedule(tmp_path):
    dataset = write_folder(str(tmp_path / "images"), {"train": 64, "test": 16})
    model_dir = str(tmp_path / "run")
    _, done = kill_minus_nine_after("ckpt-1.keras", dataset, model_dir, "--epochs=3",
                                    "--warmup_epochs=0")
    assert 1 <= done < 3, "the kill should land after the first epoch and before the end"

    result = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                     "--epochs=5", "--warmup_epochs=0", "--json", *TINY)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["resumed_from_epoch"] == done and summary["epochs"] == 5
    # Epoch 5 of a 5-epoch cosine: mean rate over its steps is positive, not the 3-epoch
    # schedule's end (0) that the checkpoint's optimizer carried.
    assert summary["learning_rate"] > 0.01 * 16 / 256

    final = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert int(final.optimizer.iterations) == 5 * (64 // 16)  # no step lost or repeated


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_model(tmp_path):
    # `--learning_rate=1e9` trained on with "loss: nan", exited 0 and wrote model.keras and
    # checkpoints full of NaN over the good ones.
    dataset = write_folder(str(tmp_path / "images"), {"train": 64, "test": 16})
    model_dir = str(tmp_path / "run")
    common = [f"--dataset={dataset}", f"--model_dir={model_dir}", *TINY]
    run_app("pretrain", "--epochs=1", *common)
    written = {name: read_bytes(os.path.join(model_dir, name))
               for name in ("model.keras", "summary.json", "checkpoints/ckpt-1.keras")}

    diverged = run_app("pretrain", "--epochs=3", "--learning_rate=1e9", *common, check=False)
    assert diverged.returncode == 3, diverged.stderr[-3000:]
    [line] = diverged.stderr.strip().splitlines()
    assert line.startswith("error: ") and re.search(r"at step \d+ \(epoch [23]", line), line
    for hint in ("learning rate ", "--learning_rate", "--precision=float32", "--chunk_size"):
        assert hint in line, line
    assert os.listdir(os.path.join(model_dir, "checkpoints")) == ["ckpt-1.keras"]
    assert {name: read_bytes(os.path.join(model_dir, name)) for name in written} == written

    lower = run_app("pretrain", "--epochs=2", *common)
    assert f"resuming from {model_dir}/checkpoints/ckpt-1.keras (epoch 1 done)" in lower.stdout


def _files_outside_logs(directory):
    """{relative path: bytes} of every file under `directory` but its TensorBoard logs."""
    found = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not (root == directory and d == "logs")]
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = read_bytes(path)
    return found


def test_a_diverging_run_on_two_replicas_with_gradient_caching_writes_nothing(tmp_path):
    dataset = write_folder(str(tmp_path / "images"), {"train": 64, "test": 16})
    model_dir = str(tmp_path / "run")
    command = ["pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}", "--epochs=3",
               "--learning_rate=1e9", "--strategy=mirrored", "--cpu_replicas=2",
               "--chunk_size=8", *TINY, "--backbone=resnet10"]  # the guard, not the net
    diverged = run_app(*command, check=False)
    assert diverged.returncode == 3, diverged.stderr[-3000:]
    assert diverged.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "2 replica(s)" in diverged.stdout
    # Epoch 1 (4 steps) ends before the loss overflows; nothing of the diverged epoch is kept.
    written = _files_outside_logs(model_dir)
    assert set(written) == {"config.json", os.path.join("checkpoints", "ckpt-1.keras")}
    checkpoint = keras.saving.load_model(os.path.join(model_dir, "checkpoints", "ckpt-1.keras"))
    assert resilience.non_finite_variables(checkpoint) == []
    assert int(checkpoint.optimizer.iterations) == 64 // 16
    # Resumed from that checkpoint, the same run diverges again and leaves every byte as it was.
    again = run_app(*command, check=False)
    assert again.returncode == 3, again.stderr[-3000:]
    assert f"resuming from {model_dir}/checkpoints/ckpt-1.keras" in again.stdout
    assert _files_outside_logs(model_dir) == written


def test_sigterm_saves_the_current_step_and_the_rerun_resumes_there(tmp_path):
    # SIGTERM ended the run at once (exit 143) with only the last epoch's checkpoint.
    dataset = write_folder(str(tmp_path / "images"))  # 96 images: 6 steps per epoch
    model_dir = str(tmp_path / "run")
    process = start_pretrain(dataset, model_dir, "--epochs=3")
    wait_for(os.path.join(model_dir, "checkpoints", "ckpt-1.keras"), process)
    process.send_signal(signal.SIGTERM)  # early in epoch 2
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"stopped: SIGTERM received: saved step (\d+) \(epoch 2, step (\d) of 6\) "
                         rf"to {model_dir}/checkpoints/(ckpt-1-\d\.keras); rerun the same "
                         r"command to resume there", line)
    assert found, line
    step, batch, name = int(found[1]), int(found[2]), found[3]
    assert step == 6 + batch and name == f"ckpt-1-{batch}.keras" and 1 <= batch <= 5
    assert set(os.listdir(os.path.join(model_dir, "checkpoints"))) == {"ckpt-1.keras", name}
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))

    rerun = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                    "--epochs=3", *TINY)
    assert (f"resuming from {model_dir}/checkpoints/{name} (epoch 1 done, {batch} steps into "
            "the next)") in rerun.stdout
    final = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert int(final.optimizer.iterations) == 3 * 6  # no step lost or repeated


def test_kill_minus_nine_with_save_every_steps_resumes_inside_the_epoch(tmp_path):
    dataset = write_folder(str(tmp_path / "images"))  # 6 steps per epoch
    model_dir = str(tmp_path / "run")
    path, _ = kill_minus_nine_after("ckpt-0-4.keras", dataset, model_dir, "--epochs=3",
                                    "--save_every_steps=4")
    assert checkpoint_position(path) in [(0, 4), (1, 0), (1, 2)], path  # steps 4, 6, 8
    # The kill may land after a later save; those are removed so that the run resumes from
    # step 4, inside the first epoch, the case this test is about.
    checkpoints = os.path.join(model_dir, "checkpoints")
    for name in set(os.listdir(checkpoints)) - {"ckpt-0-4.keras"}:
        os.remove(os.path.join(checkpoints, name))
    path, _ = latest_checkpoint(checkpoints)
    assert checkpoint_position(path) == (0, 4)
    assert int(keras.saving.load_model(path).optimizer.iterations) == 4

    rerun = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                    "--epochs=3", "--save_every_steps=4", *TINY)
    assert f"resuming from {path} (epoch 0 done, 4 steps into the next)" in rerun.stdout
    final = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert int(final.optimizer.iterations) == 3 * 6


def test_a_time_budget_is_planned_recorded_and_kept_by_the_resumed_run(tmp_path):
    dataset = write_folder(str(tmp_path / "images"))  # 96 images: 6 steps per epoch
    model_dir = str(tmp_path / "run")
    process = start_pretrain(dataset, model_dir, "--time_budget=30s")
    line = wait_for_line("time budget ", process)
    process.send_signal(signal.SIGTERM)  # stop the run as soon as it has its plan
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    with open(os.path.join(model_dir, "config.json")) as f:
        plan = json.load(f)["time_budget_plan"]
    assert line.startswith(f"time budget 30 s: {plan['steps']:,} steps ") and plan["budget_s"] == 30
    checkpoint, _ = latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    schedule = FittedWarmupCosine.of(keras.saving.load_model(checkpoint).optimizer)
    epoch, batch = checkpoint_position(checkpoint)
    assert schedule.plan == plan and schedule.end_step > 6 * epoch + batch

    wrong = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                    "--epochs=3", *TINY, check=False)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
        f"error: {model_dir} holds a run started with --time_budget: resume it with "
        "--time_budget (or start a new --model_dir)")
    rerun = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={model_dir}",
                    "--time_budget=30s", "--json", *TINY)
    assert "time budget " not in rerun.stdout  # no new plan
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    final = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert int(final.optimizer.iterations) == schedule.end_step == summary["time_budget"]["steps"]
    assert summary["time_budget"]["plan"] == plan and summary["time_budget"]["resumed"]
    assert summary["epochs"] == schedule.end_step / 6
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["time_budget_plan"] == plan
