"""Contrastive pretraining: `python -m apps.pretrain --model_dir=runs/NAME [--flagfile=...]`.

Writes under --model_dir: `checkpoints/ckpt-EPOCH.keras` every epoch (the last few kept),
TensorBoard logs in `logs/`, the final `model.keras`, `config.json` (the flags) and
`summary.json` (loss, contrastive and probe accuracy, views/s, wall time). Rerun with the
same --model_dir to resume from the last checkpoint (weights, optimizer state and step).
The learning-rate schedule always follows the flags, so rerunning with a larger --epochs
extends the warm-up + cosine decay to the new length instead of training on at rate 0.
SIGTERM or SIGINT saves a checkpoint at the current step (`ckpt-EPOCH-STEP.keras`) and exits
with status 75; the rerun resumes at that step, on the batches an uninterrupted run would
see (each pass over the data is shuffled by --seed and its index). A NaN or infinite loss
stops the run with status 3 before anything of it is saved.
Defaults are the quick-start preset (`apps/configs/quickstart.cfg`).
"""
import os
import sys
import time

from absl import flags

from apps import common
from keras_simclr import backbones, distribute, losses, optimizers, precision, resilience
from keras_simclr.data import originals

FLAGS = flags.FLAGS
_PREDEFINED = set(FLAGS)  # absl's own flags, not recorded in config.json
common.define_data_flags(("train_split",))
common.define_model_dir_flag()
flags.DEFINE_integer("image_size", 32, "Side of the square views.")
flags.DEFINE_enum("backbone", "resnet18", backbones.BACKBONES, "Encoder.")
flags.DEFINE_float("width_multiplier", 0.5, "Channel width multiplier of the encoder.")
flags.DEFINE_list("stage_widths", None,
                  "Four width multipliers, one per ResNet stage, in place of --width_multiplier "
                  "for the stages (the stem keeps it), e.g. 0.5,0.5,0.5,2: a wide last stage.")
flags.DEFINE_enum("stem", "imagenet", backbones.STEMS,
                  "ResNet stem: imagenet (7x7/2 + max-pool), cifar (3x3/1), stride2 (3x3/2).")
flags.DEFINE_integer("head_depth", 3, "Layers of the projection head (3: SimCLRv2, 2: v1).")
flags.DEFINE_integer("proj_dim", 128, "Output size of the projection head.")
flags.DEFINE_integer("batch_size", 256, "Global batch size (images; twice as many views).")
flags.DEFINE_integer("epochs", 15, "Training epochs.")
flags.DEFINE_float("temperature", 0.2, "NT-Xent temperature.")
flags.DEFINE_enum("loss", "ntxent", list(losses.OBJECTIVES),
                  "Contrastive objective: ntxent (SimCLR) or dcl (decoupled, Yeh et al. 2022).")
flags.DEFINE_float("loss_scale", 1.0, "Loss = scale x mean over anchors (2: the official code).")
flags.DEFINE_integer("small_views", 0, "Multi-crop: small views per image besides the two full.")
flags.DEFINE_integer("small_view_size", 16, "Side of the multi-crop small views.")
flags.DEFINE_integer("chunk_size", None, "Gradient caching: views per encoder pass (exact).")
flags.DEFINE_enum("precision", "float32", precision.PRECISIONS,
                  "Compute precision (auto: mixed_bfloat16 on CPUs with AMX-BF16, else float32).")
flags.DEFINE_enum("optimizer", "lars", list(optimizers.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 1.0, "Base learning rate, scaled by --lr_scaling.")
flags.DEFINE_enum("lr_scaling", "linear", ["linear", "sqrt"],
                  "linear: base * batch / 256; sqrt: base * sqrt(batch).")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up epochs before the cosine decay.")
flags.DEFINE_float("final_lr_fraction", 0.0,
                   "Learning rate at the end of the cosine, as a fraction of its peak "
                   "(0: the paper's decay to zero).")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (BN and biases excluded).")
flags.DEFINE_float("momentum", 0.9, "Momentum of LARS and SGD.")
common.define_augment_flags()
flags.DEFINE_float("original_cap", originals.DEFAULT_CAP,
                   "Images larger than the views are cropped from their originals, cached "
                   "with the shorter side at most this many times --image_size (0: no cap).")
flags.DEFINE_enum("augment_in", "auto", ["auto", "model", "data"],
                  "Where views are made: in the model's train_step, in the tf.data pipeline, or "
                  "auto (data on CPU, where it overlaps with training; model on GPUs).")
flags.DEFINE_boolean("probe", True, "Train an online linear probe on labelled batches.")
flags.DEFINE_enum("strategy", "auto", distribute.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (mirrored on CPU).")
flags.DEFINE_boolean("global_bn", None, "Synchronize BN across replicas (default: on with >1).")
flags.DEFINE_string("cache", "auto", "Cache decoded images in memory: true, false or auto.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in model_dir/checkpoints.")
common.define_save_every_steps_flag()
flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (default: one pass).")
flags.DEFINE_integer("verbose", None, "Keras progress output: 0 silent, 1 bar, 2 one line per "
                     "epoch (default: 1 on a terminal, 2 when stdout is a file or pipe).")
common.define_json_flag()
for _name in ("image_size", "batch_size", "epochs", "temperature", "head_depth", "proj_dim",
              "width_multiplier", "keep_checkpoints", "steps_per_epoch", "loss_scale",
              "small_view_size", "chunk_size"):
    common.positive(_name)
flags.register_validator("small_views", lambda v: v >= 0, message="--small_views must be >= 0")
flags.register_validator(
    "stage_widths",
    lambda v: v is None or (len(v) == 4 and all(common.is_positive_number(w) for w in v)),
    message="--stage_widths must be four positive numbers, e.g. 0.5,0.5,0.5,2")
flags.register_validator("final_lr_fraction", lambda v: 0 <= v <= 1,
                         message="--final_lr_fraction must be in [0, 1]")
flags.register_validator("original_cap", lambda v: v == 0 or v >= 1,
                         message="--original_cap must be 0 (no cap) or at least 1")


def stage_widths():
    """--stage_widths as floats, or None."""
    return tuple(float(w) for w in FLAGS.stage_widths) if FLAGS.stage_widths else None


def build_model(info, global_bn, augment_in_model):
    """An uncompiled SimCLR for the flags (call inside strategy.scope())."""
    from keras_simclr import build_simclr

    return build_simclr(
        backbone=FLAGS.backbone, stem=FLAGS.stem, width_multiplier=FLAGS.width_multiplier,
        stage_widths=stage_widths(), head_depth=FLAGS.head_depth, proj_dim=FLAGS.proj_dim,
        loss=losses.get(FLAGS.loss, temperature=FLAGS.temperature, scale=FLAGS.loss_scale),
        synchronized_bn=global_bn, chunk_size=FLAGS.chunk_size,
        augmenter=make_augmenter() if augment_in_model else None,
        probe_classes=info.num_classes if FLAGS.probe and info.num_classes > 1 else None,
    )


def make_augmenter():
    """The view maker: SimCLRAugment, wrapped in MultiCropAugment with --small_views."""
    from keras_simclr import MultiCropAugment, SimCLRAugment

    full = SimCLRAugment(FLAGS.image_size, **common.augment_flags())
    if not FLAGS.small_views:
        return full
    return MultiCropAugment(full, small_views=FLAGS.small_views,
                            small_view_size=FLAGS.small_view_size)


def make_callbacks(model_dir: str, strategy) -> list:
    """[Throughput, EpochCheckpoint, TensorBoard] of a run in `model_dir`.

    Throughput counts every view the model encodes: 2 full + --small_views per image.

    Args:
        model_dir: --model_dir (checkpoints/ and logs/ go under it).
        strategy: the run's tf.distribute strategy.

    Returns:
        The callbacks, the `Throughput` first.
    """
    import keras

    from keras_simclr.callbacks import EpochCheckpoint, Throughput
    from keras_simclr.multicrop import views_per_image

    return [
        Throughput(FLAGS.batch_size, views_per_image=views_per_image(FLAGS.small_views)),
        EpochCheckpoint(os.path.join(model_dir, common.CHECKPOINT_DIR),
                        keep=FLAGS.keep_checkpoints, strategy=strategy),
        keras.callbacks.TensorBoard(distribute.write_path(os.path.join(model_dir, "logs"), strategy),
                                    update_freq="epoch"),
    ]


def train_dataset(dataset: str, seed: int, augment_in_model: bool, start_batch: int = 0):
    """The pretraining batches for the flags: views made here, or for the model's augmenter.

    With views made in the model, the pipeline still crops images larger than the views
    from their originals (`views_in_model`), with the same augmentation flags.

    Args:
        dataset: the --dataset value resolved (`common.dataset_name`).
        seed: the data seed.
        augment_in_model: whether the model's augmenter makes the views.
        start_batch: the global step the batches start at (a resumed run's).

    Returns:
        The endless `data.pretrain_dataset` from `start_batch` on.
    """
    from keras_simclr import data

    return data.pretrain_dataset(
        dataset, FLAGS.train_split, image_size=FLAGS.image_size,
        global_batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, cache=_cache_flag(),
        seed=seed, strict=FLAGS.strict, augmenter=make_augmenter(),
        views_in_model=augment_in_model, original_cap=FLAGS.original_cap or None,
        start_batch=start_batch)


def _cache_flag():
    value = FLAGS.cache.lower()
    if value not in ("auto", "true", "false"):
        raise common.AppError(f"--cache must be true, false or auto, got {FLAGS.cache}")
    return "auto" if value == "auto" else value == "true"


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from keras_simclr import data, storage
    from keras_simclr.callbacks import checkpoint_position, latest_checkpoint

    started = time.perf_counter()
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
    replicas = strategy.num_replicas_in_sync
    distribute.per_replica_batch_size(FLAGS.batch_size, strategy)  # divisible, or a clear error
    global_bn = distribute.resolve_global_bn(FLAGS.global_bn, strategy)
    chief = distribute.is_chief(strategy)
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
    policy = precision.set_precision(FLAGS.precision, has_gpu=has_gpu)
    widths = ",".join(f"{w:g}" for w in stage_widths() or (FLAGS.width_multiplier,))
    common.say(f"pretraining {FLAGS.backbone} (width {widths}, {FLAGS.stem} "
               f"stem) on {dataset}:{FLAGS.train_split}, {num_examples} images; "
               f"{FLAGS.image_size} px views made in the "
               f"{'model' if augment_in_model else 'input pipeline'}")
    common.say(f"{distribute.describe(strategy)}; {FLAGS.epochs} epoch(s) x {steps_per_epoch} "
               f"steps of batch {FLAGS.batch_size}; writing to {FLAGS.model_dir}")

    model_dir = FLAGS.model_dir
    checkpoint_dir = os.path.join(model_dir, common.CHECKPOINT_DIR)
    config = {name: FLAGS[name].value for name in FLAGS
              if name not in _PREDEFINED and name not in ("verbose", "json")}
    config.update(dataset=dataset, replicas=replicas, global_bn=global_bn, dtype_policy=policy)
    if chief:
        common.write_json(os.path.join(model_dir, common.CONFIG_FILE), config)

    # the newest readable checkpoint, the same on every worker (or a clear error)
    checkpoint, done_epochs = latest_checkpoint(checkpoint_dir, strategy)
    done_batches = checkpoint_position(checkpoint)[1]

    keras.utils.set_random_seed(FLAGS.seed)  # the data order depends on it, resumed or not
    with strategy.scope():
        schedule = optimizers.warmup_cosine_for(
            FLAGS.learning_rate, FLAGS.batch_size, FLAGS.lr_scaling, FLAGS.epochs,
            steps_per_epoch, min(FLAGS.warmup_epochs, FLAGS.epochs), FLAGS.final_lr_fraction)
        if checkpoint:
            common.say(f"resuming from {checkpoint} (epoch {done_epochs} done"
                       + (f", {done_batches} steps into the next)" if done_batches else ")"))
            model = common.load_model_file(checkpoint)
            model.optimizer.learning_rate = schedule
        else:
            model = build_model(info, global_bn, augment_in_model)
            model.compile(optimizer=optimizers.build_optimizer(
                FLAGS.optimizer, learning_rate=schedule, weight_decay=FLAGS.weight_decay,
                momentum=FLAGS.momentum))

    callbacks = make_callbacks(model_dir, strategy)
    throughput = callbacks[0]
    history = {}
    if done_epochs < FLAGS.epochs:
        history = resilience.fit_from(
            model, lambda start: train_dataset(dataset, FLAGS.seed, augment_in_model, start),
            epoch=done_epochs, batch=done_batches, epochs=FLAGS.epochs,
            steps_per_epoch=steps_per_epoch, verbose=progress_verbosity(), shuffle=False,
            callbacks=common.resilient(callbacks, steps_per_epoch, resilience.PRETRAIN_HINT))
    else:
        common.say(f"all {FLAGS.epochs} epochs already done")

    summary = {key: float(values[-1]) for key, values in history.items()}
    summary.update(
        epochs=FLAGS.epochs, resumed_from_epoch=done_epochs, replicas=replicas,
        wall_time_s=time.perf_counter() - started, views_per_s=throughput.median_views_per_s(),
    )
    if chief:
        storage.save_model(model, os.path.join(model_dir, common.MODEL_FILE))
        common.write_json(os.path.join(model_dir, "summary.json"), summary)
    common.say(summary_line(summary, os.path.join(model_dir, common.MODEL_FILE)))
    common.print_json(summary)


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
    if "loss" in summary:
        parts.append(f"loss {summary['loss']:.3f}")
    for key, name in (("contrastive_acc", "contrastive accuracy"), ("probe_acc", "probe accuracy")):
        if key in summary:
            parts.append(f"{name} {100 * summary[key]:.1f}%")
    return ", ".join(parts) + f"; model in {model_path}"


run = common.run(main)

if __name__ == "__main__":
    run()
