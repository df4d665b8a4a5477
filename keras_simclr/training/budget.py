"""Training for a wall-clock budget: the steps that fit, on a warm-up + cosine fitted to them.

People plan pretraining in hours of the machine they have, and how many steps an hour holds
depends on the host (one CPU preset took 16 minutes on one 2-core machine and 28 on another)
and on what else runs there (these machines lose a core for seconds at a time). So
`apps.pretrain --time_budget=30m` times its steps and fits the schedule to them:
`TimeBudget`, a callback, drives an `optimizers.FittedWarmupCosine`.

- The first step (graph tracing) is not timed; the next ones calibrate (2 steps, then up to
  10 or until 1% of the budget has passed) with the schedule's progress held at 0 (a
  warm-up starts from a rate of 0). Then the plan: the steps that the time left holds at
  the measured speed, the warm-up (the recipe's steps, at most half the plan, so that a
  slow host still decays the rate), the epochs and views/s; said in one line.
- After every step the end step is re-fitted to the time left at the speed of the last
  2 minutes (5% of shorter budgets), and the schedule to the end step: no jump in the
  learning rate, and no step changing it by more than a warm-up + cosine of that many
  steps does (or, where the steps left are too few even for a straight descent at that
  pace, than that descent does: `FittedWarmupCosine.refit`). After a slowdown the rest of
  the cosine is shorter and steeper; after a speed-up the steps already taken keep the
  pace of the shorter plan they were planned for. Training stops at the end step.
- The budget counts from `start`; the app passes its own start, so that reading the data
  and building the model count too. A resumed run (its schedule has an end step) keeps
  the end step its checkpoint planned: how much of an interrupted budget is left cannot
  be known.
"""
from __future__ import annotations

import collections
import math
import re
import time

import keras

_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?")


def parse_duration(text: str) -> float:
    """Seconds of a duration such as "30m", "8h", "1h30m" or "90s"; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise ValueError(f"a duration is hours, minutes and seconds such as 30m, 8h, 1h30m or "
                         f"90s, got {text!r}")
    hours, minutes, seconds = (float(value or 0) for value in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ValueError(f"a duration must be more than 0 s, got {text!r}")
    return total


def _duration_text(seconds: float) -> str:
    """"30 min", "8 h", "1 h 30 min", "45 s"."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs else ""]
    return " ".join(part for part in parts if part) or "0 s"


class TimeBudget(keras.callbacks.Callback):
    """Calibrate, plan and re-fit a `FittedWarmupCosine` to the time left; stop at its end.

    Args:
        schedule: the optimizer's `optimizers.FittedWarmupCosine`; with an end step
            already (a resumed run) the callback keeps it.
        budget_s: the wall-clock budget in seconds, counted from `start`.
        warmup_steps: warm-up steps wanted (the recipe's warm-up epochs); at most half
            the planned steps, so that a slow host still decays the rate.
        start: the clock's reading when the budget began (default: when training begins).
        steps_per_epoch: steps of an epoch, for the plan's epochs (default: Keras').
        views_per_step: views per step, for the plan's views/s.
        say: prints the plan's line; `on_plan` gets the plan (a dict) when it is made.
        progbar: a `keras.callbacks.ProgbarLogger` after this callback among the fit's,
            told the planned epochs for its "Epoch k/N" lines.
        clock: seconds, `time.perf_counter` by default (tests pass their own).
    """

    CALIBRATION_STEPS = (2, 10)  # timed steps: at least, and at most
    CALIBRATION_SHARE = 0.01  # of the budget, between the two
    WINDOW = (0.05, 120.0)  # speed measured over this share of the budget, at most seconds
    MAX_WARMUP_SHARE = 0.5

    def __init__(self, schedule, budget_s: float, warmup_steps: int = 0, *,
                 start: float | None = None, steps_per_epoch: int | None = None,
                 views_per_step: int | None = None, say=print, on_plan=None, progbar=None,
                 clock=time.perf_counter):
        super().__init__()
        self.schedule, self.budget_s, self.warmup_steps = schedule, budget_s, warmup_steps
        self.start, self.steps_per_epoch = start, steps_per_epoch
        self.views_per_step, self.say, self.on_plan = views_per_step, say, on_plan
        self.progbar, self.clock = progbar, clock
        self.resumed, self.plan = schedule.end_step > 0, schedule.plan
        self.largest_change = 0.0

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = self.clock()
        self.steps_per_epoch = self.steps_per_epoch or self.params.get("steps")
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.resumed = self.schedule.end_step > 0
        self.plan = self.schedule.plan
        self.times = collections.deque()  # (step, clock) after each step
        self.window_s = min(self.WINDOW[0] * self.budget_s, self.WINDOW[1])
        self._learning_rate = self.schedule.value_at(self.step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.progbar is not None:  # "Epoch k/N" of the plan; no N before it (fit's epochs
            # are only a bound), and a progress bar told of 1 epoch prints no "Epoch" line
            end = self.schedule.end_step
            self.progbar.epochs = math.ceil(end / self.steps_per_epoch) if end else 1

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now = self.clock()
        self.times.append((self.step, now))
        if self.resumed:
            end = self.schedule.end_step
        elif self.plan is None:
            end = self._calibrate(now)
        else:
            end = self._end_step(now)
        if end is None:
            return
        self.schedule.refit(self.step, end)
        rate = self.schedule.value_at(self.step)
        self.largest_change = max(self.largest_change, abs(rate - self._learning_rate))
        self._learning_rate = rate
        if self.step >= end or (not self.resumed and now - self.start >= self.budget_s):
            self.model.stop_training = True

    def _step_seconds(self, now: float) -> float:
        """Seconds per step over the window (the first, untimed step left out)."""
        while len(self.times) > 3 and now - self.times[1][1] >= self.window_s:
            self.times.popleft()
        (first_step, first), (last_step, last) = self.times[0], self.times[-1]
        return (last - first) / (last_step - first_step)

    def _end_step(self, now: float) -> int:
        left = self.budget_s - (now - self.start)
        return self.step + max(0, int(left / self._step_seconds(now)))

    def _calibrate(self, now: float) -> int | None:
        timed = len(self.times) - 1  # the first step traced the graph
        least, most = self.CALIBRATION_STEPS
        if timed < least or (timed < most and now - self.times[0][1]
                             < self.CALIBRATION_SHARE * self.budget_s):
            return None
        step_s, end = self._step_seconds(now), self._end_step(now)
        warmup = min(self.warmup_steps, self.MAX_WARMUP_SHARE * (end - self.step))
        self.schedule.refit(self.step, end, warmup / max(end - self.step, 1))
        self.plan = {"budget_s": self.budget_s, "steps": end,
                     "epochs": end / self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                     "warmup_steps": round(warmup), "step_s": step_s,
                     "views_per_s": self.views_per_step / step_s if self.views_per_step else None,
                     "calibration_steps": [self.times[0][0] + 1, self.step]}
        self.schedule.plan = self.plan
        self._announce()
        return end

    def _announce(self):
        plan = self.plan
        speed = f" ({plan['views_per_s']:,.0f} views/s)" if plan["views_per_s"] else ""
        self.say(f"time budget {_duration_text(plan['budget_s'])}: {plan['steps']:,} steps "
                 f"({plan['epochs']:.1f} epochs of {plan['steps_per_epoch']}) at "
                 f"{plan['step_s']:.3g} s per step{speed}, measured on steps "
                 f"{plan['calibration_steps'][0]}-{plan['calibration_steps'][1]}; warm-up "
                 f"{plan['warmup_steps']:,} steps, then the cosine, re-fitted to the speed "
                 f"as training goes")
        if self.on_plan is not None:
            self.on_plan(plan)

    def report(self, steps: int) -> dict:
        """What a run's summary records after `steps` steps in all: the plan, whether the
        run resumed one, the largest change of the learning rate from a step to the next
        (those of this process) and that of a warm-up + cosine of `steps` steps, and the
        progress reached (1: the schedule ended)."""
        return {"plan": self.plan, "steps": steps, "resumed": self.resumed,
                "largest_learning_rate_change": self.largest_change,
                "cosine_largest_change": self.schedule.largest_step_change(steps),
                "final_progress": self.schedule.progress_at(steps)}
