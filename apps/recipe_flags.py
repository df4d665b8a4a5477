"""The pretraining recipe's flags, defined once for apps.pretrain and the benchmarks.

A recipe is the encoder (`define_encoder_flags`), the views (`define_view_flags`, also
apps.show_augmentations'), the head and objective, the optimizer and schedule, and where and
how the steps run (`define_recipe_flags`: all of them). Each function defines its flags in an
absl `FlagValues`, the global `flags.FLAGS` of the apps by default; bench scripts define
them in their own one (`bench.common.parse_with_encoder_flags`), and `RECIPE_FLAGS` names
them all for the result records of bench/accuracy.py. The functions that turn flag values
into objects (`encoder_arguments`, `objective`, `view_maker`) take any such `FlagValues`.

`--backbone`, `--loss` and `--view_maker` take any name registered when the flags are
parsed (`backbones.register_family`, `losses.register_objective`,
`views.register_view_maker`), so a plug-in registered before the app runs is a choice.
"""
from absl import flags

from apps import common
from keras_simclr import losses, optimizers, views
from keras_simclr.networks import backbones
from keras_simclr.views import crop
from keras_simclr.training import precision
from keras_simclr.views.augment import BRIGHTNESS_MODES
from keras_simclr.data import originals
from keras_simclr.utils.registry import declared_parameters

FLAGS = flags.FLAGS


def _registered(flag: str, names, flag_values) -> None:
    """Validate --flag against the names registered when the flags are parsed."""
    def check(value):
        if value not in names():
            choices = ", ".join(sorted(name for name in names() if name is not None))
            raise flags.ValidationError(f"--{flag}={value} is not registered; choose one of "
                                        f"{choices}")
        return True
    flags.register_validator(flag, check, flag_values=flag_values)


def define_encoder_flags(flag_values=FLAGS) -> None:
    """--backbone, --width_multiplier, --stage_widths and --stem."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("backbone", "resnet18",
                        f"Encoder: a registered backbone ({', '.join(backbones.names())}).", **fv)
    _registered("backbone", backbones.names, flag_values)
    flags.DEFINE_float("width_multiplier", 0.5, "Channel width multiplier of the encoder.", **fv)
    common.positive("width_multiplier", flag_values)
    flags.DEFINE_list("stage_widths", None,
                      "Four width multipliers, one per ResNet stage, in place of "
                      "--width_multiplier for the stages (the stem keeps it), e.g. "
                      "0.5,0.5,0.5,2: a wide last stage.", **fv)
    flags.register_validator(
        "stage_widths",
        lambda v: v is None or (len(v) == 4 and all(common.is_positive_number(w) for w in v)),
        message="--stage_widths must be four positive numbers, e.g. 0.5,0.5,0.5,2", **fv)
    flags.DEFINE_enum("stem", "imagenet", backbones.STEMS,
                      "ResNet stem: imagenet (7x7/2 + max-pool), cifar (3x3/1), stride2 (3x3/2).",
                      **fv)


def define_view_flags(flag_values=FLAGS) -> None:
    """The view maker and its options: --view_maker, --image_size, multi-crop, augmentation."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("view_maker", None,
                        f"A registered view maker ({', '.join(views.VIEW_MAKERS)}); default: "
                        f"simclr, or multicrop with --small_views.", **fv)
    _registered("view_maker", lambda: [None, *views.VIEW_MAKERS], flag_values)
    flags.DEFINE_integer("image_size", 32, "Side of the square views.", **fv)
    flags.DEFINE_integer("small_views", 0,
                         "Multi-crop: small views per image besides the two full.", **fv)
    flags.DEFINE_integer("small_view_size", 16, "Side of the multi-crop small views.", **fv)
    flags.DEFINE_float("jitter_strength", 0.5, "Colour jitter strength s.", **fv)
    flags.DEFINE_float("blur_prob", 0.0, "Gaussian blur probability (0.5 for ImageNet).", **fv)
    flags.DEFINE_float("solarize_prob", 0.0, "Solarization probability.", **fv)
    flags.DEFINE_float("min_crop_area", 0.08, "Smallest area fraction of the image that the "
                       "random crop keeps (the paper: 0.08).", **fv)
    flags.DEFINE_enum("resize_method", "bicubic", crop.RESIZE_METHODS,
                      "How crops are resized to the views: bicubic (the paper) or bilinear.", **fv)
    flags.DEFINE_enum("brightness", "additive", BRIGHTNESS_MODES,
                      "Colour jitter brightness: additive (SimCLRv1) or multiplicative "
                      "(SimCLRv2).", **fv)
    for name in ("image_size", "small_view_size"):
        common.positive(name, flag_values)
    flags.register_validator("small_views", lambda v: v >= 0,
                             message="--small_views must be >= 0", **fv)
    flags.register_validator("min_crop_area", lambda v: 0 < v <= 1,
                             message="--min_crop_area must be in (0, 1]", **fv)
    flags.register_multi_flags_validator(["view_maker", "small_views"], _small_views_taken,
                                         message="--small_views needs a view maker that makes "
                                                 "small views (multicrop)", **fv)


def _small_views_taken(values: dict) -> bool:
    name = view_maker_name(values["view_maker"], values["small_views"])
    return (not values["small_views"] or name not in views.VIEW_MAKERS  # (its own error)
            or "small_views" in declared_parameters(views.VIEW_MAKERS[name]))


def define_objective_flags(flag_values=FLAGS) -> None:
    """The projection head, the objective and gradient caching."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("head_depth", 3, "Layers of the projection head (3: SimCLRv2, 2: v1).",
                         **fv)
    flags.DEFINE_integer("proj_dim", 128, "Output size of the projection head.", **fv)
    flags.DEFINE_float("temperature", 0.2, "NT-Xent temperature (objectives that take one).",
                       **fv)
    flags.DEFINE_string("loss", "ntxent",
                        "Contrastive objective, a registered one: ntxent (SimCLR), dcl "
                        "(decoupled, Yeh et al. 2022), ...", **fv)
    _registered("loss", lambda: losses.OBJECTIVES, flag_values)
    flags.DEFINE_float("loss_scale", 1.0,
                       "Loss = scale x mean over anchors (2: the official code).", **fv)
    flags.DEFINE_integer("chunk_size", None, "Gradient caching: views per encoder pass (exact).",
                         **fv)
    for name in ("head_depth", "proj_dim", "temperature", "loss_scale", "chunk_size"):
        common.positive(name, flag_values)


def define_optimizer_flags(flag_values=FLAGS) -> None:
    """Batch size, optimizer, learning-rate schedule and weight decay."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("batch_size", 256, "Global batch size (images; twice as many views).",
                         **fv)
    flags.DEFINE_enum("optimizer", "lars", list(optimizers.OPTIMIZERS), "Optimizer.", **fv)
    flags.DEFINE_float("learning_rate", 1.0, "Base learning rate, scaled by --lr_scaling.", **fv)
    flags.DEFINE_enum("lr_scaling", "linear", ["linear", "sqrt"],
                      "linear: base * batch / 256; sqrt: base * sqrt(batch).", **fv)
    flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up epochs before the cosine decay.",
                       **fv)
    flags.DEFINE_float("final_lr_fraction", 0.0,
                       "Learning rate at the end of the cosine, as a fraction of its peak "
                       "(0: the paper's decay to zero).", **fv)
    flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (BN and biases excluded).", **fv)
    flags.DEFINE_float("momentum", 0.9, "Momentum of LARS and SGD.", **fv)
    common.positive("batch_size", flag_values)
    flags.register_validator("final_lr_fraction", lambda v: 0 <= v <= 1,
                             message="--final_lr_fraction must be in [0, 1]", **fv)


def define_recipe_flags(flag_values=FLAGS) -> None:
    """Every recipe flag: the groups above, precision, where views are made, the probe."""
    fv = {"flag_values": flag_values}
    define_encoder_flags(flag_values)
    define_view_flags(flag_values)
    define_objective_flags(flag_values)
    define_optimizer_flags(flag_values)
    flags.DEFINE_enum("precision", "float32", precision.PRECISIONS,
                      "Compute precision (auto: mixed_bfloat16 on CPUs with AMX-BF16, else "
                      "float32).", **fv)
    flags.DEFINE_float("original_cap", originals.DEFAULT_CAP,
                       "Images larger than the views are cropped from their originals, cached "
                       "with the shorter side at most this many times --image_size (0: no cap).",
                       **fv)
    flags.register_validator("original_cap", lambda v: v == 0 or v >= 1,
                             message="--original_cap must be 0 (no cap) or at least 1", **fv)
    flags.DEFINE_enum("augment_in", "auto", ["auto", "model", "data"],
                      "Where views are made: in the model's train_step, in the tf.data "
                      "pipeline, or auto (data on CPU, where it overlaps with training; model "
                      "on GPUs).", **fv)
    flags.DEFINE_boolean("probe", True, "Train an online linear probe on labelled batches.",
                         **fv)


def _names(define) -> tuple[str, ...]:
    holder = flags.FlagValues()
    define(holder)
    return tuple(holder)


ENCODER_FLAGS = _names(define_encoder_flags)
RECIPE_FLAGS = _names(define_recipe_flags)


def stage_widths(values) -> tuple[float, ...] | None:
    """--stage_widths as floats, or None."""
    return tuple(float(w) for w in values.stage_widths) if values.stage_widths else None


def encoder_arguments(values) -> dict:
    """The `build_backbone(--backbone, ...)` / `build_simclr` keywords of the encoder flags."""
    return {"stem": values.stem,
            "width_multiplier": values.width_multiplier, "stage_widths": stage_widths(values)}


def objective(values) -> losses.Objective:
    """--loss with the arguments it declares of --temperature and --loss_scale."""
    return losses.get(values.loss, temperature=values.temperature, scale=values.loss_scale)


def view_maker_name(name: str | None, small_views: int) -> str:
    """--view_maker, or by default "multicrop" with small views and "simclr" without."""
    return name or ("multicrop" if small_views else "simclr")


def view_maker(values, **kwargs) -> views.ViewMaker:
    """The view maker of the view flags, given the options it declares (and `kwargs`)."""
    return views.make_view_maker(
        view_maker_name(values.view_maker, values.small_views), image_size=values.image_size,
        small_views=values.small_views, small_view_size=values.small_view_size,
        crop_area=(values.min_crop_area, 1.0), jitter_strength=values.jitter_strength,
        blur_prob=values.blur_prob, solarize_prob=values.solarize_prob,
        resize_method=values.resize_method, brightness=values.brightness, **kwargs)
