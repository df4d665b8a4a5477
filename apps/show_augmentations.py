"""A PNG of images beside several of their SimCLR views: `python -m apps.show_augmentations`.

Each row is one image of --dataset/--split followed by --views random views made with the
pretraining augmentation (the flags match apps.pretrain's). The images take turns over the
classes (one of each class first, seeded by --seed), so the rows show different classes.
"""
import numpy as np
from absl import flags

from apps import common

FLAGS = flags.FLAGS
common.define_data_flags(("split",))
flags.DEFINE_integer("images", 8, "Rows: images shown.")
flags.DEFINE_integer("views", 6, "Views per image.")
flags.DEFINE_integer("image_size", 32, "Side of the views.")
common.define_augment_flags()
flags.DEFINE_integer("scale", 3, "Pixel magnification in the PNG.")
flags.DEFINE_string("output", "augmentations.png", "PNG file to write.")
for _name in ("images", "views", "image_size", "scale"):
    common.positive(_name)


def main(argv):
    del argv
    from keras_simclr import SimCLRAugment, data, viz

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
    augment = SimCLRAugment(FLAGS.image_size, seed=FLAGS.seed, **common.augment_flags())
    views = [augment(images).numpy() for _ in range(FLAGS.views)]
    rows = [[images[i]] + [v[i] for v in views] for i in range(len(images))]
    viz.save_png(viz.image_grid(rows, scale=FLAGS.scale), FLAGS.output)
    common.say(f"wrote {FLAGS.output}: {len(rows)} images x (original + {FLAGS.views} views)")


run = common.run(main)

if __name__ == "__main__":
    run()
