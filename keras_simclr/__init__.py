"""keras-simclr: SimCLR contrastive self-supervised learning in Keras 3."""
from keras_simclr import _runtime  # noqa: F401  (must run before TensorFlow is imported)
