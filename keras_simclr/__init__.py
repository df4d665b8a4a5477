"""keras-simclr: SimCLR contrastive self-supervised learning in Keras 3."""
from keras_simclr import _runtime  # noqa: F401  (must run before TensorFlow is imported)
from keras_simclr import augment, backbones, conv, gradient_cache, heads, losses, optimizers  # noqa: E402,E501
from keras_simclr import views  # noqa: E402
from keras_simclr.augment import SimCLRAugment  # noqa: E402
from keras_simclr.backbones import build_backbone, register_family, resnet  # noqa: E402
from keras_simclr.classifier import LinearClassifier  # noqa: E402
from keras_simclr.heads import ProjectionHead  # noqa: E402
from keras_simclr.losses import DecoupledNTXent, NTXent, register_objective  # noqa: E402
from keras_simclr.model import SimCLR, build_simclr  # noqa: E402
from keras_simclr.multicrop import MultiCropAugment  # noqa: E402
from keras_simclr.optimizers import LARS, WarmupCosine  # noqa: E402
from keras_simclr.views import ViewMaker, make_view_maker, register_view_maker  # noqa: E402

__all__ = [
    "DecoupledNTXent", "LARS", "LinearClassifier", "MultiCropAugment", "NTXent",
    "ProjectionHead", "SimCLR", "SimCLRAugment", "ViewMaker", "WarmupCosine", "augment",
    "backbones", "build_backbone", "build_simclr", "conv", "gradient_cache", "heads", "losses",
    "make_view_maker", "optimizers", "register_family", "register_objective",
    "register_view_maker", "resnet", "views",
]
