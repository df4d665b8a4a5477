"""Weighted kNN evaluation of frozen features: `python -m apps.knn_eval --model_dir=runs/NAME`.

k=200 nearest training features by cosine similarity vote with weight exp(sim / 0.1)
(Wu et al. 2018, as lightly and solo-learn report). Prints and writes JSON top-1/top-5.
"""
import os

from absl import flags

from apps import classify, common
from keras_simclr import evaluation

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
    dataset = common.dataset_name(FLAGS.model_dir)
    info = classify.labelled_dataset(dataset, "kNN evaluation")
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)
    common.say(f"kNN evaluation (k={FLAGS.k}) of the pretrained encoder of {FLAGS.model_dir} "
               f"on {dataset}")
    features = classify.train_eval_features(common.features_of(model), dataset, info,
                                            image_size, FLAGS.batch_size)
    result = evaluation.knn_accuracy(*features, FLAGS.k, FLAGS.knn_temperature)
    result.update(dataset=dataset, train_split=FLAGS.train_split, eval_split=FLAGS.eval_split)
    classify.report(result, FLAGS.output or os.path.join(FLAGS.model_dir, "knn_eval.json"),
                    f"kNN top-1 (k={result['k']}, {FLAGS.eval_split}): "
                    f"{100 * result['top1']:.2f}%, top-5 {100 * result['top5']:.2f}%")


run = common.run(main)

if __name__ == "__main__":
    run()
