"""A PNG of images beside several of their SimCLR views: `python -m apps.show_augmentations`.

Each row is one image of --dataset/--split followed by --views random views made by the
pretraining view maker (--view_maker and its flags, as apps.pretrain's; multi-crop's
small views are drawn at the size of the full ones). The images take turns over the
classes (one of each class first, seeded by --seed), so the rows show different classes.
"""
import numpy as np
from absl import flags

from apps import common, recipe_flags
from keras_simclr import data
from keras_simclr.evaluation import viz

FLAGS = flags.FLAGS
common.define_data_flags(("split",))
flags.DEFINE_integer("images", 8, "Rows: images shown.")
flags.DEFINE_integer("views", 6, "Views per image.")
recipe_flags.define_view_flags()
flags.DEFINE_integer("scale", 3, "Pixel magnification in the PNG.")
flags.DEFINE_string("output", "augmentations.png", "PNG file to write.")
for _name in ("images", "views", "scale"):
    common.positive(_name)


def make_views(images: np.ndarray, count: int) -> list:
    """`count` views of each image from the seeded view maker of the flags, in the order
    its `views` calls make them."""
    maker = recipe_flags.view_maker(FLAGS, seed=FLAGS.seed)
    made = []
    while len(made) < count:
        made += [view.numpy() for view in maker.views(images)]
    return made[:count]


def main(argv):
    del argv
    dataset = common.dataset_name()
    labels = data.labels(dataset, FLAGS.split, FLAGS.data_dir, FLAGS.strict)
    chosen = viz.sample_across_classes(labels, FLAGS.images, FLAGS.seed)
    common.say(f"augmenting {len(chosen)} images of {dataset}:{FLAGS.split} "
               f"({len(set(labels[chosen].tolist()) - {-1})} classes) at {FLAGS.image_size} px")
    ds = data.classifier_dataset(dataset, FLAGS.split, image_size=FLAGS.image_size,
                                 batch_size=len(chosen), training=False,
                                 data_dir=FLAGS.data_dir, cache=False, strict=FLAGS.strict,
                                 subset=sorted(chosen))
    images, _ = next(iter(ds))  # in dataset order: put them back in the order chosen
    images = images.numpy()[np.argsort(np.argsort(chosen))]
    views = make_views(images, FLAGS.views)
    rows = [[images[i]] + [v[i] for v in views] for i in range(len(images))]
    viz.save_png(viz.image_grid(rows, scale=FLAGS.scale), FLAGS.output)
    common.say(f"wrote {FLAGS.output}: {len(rows)} images x (original + {FLAGS.views} views)")


run = common.run(main)

if __name__ == "__main__":
    run()
