"""What the absl apps share: flag groups, clean error exits, loading a pretraining run.

Each app defines only the flag groups it uses. `run(main)` wraps an app's main so that a
bad flag value, missing data or an unreadable checkpoint ends with one `error: ...` line on
stderr and exit status 2 instead of a traceback; a NaN or infinite loss or model with one
`error: ...` line and status 3; SIGTERM or SIGINT during training, after a checkpoint at the
current step, with one line and status 75 (`keras_simclr.training.resilience`; `resilient` adds its
callbacks to an app's `fit`).

The console: apps print one plain line per stage to stdout (`say`); absl's and TensorFlow's
Python INFO logs are off unless `-v 0` (`--verbosity=0`) or `KERAS_SIMCLR_DEBUG=1` is given
(keras_simclr.utils.runtime quiets TensorFlow's C++ start-up lines the same way), and a Python
warning is one `warning: ...` line.
"""
import json
import os
import sys
import warnings

import keras_simclr  # noqa: F401  (runtime flags before TensorFlow is imported)
import keras
import tensorflow as tf
from absl import app, flags, logging

from keras_simclr import data, evaluation
from keras_simclr.networks import heads
from keras_simclr.utils import runtime as _runtime, storage
from keras_simclr.training import budget, cluster, resilience
from keras_simclr.views.augment import LEGACY_RESIZE_METHOD
from keras_simclr.training.callbacks import EpochCheckpoint, latest_checkpoint
from keras_simclr.utils.storage import write_json  # noqa: F401  (the apps' common.write_json)

FLAGS = flags.FLAGS
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class AppError(Exception):
    """A user-facing error: its message is the whole report."""


def define_data_flags(split_flags=("train_split",)):
    flags.DEFINE_string("dataset", None,
                        f"TFDS name or folder:PATH (default: the pretraining run's dataset, "
                        f"else the embedded '{data.DEFAULT_DATASET}').")
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_boolean("strict", False, "Fail on corrupt image files instead of skipping them.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    defaults = {"train_split": "train", "eval_split": "test", "split": "test"}
    for name in split_flags:
        flags.DEFINE_string(name, defaults[name], f"Dataset split ({name}).")


def define_model_dir_flag(required=True):
    flags.DEFINE_string("model_dir", None,
                        "Directory of a pretraining run (checkpoints, logs, model.keras).")
    if required:
        flags.register_validator("model_dir", lambda v: bool(v),
                                 message="--model_dir is required")


def define_save_every_steps_flag() -> None:
    """--save_every_steps: checkpoints inside epochs too, bounding what a kill -9 loses."""
    flags.DEFINE_integer("save_every_steps", None, "Also save a checkpoint every N steps "
                         "(a hard kill loses at most N steps; SIGTERM/SIGINT always save "
                         "the current step).")
    positive("save_every_steps")


def define_cluster_flags() -> None:
    """--cluster, --cluster_port, --tasks_per_node: which cluster a multi-worker run uses."""
    flags.DEFINE_enum("cluster", "auto", cluster.CLUSTERS,
                      "Multi-worker cluster: tf_config (TF_CONFIG), slurm (an srun step), none; "
                      "auto: TF_CONFIG when set, else an srun step of several tasks, else none.")
    flags.DEFINE_integer("cluster_port", cluster.DEFAULT_PORT,
                         "Slurm: port of each node's first task (the next tasks take the next).")
    flags.DEFINE_integer("tasks_per_node", None,
                         "Slurm: tasks on every node (default: SLURM_STEP_TASKS_PER_NODE).")
    positive("cluster_port")
    positive("tasks_per_node")


def resilient(callbacks: list, steps_per_epoch: int | None = None,
              hint: str = "rerun with a lower --learning_rate") -> list:
    """`callbacks` of a `fit` with a `NonFiniteGuard` first and, when they hold an
    `EpochCheckpoint`, a `Preemption` saving at the current step on SIGTERM/SIGINT (and
    every --save_every_steps steps, where the app defines it) last.

    Args:
        callbacks: the app's callbacks.
        steps_per_epoch: steps of every epoch (needed with an `EpochCheckpoint`).
        hint: what the non-finite error line suggests trying.
    Returns:
        A new list.
    """
    guarded = [resilience.NonFiniteGuard(hint), *callbacks]
    checkpoint = next((c for c in callbacks if isinstance(c, EpochCheckpoint)), None)
    if checkpoint is not None:
        every = FLAGS.save_every_steps if "save_every_steps" in FLAGS else None
        guarded.append(resilience.Preemption(checkpoint, steps_per_epoch, every=every))
    return guarded


def positive(name, flag_values=FLAGS):
    flags.register_validator(name, lambda v: v is None or v > 0,
                             message=f"--{name} must be positive", flag_values=flag_values)


def duration(name, flag_values=FLAGS):
    """Validate a duration flag (`budget.parse_duration`: 30m, 8h, 1h30m, 90s); empty is none."""
    def check(value):
        try:
            return not value or budget.parse_duration(value) > 0
        except ValueError as error:
            raise flags.ValidationError(f"--{name}: {error}") from None
    flags.register_validator(name, check, flag_values=flag_values)


def is_positive_number(text) -> bool:
    """Whether a list flag's item reads as a number above 0."""
    try:
        return float(text) > 0
    except ValueError:
        return False


def define_json_flag() -> None:
    """--json: the result also as one JSON line, last on stdout, for scripts."""
    flags.DEFINE_boolean("json", False, "Also print the result as one JSON line, last on "
                         "stdout (for scripts; the result file holds the same).")


def print_json(result: dict) -> None:
    """`result` as one JSON line on stdout with --json; people read the line before it."""
    if FLAGS.json:
        print(json.dumps(result, sort_keys=True), flush=True)


def say(line: str) -> None:
    """Print one console line of an app to stdout, flushed (it stays in place among Keras').

    Args:
        line: the text, without absl's log prefix.
    """
    print(line, flush=True)


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def quiet_console() -> None:
    """absl and TensorFlow Python logs at WARNING unless -v/--verbosity or KERAS_SIMCLR_DEBUG
    asks for more; TensorFlow's log lines printed once; Python warnings as one line each
    (`warning: ...`)."""
    if _runtime.DEBUG:
        return
    warnings.formatwarning = _one_line_warning
    tf_logger = tf.get_logger()
    if tf_logger.handlers:  # TensorFlow's own stderr handler: not also through absl's
        tf_logger.propagate = False
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        tf_logger.setLevel("WARNING")


def run(main):
    """Run an absl main with one-line error reports; the entry point of every app."""
    def guarded(argv):
        quiet_console()
        try:
            return main(argv)
        except resilience.Preempted as stop:
            print(f"stopped: {stop}", file=sys.stderr)
            sys.exit(resilience.EXIT_PREEMPTED)
        except resilience.WorkerLost as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(resilience.EXIT_WORKER_LOST)
        except resilience.NonFiniteError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(resilience.EXIT_NON_FINITE)
        except (AppError, ValueError, *storage.FILESYSTEM_ERRORS) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def parse(argv):
        try:
            return FLAGS(argv)
        except flags.Error as error:  # unknown flag, bad value, failed validator
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def entry():
        app.run(guarded, flags_parser=parse)
    return entry


def run_config(model_dir):
    """The flags a pretraining run recorded in `model_dir/config.json` ({} if none)."""
    return storage.read_json(os.path.join(model_dir, CONFIG_FILE))


def dataset_name(model_dir=None):
    """--dataset, else the dataset of the pretraining run, else the embedded default."""
    if FLAGS.dataset:
        return FLAGS.dataset
    if model_dir:
        return run_config(model_dir).get("dataset", data.DEFAULT_DATASET)
    return data.DEFAULT_DATASET


def load_pretrained(model_dir):
    """The SimCLR model of a pretraining run: its final model, else its latest checkpoint."""
    if not tf.io.gfile.isdir(model_dir):
        raise AppError(f"--model_dir {model_dir} does not exist")
    path = os.path.join(model_dir, MODEL_FILE)
    if not tf.io.gfile.exists(path):
        path, _ = latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
        if path is None:
            raise AppError(f"{model_dir} holds no {MODEL_FILE} and no checkpoint: "
                           f"run apps.pretrain with --model_dir={model_dir} first")
    return load_model_file(path)


def load_model_file(path):
    """keras.saving.load_model with a one-line error for unreadable files."""
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # a truncated zip, a foreign file, a version mismatch, ...
        # Keras says "File not found" for a truncated file: name the actual problem
        problem = storage.keras_archive_problem(path)
        raise AppError(f"cannot read the model {path}: {problem or error}") from None


def features_of(model):
    """A Keras model from images in [0, 1] to what the run's classifier reads: h, or the
    output of layer `classifier_head_layer` of the projection head (the classifier of an
    imported fine-tuned SimCLRv2 release reads layer 1). The apps that embed, evaluate or
    export a run use it, so that they agree with its classifier.

    Args:
        model: the run's `SimCLR` model.
    """
    return heads.features_model(model.encoder, model.head, model.classifier_head_layer)


def image_size_of(model_dir, model):
    """Side of the views the run was trained on (its config, else the model's augmenter)."""
    size = run_config(model_dir).get("image_size")
    if size is None and getattr(model, "augmenter", None) is not None:
        size = model.augmenter.image_size
    if size is None:
        raise AppError(f"cannot tell the image size of the run in {model_dir}")
    return int(size)


def resize_method_of(model_dir: str) -> str:
    """How the run resized its crops (`--resize_method`), for the crops of evaluation.

    Args:
        model_dir: the pretraining run.

    Returns:
        Its config's value; "bilinear" for runs recorded before the flag existed.
    """
    return run_config(model_dir).get("resize_method", LEGACY_RESIZE_METHOD)


def frozen_features(encoder, dataset, split, image_size, batch_size):
    """(x, y): h of every example of `split`, resized without augmentation, in order."""
    ds = data.embed_dataset(dataset, split, image_size=image_size, batch_size=batch_size,
                            data_dir=FLAGS.data_dir, strict=FLAGS.strict)
    return evaluation.extract_features(lambda x: encoder(x, training=False), ds)

