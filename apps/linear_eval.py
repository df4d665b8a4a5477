"""Linear evaluation of a pretrained encoder: `python -m apps.linear_eval --model_dir=runs/NAME`.

`--mode=features` (default, fast): features of the frozen encoder are extracted once from
the resized training and evaluation images and a multinomial logistic regression is fitted
on them. `--mode=full`: the paper's protocol, a Dense layer trained through the frozen
encoder on random-resized-crop + flip views with Nesterov SGD and a cosine schedule.
`--random_init` evaluates a randomly initialised encoder of the same architecture instead
(the floor that pretraining must beat). Prints and writes JSON with top-1 and top-5.
"""
import json
import os

from absl import flags, logging

from apps import common

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_enum("mode", "features", ["features", "full"], "Fast feature mode or full protocol.")
flags.DEFINE_boolean("random_init", False, "Evaluate a random-initialised encoder instead.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("epochs", 90, "Epochs of the full protocol.")
flags.DEFINE_float("learning_rate", 0.1, "Base learning rate of the full protocol (x batch/256).")
flags.DEFINE_float("regularization", 1e-4, "L2 strength of the feature-mode regression.")
flags.DEFINE_string("output", None, "JSON result file (default: in --model_dir).")
for _name in ("batch_size", "epochs", "learning_rate"):
    common.positive(_name)


def encoder_to_evaluate(model_dir, seed):
    """(encoder, image size): the run's encoder, or a fresh copy with --random_init."""
    from keras_simclr import evaluation

    model = common.load_pretrained(model_dir)
    encoder = model.encoder
    if FLAGS.random_init:
        encoder = evaluation.random_init_like(encoder, seed)
    return encoder, common.image_size_of(model_dir, model)


def features_mode(encoder, dataset, image_size):
    from keras_simclr import evaluation

    train_x, train_y, eval_x, eval_y = (
        array for split in (FLAGS.train_split, FLAGS.eval_split)
        for array in common.frozen_features(encoder, dataset, split, image_size,
                                            FLAGS.batch_size))
    return evaluation.linear_probe_on_features(train_x, train_y, eval_x, eval_y,
                                               regularization=FLAGS.regularization)


def full_mode(encoder, dataset, image_size, num_classes):
    import keras

    from keras_simclr import LinearClassifier, data

    train_ds, eval_ds = data.linear_eval_datasets(
        dataset, image_size=image_size, batch_size=FLAGS.batch_size,
        train_split=FLAGS.train_split, eval_split=FLAGS.eval_split, data_dir=FLAGS.data_dir,
        seed=FLAGS.seed, strict=FLAGS.strict)
    steps = data.describe(dataset, FLAGS.data_dir).num_examples(FLAGS.train_split) // FLAGS.batch_size
    classifier = LinearClassifier(encoder, num_classes)
    schedule = keras.optimizers.schedules.CosineDecay(
        FLAGS.learning_rate * FLAGS.batch_size / 256, decay_steps=max(1, steps * FLAGS.epochs))
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")])
    classifier.fit(train_ds, epochs=FLAGS.epochs, verbose=2)
    result = classifier.evaluate(eval_ds, return_dict=True, verbose=0)
    return {"top1": float(result["top1"]), "top5": float(result["top5"])}


def main(argv):
    del argv
    from keras_simclr import data

    dataset = common.dataset_name(FLAGS.model_dir)
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    for split in (FLAGS.train_split, FLAGS.eval_split):
        info.num_examples(split)  # a clear error naming the splits that exist
    if info.num_classes < 2:
        raise common.AppError(f"{dataset} has no class labels: linear evaluation needs them")
    encoder, image_size = encoder_to_evaluate(FLAGS.model_dir, FLAGS.seed)
    logging.info("linear evaluation (%s mode) of %s encoder on %s",
                 FLAGS.mode, "a random-initialised" if FLAGS.random_init else "the pretrained",
                 dataset)
    if FLAGS.mode == "features":
        result = features_mode(encoder, dataset, image_size)
    else:
        result = full_mode(encoder, dataset, image_size, info.num_classes)
    result.update(mode=FLAGS.mode, dataset=dataset, train_split=FLAGS.train_split,
                  eval_split=FLAGS.eval_split, random_init=FLAGS.random_init,
                  encoder="random-init" if FLAGS.random_init else "pretrained")
    name = "linear_eval_random.json" if FLAGS.random_init else "linear_eval.json"
    common.write_json(FLAGS.output or os.path.join(FLAGS.model_dir, name), result)
    print(json.dumps(result, sort_keys=True))
    print(f"linear evaluation top-1 ({result['encoder']} encoder, {FLAGS.eval_split}): "
          f"{100 * result['top1']:.2f}%")


run = common.run(main)

if __name__ == "__main__":
    run()
