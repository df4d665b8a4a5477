"""What the classifier apps (linear_eval, finetune, knn_eval) share.

The labelled data set check, frozen features of the training and evaluation splits,
compiling, training and evaluating a `LinearClassifier`, and reporting the result (a JSON
file, one readable line, and with --json the same JSON as the last stdout line).
"""
import math

from absl import flags

from apps import common
import keras  # noqa: E402  (after apps.common, which sets the runtime flags first)

from keras_simclr import data

FLAGS = flags.FLAGS
common.define_json_flag()


def labelled_dataset(dataset: str, purpose: str):
    """The `data.describe` info of `dataset`, checked for --train_split, --eval_split, labels.

    Args:
        dataset: --dataset value.
        purpose: what needs the labels, for the error message ("linear evaluation").

    Returns:
        The data set's info (`num_classes`, `num_examples(split)`).

    Raises:
        common.AppError: the data set has no class labels.
    """
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    for split in (FLAGS.train_split, FLAGS.eval_split):
        info.num_examples(split)  # a clear error naming the splits that exist
    if info.num_classes < 2:
        raise common.AppError(f"{dataset} has no class labels: {purpose} needs them")
    return info


def train_eval_features(encoder, dataset: str, info, image_size: int, batch_size: int):
    """Frozen features of --train_split and --eval_split (one console line says which).

    Args:
        encoder: images in [0, 1] -> h.
        dataset: --dataset value.
        info: `labelled_dataset(...)`.
        image_size: side the images are resized to.
        batch_size: batch size of the extraction.

    Returns:
        (train_x, train_y, eval_x, eval_y) NumPy arrays.
    """
    common.say(f"extracting features of {dataset}:{FLAGS.train_split} "
               f"({info.num_examples(FLAGS.train_split)} images) and {FLAGS.eval_split} "
               f"({info.num_examples(FLAGS.eval_split)} images) at {image_size} px")
    return tuple(array for split in (FLAGS.train_split, FLAGS.eval_split)
                 for array in common.frozen_features(encoder, dataset, split, image_size,
                                                     batch_size))


def compile_classifier(classifier, *, learning_rate: float, batch_size: int, steps: int,
                       weight_decay: float = 0.0) -> None:
    """Compile for the paper's protocol: Nesterov SGD, base rate x batch/256, cosine decay.

    Args:
        classifier: a `LinearClassifier`.
        learning_rate: base learning rate (scaled by batch_size / 256).
        batch_size: global batch size.
        steps: training steps the cosine decays over.
        weight_decay: decoupled weight decay (0: none).
    """
    classifier.compile(
        optimizer=sgd_optimizer(learning_rate=learning_rate, batch_size=batch_size,
                                steps=steps, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")])


def sgd_optimizer(*, learning_rate: float, batch_size: int, steps: int,
                  weight_decay: float = 0.0):
    """Nesterov SGD (momentum 0.9) at learning_rate x batch_size/256, cosine decayed over
    `steps`; decoupled `weight_decay` (0: none). apps.finetune's and apps.distill's."""
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate * batch_size / 256, decay_steps=max(1, steps))
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay or None)


def define_training_flags(epochs: int, what: str) -> None:
    """--batch_size, --epochs, --learning_rate, --weight_decay of the apps that train a
    whole classifier (finetune, distill); `what` names the training in --epochs' help."""
    flags.DEFINE_integer("batch_size", 256, "Batch size (reduced to the subset size if larger).")
    flags.DEFINE_integer("epochs", epochs, f"{what} epochs.")
    flags.DEFINE_float("learning_rate", 0.05, "Base learning rate (x batch/256), cosine decayed.")
    flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
    for name in ("batch_size", "epochs", "learning_rate"):
        common.positive(name)


def evaluate_classifier(classifier, eval_ds, *, eval_examples: int,
                        eval_batch_size: int) -> dict:
    """{"top1", "top5"} of a compiled `classifier` on exactly the batches of `eval_ds`."""
    result = classifier.evaluate(eval_ds, steps=math.ceil(eval_examples / eval_batch_size),
                                 return_dict=True, verbose=0)
    return {"top1": float(result["top1"]), "top5": float(result["top5"])}


def train_and_evaluate(classifier, train_ds, eval_ds, *, epochs: int, steps_per_epoch: int,
                       eval_examples: int, eval_batch_size: int) -> dict:
    """Fit on `train_ds` (one line per epoch), then evaluate on `eval_ds`.

    The training batches are repeated and read `steps_per_epoch` at a time, and the
    evaluation runs exactly the batches `eval_examples` make: Keras then knows where each
    pass ends, instead of running a finite dataset dry ("Your input ran out of data").
    `shuffle=False`: the pipeline shuffles already (Keras ignores `shuffle` for a dataset
    and warns about it).

    Args:
        classifier: a compiled `LinearClassifier`.
        train_ds: finite training batches (full batches only).
        eval_ds: evaluation batches, the last one possibly partial.
        epochs: training epochs.
        steps_per_epoch: training batches per epoch.
        eval_examples: examples in `eval_ds`.
        eval_batch_size: batch size of `eval_ds`.

    Returns:
        {"top1", "top5"} on `eval_ds`.
    """
    classifier.fit(train_ds.repeat(), epochs=epochs, steps_per_epoch=steps_per_epoch,
                   shuffle=False, verbose=2, callbacks=common.resilient([]))
    return evaluate_classifier(classifier, eval_ds, eval_examples=eval_examples,
                               eval_batch_size=eval_batch_size)


def report(result: dict, path: str, headline: str) -> None:
    """Write `result` to `path` as JSON, print `headline`, then the JSON line (--json).

    Args:
        result: JSON-serialisable result.
        path: JSON file to write.
        headline: the readable line, e.g. "linear evaluation top-1 (...): 45.80%".
    """
    common.write_json(path, result)
    common.say(f"{headline}; written to {path}")
    common.print_json(result)
