"""Learning curves: keep a running pretraining's checkpoints at chosen minutes.

`apps.pretrain` keeps only its newest few checkpoints, so a long run's early epochs are
gone by the time it ends. `CheckpointKeeper` watches the checkpoint directory from a
thread while the run goes on and hard-links (or copies) out the first checkpoint written
after each mark (every N minutes from the start of the process), so a curve of an 8-hour
run costs a few checkpoints of disk, not hundreds. bench/accuracy.py --curve_every
evaluates them after the run.
"""
from __future__ import annotations

import os
import re
import shutil
import threading

CHECKPOINT = re.compile(r"^ckpt-(\d+)\.keras$")


def marks(every_minutes: float, budget_minutes: float) -> list[float]:
    """Minutes at which a checkpoint is kept: every `every_minutes` before the budget ends."""
    if every_minutes <= 0:
        return []
    count = int(budget_minutes // every_minutes)
    points = [every_minutes * (i + 1) for i in range(count)]
    return [m for m in points if m < budget_minutes - 1e-9]


class CheckpointKeeper:
    """Keep `ckpt-EPOCH.keras` files of `checkpoint_dir` as they pass the minute marks.

    A checkpoint is kept for a mark when it is the first one whose file time is at least
    the mark after `start` (a `time.time()` value, the start of the pretraining process).
    Several marks passed by one checkpoint (epochs longer than the spacing) keep it once.

    Args:
        checkpoint_dir: the run's checkpoint directory (it may not exist yet).
        keep_dir: where the kept checkpoints go.
        minute_marks: increasing minutes after `start`.
        start: wall time the minutes count from.
        poll_s: how often the directory is listed; well below an epoch's time, so no
            checkpoint is rotated away unseen.
    """

    def __init__(self, checkpoint_dir: str, keep_dir: str, minute_marks: list[float],
                 start: float, poll_s: float = 2.0):
        self.checkpoint_dir = checkpoint_dir
        self.keep_dir = keep_dir
        self.pending = list(minute_marks)
        self.start = start
        self.poll_s = poll_s
        self.kept = []  # {"mark_minutes", "minutes", "epoch", "path"}
        self._seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CheckpointKeeper":
        os.makedirs(self.keep_dir, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the last checkpoints, written just before the process ended

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        """Look at the checkpoints written since the last call; keep those passing a mark."""
        try:
            names = os.listdir(self.checkpoint_dir)
        except FileNotFoundError:
            return
        found = []
        for name in names:
            match = CHECKPOINT.match(name)
            if match and name not in self._seen:
                path = os.path.join(self.checkpoint_dir, name)
                try:
                    found.append((int(match.group(1)), os.path.getmtime(path), path))
                except FileNotFoundError:  # rotated away between listing and stat
                    continue
        for epoch, mtime, path in sorted(found):
            self._seen.add(os.path.basename(path))
            minutes = (mtime - self.start) / 60
            passed = [m for m in self.pending if minutes >= m]
            if not passed:
                continue
            self.pending = [m for m in self.pending if m not in passed]
            target = os.path.join(self.keep_dir, os.path.basename(path))
            try:
                _link_or_copy(path, target)
            except FileNotFoundError:
                continue
            self.kept.append({"mark_minutes": passed[0], "minutes": minutes, "epoch": epoch,
                              "path": target})


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        shutil.copyfile(source, target)

