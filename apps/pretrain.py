"""Contrastive pretraining: `python -m apps.pretrain --model_dir=runs/NAME [--flagfile=...]`.

Writes under --model_dir: `checkpoints/ckpt-EPOCH.keras` every epoch (the last few kept),
TensorBoard logs in `logs/`, the final `model.keras`, `config.json` (the flags) and
`summary.json` (loss, contrastive and probe accuracy, views/s, wall time). Rerun with the
same --model_dir to resume from the last checkpoint (weights, optimizer state and step).
The learning-rate schedule always follows the flags, so rerunning with a larger --epochs
extends the warm-up + cosine decay to the new length instead of training on at rate 0.
`--time_budget=30m` (or 8h, 1h30m, ...; not with --epochs) trains for that wall-clock time
from the app's start instead: after a few steps it plans the steps that fit at the measured
speed, says the plan in one line and records it in config.json and summary.json, re-fits
the steps and the warm-up + cosine to the speed as it goes (`training.budget.TimeBudget`),
and stops at the end of the budget (the checkpoint there is `ckpt-EPOCH-STEP.keras`). A
resumed budget run keeps the plan of its checkpoint.
SIGTERM or SIGINT saves a checkpoint at the current step (`ckpt-EPOCH-STEP.keras`) and exits
with status 75; the rerun resumes at that step, on the batches an uninterrupted run would
see (each pass over the data is shuffled by --seed and its index). A NaN or infinite loss
stops the run with status 3 before anything of it is saved.
Several machines (`--cluster`, auto-detected from `TF_CONFIG` or an `srun` step of several
tasks): every worker runs this app with the same flags; a signal to any one stops all after
the same step, each exits 75 and the rerun of the same launch resumes there. A worker that
dies stops the others with one line naming it and status 69. A relaunch may have another
number of workers: the global batch stays --batch_size (the data order changes; one line
says so).
Defaults are the quick-start preset (`apps/configs/quickstart.cfg`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

from absl import flags

from apps import common, recipe_flags
import keras  # noqa: E402  (after apps.common, which sets the runtime flags first)
import tensorflow as tf  # noqa: E402

from keras_simclr import build_simclr, data, optimizers
from keras_simclr.optimizers import FittedWarmupCosine
from keras_simclr.training import budget, cluster, distribute, precision, resilience
from keras_simclr.utils import storage
from keras_simclr.training.callbacks import (EpochCheckpoint, Throughput,
                                             checkpoint_position, latest_checkpoint)

FLAGS = flags.FLAGS
common.define_data_flags(("train_split",))
common.define_model_dir_flag()
recipe_flags.define_recipe_flags()
flags.DEFINE_integer("epochs", 15, "Training epochs.")
flags.DEFINE_string("time_budget", None, "Train for this wall-clock time instead of --epochs "
                    "(e.g. 30m, 8h, 1h30m): the steps that fit on this host, measured as it "
                    "trains, with the warm-up + cosine fitted to them.")
common.duration("time_budget")
flags.DEFINE_enum("strategy", "auto", distribute.STRATEGIES, "tf.distribute strategy.")
common.define_cluster_flags()
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (mirrored on CPU).")
flags.DEFINE_boolean("global_bn", None, "Synchronize BN across replicas (default: on with >1).")
flags.DEFINE_string("cache", "auto", "Cache decoded images in memory: true, false or auto.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in model_dir/checkpoints.")
common.define_save_every_steps_flag()
flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (default: one pass).")
flags.DEFINE_integer("verbose", None, "Keras progress output: 0 silent, 1 bar, 2 one line per "
                     "epoch (default: 1 on a terminal, 2 when stdout is a file or pipe).")
common.define_json_flag()
for _name in ("epochs", "keep_checkpoints", "steps_per_epoch"):
    common.positive(_name)
# fit's epochs before a time budget has its plan: TimeBudget stops training long before
_UNPLANNED_EPOCHS = 10**6


def build_model(info, global_bn, augment_in_model):
    """An uncompiled SimCLR for the flags (call inside strategy.scope())."""
    return build_simclr(
        backbone=FLAGS.backbone, **recipe_flags.encoder_arguments(FLAGS),
        head_depth=FLAGS.head_depth, proj_dim=FLAGS.proj_dim,
        loss=recipe_flags.objective(FLAGS), synchronized_bn=global_bn,
        chunk_size=FLAGS.chunk_size, augmenter=make_augmenter() if augment_in_model else None,
        probe_classes=info.num_classes if FLAGS.probe and info.num_classes > 1 else None,
    )


def make_augmenter():
    """The view maker of --view_maker (default: SimCLR's, multi-crop with --small_views)."""
    return recipe_flags.view_maker(FLAGS)


def make_callbacks(model_dir: str, plan: Plan, views_per_image: int, schedule,
                   started: float) -> list:
    """[Throughput, EpochCheckpoint, TensorBoard] of a run in `model_dir`, and with
    --time_budget a `budget.TimeBudget` and the progress bar it keeps to the plan.

    Args:
        model_dir: --model_dir (checkpoints/ and logs/ go under it).
        plan: the run's `Plan`.
        views_per_image: views the encoder sees of each image, all of which Throughput
            counts (the view maker's `num_views`: 2 full + --small_views with multi-crop).
        schedule: the optimizer's `FittedWarmupCosine` (None without --time_budget).
        started: `time.perf_counter()` when the app started: the budget counts from there.

    Returns:
        The callbacks, the `Throughput` first.
    """
    callbacks = [
        Throughput(FLAGS.batch_size, views_per_image=views_per_image),
        EpochCheckpoint(os.path.join(model_dir, common.CHECKPOINT_DIR),
                        keep=FLAGS.keep_checkpoints, strategy=plan.strategy,
                        steps_per_epoch=plan.steps_per_epoch),
        keras.callbacks.TensorBoard(
            distribute.write_path(os.path.join(model_dir, "logs"), plan.strategy),
            update_freq="epoch"),
    ]
    if schedule is not None:
        progbar = keras.callbacks.ProgbarLogger()
        callbacks += [budget.TimeBudget(
            schedule, plan.budget_s, round(FLAGS.warmup_epochs * plan.steps_per_epoch),
            start=started, steps_per_epoch=plan.steps_per_epoch,
            views_per_step=FLAGS.batch_size * views_per_image, say=common.say,
            on_plan=lambda budget_plan: write_config(plan, budget_plan), progbar=progbar),
            progbar]
    return callbacks


def write_config(plan: Plan, budget_plan: dict | None) -> None:
    """Write config.json (the chief): the flags, what they resolved to and, with
    --time_budget, the plan (rewritten when it is made; a resumed run keeps its own)."""
    if distribute.is_chief(plan.strategy):
        config = run_config(plan)
        if budget_plan:
            config["time_budget_plan"] = budget_plan
        common.write_json(os.path.join(FLAGS.model_dir, common.CONFIG_FILE), config)


def train_dataset(dataset: str, seed: int, augment_in_model: bool, augmenter,
                  input_context=None, start_batch: int = 0):
    """The pretraining batches for the flags: views made here, or for the model's augmenter.

    With views made in the model, the pipeline still crops images larger than the views
    from their originals (`views_in_model`), with the same augmentation flags.

    Args:
        dataset: the --dataset value resolved (`common.dataset_name`).
        seed: the data seed.
        augment_in_model: whether the model's augmenter makes the views.
        augmenter: the pipeline's view maker (`make_augmenter`; with views made in the
            model, a copy of the model's that only crops).
        input_context: this worker's `tf.distribute.InputContext` (None on one machine).
        start_batch: the global step the batches start at (a resumed run's).

    Returns:
        The endless `data.pretrain_dataset` from `start_batch` on.
    """
    return data.pretrain_dataset(
        dataset, FLAGS.train_split, image_size=FLAGS.image_size,
        global_batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, cache=_cache_flag(),
        seed=seed, strict=FLAGS.strict, augmenter=augmenter,
        views_in_model=augment_in_model, original_cap=FLAGS.original_cap or None,
        input_context=input_context, start_batch=start_batch)


def _cache_flag():
    value = FLAGS.cache.lower()
    if value not in ("auto", "true", "false"):
        raise common.AppError(f"--cache must be true, false or auto, got {FLAGS.cache}")
    return "auto" if value == "auto" else value == "true"


@dataclasses.dataclass
class Plan:
    """What a run trains on, where, and how: resolved from the flags by `plan_run`."""

    strategy: object
    global_bn: bool
    dataset: str
    info: data.DatasetInfo
    steps_per_epoch: int
    augment_in_model: bool
    dtype_policy: str
    budget_s: float | None  # --time_budget in seconds (None: train --epochs)


def plan_run() -> Plan:
    """The strategy, data and step count of the flags; clear errors for impossible ones."""
    budget_s = budget.parse_duration(FLAGS.time_budget) if FLAGS.time_budget else None
    if budget_s and FLAGS["epochs"].present:
        raise common.AppError("--epochs and --time_budget exclude each other: train for a "
                              "number of epochs or for a time")
    resolver = cluster.resolve(FLAGS.cluster, FLAGS.cluster_port, FLAGS.tasks_per_node)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas,
                                        cluster_resolver=resolver)
    if budget_s and distribute.is_multi_worker(strategy):
        raise common.AppError("--time_budget trains on one machine: the workers of a cluster "
                              "would each plan their own number of steps; use --epochs")
    distribute.per_replica_batch_size(FLAGS.batch_size, strategy)  # divisible, or a clear error
    dataset = common.dataset_name()
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    num_examples = info.num_examples(FLAGS.train_split)
    steps_per_epoch = num_examples // FLAGS.batch_size
    if steps_per_epoch == 0:
        raise common.AppError(f"--batch_size={FLAGS.batch_size} is larger than the "
                              f"{num_examples} images of {dataset}:{FLAGS.train_split}")
    if FLAGS.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, FLAGS.steps_per_epoch)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    augment_in_model = FLAGS.augment_in == "model" or (FLAGS.augment_in == "auto" and has_gpu)
    return Plan(strategy, distribute.resolve_global_bn(FLAGS.global_bn, strategy), dataset,
                info, steps_per_epoch, augment_in_model,
                precision.set_precision(FLAGS.precision, has_gpu=has_gpu), budget_s)


def announce(plan: Plan) -> None:
    """The two console lines on what the run does."""
    widths = ",".join(f"{w:g}" for w in recipe_flags.stage_widths(FLAGS)
                      or (FLAGS.width_multiplier,))
    common.say(f"pretraining {FLAGS.backbone} (width {widths}, {FLAGS.stem} "
               f"stem) on {plan.dataset}:{FLAGS.train_split}, "
               f"{plan.info.num_examples(FLAGS.train_split)} images; "
               f"{FLAGS.image_size} px views made in the "
               f"{'model' if plan.augment_in_model else 'input pipeline'}")
    length = (f"for {FLAGS.time_budget} in epochs of" if plan.budget_s
              else f"{FLAGS.epochs} epoch(s) x")
    common.say(f"{distribute.describe(plan.strategy)}; {length} {plan.steps_per_epoch} steps "
               f"of batch {FLAGS.batch_size}; writing to {FLAGS.model_dir}")


def _defined_by_absl(name: str) -> bool:
    """absl's own flags (logging, --help and its kin, --only_check_flags): not the recipe."""
    return (FLAGS.find_module_defining_flag(name) or "").startswith("absl.")


def run_config(plan: Plan) -> dict:
    """What config.json records: the flags of this app and what they resolved to."""
    config = {name: FLAGS[name].value for name in FLAGS
              if not _defined_by_absl(name) and name not in ("verbose", "json")}
    config.update(dataset=plan.dataset, replicas=plan.strategy.num_replicas_in_sync,
                  workers=distribute.num_workers(plan.strategy),
                  global_bn=plan.global_bn, dtype_policy=plan.dtype_policy)
    return config


def make_schedule(plan: Plan):
    """The flags' learning-rate schedule: warm-up + cosine over --epochs, or one that
    `budget.TimeBudget` fits to --time_budget while training."""
    if plan.budget_s:
        return FittedWarmupCosine(
            optimizers.scaled_learning_rate(FLAGS.learning_rate, FLAGS.batch_size,
                                            FLAGS.lr_scaling),
            FLAGS.final_lr_fraction, warmup_fraction=1.0 if FLAGS.warmup_epochs else 0.0)
    return optimizers.warmup_cosine_for(
        FLAGS.learning_rate, FLAGS.batch_size, FLAGS.lr_scaling, FLAGS.epochs,
        plan.steps_per_epoch, min(FLAGS.warmup_epochs, FLAGS.epochs), FLAGS.final_lr_fraction)


def resume_schedule(plan: Plan, model) -> None:
    """A resumed run's schedule: the flags' for --epochs (a larger --epochs extends the
    cosine), the checkpoint's own for --time_budget (the run keeps its plan)."""
    planned = FittedWarmupCosine.of(model.optimizer) is not None
    if planned != bool(plan.budget_s):
        started = "--time_budget" if planned else "--epochs"
        raise common.AppError(f"{FLAGS.model_dir} holds a run started with {started}: "
                              f"resume it with {started} (or start a new --model_dir)")
    if not plan.budget_s:
        model.optimizer.learning_rate = make_schedule(plan)


def load_or_build(plan: Plan, checkpoint: str | None, done_epochs: int, done_batches: int):
    """The checkpoint's model with its run's schedule, or a new compiled one (in scope)."""
    with plan.strategy.scope():
        if checkpoint:
            common.say(f"resuming from {checkpoint} (epoch {done_epochs} done"
                       + (f", {done_batches} steps into the next)" if done_batches else ")"))
            model = common.load_model_file(checkpoint)
            resume_schedule(plan, model)
            if distribute.set_global_bn(model, plan.global_bn):
                common.say(f"BatchNormalization is {'' if plan.global_bn else 'not '}"
                           f"synchronized across the {plan.strategy.num_replicas_in_sync} "
                           "replica(s) from here on")
            return model
        model = build_model(plan.info, plan.global_bn, plan.augment_in_model)
        model.compile(optimizer=optimizers.build_optimizer(
            FLAGS.optimizer, learning_rate=make_schedule(plan), weight_decay=FLAGS.weight_decay,
            momentum=FLAGS.momentum))
        return model


def train(model, plan: Plan, callbacks: list, augmenter, done_epochs: int,
          done_batches: int) -> dict:
    """`fit` from where the checkpoint left off to --epochs or the budget's end step; the
    history ({} when there is nothing left to train)."""
    schedule = FittedWarmupCosine.of(model.optimizer)
    if schedule is None:
        epochs, left = FLAGS.epochs, done_epochs < FLAGS.epochs
        done = f"all {FLAGS.epochs} epochs already done"
    else:  # TimeBudget stops training at the end step it plans
        epochs = math.ceil(schedule.end_step / plan.steps_per_epoch) or _UNPLANNED_EPOCHS
        step = done_epochs * plan.steps_per_epoch + done_batches
        left = not schedule.end_step or step < schedule.end_step
        done = f"all {schedule.end_step} steps of the time budget's plan already done"
    if not left:
        common.say(done)
        return {}
    return resilience.fit_from(
        model, lambda start: distribute.training_input(
            plan.strategy, lambda context: train_dataset(
                plan.dataset, FLAGS.seed, plan.augment_in_model, augmenter, context, start)),
        epoch=done_epochs, batch=done_batches, epochs=epochs,
        steps_per_epoch=plan.steps_per_epoch, verbose=progress_verbosity(), shuffle=False,
        callbacks=common.resilient(callbacks, plan.steps_per_epoch, resilience.PRETRAIN_HINT))


def summarise(plan: Plan, model, history: dict, callbacks: list, wall_time_s: float) -> dict:
    """What summary.json records: the last epoch's metrics, the run's length and speed, and
    with --time_budget the plan and how it ended (`budget.TimeBudget.report`)."""
    summary = {key: float(values[-1]) for key, values in history.items()}
    summary.update(epochs=FLAGS.epochs, replicas=plan.strategy.num_replicas_in_sync,
                   views_per_s=callbacks[0].median_views_per_s(), wall_time_s=wall_time_s)
    timer = next((c for c in callbacks if isinstance(c, budget.TimeBudget)), None)
    if timer is not None:
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        summary.update(epochs=steps / plan.steps_per_epoch,
                       time_budget={"budget_s": plan.budget_s, **timer.report(steps)})
    return summary


def main(argv):
    del argv
    started = time.perf_counter()
    plan = plan_run()
    announce(plan)
    model_dir, chief = FLAGS.model_dir, distribute.is_chief(plan.strategy)
    previous = common.run_config(model_dir).get("workers") if chief else None
    # the newest readable checkpoint, the same on every worker (or a clear error)
    checkpoint, done_epochs = latest_checkpoint(
        os.path.join(model_dir, common.CHECKPOINT_DIR), plan.strategy)
    done_batches = checkpoint_position(checkpoint)[1]
    if chief and checkpoint:
        note_changed_workers(previous, distribute.num_workers(plan.strategy))
    keras.utils.set_random_seed(FLAGS.seed)  # the data order depends on it, resumed or not
    augmenter = make_augmenter()
    model = load_or_build(plan, checkpoint, done_epochs, done_batches)
    schedule = FittedWarmupCosine.of(model.optimizer)
    write_config(plan, schedule and schedule.plan)
    callbacks = make_callbacks(model_dir, plan, augmenter.num_views, schedule, started)
    history = train(model, plan, callbacks, augmenter, done_epochs, done_batches)
    summary = summarise(plan, model, history, callbacks, time.perf_counter() - started)
    summary["resumed_from_epoch"] = done_epochs
    if chief:
        storage.save_model(model, os.path.join(model_dir, common.MODEL_FILE))
        common.write_json(os.path.join(model_dir, "summary.json"), summary)
    common.say(summary_line(summary, os.path.join(model_dir, common.MODEL_FILE)))
    common.print_json(summary)


def note_changed_workers(before: int | None, now: int) -> None:
    """One line when a resumed run reads the data on another number of workers than the
    run before it (config.json's `workers`; None for runs that did not record it)."""
    if before not in (None, now):
        common.say(f"the checkpoint's run read the data on {before} worker(s), this one on "
                   f"{now}: the global batch stays {FLAGS.batch_size}, but the images in each "
                   "batch from here on differ from an uninterrupted run's (each worker "
                   "shuffles its own shard)")


def progress_verbosity() -> int:
    """--verbose, or Keras' progress bar on a terminal and one line per epoch elsewhere: the
    bar redraws its line with carriage returns and colour codes, noise in a log file."""
    if FLAGS.verbose is not None:
        return FLAGS.verbose
    return 1 if sys.stdout.isatty() else 2


def summary_line(summary: dict, model_path: str) -> str:
    """One line on a finished run: its time, speed, final loss and accuracies, the model.

    Args:
        summary: what `main` writes to summary.json.
        model_path: where the final model is.

    Returns:
        e.g. "done in 3 min 38 s (1,812 views/s), loss 4.512, contrastive accuracy 61.2%,
        probe accuracy 40.3%; model in runs/quickstart/model.keras".
    """
    minutes, seconds = divmod(round(summary["wall_time_s"]), 60)
    parts = [f"done in {minutes} min {seconds} s" if minutes else f"done in {seconds} s"]
    if summary.get("views_per_s"):
        parts[0] += f" ({summary['views_per_s']:,.0f} views/s)"
    if "time_budget" in summary:
        timed = summary["time_budget"]
        parts.append(f"{timed['steps']:,} steps ({summary['epochs']:.1f} epochs) " + (
            "as its first run planned" if timed["resumed"] else
            f"in {100 * summary['wall_time_s'] / timed['budget_s']:.1f}% of the time budget"))
    if "loss" in summary:
        parts.append(f"loss {summary['loss']:.3f}")
    for key, name in (("contrastive_acc", "contrastive accuracy"), ("probe_acc", "probe accuracy")):
        if key in summary:
            parts.append(f"{name} {100 * summary[key]:.1f}%")
    return ", ".join(parts) + f"; model in {model_path}"


run = common.run(main)

if __name__ == "__main__":
    run()
