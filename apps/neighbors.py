"""A PNG of query images beside their nearest neighbours in embedding space.

`python -m apps.neighbors --model_dir=runs/NAME`: embeds --split (cosine similarity of h),
takes --queries images spread over the split and shows each (first column, framed in red)
with its --k nearest others.
"""
import numpy as np
from absl import flags

from apps import common
from keras_simclr import data, evaluation
from keras_simclr.evaluation import viz

FLAGS = flags.FLAGS
common.define_data_flags(("split",))
common.define_model_dir_flag()
flags.DEFINE_integer("queries", 8, "Rows: query images.")
flags.DEFINE_integer("k", 8, "Neighbours per query.")
flags.DEFINE_integer("batch_size", 256, "Batch size of the embedding pass.")
flags.DEFINE_integer("scale", 3, "Pixel magnification in the PNG.")
flags.DEFINE_string("output", "neighbors.png", "PNG file to write.")
for _name in ("queries", "k", "batch_size", "scale"):
    common.positive(_name)


def main(argv):
    del argv
    dataset = common.dataset_name(FLAGS.model_dir)
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)
    common.say(f"embedding {dataset}:{FLAGS.split} at {image_size} px with the encoder of "
               f"{FLAGS.model_dir}")
    ds = data.embed_dataset(dataset, FLAGS.split, image_size=image_size,
                            batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir,
                            strict=FLAGS.strict)
    images, features_model = [], common.features_of(model)

    def embed(batch):
        images.append(batch.numpy())
        return features_model(batch, training=False)

    features, _ = evaluation.extract_features(embed, ds)
    images = np.concatenate(images)
    features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-12
    queries = np.linspace(0, len(images) - 1, min(FLAGS.queries, len(images))).astype(int)
    similarity = features[queries] @ features.T
    similarity[np.arange(len(queries)), queries] = -np.inf  # not its own neighbour
    nearest = np.argsort(-similarity, axis=1)[:, :FLAGS.k]
    rows = [[images[q]] + [images[n] for n in row] for q, row in zip(queries, nearest)]
    viz.save_png(viz.image_grid(rows, scale=FLAGS.scale, marked_column=0), FLAGS.output)
    common.say(f"wrote {FLAGS.output}: {len(rows)} queries (framed in red) x {FLAGS.k} "
               f"nearest neighbours")


run = common.run(main)

if __name__ == "__main__":
    run()
