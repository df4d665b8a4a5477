"""The SimCLR model: views, one encoder, one projection head, a contrastive objective.

    views = view_maker(x)                    # a list: two random views of each image, or
                                             # 2 full + k small ones (multi-crop)
    h = f(views of one size, as one batch); z = g(h)
    loss = objective([z_1, z_2, ...])        # NT-Xent by default, negatives from all replicas

The model has one place for each idea: the view maker (`augmenter`: a
`keras_simclr.views.ViewMaker`, e.g. `SimCLRAugment`, `MultiCropAugment`), the objective
(`loss`: a `keras_simclr.losses.Objective` such as `NTXent`) and the networks. Views of one size go
through the encoder as one batch, as in the official code, so BN statistics cover both full
views. Under `tf.distribute` each replica scores its own anchors against every replica's
projections; Keras sums the gradients across replicas and does not divide a loss computed in
`train_step` by the number of replicas, so the step differentiates `loss / replicas`, which
makes the summed gradient that of the global mean.

With `chunk_size`, the step uses gradient caching (`keras_simclr.training.gradient_cache`): the same
loss and gradient as a plain step (exactly, without BN) with the memory of `chunk_size`
views, so batches of thousands fit on one machine.

Inputs: `x` a batch of images (uint8 or float in [0, 1]) that the view maker turns into
views, or, when views are made in the input pipeline, a dict `{"view_1": v1, "view_2": v2,
...}` of ready views, or a dict `{"crop_1": c1, ...}` of crops taken from large originals
by the pipeline that the view maker finishes (`views_of_crops`: flip, colour, blur).
Labels are optional: when given and the model has an online probe (`probe_classes`), a
Dense layer on `stop_gradient(h)` of the first view (or of a head layer's output:
`classifier_head_layer`) is trained on them (labels < 0 are ignored), so representation
quality shows during pretraining without touching the encoder. Calling the model maps
images to h.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_simclr import losses
from keras_simclr.evaluation.online_probe import online_probe, probe_loss_terms
from keras_simclr.networks import backbones
from keras_simclr.networks.heads import ProjectionHead
from keras_simclr.training import gradient_cache, preemption
from keras_simclr.training.keras_compat import DistributedFitMixin, step_logs
from keras_simclr.views.makers import ViewMaker, views_of_input
from keras_simclr.views.view_dict import first_view, to_float_images

# Arguments of the objective, not of SimCLR: a saved config that carries them still loads
# (`from_config` builds the NTXent they describe); a call that passes them gets a TypeError
# naming `loss=`.
_OBJECTIVE_ARGUMENTS = ("temperature", "global_negatives")


def _size_groups(views):
    """[(view indices, views stacked)] grouping consecutive views of the same static size."""
    groups = []
    for index, view in enumerate(views):
        if groups and views[groups[-1][-1]].shape[1:] == view.shape[1:]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return [(indices, tf.concat([views[i] for i in indices], axis=0) if len(indices) > 1
             else views[indices[0]]) for indices in groups]


def _per_view(groups, outputs):
    """The rows of each group's output split back into one tensor per view, in view order."""
    per_view = {}
    for (indices, _), output in zip(groups, outputs):
        per_view.update(zip(indices, tf.split(output, len(indices), axis=0)))
    return [per_view[index] for index in sorted(per_view)]


def _check_no_objective_arguments(kwargs):
    for name in _OBJECTIVE_ARGUMENTS:
        if name in kwargs:
            raise TypeError(f"SimCLR takes no {name}=: it belongs to the objective, "
                            f"e.g. SimCLR(encoder, loss=keras_simclr.losses.NTXent("
                            f"{name}={kwargs[name]!r}))")


def _config_with_objective(config):
    """A saved config whose objective is described by its arguments (older releases) with
    the `loss` they describe instead; every nested object deserialized."""
    config = dict(config)
    legacy = {name: config.pop(name) for name in _OBJECTIVE_ARGUMENTS if name in config}
    if "loss" not in config:
        legacy = {name: value for name, value in legacy.items() if value is not None}
        config["loss"] = losses.NTXent(**legacy)
    for key in ("encoder", "head", "augmenter", "loss"):
        if isinstance(config.get(key), dict):
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return config


@keras.saving.register_keras_serializable(package="keras_simclr")
class SimCLR(DistributedFitMixin, keras.Model):
    """Contrastive pretraining of `encoder` through `head`; see the module docstring.

    Args:
        encoder: a Keras model from images in [0, 1] to the representation h.
        head: the projection head (default: a 3-layer `ProjectionHead`).
        augmenter: the view maker (`keras_simclr.views.ViewMaker`, e.g. `SimCLRAugment`,
            `MultiCropAugment`) or a layer making one random view per call; None when the
            input pipeline supplies the views.
        probe_classes: number of classes of the online linear probe (None: no probe).
        loss: the contrastive objective (`keras_simclr.losses.Objective`; default
            `NTXent(0.5)`, negatives from every replica).
        chunk_size: views per encoder pass with gradient caching (None: one pass).
        classifier_head_layer: the layer of `head` whose output the probe, the model's
            classifier, reads: 0 reads h; K > 0 the output of the head's first K layers,
            as the classifier of an imported fine-tuned SimCLRv2 release (K=1). The apps
            embed, evaluate and export what the classifier reads (`heads.features_model`).
    """

    def __init__(self, encoder: keras.Model, head: keras.layers.Layer | None = None,
                 augmenter=None, *, probe_classes: int | None = None,
                 loss: losses.Objective | None = None, chunk_size: int | None = None,
                 classifier_head_layer: int = 0, **kwargs):
        _check_no_objective_arguments(kwargs)
        super().__init__(**kwargs)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.encoder = encoder
        self.head = head if head is not None else ProjectionHead()
        self.augmenter = augmenter
        self.objective = losses.NTXent() if loss is None else loss
        self.chunk_size = chunk_size
        self.probe_classes = probe_classes
        self.probe = online_probe(probe_classes) if probe_classes else None
        depth = getattr(self.head, "depth", None)
        if classifier_head_layer < 0 or (depth is not None and classifier_head_layer > depth):
            raise ValueError(f"classifier_head_layer must be in [0, {depth}] (the head's "
                             f"layers), got {classifier_head_layer}")
        self.classifier_head_layer = int(classifier_head_layer)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1_tracker = keras.metrics.Mean(name="contrastive_acc")
        self.top5_tracker = keras.metrics.Mean(name="contrastive_top5")
        self.lr_tracker = keras.metrics.Mean(name="learning_rate")
        self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
        self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_acc")

    def build(self, input_shape):
        input_shape = first_view(input_shape)
        if isinstance(self.augmenter, ViewMaker):
            size = self.augmenter.image_size
            input_shape = (input_shape[0], size, size, 3)
        h_shape = self.encoder.compute_output_shape(input_shape)
        if not self.head.built:
            self.head.build(h_shape)
        if self.probe is not None and not self.probe.built:
            layer = self.classifier_head_layer
            self.probe.build(self.head.compute_output_shape(h_shape, layer) if layer else h_shape)
        self.built = True

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.top1_tracker, self.top5_tracker, self.lr_tracker]
        if self.probe is not None:
            metrics += [self.probe_loss_tracker, self.probe_accuracy]
        return metrics

    def call(self, images, training=False):
        # A views dict is the input Keras builds the model with under a strategy.
        return self.encoder(to_float_images(first_view(images)), training=training)

    def classifier_features(self, h, training=False):
        """What the probe reads: h, or the output of the head's first
        `classifier_head_layer` layers."""
        if not self.classifier_head_layer:
            return h
        return self.head(h, training=training, num_layers=self.classifier_head_layer)

    def _probe_terms(self, h, y):
        """`probe_loss_terms` of the probe on what it reads from `h`."""
        return probe_loss_terms(self.probe, self.classifier_features(h), y)

    def _forward(self, views, training):
        """(h, z): one encoder pass; z in float32 for the objective."""
        h = self.encoder(views, training=training)
        return h, tf.cast(self.head(h, training=training), tf.float32)

    def _project(self, views, training):
        """(projections of every view, h of the first view), one pass per view size."""
        groups = _size_groups(views)
        outputs = [self._forward(stacked, training) for _, stacked in groups]
        first_h = tf.split(outputs[0][0], len(groups[0][0]), axis=0)[0]
        return _per_view(groups, [z for _, z in outputs]), first_h

    def _probe_h(self, x, h_view):
        """h to judge the probe on: of the clean images resized to the views' size when the
        model has images, else of the first view."""
        if isinstance(x, dict):
            return h_view
        images = to_float_images(x)
        if isinstance(self.augmenter, ViewMaker):
            size = self.augmenter.image_size
            images = tf.image.resize(images, [size, size])
        return self.encoder(images, training=False)

    def _update_metrics(self, terms, loss, probe_terms):
        self.loss_tracker.update_state(loss)
        self.top1_tracker.update_state(losses.contrastive_accuracy(terms.logits, terms.labels, 1))
        self.top5_tracker.update_state(losses.contrastive_accuracy(terms.logits, terms.labels, 5))
        if probe_terms is not None:
            probe_loss, probe_logits, y_true, mask = probe_terms
            self.probe_loss_tracker.update_state(probe_loss)
            self.probe_accuracy.update_state(y_true, probe_logits, sample_weight=mask)

    def _ensure_built(self, x):
        # An encoder that does not know its input shape leaves building to the first
        # trace of train_step (`compile` builds the others), which never calls build();
        # saving would then find an unbuilt model.
        if not self.built:
            self.build(keras.tree.map_structure(lambda t: tuple(t.shape), x))

    def _contrastive_variables(self):
        return self.encoder.trainable_variables + self.head.trainable_variables

    def _plain_gradients(self, views, y, replicas):
        """One tape over the whole batch: (variables, gradients, loss, terms, probe terms)."""
        with tf.GradientTape() as tape:
            projections, h = self._project(views, training=True)
            terms = self.objective(projections)
            loss = self.objective.loss(terms)
            probe_terms = None if y is None else self._probe_terms(h, y)
            total = loss if y is None else loss + probe_terms[0]
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self._contrastive_variables()
        if y is not None:
            variables = variables + self.probe.trainable_variables
        return variables, tape.gradient(scaled, variables), loss, terms, probe_terms

    def _cached_gradients(self, views, y, replicas):
        """Gradient caching over chunks of `chunk_size` views; same returns as plain."""
        groups = _size_groups(views)

        def loss_fn(group_outputs):
            terms = self.objective(_per_view(groups, group_outputs))
            loss = self.objective.loss(terms)
            return self.optimizer.scale_loss(loss / replicas), (loss, terms)

        variables = self._contrastive_variables()
        state = self.encoder.non_trainable_variables + self.head.non_trainable_variables
        gradients, _, (loss, terms), extras = gradient_cache.cached_gradients(
            lambda x: self._forward(x, training=True)[::-1], [g for _, g in groups],
            loss_fn, variables, self.chunk_size, state_variables=state)
        if y is None:
            return variables, gradients, loss, terms, None
        with tf.GradientTape() as tape:
            first_h = tf.split(extras[0], len(groups[0][0]))[0]
            probe_terms = self._probe_terms(first_h, y)
            scaled = self.optimizer.scale_loss(probe_terms[0] / replicas)
        gradients = gradients + tape.gradient(scaled, self.probe.trainable_variables)
        return variables + self.probe.trainable_variables, gradients, loss, terms, probe_terms

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        y = None if self.probe is None else y
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        step = self._cached_gradients if self.chunk_size else self._plain_gradients
        variables, gradients, loss, terms, probe_terms = step(
            views_of_input(self.augmenter, x), y, replicas)
        self.optimizer.apply(gradients, variables)
        self._update_metrics(terms, loss, probe_terms)
        self.lr_tracker.update_state(self.optimizer.learning_rate)
        preemption.take_part()
        return step_logs({m.name: m.result() for m in self.metrics})

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        projections, h_view = self._project(views_of_input(self.augmenter, x), training=False)
        terms = self.objective(projections)
        probe_terms = None
        if self.probe is not None and y is not None:
            probe_terms = self._probe_terms(self._probe_h(x, h_view), y)
        self._update_metrics(terms, self.objective.loss(terms), probe_terms)
        return step_logs({m.name: m.result() for m in self.metrics if m is not self.lr_tracker})

    def get_config(self):
        config = super().get_config()
        config.update(
            {key: keras.saving.serialize_keras_object(value) for key, value in
             [("encoder", self.encoder), ("head", self.head), ("augmenter", self.augmenter),
              ("loss", self.objective)]},
            chunk_size=self.chunk_size, probe_classes=self.probe_classes,
            classifier_head_layer=self.classifier_head_layer)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**_config_with_objective(config))


def build_simclr(*, backbone: str = "resnet18", stem: str = "imagenet",
                 width_multiplier: float = 1.0, head_depth: int = 3, proj_dim: int = 128,
                 loss: losses.Objective | None = None, synchronized_bn: bool = False,
                 augmenter=None, probe_classes: int | None = None,
                 chunk_size: int | None = None,
                 stage_widths: tuple[float, ...] | None = None, **backbone_kwargs) -> SimCLR:
    """An uncompiled SimCLR from a recipe's names and sizes (as apps.pretrain builds it).

    Call inside `strategy.scope()` under tf.distribute; `synchronized_bn` applies to every
    BN layer of encoder and head (global BN).

    Args:
        backbone: a registered backbone name (`backbones.names()`).
        stem, width_multiplier, stage_widths, backbone_kwargs: the encoder's arguments,
            each given to the backbone's family only if it declares it
            (`backbones.build_backbone`).
        head_depth, proj_dim: the projection head's layers and output size.
        loss: the contrastive objective (default `NTXent(0.5)`).
        synchronized_bn: synchronise every BN layer across replicas.
        augmenter: the view maker (None: views come from the input pipeline).
        probe_classes: classes of the online linear probe (None: no probe).
        chunk_size: views per pass with gradient caching (None: plain step).
    Returns:
        The uncompiled `SimCLR` model.
    """
    encoder = backbones.build_backbone(backbone, stem=stem, width_multiplier=width_multiplier,
                                       stage_widths=stage_widths,
                                       synchronized_bn=synchronized_bn, **backbone_kwargs)
    head = ProjectionHead(head_depth, output_dim=proj_dim, synchronized_bn=synchronized_bn)
    return SimCLR(encoder, head, augmenter=augmenter, loss=loss, probe_classes=probe_classes,
                  chunk_size=chunk_size)
