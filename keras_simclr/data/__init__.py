"""Input pipelines: a dataset name (`--dataset`) -> tf.data pipelines.

Sources (one module each; the registry below maps dataset names to them):
- `shapes` (`DEFAULT_DATASET`, `shapes.py`): an embedded, generated data set of ten shape
  classes that needs no download.
- `folder:PATH` (`folder.py`): a folder of images, `PATH/SPLIT/CLASS/*.jpg` or unlabelled
  `PATH/SPLIT/*.jpg`, local or on any TensorFlow filesystem (`gs://`, `ram://`); bad files
  are skipped with one `DataWarning`.
- any other name (`tfds.py`): a prepared TFDS dataset (`cifar10`, `stl10`, `imagenet2012`,
  ...); `data_dir` is the TFDS data directory.

Pipelines (`pipelines.py`, from the decoded, resized, cached and shuffled examples of
`examples.py`): `pretrain_dataset`, `classifier_dataset`,
`linear_eval_datasets`, `embed_dataset`, `load`, `labels` and `describe`, all taking the
dataset string and an optional `tf.distribute.InputContext`. Views of images larger than
the views are cropped from the originals before batching (`originals.py`).

A new kind of data is one module with a class that has the methods of `Source` (or
subclasses `ArraySource`) plus one `register_source(name_or_prefix, factory)` line.
Imports: `utils` and `views` (the view makers that pipelines run).
"""
from keras_simclr.data.folder import FOLDER_PREFIX, IMAGE_EXTENSIONS, FolderSource
from keras_simclr.data.examples import CENTRE_CROP_FRACTION, CENTRE_CROP_MIN_SIDE
from keras_simclr.data.pipelines import (classifier_dataset, describe, embed_dataset,
                                         labels, linear_eval_datasets, load,
                                         pretrain_dataset)
from keras_simclr.data.shapes import (DEFAULT_DATASET, SHAPES_CLASSES, SHAPES_IMAGE_SIZE,
                                      SHAPES_SPLITS, ShapesSource, shapes_arrays)
from keras_simclr.data.source import (ANY_OTHER_NAME, ArraySource, DataError, DataWarning,
                                      DatasetInfo, Source, UNLABELLED, open_source,
                                      register_source)
from keras_simclr.data.tfds import TfdsSource

register_source(DEFAULT_DATASET, ShapesSource)  # "shapes"
register_source(FOLDER_PREFIX, FolderSource)  # "folder:PATH"
register_source(ANY_OTHER_NAME, TfdsSource)  # "cifar10", "imagenet2012", ...

__all__ = [
    "ANY_OTHER_NAME", "ArraySource", "CENTRE_CROP_FRACTION", "CENTRE_CROP_MIN_SIDE",
    "DEFAULT_DATASET", "DataError", "DataWarning", "DatasetInfo", "FOLDER_PREFIX",
    "FolderSource", "IMAGE_EXTENSIONS", "SHAPES_CLASSES", "SHAPES_IMAGE_SIZE",
    "SHAPES_SPLITS", "ShapesSource", "Source", "TfdsSource", "UNLABELLED",
    "classifier_dataset", "describe", "embed_dataset", "labels", "linear_eval_datasets",
    "load", "open_source", "pretrain_dataset", "register_source", "shapes_arrays",
]
