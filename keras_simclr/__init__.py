"""keras-simclr: SimCLR contrastive self-supervised learning in Keras 3.

The package, from the ground up (a subpackage imports only those on the lines above it):

    utils/        files on any filesystem, plug-in registries, process settings
    networks/     backbones (ResNets), their layers, the projection head
    views/        view makers (SimCLRAugment, multi-crop) and their image ops
    losses.py     the contrastive objectives (NT-Xent, ...)
    optimizers.py LARS and the learning-rate schedules
    training/     what `fit` needs beside the model: distribution, callbacks, resilience,
                  precision, gradient caching
    data/         datasets -> tf.data pipelines (images, or views made in the pipeline)
    evaluation/   frozen-feature evaluation, the linear classifier, pictures
    model.py      SimCLR: views -> encoder -> head -> objective, the contrastive train_step
    distillation.py  Distiller: a frozen teacher classifier's predictions -> a student
    exchange/     models in and out: SavedModel export, the official releases' import

`losses.py`, `optimizers.py` and `model.py` stay single modules at the top because their
names are the package's contracts (`keras_simclr.losses.nt_xent`,
`keras_simclr.optimizers.LARS`, `keras_simclr.SimCLR`), as in Keras itself.
"""
from keras_simclr.utils import runtime as _runtime  # noqa: F401  (before TensorFlow is imported)
from keras_simclr import losses, optimizers  # noqa: E402
from keras_simclr.evaluation.classifier import LinearClassifier  # noqa: E402
from keras_simclr.losses import DecoupledNTXent, NTXent, register_objective  # noqa: E402
from keras_simclr.model import SimCLR, build_simclr  # noqa: E402
from keras_simclr.distillation import Distiller, distillation_loss  # noqa: E402
from keras_simclr.networks import backbones, conv, heads  # noqa: E402
from keras_simclr.networks.backbones import build_backbone, register_family, resnet  # noqa: E402
from keras_simclr.networks.heads import ProjectionHead  # noqa: E402
from keras_simclr.optimizers import LARS, WarmupCosine  # noqa: E402
from keras_simclr.training import gradient_cache  # noqa: E402
from keras_simclr.views import augment  # noqa: E402
from keras_simclr import views  # noqa: E402
from keras_simclr.views import (MultiCropAugment, SimCLRAugment, ViewMaker,  # noqa: E402
                                make_view_maker, register_view_maker)

__all__ = [
    "DecoupledNTXent", "Distiller", "LARS", "LinearClassifier", "MultiCropAugment", "NTXent",
    "ProjectionHead", "SimCLR", "SimCLRAugment", "ViewMaker", "WarmupCosine", "augment",
    "backbones", "build_backbone", "build_simclr", "conv", "distillation_loss",
    "gradient_cache", "heads", "losses", "make_view_maker", "optimizers", "register_family",
    "register_objective", "register_view_maker", "resnet", "views",
]
