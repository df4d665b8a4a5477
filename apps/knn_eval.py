"""Weighted kNN evaluation of frozen features: `python -m apps.knn_eval --model_dir=runs/NAME`.

k=200 nearest training features by cosine similarity vote with weight exp(sim / 0.1)
(Wu et al. 2018, as lightly and solo-learn report). Prints and writes JSON top-1/top-5.
"""
import json
import os

from absl import flags

from apps import common

FLAGS = flags.FLAGS
common.define_data_flags(("train_split", "eval_split"))
common.define_model_dir_flag()
flags.DEFINE_integer("k", 200, "Neighbours that vote.")
flags.DEFINE_float("knn_temperature", 0.1, "Temperature of the vote weights.")
flags.DEFINE_integer("batch_size", 256, "Batch size of feature extraction.")
flags.DEFINE_string("output", None, "JSON result file (default: model_dir/knn_eval.json).")
for _name in ("k", "knn_temperature", "batch_size"):
    common.positive(_name)


def main(argv):
    del argv
    from keras_simclr import data, evaluation

    dataset = common.dataset_name(FLAGS.model_dir)
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    if info.num_classes < 2:
        raise common.AppError(f"{dataset} has no class labels: kNN evaluation needs them")
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)

    train_x, train_y, eval_x, eval_y = (
        array for split in (FLAGS.train_split, FLAGS.eval_split)
        for array in common.frozen_features(model.encoder, dataset, split, image_size,
                                            FLAGS.batch_size))
    result = evaluation.knn_accuracy(train_x, train_y, eval_x, eval_y, FLAGS.k,
                                     FLAGS.knn_temperature)
    result.update(dataset=dataset, train_split=FLAGS.train_split, eval_split=FLAGS.eval_split)
    common.write_json(FLAGS.output or os.path.join(FLAGS.model_dir, "knn_eval.json"), result)
    print(json.dumps(result, sort_keys=True))


run = common.run(main)

if __name__ == "__main__":
    run()
