"""A PNG map of a split's embeddings: `python -m apps.map --model_dir=runs/NAME --output=map.png`.

Embeds --split as apps.embed does (`--model`/`--model_dir`: a pretraining run or a
SavedModel from apps.export), projects the embeddings to 2-D (PCA, or `--method=tsne`),
and draws one dot per image coloured by class with a legend of the class names, and
--thumbnails images at points spread over the map. A map on which classes form separate
regions shows what a linear probe or kNN will find.
"""
import numpy as np
from absl import flags

from apps import common
from apps import embed as embed_app  # its flags: --model, --output, --split, --image_size, ...
from keras_simclr import data, evaluation
from keras_simclr.evaluation import viz

FLAGS = flags.FLAGS
flags.DEFINE_alias("model_dir", "model")
FLAGS["output"].help = "PNG file to write."
flags.DEFINE_enum("method", "pca", list(viz.PROJECTIONS), "2-D projection.")
flags.DEFINE_integer("max_points", 2000, "Images drawn (a class-balanced sample of --split).")
flags.DEFINE_integer("thumbnails", 12, "Images shown as thumbnails at their points.")
flags.DEFINE_integer("size", 640, "Side of the plot in pixels.")
for _name in ("max_points", "size"):
    common.positive(_name)


def main(argv):
    del argv
    embed, image_size, model_dir = embed_app.embedding_fn(FLAGS.model)
    dataset = common.dataset_name(model_dir)
    info = data.describe(dataset, FLAGS.data_dir, FLAGS.strict)
    labels = data.labels(dataset, FLAGS.split, FLAGS.data_dir, FLAGS.strict)
    subset = None
    if len(labels) > FLAGS.max_points:
        subset = viz.sample_across_classes(labels, FLAGS.max_points, FLAGS.seed)
        subset.sort()
    common.say(f"embedding {FLAGS.max_points if subset is not None else len(labels)} images "
               f"of {dataset}:{FLAGS.split} at {image_size} px with {FLAGS.model}")
    ds = data.classifier_dataset(dataset, FLAGS.split, image_size=image_size,
                                 batch_size=FLAGS.batch_size, training=False,
                                 data_dir=FLAGS.data_dir, cache=False, strict=FLAGS.strict,
                                 subset=subset)
    images = []

    def embed_and_keep(batch):
        images.append(batch.numpy())
        return embed(batch)

    features, y = evaluation.extract_features(embed_and_keep, ds)
    method = viz.PROJECTIONS[FLAGS.method]
    common.say(f"projecting {features.shape[1]}-d embeddings to 2-D ({method})")
    points = viz.project_2d(features, FLAGS.method, FLAGS.seed)
    picture = viz.embedding_map(
        points, y, info.class_names, np.concatenate(images), thumbnails=FLAGS.thumbnails,
        size=FLAGS.size, seed=FLAGS.seed,
        title=f"{method} of {len(points)} embeddings, {dataset}:{FLAGS.split}")
    viz.save_png(picture, FLAGS.output)
    common.say(f"wrote {FLAGS.output}: {picture.shape[1]}x{picture.shape[0]} px, "
               f"{len(points)} points, {len(np.unique(y[y >= 0]))} classes")


run = common.run(main)

if __name__ == "__main__":
    run()
