"""Fine-tune encoder + classifier on a fraction of the labels (SimCLR's semi-supervised setting).

`python -m apps.finetune --model_dir=runs/NAME --label_fraction=0.1` takes a seeded,
class-balanced fraction of --train_split, trains the whole encoder and a Dense layer (from
h, or from layer K of the projection head with --finetune_from_head_layer=K, the official
code's `ft_proj_selector`, as SimCLRv2; by default from where the run's own classifier
reads: h, or the layer an imported fine-tuned release's reads) with Nesterov
SGD on random-resized-crop + flip views, and reports top-1/top-5 on --eval_split. Writes
`finetune_<fraction>/classifier.keras` and `result.json` under --model_dir.
"""
import os

from absl import flags

from apps import classify, common
import keras  # noqa: E402  (after apps.common, which sets the runtime flags first)

from keras_simclr import LinearClassifier, data, evaluation
from keras_simclr.utils import storage

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_float("label_fraction", 0.1, "Fraction of labelled training examples (0, 1].")
flags.DEFINE_integer("finetune_from_head_layer", None,
                     "Fine-tune from the output of this layer of the projection head (the "
                     "official ft_proj_selector): 0 from h; SimCLRv2 fine-tunes its 3-layer "
                     "head's models from layer 1, the first (its paper; the official README's "
                     "--ft_proj_selector=1). Default: the layer the run's classifier reads "
                     "(0, h, but for imported fine-tuned releases).")
flags.register_validator("finetune_from_head_layer", lambda v: v is None or v >= 0,
                         message="--finetune_from_head_layer must be 0 or more")
classify.define_training_flags(30, "Fine-tuning")


def head_layer(model_dir: str, model) -> int:
    """--finetune_from_head_layer, by default the layer the run's classifier reads; raise
    AppError unless the run's projection head has that layer, trained.

    Args:
        model_dir: the run (its config.json says whether an imported head is the
            release's or a new one).
        model: its SimCLR model.
    """
    layer = FLAGS.finetune_from_head_layer
    if layer is None:
        return model.classifier_head_layer
    if layer > model.head.depth:
        raise common.AppError(f"--finetune_from_head_layer={layer}: the projection head of "
                              f"{model_dir} has {model.head.depth} layers")
    if layer and not common.run_config(model_dir).get("projection_head_imported", True):
        raise common.AppError(f"--finetune_from_head_layer={layer}: {model_dir} was imported "
                              f"from a release without projection head; its head is untrained")
    return layer


def main(argv):
    del argv
    if not 0.0 < FLAGS.label_fraction <= 1.0:
        raise common.AppError(f"--label_fraction must be in (0, 1], got {FLAGS.label_fraction}")
    dataset = common.dataset_name(FLAGS.model_dir)
    info = classify.labelled_dataset(dataset, "fine-tuning")
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)
    layer = head_layer(FLAGS.model_dir, model)

    labels = data.labels(dataset, FLAGS.train_split, FLAGS.data_dir, FLAGS.strict)
    subset = evaluation.balanced_subset(labels, FLAGS.label_fraction, FLAGS.seed)
    batch_size = min(FLAGS.batch_size, len(subset))
    steps = len(subset) // batch_size
    common.say(f"fine-tuning the encoder of {FLAGS.model_dir} on {len(subset)} labelled images "
               f"({100 * FLAGS.label_fraction:g}% of {dataset}:{FLAGS.train_split}) at "
               f"{image_size} px: {FLAGS.epochs} epoch(s) x {steps} steps of batch {batch_size}")
    train_ds = data.classifier_dataset(
        dataset, FLAGS.train_split, image_size=image_size, batch_size=batch_size, training=True,
        data_dir=FLAGS.data_dir, seed=FLAGS.seed, strict=FLAGS.strict, subset=subset,
        resize_method=common.resize_method_of(FLAGS.model_dir))
    eval_ds = data.classifier_dataset(
        dataset, FLAGS.eval_split, image_size=image_size, batch_size=FLAGS.batch_size,
        training=False, data_dir=FLAGS.data_dir, strict=FLAGS.strict)

    keras.utils.set_random_seed(FLAGS.seed)
    classifier = LinearClassifier(model.encoder, info.num_classes, fine_tune=True,
                                  head=model.head if layer else None, head_layers=layer)
    classify.compile_classifier(classifier, learning_rate=FLAGS.learning_rate,
                                batch_size=batch_size, steps=FLAGS.epochs * steps,
                                weight_decay=FLAGS.weight_decay)
    evaluated = classify.train_and_evaluate(
        classifier, train_ds, eval_ds, epochs=FLAGS.epochs, steps_per_epoch=steps,
        eval_examples=info.num_examples(FLAGS.eval_split), eval_batch_size=FLAGS.batch_size)

    out_dir = os.path.join(FLAGS.model_dir, f"finetune_{FLAGS.label_fraction:g}")
    storage.save_model(classifier, os.path.join(out_dir, "classifier.keras"))
    result = {**evaluated, "label_fraction": FLAGS.label_fraction,
              "num_labelled": int(len(subset)), "dataset": dataset,
              "train_split": FLAGS.train_split, "eval_split": FLAGS.eval_split,
              "finetune_from_head_layer": layer}
    classify.report(result, os.path.join(out_dir, "result.json"),
                    f"fine-tuned top-1 ({FLAGS.label_fraction:g} of the labels, "
                    f"{FLAGS.eval_split}): {100 * result['top1']:.2f}%, top-5 "
                    f"{100 * result['top5']:.2f}% (classifier.keras beside the result)")


run = common.run(main)

if __name__ == "__main__":
    run()
