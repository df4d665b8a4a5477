"""Fine-tune encoder + classifier on a fraction of the labels (SimCLR's semi-supervised setting).

`python -m apps.finetune --model_dir=runs/NAME --label_fraction=0.1` takes a seeded,
class-balanced fraction of --train_split, trains the whole encoder and a Dense layer (from
h, or from the first --head_layers layers of the projection head as SimCLRv2) with Nesterov
SGD on random-resized-crop + flip views, and reports top-1/top-5 on --eval_split. Writes
`finetune_<fraction>/classifier.keras` and `result.json` under --model_dir.
"""
import json
import os

from absl import flags, logging

from apps import common

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_float("label_fraction", 0.1, "Fraction of labelled training examples (0, 1].")
flags.DEFINE_integer("head_layers", 0, "Projection-head layers kept below the classifier.")
flags.DEFINE_integer("batch_size", 256, "Batch size (reduced to the subset size if larger).")
flags.DEFINE_integer("epochs", 30, "Fine-tuning epochs.")
flags.DEFINE_float("learning_rate", 0.05, "Base learning rate (x batch/256), cosine decayed.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
for _name in ("batch_size", "epochs", "learning_rate"):
    common.positive(_name)


def main(argv):
    del argv
    import keras

    from keras_simclr import LinearClassifier, data, evaluation

    if not 0.0 < FLAGS.label_fraction <= 1.0:
        raise common.AppError(f"--label_fraction must be in (0, 1], got {FLAGS.label_fraction}")
    dataset = common.dataset_name(FLAGS.model_dir)
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    for split in (FLAGS.train_split, FLAGS.eval_split):
        info.num_examples(split)
    if info.num_classes < 2:
        raise common.AppError(f"{dataset} has no class labels: fine-tuning needs them")
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)

    labels = data.labels(dataset, FLAGS.train_split, FLAGS.data_dir, FLAGS.strict)
    subset = evaluation.balanced_subset(labels, FLAGS.label_fraction, FLAGS.seed)
    batch_size = min(FLAGS.batch_size, len(subset))
    logging.info("fine-tuning on %d labelled examples (%.1f%% of %s:%s), batch %d",
                 len(subset), 100 * FLAGS.label_fraction, dataset, FLAGS.train_split, batch_size)
    train_ds = data.classifier_dataset(
        dataset, FLAGS.train_split, image_size=image_size, batch_size=batch_size, training=True,
        data_dir=FLAGS.data_dir, seed=FLAGS.seed, strict=FLAGS.strict, subset=subset)
    eval_ds = data.classifier_dataset(
        dataset, FLAGS.eval_split, image_size=image_size, batch_size=FLAGS.batch_size,
        training=False, data_dir=FLAGS.data_dir, strict=FLAGS.strict)

    keras.utils.set_random_seed(FLAGS.seed)
    classifier = LinearClassifier(model.encoder, info.num_classes, fine_tune=True,
                                  head=model.head if FLAGS.head_layers else None,
                                  head_layers=FLAGS.head_layers)
    steps = FLAGS.epochs * (len(subset) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        FLAGS.learning_rate * batch_size / 256, decay_steps=max(1, steps))
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                       weight_decay=FLAGS.weight_decay or None),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")])
    classifier.fit(train_ds, epochs=FLAGS.epochs, verbose=2)
    evaluated = classifier.evaluate(eval_ds, return_dict=True, verbose=0)

    out_dir = os.path.join(FLAGS.model_dir, f"finetune_{FLAGS.label_fraction:g}")
    os.makedirs(out_dir, exist_ok=True)
    classifier.save(os.path.join(out_dir, "classifier.keras"))
    result = {"top1": float(evaluated["top1"]), "top5": float(evaluated["top5"]),
              "label_fraction": FLAGS.label_fraction, "num_labelled": int(len(subset)),
              "dataset": dataset, "train_split": FLAGS.train_split,
              "eval_split": FLAGS.eval_split, "head_layers": FLAGS.head_layers}
    common.write_json(os.path.join(out_dir, "result.json"), result)
    print(json.dumps(result, sort_keys=True))


run = common.run(main)

if __name__ == "__main__":
    run()
