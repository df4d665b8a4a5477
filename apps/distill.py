"""Distil a fine-tuned teacher into a student on unlabelled images (SimCLRv2's third stage).

`python -m apps.distill --teacher=runs/NAME/finetune_0.01 --model_dir=runs/NAME-distilled`
trains a student classifier on the teacher's predictions over --train_split (its labels are
not used unless --label_weight > 0): each step both see the same random crop + flip view
(the fine-tuning views, no colour distortion) and the student minimises
T^2 * CE(softmax(teacher / T), student / T) (`keras_simclr.distillation`). The teacher is a
`classifier.keras` directory of apps.finetune (or of an earlier apps.distill), or a model
directory of apps.import_official whose release has a supervised head; it is frozen.
With --student_color_jitter=S the student's copy of each view is also colour-distorted while
the teacher labels the clean one (Noisy Student, Xie et al. 2020): a student that sees what
its teacher sees learns to copy it, and one with noise of its own can beat it.

The student has the teacher's architecture (self-distillation), new weights, unless the
encoder flags of apps.pretrain are given (--backbone, --width_multiplier, ... : encoder +
Dense) or --student_from=RUN starts it from a pretraining run (its encoder, and the first
layers of its projection head where the teacher reads a head layer). Nesterov SGD with a
cosine schedule, as apps.finetune. Writes under --model_dir: `checkpoints/` every epoch
(rerun to resume; SIGTERM saves the current step and exits with status 75),
`config.json`, the student as `classifier.keras` and `result.json` (the student's top-1 /
top-5 on --eval_split and the teacher's top-1 beside it, when the data set has labels).
Export the student with `apps.export --model_dir=RUN --classifier=OUT/classifier.keras`.
"""
import os

from absl import flags

from apps import classify, common, recipe_flags
import keras  # noqa: E402  (after apps.common, which sets the runtime flags first)
import tensorflow as tf  # noqa: E402

from keras_simclr import LinearClassifier, data
from keras_simclr.distillation import Distiller
from keras_simclr.networks import backbones
from keras_simclr.training import resilience
from keras_simclr.training.callbacks import (EpochCheckpoint, checkpoint_position,
                                             latest_checkpoint)
from keras_simclr.utils import storage
from keras_simclr.views.augment import SimCLRAugment, color_distortion

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_string("teacher", None, "The teacher: a directory with classifier.keras (from "
                    "apps.finetune) or a model directory of apps.import_official with a "
                    "supervised head.")
flags.register_validator("teacher", bool, message="--teacher is required")
flags.DEFINE_float("temperature", 1.0, "Distillation temperature T (SimCLRv2: 1).")
flags.register_validator("temperature", lambda v: v > 0, message="--temperature must be positive")
flags.DEFINE_float("label_weight", 0.0, "Weight of the cross-entropy on the images of "
                   "--train_split that have labels (every image of a labelled folder).")
flags.register_validator("label_weight", lambda v: v >= 0,
                         message="--label_weight must be 0 or more")
flags.DEFINE_string("student_from", None, "Start the student from this pretraining run: "
                    "its encoder, and its head's first layers where the teacher reads a "
                    "head layer (default: new weights).")
flags.DEFINE_float("student_color_jitter", 0.0, "Noise for the student alone (Noisy "
                   "Student, Xie et al. 2020): its copy of each view also gets SimCLR's colour "
                   "distortion of this strength (jitter with p 0.8, grayscale with p 0.2) while "
                   "the teacher labels the clean view; 0: both see the same view (SimCLRv2).")
flags.register_validator("student_color_jitter", lambda v: v >= 0,
                         message="--student_color_jitter must be 0 or more")
recipe_flags.define_encoder_flags()
classify.define_training_flags(30, "Distillation")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in model_dir/checkpoints.")
common.positive("keep_checkpoints")
common.define_save_every_steps_flag()
HINT = "rerun with a lower --learning_rate (it resumes from the newest checkpoint)"


def teacher_run_config(teacher_dir: str) -> dict:
    """The config.json of the teacher's directory, else of its parent (finetune_<f>/ lies in
    the pretraining run): where image size, resize method and data set are recorded."""
    for directory in (teacher_dir, os.path.dirname(os.path.normpath(teacher_dir))):
        config = common.run_config(directory)
        if config.get("image_size"):
            return config
    raise common.AppError(f"cannot tell the image size of the teacher {teacher_dir}: neither "
                          f"it nor its parent has a config.json with image_size")


def load_teacher(teacher_dir: str):
    """The teacher classifier of --teacher (images -> logits), built."""
    if not tf.io.gfile.isdir(teacher_dir):
        raise common.AppError(f"--teacher {teacher_dir} does not exist")
    path = os.path.join(teacher_dir, "classifier.keras")
    if tf.io.gfile.exists(path):
        return common.load_model_file(path)
    if not tf.io.gfile.exists(os.path.join(teacher_dir, common.MODEL_FILE)):
        raise common.AppError(f"--teacher {teacher_dir} has no classifier.keras and no "
                              f"{common.MODEL_FILE}: give the finetune_<fraction> directory "
                              f"that apps.finetune wrote")
    model = common.load_pretrained(teacher_dir)
    if getattr(model, "probe", None) is None:
        raise common.AppError(f"--teacher {teacher_dir} has no classifier: fine-tune it with "
                              f"apps.finetune and give its finetune_<fraction> directory")
    # An imported release's supervised head is the model's probe, a Dense layer on h or, for
    # a fine-tuned SimCLRv2 release, on the projection head's layer `classifier_head_layer`.
    layer = getattr(model, "classifier_head_layer", 0)
    teacher = LinearClassifier(model.encoder, model.probe.units,
                               head=model.head if layer else None, head_layers=layer)
    teacher.classifier.build((None, int(model.probe.kernel.shape[0])))
    teacher.classifier.set_weights(model.probe.get_weights())
    return teacher


def check_fit(teacher, image_size: int, info) -> None:
    """AppError unless the teacher takes image_size images and has the data set's classes."""
    try:
        logits = teacher(tf.zeros((1, image_size, image_size, 3)), training=False)
    except Exception as error:  # a fixed input shape, a layer that needs a larger image ...
        raise common.AppError(f"the teacher does not take {image_size} px images: "
                              f"{str(error).splitlines()[0]}") from None
    classes = int(logits.shape[-1])
    if info.num_classes > 1 and info.num_classes != classes:
        raise common.AppError(f"the teacher has {classes} classes, the data set "
                              f"{info.name} {info.num_classes}: they must be the same")
    if FLAGS.label_weight and info.num_classes < 2:
        raise common.AppError(f"--label_weight={FLAGS.label_weight:g} needs labels; "
                              f"{info.name} has none")


def build_student(teacher, image_size: int):
    """A fine-tunable `LinearClassifier`: the encoder flags' network, the teacher's
    architecture started from the --student_from run (its encoder, and its head's first
    layers where the teacher reads a head layer), or (default) the teacher's architecture
    with new weights."""
    head, head_layers = None, 0
    if FLAGS.student_from:
        run = common.load_pretrained(FLAGS.student_from)
        run_size = common.image_size_of(FLAGS.student_from, run)
        if run_size != image_size:
            raise common.AppError(f"--student_from {FLAGS.student_from} was trained at "
                                  f"{run_size} px, the teacher at {image_size} px: the "
                                  f"student and the teacher see the same views")
        encoder, head_layers = run.encoder, getattr(teacher, "head_layers", 0)
        if head_layers > getattr(run.head, "depth", 0):
            raise common.AppError(f"the teacher reads projection head layer {head_layers}; "
                                  f"--student_from {FLAGS.student_from} has no such layer")
        head = run.head if head_layers else None
    elif any(FLAGS[name].present for name in recipe_flags.ENCODER_FLAGS):
        encoder = backbones.build_backbone(FLAGS.backbone,
                                           **recipe_flags.encoder_arguments(FLAGS))
    else:
        # from_config: the same architecture, new weights (self-distillation)
        encoder = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(teacher.encoder))
        if getattr(teacher, "head_layers", 0):
            head = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(teacher.head))
            head_layers = teacher.head_layers
    student = LinearClassifier(encoder, teacher.classifier.units, fine_tune=True, head=head,
                               head_layers=head_layers)
    student(tf.zeros((1, image_size, image_size, 3)))
    return student


def train_dataset(dataset: str, image_size: int, batch_size: int, resize_method: str,
                  start: int):
    """Endless crop + flip batches `(views, labels)` from global batch `start` on, in the
    order a run from batch 0 sees them (resumable); with --student_color_jitter the views
    are (teacher's, student's): the student's is the same crop, colour-distorted."""
    crop_and_flip = SimCLRAugment.crop_and_flip(image_size, seed=FLAGS.seed,
                                                resize_method=resize_method)
    noise = (color_distortion(image_size, FLAGS.student_color_jitter, seed=FLAGS.seed + 1)
             if FLAGS.student_color_jitter else None)

    def views(images, labels):
        view = crop_and_flip(images)
        return ((view, noise.after_crop(view)) if noise else view), labels

    ds = data.pretrain_dataset(dataset, FLAGS.train_split, image_size=image_size,
                               global_batch_size=batch_size, data_dir=FLAGS.data_dir,
                               seed=FLAGS.seed, strict=FLAGS.strict, start_batch=start)
    return ds.map(views, num_parallel_calls=tf.data.AUTOTUNE)


def plan(teacher):
    """(dataset, info, image size, resize method, batch size, steps per epoch), checked."""
    config = teacher_run_config(FLAGS.teacher)
    dataset = FLAGS.dataset or config.get("dataset", data.DEFAULT_DATASET)
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    count = info.num_examples(FLAGS.train_split)
    if count == 0:
        raise common.AppError(f"{dataset}:{FLAGS.train_split} has no images to distil on")
    image_size = int(config["image_size"])
    check_fit(teacher, image_size, info)
    batch_size = min(FLAGS.batch_size, count)
    resize = config.get("resize_method", "bilinear")
    return dataset, info, image_size, resize, batch_size, count // batch_size


def distiller_from(checkpoint: str | None, teacher, image_size: int, batch_size: int,
                   steps: int):
    """The checkpoint's Distiller, or a new compiled one."""
    if checkpoint:
        common.say(f"resuming from {checkpoint}")
        return common.load_model_file(checkpoint)
    distiller = Distiller(teacher, build_student(teacher, image_size),
                          temperature=FLAGS.temperature, label_weight=FLAGS.label_weight)
    distiller.compile(optimizer=classify.sgd_optimizer(
        learning_rate=FLAGS.learning_rate, batch_size=batch_size,
        steps=FLAGS.epochs * steps, weight_decay=FLAGS.weight_decay))
    distiller.build((None, image_size, image_size, 3))
    return distiller


def evaluate(distiller, dataset: str, info, image_size: int) -> dict:
    """The student's top-1/top-5 and the teacher's top-1 on --eval_split ({} unlabelled)."""
    if info.num_classes < 2:
        return {}
    eval_ds = data.classifier_dataset(dataset, FLAGS.eval_split, image_size=image_size,
                                      batch_size=FLAGS.batch_size, training=False,
                                      data_dir=FLAGS.data_dir, strict=FLAGS.strict)
    scores = {}
    for name, network in (("", distiller.student), ("teacher_", distiller.teacher)):
        classify.compile_classifier(network, learning_rate=FLAGS.learning_rate,
                                    batch_size=FLAGS.batch_size, steps=1)
        for key, value in classify.evaluate_classifier(
                network, eval_ds, eval_examples=info.num_examples(FLAGS.eval_split),
                eval_batch_size=FLAGS.batch_size).items():
            scores[name + key] = value
    return scores


def main(argv):
    del argv
    teacher = load_teacher(FLAGS.teacher)
    dataset, info, image_size, resize, batch_size, steps = plan(teacher)
    checkpoints = os.path.join(FLAGS.model_dir, common.CHECKPOINT_DIR)
    checkpoint, done_epochs = latest_checkpoint(checkpoints)
    keras.utils.set_random_seed(FLAGS.seed)
    distiller = distiller_from(checkpoint, teacher, image_size, batch_size, steps)
    common.say(f"distilling {FLAGS.teacher} into a student on {dataset}:{FLAGS.train_split} "
               f"({info.num_examples(FLAGS.train_split)} images, {image_size} px, T="
               f"{FLAGS.temperature:g}): {FLAGS.epochs} epoch(s) x {steps} steps of batch "
               f"{batch_size}")
    config = {name: FLAGS[name].value for name in ("teacher", "student_from", "temperature",
                                                   "label_weight", "student_color_jitter",
                                                   "train_split", "seed")}
    common.write_json(os.path.join(FLAGS.model_dir, common.CONFIG_FILE),
                      dict(config, dataset=dataset, image_size=image_size,
                           resize_method=resize))
    callbacks = [EpochCheckpoint(checkpoints, keep=FLAGS.keep_checkpoints)]
    if done_epochs < FLAGS.epochs:
        resilience.fit_from(
            distiller, lambda start: train_dataset(dataset, image_size, batch_size, resize,
                                                   start),
            epoch=done_epochs, batch=checkpoint_position(checkpoint)[1], epochs=FLAGS.epochs,
            steps_per_epoch=steps, shuffle=False, verbose=2,
            callbacks=common.resilient(callbacks, steps, HINT))
    path = os.path.join(FLAGS.model_dir, "classifier.keras")
    storage.save_model(distiller.student, path)
    result = dict(evaluate(distiller, dataset, info, image_size), temperature=FLAGS.temperature,
                  label_weight=FLAGS.label_weight, dataset=dataset, epochs=FLAGS.epochs,
                  train_split=FLAGS.train_split, eval_split=FLAGS.eval_split,
                  teacher=FLAGS.teacher)
    headline = (f"student top-1 ({FLAGS.eval_split}): {100 * result['top1']:.2f}% (teacher "
                f"{100 * result['teacher_top1']:.2f}%)" if "top1" in result
                else "distilled (no labels to evaluate on)")
    classify.report(result, os.path.join(FLAGS.model_dir, "result.json"),
                    f"{headline}; student in {path}")


run = common.run(main)

if __name__ == "__main__":
    run()
