"""Export a pretrained encoder as a SavedModel: `python -m apps.export --model_dir=runs/NAME`.

Writes `--export_dir` (default `saved_models/<run name>`) with a `serving_default` signature
on uint8 images [batch, H, W, 3] returning {"embedding": h} (a `serving_float` one on
float32 images in [0, 1] beside it). With `--classifier`, the Dense layer of a
fine-tuned or linear-evaluation `LinearClassifier` (`classifier.keras`) is exported too and
the signatures also return "logits". The embedding is what the classifier reads: h, or
the output of a projection-head layer for a classifier fine-tuned from one
(`--finetune_from_head_layer`) and for a run whose own classifier reads one (an imported
fine-tuned SimCLRv2 release). The export is written aside, reloaded, checked
against the Keras model and only then moved into place (renamed on local disks and HDFS;
copied, not atomically, on object stores such as gs://: see keras_simclr/exchange/export.py).
"""
import os

from absl import flags

from apps import common
from keras_simclr.exchange.export import export_encoder
from keras_simclr.networks import heads

FLAGS = flags.FLAGS
common.define_model_dir_flag()
flags.DEFINE_string("export_dir", None, "SavedModel directory (default: saved_models/<run>).")
flags.DEFINE_string("classifier", None,
                    "A LinearClassifier .keras file (from apps.finetune) to export with "
                    "its logits; its encoder (with the head layers it reads) is exported.")

SAVED_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "saved_models")


def main(argv):
    del argv
    model = common.load_pretrained(FLAGS.model_dir)
    image_size = common.image_size_of(FLAGS.model_dir, model)
    encoder, classifier = common.features_of(model), None
    if FLAGS.classifier:
        linear = common.load_model_file(FLAGS.classifier)
        encoder = heads.features_model(linear.encoder, linear.head, linear.head_layers)
        classifier = linear.classifier
    name = os.path.basename(os.path.normpath(FLAGS.model_dir))
    export_dir = FLAGS.export_dir or os.path.join(SAVED_MODELS, name)
    path = export_encoder(encoder, export_dir, image_size, classifier=classifier)
    common.say(f"exported SavedModel to {path} (serving_default: uint8 [batch, H, W, 3] -> "
               f"{'embedding, logits' if classifier is not None else 'embedding'})")


run = common.run(main)

if __name__ == "__main__":
    run()
