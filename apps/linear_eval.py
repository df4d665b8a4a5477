"""Linear evaluation of a pretrained encoder: `python -m apps.linear_eval --model_dir=runs/NAME`.

`--mode=features` (default, fast): features of the frozen encoder are extracted once from
the resized training and evaluation images and a multinomial logistic regression is fitted
on them. `--mode=full`: the paper's protocol, a Dense layer trained through the frozen
encoder on random-resized-crop + flip views with Nesterov SGD and a cosine schedule.
`--random_init` evaluates a randomly initialised encoder of the same architecture instead
(the floor that pretraining must beat). The features are h, or for a run whose classifier
reads a layer of the projection head (an imported fine-tuned SimCLRv2 release) that
layer's output. Prints and writes JSON with top-1 and top-5.
"""
import os

from absl import flags

from apps import classify, common
import keras  # noqa: E402  (after apps.common, which sets the runtime flags first)

from keras_simclr import LinearClassifier, data, evaluation
from keras_simclr.networks import heads

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_enum("mode", "features", ["features", "full"], "Fast feature mode or full protocol.")
flags.DEFINE_boolean("random_init", False, "Evaluate a random-initialised encoder instead.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("epochs", 90, "Epochs of the full protocol.")
flags.DEFINE_float("learning_rate", 0.1, "Base learning rate of the full protocol (x batch/256).")
flags.DEFINE_float("regularization", 1e-4, "L2 strength of the feature-mode regression.")
flags.DEFINE_list("regularization_grid", None,
                  "Feature mode: choose the L2 strength from these values (e.g. 1e-5,1e-4,1e-3) "
                  "by a probe fitted on 90% of --train_split and scored on the other 10%, "
                  "in place of --regularization; --eval_split plays no part in the choice.")
flags.DEFINE_integer("max_iter", 1000, "L-BFGS iteration limit of the feature-mode regression.")
flags.DEFINE_string("output", None, "JSON result file (default: in --model_dir).")
for _name in ("batch_size", "epochs", "learning_rate", "max_iter"):
    common.positive(_name)
flags.register_validator(
    "regularization_grid", lambda v: v is None or all(common.is_positive_number(r) for r in v),
    message="--regularization_grid must be positive numbers, e.g. 1e-5,1e-4,1e-3")
flags.register_multi_flags_validator(
    ["regularization_grid", "mode"],
    lambda values: not (values["regularization_grid"] and values["mode"] == "full"),
    message="--regularization_grid chooses the feature mode's L2 strength; --mode=full has none")


def encoder_to_evaluate(model_dir: str, seed: int):
    """The run's features (`common.features_of`), or with --random_init those of a fresh
    copy of its encoder (and of the head layers they go through).

    Args:
        model_dir: pretraining run.
        seed: seed of the random initialisation.

    Returns:
        (images -> features, side of the images it was trained on).
    """
    model = common.load_pretrained(model_dir)
    image_size = common.image_size_of(model_dir, model)
    if not FLAGS.random_init:
        return common.features_of(model), image_size
    encoder = evaluation.random_init_like(model.encoder, seed)
    head = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model.head))
    return heads.features_model(encoder, head, model.classifier_head_layer), image_size


def features_mode(encoder, dataset: str, info, image_size: int) -> dict:
    """Logistic regression on frozen features; one line notes an early stop.

    With --regularization_grid the L2 strength is chosen on held-out training features
    first (`evaluation.choose_regularization`), and one line gives each value's score.

    Args:
        encoder: images in [0, 1] -> h.
        dataset: --dataset value.
        info: its `data.describe` info.
        image_size: side the images are resized to.

    Returns:
        `evaluation.linear_probe_on_features`' result, with the strength used (and the
        held-out scores of the grid).
    """
    features = classify.train_eval_features(encoder, dataset, info, image_size,
                                            FLAGS.batch_size)
    regularization, choice = FLAGS.regularization, {}
    if FLAGS.regularization_grid:
        chosen = evaluation.choose_regularization(features[0], features[1],
                                                  FLAGS.regularization_grid, seed=FLAGS.seed,
                                                  max_iter=FLAGS.max_iter)
        regularization = chosen["regularization"]
        choice = {"holdout_top1": {f"{value:g}": top1
                                   for value, top1 in chosen["holdout_top1"].items()}}
        scores = ", ".join(f"{value}: {100 * top1:.2f}%"
                           for value, top1 in choice["holdout_top1"].items())
        common.say(f"regularization {regularization:g} chosen on {chosen['num_holdout']} "
                   f"held-out training images (top-1 {scores})")
    common.say(f"fitting a logistic regression on {features[0].shape[1]}-d features")
    result = evaluation.linear_probe_on_features(*features, regularization=regularization,
                                                 max_iter=FLAGS.max_iter)
    result.update(regularization=regularization, **choice)
    if not result["converged"]:
        common.say(f"note: the regression stopped at --max_iter={FLAGS.max_iter} before "
                   f"converging; its accuracy may be slightly below a converged fit's")
    return result


def full_mode(encoder, dataset: str, info, image_size: int) -> dict:
    """The paper's protocol: a Dense layer trained through the frozen encoder on views.

    Args:
        encoder: images in [0, 1] -> h.
        dataset: --dataset value.
        info: its `data.describe` info.
        image_size: side of the views.

    Returns:
        {"top1", "top5"} on --eval_split.
    """
    train_ds, eval_ds = data.linear_eval_datasets(
        dataset, image_size=image_size, batch_size=FLAGS.batch_size,
        train_split=FLAGS.train_split, eval_split=FLAGS.eval_split, data_dir=FLAGS.data_dir,
        seed=FLAGS.seed, strict=FLAGS.strict,
        resize_method=common.resize_method_of(FLAGS.model_dir))
    steps = info.num_examples(FLAGS.train_split) // FLAGS.batch_size
    common.say(f"training a linear classifier on the frozen encoder: {dataset}:"
               f"{FLAGS.train_split}, {FLAGS.epochs} epoch(s) x {steps} steps of batch "
               f"{FLAGS.batch_size} at {image_size} px")
    classifier = LinearClassifier(encoder, info.num_classes)
    classify.compile_classifier(classifier, learning_rate=FLAGS.learning_rate,
                                batch_size=FLAGS.batch_size, steps=steps * FLAGS.epochs)
    return classify.train_and_evaluate(
        classifier, train_ds, eval_ds, epochs=FLAGS.epochs, steps_per_epoch=steps,
        eval_examples=info.num_examples(FLAGS.eval_split), eval_batch_size=FLAGS.batch_size)


def main(argv):
    del argv
    dataset = common.dataset_name(FLAGS.model_dir)
    info = classify.labelled_dataset(dataset, "linear evaluation")
    encoder, image_size = encoder_to_evaluate(FLAGS.model_dir, FLAGS.seed)
    kind = "random-init" if FLAGS.random_init else "pretrained"
    common.say(f"linear evaluation ({FLAGS.mode} mode) of the {kind} encoder of "
               f"{FLAGS.model_dir} on {dataset}")
    if FLAGS.mode == "features":
        result = features_mode(encoder, dataset, info, image_size)
    else:
        result = full_mode(encoder, dataset, info, image_size)
    result.update(mode=FLAGS.mode, dataset=dataset, train_split=FLAGS.train_split,
                  eval_split=FLAGS.eval_split, random_init=FLAGS.random_init, encoder=kind)
    name = "linear_eval_random.json" if FLAGS.random_init else "linear_eval.json"
    classify.report(result, FLAGS.output or os.path.join(FLAGS.model_dir, name),
                    f"linear evaluation top-1 ({kind} encoder, {FLAGS.eval_split}): "
                    f"{100 * result['top1']:.2f}%, top-5 {100 * result['top5']:.2f}%")


run = common.run(main)

if __name__ == "__main__":
    run()
