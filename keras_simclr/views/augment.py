"""The SimCLR view generator: random resized crop, flip, colour jitter, grayscale, blur.

`SimCLRAugment` turns a batch of images (uint8 in [0, 255], or float in [0, 1]) of any size
into float32 views in [0, 1] at `image_size`, with the paper's defaults (Chen et al. 2020,
appendix A; google-research/simclr `data_util.py`):

- random resized crop: area U(0.08, 1) of the image, aspect ratio log-uniform in
  (3/4, 4/3), 10 attempts then the whole image (as torchvision), resized to the view with
  `resize_method` "bicubic" (the paper) or "bilinear" (`keras_simclr/views/crop.py`);
- horizontal flip with p = 0.5;
- with p = 0.8, colour jitter of strength s in random order: brightness delta
  U(-0.8s, 0.8s) (`brightness="additive"`, SimCLRv1) or multiplier U(max(0, 1-0.8s), 1+0.8s)
  (`"multiplicative"`, SimCLRv2), contrast and saturation multipliers U(1-0.8s, 1+0.8s),
  hue delta U(-0.2s, 0.2s) of the colour circle;
- grayscale with p = 0.2; Gaussian blur with p = `blur_prob` (0.5 for ImageNet, off for
  CIFAR), sigma U(0.1, 2.0) and a kernel of about 10% of the side; optional solarization.

Colour jitter is TensorFlow's four `tf.image.adjust_*` operations computed in one pass
(`keras_simclr/views/color.py`), each image in its own random order; solarization is keras-cv's.
keras-cv's factor samplers do not draw the paper's distributions and ignore the seed, so
every random parameter is drawn here, in the paper's units, from one seeded
`tf.random.Generator`. Each image independently draws whether a step applies (a
vectorised `tf.where`, not keras-cv `RandomApply`, which loops over images and needs
AutoGraph). Crop (bicubic: `crop.bicubic_crop_and_resize`; bilinear: one
`tf.image.crop_and_resize`, both over the whole batch) and blur (one depthwise convolution
with a per-image kernel) are done here because keras-cv's `RandomCropAndResize` and
`RandomGaussianBlur` loop over images one by one. The element-wise steps (selection, flip,
grayscale, jitter, bicubic crop) are XLA-compiled functions, the random draws stay outside
them: TensorFlow's own broadcasting kernels take several times as long on the CPU.

Images larger than the views are better cropped from the original, before they are
brought to one size: `example_crops(image, seed)` crops one image of any size in a tf.data
map (stateless draws from a per-example seed) and `views_of_crops` applies the rest to the
batched crops; `data.pretrain_dataset` does this when the stored images are larger.

Created inside a `tf.distribute` scope, the generator gives every replica different
numbers; successive calls (the two views) differ; the same seed repeats the same views.
"""
import keras
import keras_cv
import tensorflow as tf

from keras_simclr.views import blur, color, crop
from keras_simclr.views.view_dict import to_float_images

BRIGHTNESS_MODES = ("additive", "multiplicative")
# The resize method of a saved configuration that names none: such runs and files were
# made with bilinear crops.
LEGACY_RESIZE_METHOD = "bilinear"


@tf.function(jit_compile=True)
def _select(apply, changed, images):
    """`changed` where the per-image `apply` [B, 1, 1, 1] holds, else `images`. XLA-compiled:
    TensorFlow's broadcasting `tf.where` takes about 9x as long on the CPU."""
    return tf.where(apply, changed, images)


@tf.function(jit_compile=True)
def _flip_where(flip, images):
    """Images mirrored left-right where the per-image `flip` [B, 1, 1, 1] holds (XLA)."""
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


@tf.function(jit_compile=True)
def _grayscale(images):
    """tf.image.rgb_to_grayscale repeated over the 3 channels (XLA: a third of the time)."""
    return tf.repeat(tf.image.rgb_to_grayscale(images), 3, axis=-1)


def _generator(seed):
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


# The constructor's arguments, each kept as an attribute of the same name (the config).
_ARGUMENTS = ("image_size", "crop_area", "crop_aspect", "flip_prob", "jitter_strength",
              "jitter_prob", "grayscale_prob", "blur_prob", "blur_sigma", "solarize_prob",
              "seed", "resize_method", "brightness")


def _check_arguments(image_size, crop_area, resize_method, brightness, **probabilities):
    """ValueError for an argument of SimCLRAugment outside its range."""
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if not 0.0 < crop_area[0] <= crop_area[1] <= 1.0:
        raise ValueError(f"crop_area must satisfy 0 < min <= max <= 1, got {crop_area}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if resize_method not in crop.RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {crop.RESIZE_METHODS}, got "
                         f"{resize_method!r}")
    if brightness not in BRIGHTNESS_MODES:
        raise ValueError(f"brightness must be one of {BRIGHTNESS_MODES}, got {brightness!r}")


@keras.saving.register_keras_serializable(package="keras_simclr")
class SimCLRAugment(keras.layers.Layer):
    """Random SimCLR views of a batch of images; see the module docstring.

    Args:
        image_size: side of the square output views.
        crop_area: (min, max) fraction of the image area kept by the random crop.
        crop_aspect: (min, max) aspect ratio of the crop.
        flip_prob: probability of a horizontal flip.
        jitter_strength: s in the paper (0.5 for CIFAR, 1.0 for ImageNet).
        jitter_prob: probability of colour jitter per image.
        grayscale_prob: probability of converting to grayscale.
        blur_prob: probability of Gaussian blur (0 disables the step).
        blur_sigma: (min, max) standard deviation of the blur, in pixels.
        solarize_prob: probability of solarization at threshold 0.5 (0 disables).
        seed: integer making the views reproducible; None draws fresh randomness.
        resize_method: "bicubic" (the paper) or "bilinear" resizing of the crops. A
            config without it loads as `LEGACY_RESIZE_METHOD` ("bilinear").
        brightness: "additive" (SimCLRv1: x + delta) or "multiplicative" (SimCLRv2:
            x * factor).
    """

    def __init__(
        self,
        image_size,
        crop_area=(0.08, 1.0),
        crop_aspect=(3 / 4, 4 / 3),
        flip_prob=0.5,
        jitter_strength=0.5,
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.0,
        blur_sigma=(0.1, 2.0),
        solarize_prob=0.0,
        seed=None,
        resize_method="bicubic",
        brightness="additive",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_arguments(image_size, crop_area, resize_method, brightness,
                         flip_prob=flip_prob, jitter_prob=jitter_prob,
                         grayscale_prob=grayscale_prob, blur_prob=blur_prob,
                         solarize_prob=solarize_prob)
        self.image_size = int(image_size)
        self.crop_area = tuple(float(a) for a in crop_area)
        self.crop_aspect = tuple(float(a) for a in crop_aspect)
        self.flip_prob = float(flip_prob)
        self.jitter_strength = float(jitter_strength)
        self.jitter_prob = float(jitter_prob)
        self.grayscale_prob = float(grayscale_prob)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = tuple(float(s) for s in blur_sigma)
        self.solarize_prob = float(solarize_prob)
        self.seed = seed
        self.resize_method = resize_method
        self.brightness = brightness
        self._rng = _generator(seed)
        # A keras-cv layer used for its image operation only.
        self._solarize = keras_cv.layers.Solarization((0, 1), threshold_factor=(128, 128))

    def build(self, input_shape):
        # The keras-cv layer holds no weights; only its image operation is used.
        self._solarize.built = True
        self.built = True

    @classmethod
    def crop_and_flip(cls, image_size: int, seed: int | None = None,
                      resize_method: str = "bicubic") -> "SimCLRAugment":
        """The linear-evaluation augmentation: random resized crop and flip only.

        Args:
            image_size, seed, resize_method: as for `SimCLRAugment`.

        Returns:
            A `SimCLRAugment` without colour jitter or grayscale.
        """
        return cls(image_size, jitter_prob=0.0, grayscale_prob=0.0, seed=seed,
                   resize_method=resize_method)

    @classmethod
    def from_config(cls, config):
        return super().from_config(dict({"resize_method": LEGACY_RESIZE_METHOD}, **config))

    num_views = 2  # views per image: the pair SimCLR contrasts

    def views(self, images) -> list:
        """The two independent random views of `images` that SimCLR contrasts."""
        return [self(images), self(images)]

    def example_crops(self, image: tf.Tensor, seed: tf.Tensor) -> list:
        """The crops of one stored image of any size for its two views (tf.data map).

        Args:
            image: uint8 [H, W, 3] (or float in [0, 1]), the original or a capped copy.
            seed: int [2], this example's seed: the same seed, the same crops.

        Returns:
            Two float32 [S, S, 3] crops in [0, 1], for `views_of_crops` once batched.
        """
        return [self.crop_example(image, tf.random.experimental.stateless_fold_in(seed, i))
                for i in range(2)]

    def views_of_crops(self, crops: list) -> list:
        """The views made of batched `example_crops`: flip, jitter, grayscale, ... each.

        Args:
            crops: the batched crops [B, S, S, 3] each, float32 in [0, 1] or uint8.

        Returns:
            One float32 view [B, S, S, 3] per crop.
        """
        return [self.after_crop(to_float_images(c)) for c in crops]

    def crop_example(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One random resized crop of one image [H, W, C] of any size, float32 [S, S, C]
        in [0, 1]; the box is drawn statelessly from `seed` (int [2])."""
        return crop.random_resized_crop_one(image, seed, self.image_size, self.crop_area,
                                            self.crop_aspect, self.resize_method)

    def _crop_boxes(self, images):
        """Normalised [y1, x1, y2, x2] boxes, one random resized crop per image."""
        shape = tf.shape(images)
        return crop.sample_boxes(self._rng.uniform, shape[1], shape[2], shape[0],
                                 self.crop_area, self.crop_aspect)

    def _crop(self, images):
        """One random resized crop of each of a batch of float images, at S x S."""
        return crop.resize_boxes(images, self._crop_boxes(images), self.image_size,
                                 self.resize_method)

    def _maybe(self, prob, layer, images):
        """Apply `layer` to each image independently with probability `prob`."""
        if prob <= 0.0:
            return images
        if prob >= 1.0:
            return layer(images)
        apply = self._rng.uniform((tf.shape(images)[0], 1, 1, 1)) < prob
        return _select(apply, layer(images), images)

    def jitter_parameters(self, batch):
        """Per-image colour-jitter draws in the paper's units (`color.jitter_parameters`)."""
        return color.jitter_parameters(self._rng.uniform, batch, self.jitter_strength,
                                       self.brightness)

    def _color_jitter(self, images):
        """The four colour operations in a random order per image (`color.color_jitter`)."""
        batch = tf.shape(images)[0]
        params = self.jitter_parameters(batch)
        order = self._rng.uniform((batch,), 0, len(color.ORDERS), dtype=tf.int64)
        return color.color_jitter(images, params, order)

    def _gaussian_blur(self, images):
        """Blur each image with its own sigma U(blur_sigma), kernel about 10% of the side."""
        sigma = self._rng.uniform((tf.shape(images)[0],), *self.blur_sigma)
        return blur.gaussian_blur(images, sigma, radius=self.image_size // 20)

    def _flip(self, images):
        flip = self._rng.uniform((tf.shape(images)[0], 1, 1, 1)) < self.flip_prob
        return _flip_where(flip, images)

    def call(self, images):
        images = to_float_images(images)
        if images.shape.rank != 4:
            raise ValueError(f"expected a batch of images [B, H, W, C], got {images.shape}")
        return self.after_crop(self._crop(images))

    def after_crop(self, views: tf.Tensor) -> tf.Tensor:
        """Everything after the crop, on a batch: flip, jitter, grayscale, blur, solarize.

        Args:
            views: float32 [B, S, S, 3] crops in [0, 1].

        Returns:
            float32 [B, S, S, 3] views in [0, 1].
        """
        views = self._flip(views)
        views = self._maybe(self.jitter_prob, self._color_jitter, views)
        views = self._maybe(self.grayscale_prob, _grayscale, views)
        views = self._maybe(self.blur_prob, self._gaussian_blur, views)
        views = self._maybe(self.solarize_prob, self._solarize, views)
        views = tf.clip_by_value(views, 0.0, 1.0)
        return tf.ensure_shape(views, [None, self.image_size, self.image_size, 3])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), **{name: getattr(self, name) for name in _ARGUMENTS}}


def color_distortion(image_size: int, strength: float, seed: int | None = None
                     ) -> SimCLRAugment:
    """SimCLR's colour distortion alone, for `after_crop` on views already cropped and
    flipped: jitter of `strength` with p 0.8, grayscale with p 0.2, no flip (the noise a
    distilled student sees on its teacher's view, apps.distill --student_color_jitter).

    Args:
        image_size, seed: as for `SimCLRAugment`.
        strength: s of the colour jitter.
    """
    return SimCLRAugment(image_size, flip_prob=0.0, jitter_strength=strength, seed=seed)
