"""Import the official SimCLR v1/v2 models into this project's own `SimCLR` model.

The official releases (github.com/google-research/simclr, Apache-2.0) are TF2 SavedModels,
e.g. `gs://simclr-checkpoints-tf2/simclrv2/pretrained/r50_1x_sk0/saved_model`, written by
`tf2/run.py` from a `tf.keras` model of custom layers. `load(path)` reads only their
variables, through `tf.io.gfile` (a `gs://` path works wherever there is network, a local
copy offline), and writes them into ordinary Keras variables of this project's networks:
`backbones.resnet(padding="fixed", sk_ratio=...)`, a `ProjectionHead` and, where the
source has a supervised head, the model's linear probe, reading what the release's reads:
h in pretrained and supervised releases, the output of a projection-head layer in
fine-tuned SimCLRv2 releases (`SimCLR(classifier_head_layer=K)`). The variables do not
say which; the graph in `saved_model.pb` does (`official_graph`), and where it cannot be
read the import stops rather than guess. The result trains, fine-tunes and exports like a
model of `apps.pretrain`.

Variables are found by their place in the official model, not by their names: the
checkpoint's object graph (`_CHECKPOINTABLE_OBJECT_GRAPH`) gives each variable a path such
as `model/resnet_model/block_groups/0/layers/1/conv_relu_dropblock_layers/3/conv2d/kernel`.
Depth, width, selective kernels and the heads are read from the variables' shapes. The
official models take RGB images in [0, 1] without mean/std normalisation, as this
project's encoders do.
"""
import dataclasses
import os

import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import trackable_object_graph_pb2

from keras_simclr import losses
from keras_simclr.exchange import official_graph
from keras_simclr.networks import backbones
from keras_simclr.networks.heads import ProjectionHead
from keras_simclr.model import SimCLR

_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Lists a Keras 2 layer or run.py's module adds beside its own attributes: the same
# variables again, under other paths.
_DUPLICATES = frozenset({
    "variables", "trainable_variables", "non_trainable_variables", "weights",
    "trainable_weights", "non_trainable_weights", "keras_api", "trainable_variables_list",
    "regularization_losses",
})
_RESNET = "model/resnet_model"
_STEM = f"{_RESNET}/initial_conv_relu_max_pool"
_HEAD = "model/_projection_head/linear_layers"
_SUPERVISED = "model/supervised_head/linear_layer/dense"
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_WEIGHTS = {"conv": ("kernel",), "dense": ("kernel", "bias"),
            "bn": ("gamma", "beta", "moving_mean", "moving_variance")}
# What reading a damaged checkpoint raises: IndexError ("Read less bytes than requested")
# for a truncated data file, an OpError or ValueError for a damaged index, DecodeError for
# a damaged object graph.
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, message.DecodeError)
DEFAULT_SK_RATIO = 0.0625  # the released SK models' (squeezes hit the 32 minimum at 1x)
EXAMPLE = "gs://simclr-checkpoints-tf2/simclrv2/pretrained/r50_1x_sk0/saved_model"


class OfficialModelError(ValueError):
    """The source is not an official model this importer reads; the message says why."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What an official model is, as read from its variables' shapes."""

    depth: int
    width_multiplier: float
    sk_ratio: float
    stem: str
    head_depth: int  # 0: no projection head (SimCLRv1 and supervised releases)
    hidden_dim: int
    proj_dim: int
    num_classes: int | None
    classifier_head_layer: int = 0  # the projection-head layer the supervised head reads

    def describe(self) -> str:
        """E.g. "ResNet-50 1x SK, 3-layer projection head to 128, 1000-class head"."""
        parts = [f"ResNet-{self.depth} {self.width_multiplier:g}x"
                 f"{' SK' if self.sk_ratio else ''}"]
        parts.append(f"{self.head_depth}-layer projection head to {self.proj_dim}"
                     if self.head_depth else "no projection head")
        if self.num_classes:
            layer = self.classifier_head_layer
            parts.append(f"{self.num_classes}-class supervised head on "
                         + (f"layer {layer} of the projection head" if layer else "h"))
        return ", ".join(parts)


class Source:
    """The variables of an official SavedModel, by their path in the official model."""

    def __init__(self, path: str):
        self.path = path
        prefix = _variables_prefix(path)
        self.saved_model_dir = os.path.dirname(os.path.dirname(prefix))
        try:
            self.reader = tf.train.load_checkpoint(prefix)
            graph = trackable_object_graph_pb2.TrackableObjectGraph()
            graph.ParseFromString(self.reader.get_tensor(_GRAPH_KEY))
        except _READ_ERRORS as error:
            raise OfficialModelError(
                f"cannot read the variables of {path}: {_first_line(error)} (expected a "
                f"complete TensorFlow checkpoint in {prefix}.*; a truncated copy?)") from None
        self.keys = _variable_paths(graph)
        self.shapes = self.reader.get_variable_to_shape_map()
        if not any(key.startswith(_RESNET + "/") for key in self.keys):
            tops = sorted(child.local_name for child in graph.nodes[0].children)
            raise OfficialModelError(
                f"{path} is not an official SimCLR model: expected variables under "
                f"{_RESNET}/ (the tf2 Model that run.py saves), found the objects "
                f"{', '.join(tops) or 'none'} at its top")

    def has(self, path: str) -> bool:
        return path in self.keys

    def shape(self, path: str) -> tuple:
        return tuple(self.shapes[self.keys[path]])

    def value(self, path: str):
        try:
            return self.reader.get_tensor(self.keys[path])
        except _READ_ERRORS as error:
            raise OfficialModelError(
                f"cannot read {path} from {self.path}: {_first_line(error)} (the variables "
                f"file looks truncated or damaged)") from None

    def indices(self, prefix: str) -> list[int]:
        """The list positions i with variables under `prefix/i/`, ascending."""
        found = {int(key[len(prefix) + 1:].split("/")[0]) for key in self.keys
                 if key.startswith(prefix + "/")}
        return sorted(found)


def _first_line(error) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _variables_prefix(path: str) -> str:
    """`path/variables/variables` of a SavedModel (or of `path/saved_model`)."""
    try:
        return _find_variables(path)
    except tf.errors.OpError as error:  # e.g. gs:// without network
        raise OfficialModelError(f"cannot reach {path}: {_first_line(error)} (a gs:// path "
                                 f"needs network; a downloaded copy works offline)") from None


def _find_variables(path: str) -> str:
    for candidate in (path, os.path.join(path, "saved_model")):
        prefix = os.path.join(candidate, "variables", "variables")
        if tf.io.gfile.exists(prefix + ".index"):
            return prefix
    if not tf.io.gfile.isdir(path):
        raise OfficialModelError(f"{path} is not a directory (expected an official SimCLR "
                                 f"SavedModel such as {EXAMPLE})")
    names = sorted(tf.io.gfile.listdir(path))
    found = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    raise OfficialModelError(
        f"{path} is not a SavedModel: expected variables/variables.index in it (an official "
        f"SimCLR SavedModel such as {EXAMPLE}), found {found or 'nothing'}")


def _variable_paths(graph) -> dict[str, str]:
    """{path from the SavedModel's `model` attribute: checkpoint key} of every variable."""
    paths, seen = {}, set()
    pending = [(child.node_id, child.local_name) for child in graph.nodes[0].children
               if child.local_name == "model"]
    while pending:
        node_id, path = pending.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                paths[path] = attribute.checkpoint_key
        pending += [(child.node_id, f"{path}/{child.local_name}") for child in node.children
                    if child.local_name not in _DUPLICATES]
    return paths


def _units(source: Source, prefix: str) -> list[tuple[str, str]]:
    """[(kind, official path)] of the convolutions and BNs of the layer list at `prefix`,
    in order; a selective kernel layer is its five: conv, BN, squeeze conv, BN, mix conv."""
    units = []
    for index in source.indices(prefix):
        item = f"{prefix}/{index}"
        if source.has(f"{item}/conv2d/kernel"):
            units.append(("conv", f"{item}/conv2d"))
        elif source.has(f"{item}/bn/gamma"):
            units.append(("bn", f"{item}/bn"))
        elif source.has(f"{item}/conv2d_0/kernel"):
            units += [("conv", f"{item}/conv2d_fixed_padding/conv2d"),
                      ("bn", f"{item}/batch_norm_relu/bn"), ("conv", f"{item}/conv2d_0"),
                      ("bn", f"{item}/batch_norm_relu_1/bn"), ("conv", f"{item}/conv2d_1")]
        else:
            units.append(("unknown", item))
    return units


def _block_names(name: str, projection: bool, selective: bool) -> list[str]:
    """The Keras layers of one bottleneck of `backbones.resnet`, in the official order."""
    names = [f"{name}_proj_conv", f"{name}_proj_bn"] if projection else []
    names += [f"{name}_1_conv", f"{name}_1_bn", f"{name}_2_conv", f"{name}_2_bn"]
    if selective:
        names += [f"{name}_2_squeeze_conv", f"{name}_2_squeeze_bn", f"{name}_2_mix_conv"]
    return names + [f"{name}_3_conv", f"{name}_3_bn"]


def _encoder_pairs(source: Source, arch: Architecture) -> list[tuple[str, str, str]]:
    """[(Keras layer name, kind, official path)] of every encoder layer with weights."""
    stem = ["stem_conv", "stem_bn"]
    if arch.sk_ratio and arch.stem == "imagenet":
        stem = ["stem_a_conv", "stem_a_bn", "stem_b_conv", "stem_b_bn"] + stem
    pairs = [(name, *unit) for name, unit in _zip_units(stem, _units(source, _STEM))]
    for group in range(4):
        for block in source.indices(f"{_RESNET}/block_groups/{group}/layers"):
            official = f"{_RESNET}/block_groups/{group}/layers/{block}"
            units = (_units(source, f"{official}/projection_layers")
                     + _units(source, f"{official}/conv_relu_dropblock_layers"))
            names = _block_names(f"stage{group + 1}_block{block + 1}", block == 0,
                                 arch.sk_ratio > 0)
            pairs += [(name, *unit) for name, unit in _zip_units(names, units)]
    return pairs


def _zip_units(names: list[str], units: list[tuple[str, str]]):
    """Pair Keras layer names with official units, checking count and kind."""
    kinds = ["bn" if name.endswith("_bn") else "conv" for name in names]
    if kinds != [kind for kind, _ in units]:
        where = units[0][1].rsplit("/", 2)[0] if units else "(nothing)"
        raise OfficialModelError(
            f"weights do not match the architecture: expected {'/'.join(kinds)} layers for "
            f"{names[0].rsplit('_', 2)[0]}, found {'/'.join(k for k, _ in units) or 'none'} "
            f"under {where}")
    return zip(names, units)


def _block_counts(source: Source) -> tuple[int, ...]:
    return tuple(len(source.indices(f"{_RESNET}/block_groups/{group}/layers"))
                 for group in range(4))


def _sk_ratio(source: Source) -> float:
    """The selective kernels' ratio: the widest squeeze over its block's filters, or the
    released models' 0.0625 when every squeeze is at the 32-channel minimum."""
    squeezes = [source.shape(key)[2:] for key in source.keys if key.endswith("/conv2d_0/kernel")]
    if not squeezes:
        return 0.0
    filters, squeeze = max(squeezes, key=lambda shape: shape[1])
    return squeeze / filters if squeeze > backbones.SK_MIN_DIM else DEFAULT_SK_RATIO


def _stem_kind(source: Source, sk_ratio: float) -> str:
    convs = [path for kind, path in _units(source, _STEM) if kind == "conv"]
    if not convs:
        raise OfficialModelError(f"weights do not match the architecture: no stem "
                                 f"convolution under {_STEM} in {source.path}")
    kernel = source.shape(f"{convs[0]}/kernel")[0]
    return "imagenet" if kernel == 7 or (len(convs) == 3 and sk_ratio) else "cifar"


def _head_shape(source: Source) -> tuple[int, int, int]:
    """(layers, hidden width, output width) of the projection head; (0, 0, 0) if none."""
    layers = source.indices(_HEAD)
    if not layers:
        return 0, 0, 0
    first = source.shape(f"{_HEAD}/{layers[0]}/dense/kernel")
    last = source.shape(f"{_HEAD}/{layers[-1]}/dense/kernel")
    return len(layers), first[1], last[1]


def _classifier_head_layer(source: Source, head_depth: int) -> int:
    """The projection-head layer the supervised head reads (0: h), from the graph."""
    reason = None
    try:
        layer, relu = official_graph.supervised_head_layer(source.saved_model_dir)
    except official_graph.UnreadableGraph as error:
        reason = str(error)
    else:  # hidden layers end in a ReLU, h and the last layer do not
        if layer > head_depth or relu != (0 < layer < head_depth):
            reason = (f"its graph shows the supervised head reading {layer} MatMuls above "
                      f"h{' through a ReLU' if relu else ''}, no layer of the {head_depth}-"
                      f"layer projection head")
    if reason:
        raise OfficialModelError(
            f"cannot tell which layer of the projection head the supervised head of "
            f"{source.path} reads: {reason} (pretrained releases read h, fine-tuned ones a "
            f"head layer; the importer does not guess)")
    return layer


def infer_architecture(source: Source) -> Architecture:
    """The official model's architecture, from its variables' shapes and, for the layer
    its supervised head reads, its graph (`official_graph`)."""
    counts = _block_counts(source)
    if source.has(f"{_RESNET}/block_groups/0/layers/0/conv2d_bn_layers/0/conv2d/kernel"):
        raise OfficialModelError(
            f"{source.path} is an official ResNet with basic blocks (ResNet-18/34): the "
            f"importer reads the released bottleneck ResNet-50/101/152 only")
    if counts not in _DEPTHS:
        expected = " or ".join(str(c) for c in _DEPTHS)
        raise OfficialModelError(
            f"weights do not match the architecture: expected blocks per group {expected} "
            f"(ResNet-50/101/152), found {counts} in {source.path}")
    sk_ratio = _sk_ratio(source)
    stem = _stem_kind(source, sk_ratio)
    stem_conv = [path for kind, path in _units(source, _STEM) if kind == "conv"][-1]
    width = source.shape(f"{stem_conv}/kernel")[-1] / 64
    head_depth, hidden_dim, proj_dim = _head_shape(source)
    supervised = f"{_SUPERVISED}/kernel"
    num_classes = source.shape(supervised)[1] if source.has(supervised) else None
    layer = _classifier_head_layer(source, head_depth) if num_classes and head_depth else 0
    return Architecture(_DEPTHS[counts], width, sk_ratio, stem, head_depth, hidden_dim,
                        proj_dim, num_classes, layer)


def build_model(arch: Architecture, projection_head: bool) -> SimCLR:
    """This project's `SimCLR` in the official architecture, freshly initialised.

    Without `projection_head` the model gets SimCLRv1's 2-layer head, initialised at
    random (the releases without one still need a head to pretrain further).
    """
    encoder = backbones.resnet(arch.depth, stem=arch.stem, padding="fixed",
                               width_multiplier=arch.width_multiplier, sk_ratio=arch.sk_ratio,
                               name=f"official_resnet{arch.depth}")
    if projection_head:
        hidden = arch.hidden_dim if arch.hidden_dim != backbones.output_width(encoder) else None
        head = ProjectionHead(arch.head_depth, hidden_dim=hidden, output_dim=arch.proj_dim)
    else:
        head = ProjectionHead(2)
    # temperature 0.1: the official ImageNet pretraining's, should the model train on
    model = SimCLR(encoder, head, loss=losses.NTXent(0.1), probe_classes=arch.num_classes,
                   classifier_head_layer=arch.classifier_head_layer if projection_head else 0)
    model.build((None, None, None, 3))
    return model


def _assign(layer, source: Source, kind: str, path: str, arch: Architecture) -> None:
    """Copy the official variables at `path` into `layer`, checking names and shapes."""
    names = [name for name in _WEIGHTS[kind] if source.has(f"{path}/{name}")]
    if len(names) != len(layer.weights):
        raise OfficialModelError(
            f"weights do not match the architecture: {path} has {', '.join(names)}; layer "
            f"{layer.name} of the {arch.describe()} has {len(layer.weights)} weights")
    for name, variable in zip(names, layer.weights):
        found = source.shape(f"{path}/{name}")
        if found != tuple(variable.shape):
            raise OfficialModelError(
                f"weights do not match the architecture: {path}/{name} has shape "
                f"{list(found)}, layer {layer.name} of the {arch.describe()} expects "
                f"{list(variable.shape)}")
    for name, variable in zip(names, layer.weights):
        variable.assign(source.value(f"{path}/{name}"))


def _pairs(model: SimCLR, source: Source, arch: Architecture, with_head: bool):
    """[(Keras layer, kind, official path)] of every weight the import copies."""
    pairs = [(model.encoder.get_layer(name), kind, path)
             for name, kind, path in _encoder_pairs(source, arch)]
    if with_head:
        for index, official in enumerate(source.indices(_HEAD)):
            pairs += [(model.head.dense_layers[index], "dense", f"{_HEAD}/{official}/dense"),
                      (model.head.bn_layers[index], "bn", f"{_HEAD}/{official}/bn_relu/bn")]
    if arch.num_classes:
        pairs.append((model.probe, "dense", _SUPERVISED))
    return pairs


def load(path: str, projection_head: bool | None = None) -> tuple[SimCLR, Architecture]:
    """The official model at `path` as this project's `SimCLR`, with its weights.

    Args:
        path: an official TF2 SavedModel directory (local, `gs://`, any TensorFlow
            filesystem), or the directory holding its `saved_model/`.
        projection_head: None imports the projection head when the source has one; True
            requires it (an error for SimCLRv1 releases); False leaves it out.
    Returns:
        (model, architecture). The supervised head, where the source has one, is the
        model's linear probe, on h or on the projection-head layer the release's reads
        (`model.classifier_head_layer`, `architecture.classifier_head_layer`). Raises
        OfficialModelError with a one-line reason.
    """
    source = Source(path)
    arch = infer_architecture(source)
    if projection_head and not arch.head_depth:
        raise OfficialModelError(
            f"{path} has no projection head (as the SimCLRv1 and supervised releases): "
            f"expected variables under {_HEAD}/, found none; import it without asking for "
            f"the projection head")
    if projection_head is False and arch.classifier_head_layer:
        raise OfficialModelError(
            f"the supervised head of {path} reads layer {arch.classifier_head_layer} of its "
            f"projection head: import it with the projection head")
    with_head = bool(arch.head_depth) and projection_head is not False
    model = build_model(arch, with_head)
    pairs = _pairs(model, source, arch, with_head)
    used = {official for _, _, official in pairs}
    unused = sorted(key for key in source.keys if key.rsplit("/", 1)[0] not in used
                    and (with_head or not key.startswith(_HEAD + "/")))
    if unused:
        raise OfficialModelError(
            f"weights do not match the architecture: {len(unused)} variables of {path} have "
            f"no place in the {arch.describe()}, e.g. {unused[0]}")
    for layer, kind, official in pairs:
        _assign(layer, source, kind, official, arch)
    return model, arch
