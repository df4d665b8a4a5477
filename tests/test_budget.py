"""Training for a time budget: the schedule re-fits without a jump and training ends on time."""
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_simclr.optimizers import FittedWarmupCosine, largest_step_change
from keras_simclr.training.budget import TimeBudget, parse_duration


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("8h", 28800), ("1h30m", 5400),
                                          ("90s", 90), ("0.5h", 1800), (" 2M ", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "", "m", "-5m", "0s", "30 minutes", "1m1h"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


class FakeClock(keras.callbacks.Callback):
    """A clock that each step advances by its seconds: 5 s for the first (tracing), then
    `fast`, and `slow` once half the budget has passed."""

    def __init__(self, budget_s, fast=1.0, slow=1.5):
        super().__init__()
        self.now, self.budget_s, self.fast, self.slow = 0.0, budget_s, fast, slow

    def __call__(self):
        return self.now

    def on_train_batch_end(self, batch, logs=None):
        first = int(self.model.optimizer.iterations) == 1
        self.now += 5.0 if first else (self.fast if self.now < self.budget_s / 2 else self.slow)


class SlowHalfway(keras.callbacks.Callback):
    """Sleeps `fast` seconds after each step, `slow` once half the budget has passed."""

    def __init__(self, start, budget_s, fast, slow):
        super().__init__()
        self.start, self.budget_s, self.fast, self.slow = start, budget_s, fast, slow

    def on_train_batch_end(self, batch, logs=None):
        half = time.perf_counter() - self.start >= self.budget_s / 2
        time.sleep(self.slow if half else self.fast)


class RateLog(keras.callbacks.Callback):
    """The learning rate of every step, as the optimizer computes it before the step."""

    def on_train_begin(self, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


def _fit_for(budget_s, warmup_steps, slow_down, clock=time.perf_counter):
    """A tiny model trained for a budget: its TimeBudget, the rates of its steps and the
    seconds from the budget's start to the end of `fit`."""
    schedule = FittedWarmupCosine(1.0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(schedule), "mse")
    batches = tf.data.Dataset.from_tensors((tf.ones((2, 4)), tf.zeros((2, 2)))).repeat()
    start, lines, log, progbar = clock(), [], RateLog(), keras.callbacks.ProgbarLogger()
    timer = TimeBudget(schedule, budget_s, warmup_steps, start=start, steps_per_epoch=50,
                       views_per_step=4, say=lines.append, progbar=progbar, clock=clock)
    model.fit(batches, epochs=10**6, steps_per_epoch=50, verbose=0, shuffle=False,
              callbacks=[slow_down, log, timer, progbar])
    assert progbar.epochs == -(-timer.schedule.end_step // 50)  # "Epoch k/N" of the plan
    end = clock() - start
    assert len(lines) == 1 and lines[0].startswith("time budget "), lines
    return timer, np.array(log.rates), end


def test_a_slowdown_halfway_refits_the_schedule_without_a_jump():
    clock = FakeClock(300.0)
    timer, rates, end = _fit_for(300.0, 120, clock, clock)
    report = timer.report(len(rates))
    # calibrated on steps 2-4 (1% of the budget), planned for the 292 s left at 1 s a step
    assert report["plan"]["steps"] == 296 and report["plan"]["warmup_steps"] == 120
    assert report["plan"]["calibration_steps"] == [2, 4] and report["plan"]["views_per_s"] == 4
    assert timer.step == len(rates) == 246  # 145 s at 1 s a step, then 150 s at 1.5
    assert abs(end - 300.0) <= 0.03 * 300.0
    assert report["final_progress"] == 1.0 and rates[-1] < 0.002
    # The rest of the cosine is shorter, hence steeper, but no step changes the rate more
    # than a warm-up + cosine of as many steps would at its steepest.
    cosine = largest_step_change(246, 120 / 292, 1.0)
    assert report["cosine_largest_change"] == pytest.approx(cosine)
    assert np.max(np.abs(np.diff(rates))) <= cosine * (1 + 1e-5)
    assert report["largest_learning_rate_change"] <= cosine * (1 + 1e-5)


def test_training_ends_within_3_percent_of_a_budget_on_the_wall_clock():
    # Steps of 40 ms, 60 ms after half the budget: mostly sleep, so that the noise of 2
    # shared CPU cores moves them little; over 10 s the last step is under 1% of the budget.
    # (How the schedule re-fits is the test above's, on a clock without noise: here the
    # tracing and calibration steps may be slowed by other processes, the plan too short.)
    budget_s = 10.0
    timer, rates, end = _fit_for(budget_s, 40, SlowHalfway(time.perf_counter(), budget_s,
                                                          0.04, 0.06))
    assert abs(end - budget_s) <= 0.03 * budget_s, end
    assert timer.report(len(rates))["final_progress"] == 1.0 and rates[-1] < 0.01
