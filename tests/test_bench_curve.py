"""bench/curve.py: which checkpoints a learning curve keeps while a run rotates them."""
import os
import time

import pytest

from bench import curve


def test_marks_stop_before_the_budget():
    assert curve.marks(15, 60) == [15, 30, 45]
    assert curve.marks(20, 50) == [20, 40]
    assert curve.marks(0, 60) == []


def _write_checkpoint(directory, epoch, minutes_after, start):
    path = os.path.join(directory, f"ckpt-{epoch}.keras")
    with open(path, "w") as f:
        f.write(str(epoch))
    stamp = start + 60 * minutes_after
    os.utime(path, (stamp, stamp))
    return path


def test_keeper_keeps_the_first_checkpoint_past_each_mark(tmp_path):
    checkpoints, kept_dir = tmp_path / "ckpt", tmp_path / "kept"
    checkpoints.mkdir()
    start = time.time() - 3600
    keeper = curve.CheckpointKeeper(str(checkpoints), str(kept_dir), [10, 20, 30], start,
                                    poll_s=3600)
    with keeper:
        # epochs of 4 minutes; the run keeps its newest two, as apps.pretrain rotates them
        for epoch in range(1, 10):
            _write_checkpoint(str(checkpoints), epoch, 4 * epoch, start)
            stale = checkpoints / f"ckpt-{epoch - 2}.keras"
            keeper.poll()
            if stale.exists():
                stale.unlink()
    assert [(k["mark_minutes"], k["epoch"]) for k in keeper.kept] == [(10, 3), (20, 5), (30, 8)]
    assert sorted(os.listdir(kept_dir)) == ["ckpt-3.keras", "ckpt-5.keras", "ckpt-8.keras"]
    assert (kept_dir / "ckpt-5.keras").read_text() == "5"
    assert keeper.kept[0]["minutes"] == pytest.approx(12)


def test_one_long_epoch_passing_two_marks_is_kept_once(tmp_path):
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    start = time.time() - 3600
    keeper = curve.CheckpointKeeper(str(checkpoints), str(tmp_path / "kept"), [10, 20, 30],
                                    start, poll_s=3600)
    with keeper:
        _write_checkpoint(str(checkpoints), 1, 25, start)
    assert [(k["mark_minutes"], k["epoch"]) for k in keeper.kept] == [(10, 1)]
    assert keeper.pending == [30]


def test_keeper_thread_catches_checkpoints_of_a_running_job(tmp_path):
    checkpoints = tmp_path / "ckpt"
    start = time.time()
    with curve.CheckpointKeeper(str(checkpoints), str(tmp_path / "kept"), [0.0], start,
                                poll_s=0.01) as keeper:
        checkpoints.mkdir()  # the run creates its directory after the keeper starts
        _write_checkpoint(str(checkpoints), 1, 0.01, start)
        deadline = time.time() + 10
        while not keeper.kept and time.time() < deadline:
            time.sleep(0.01)
        assert keeper.kept, "the polling thread kept nothing"
    assert keeper.kept[0]["epoch"] == 1


def test_a_budget_is_the_apps_time_budget_and_its_summary_the_plan(tmp_path):
    """The script's own calibration run and step count gave way to apps.pretrain's budget."""
    import types

    from bench import accuracy

    args = accuracy.parse_args([f"--work_dir={tmp_path}", "--minutes=7.5"])
    assert accuracy.length_flags(args, None) == ["--time_budget=7.5m"]
    plan = {"steps": 300, "steps_per_epoch": 43}
    summary = {"epochs": 6.5, "time_budget": {"steps": 280, "plan": plan}}
    assert accuracy.trained(summary, None, 43) == {
        "total_steps": 280, "epochs": 6.5, "steps_per_epoch": 43, "budget_plan": plan}

    args = accuracy.parse_args([f"--work_dir={tmp_path}", "--total_steps=1050"])
    recipe = types.SimpleNamespace(warmup_epochs=10)
    fixed = accuracy.fixed_steps(args, recipe, full_steps=43)  # 25 epochs of 42 steps
    assert accuracy.length_flags(args, fixed) == [
        "--time_budget=", "--epochs=25", "--steps_per_epoch=42", f"--warmup_epochs={430 / 42!r}"]
    assert accuracy.trained({"epochs": 25}, fixed, 43)["total_steps"] == 1050


def test_a_second_curve_of_the_day_does_not_overwrite_the_first(monkeypatch, tmp_path):
    """Two runs of one preset on one date used to write one file: the plot lost a curve."""
    import json
    import types

    from bench import accuracy

    monkeypatch.setattr(accuracy.common, "BENCH_DIR", str(tmp_path))
    args = types.SimpleNamespace(curve_json=None, flagfile="apps/configs/long.cfg")

    def result(linear):
        return {"date": "2026-11-30", "cpu": "cpu", "cores": 2, "command": "c",
                "flagfile": "long.cfg", "pretrain_flags": [], "minutes": 120.0, "recipe": {},
                "random_linear_top1": None, "random_knn_top1": None, "pretrain_wall_s": 60.0,
                "plan": {"epochs": 1, "total_steps": 2}, "linear_top1": linear,
                "knn_top1": linear}

    paths = [accuracy.write_curve(args, result(linear), []) for linear in (0.1, 0.2, 0.3)]
    assert [os.path.basename(p) for p in paths] == [
        "long-2026-11-30.json", "long-2026-11-30-2.json", "long-2026-11-30-3.json"]
    written = []
    for path in paths:
        with open(path) as f:
            written.append(json.load(f)["points"][-1]["linear_top1"])
    assert written == [0.1, 0.2, 0.3]
