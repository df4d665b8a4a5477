"""The SimCLR model: two views, one encoder, one projection head, NT-Xent, in `train_step`.

    v1, v2 = augment(x), augment(x)          # two random views of each image
    h = f([v1; v2]); z = g(h)                # one encoder pass over all 2N views
    loss = NT-Xent(z1, z2) over the global batch (negatives gathered from all replicas)

The two views go through the encoder as one batch of 2N, as in the official code, so BN
statistics cover both views. Under `tf.distribute` each replica scores its own anchors
against every replica's projections; the gradient of `loss / num_replicas_in_sync` is
summed across replicas, which gives the gradient of the global mean (DESIGN section 4).

Inputs: `x` a batch of images (uint8 or float in [0, 1]) that the model's augmenter turns
into views, or, when augmentation is placed in the input pipeline, a dict
`{"view_1": v1, "view_2": v2}` of ready views. Labels are optional: when given and the
model has an online probe (`probe_classes`), a Dense layer on `stop_gradient(h)` is trained
on them (labels < 0 are ignored), so representation quality shows during pretraining
without touching the encoder. Calling the model maps images to h.
"""
import keras
import tensorflow as tf

from keras_simclr import backbones, losses
from keras_simclr.augment import to_float_images
from keras_simclr.keras_compat import DistributedFitMixin, step_logs
from keras_simclr.heads import ProjectionHead

VIEW_KEYS = ("view_1", "view_2")


@keras.saving.register_keras_serializable(package="keras_simclr")
class SimCLR(DistributedFitMixin, keras.Model):
    """Contrastive pretraining of `encoder` through `head`; see the module docstring.

    Args:
        encoder: a Keras model from images in [0, 1] to the representation h.
        head: the projection head (default: a 3-layer `ProjectionHead`).
        augmenter: a layer making one random view per call (e.g. `SimCLRAugment`); None
            when the input pipeline supplies the views.
        temperature: the NT-Xent temperature.
        probe_classes: number of classes of the online linear probe (None: no probe).
        global_negatives: gather negatives from every replica (the paper); False keeps
            each replica's negatives local.
    """

    def __init__(
        self,
        encoder,
        head=None,
        augmenter=None,
        temperature=0.5,
        probe_classes=None,
        global_negatives=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.encoder = encoder
        self.head = head if head is not None else ProjectionHead()
        self.augmenter = augmenter
        self.temperature = float(temperature)
        self.probe_classes = probe_classes
        self.global_negatives = bool(global_negatives)
        self.probe = (
            keras.layers.Dense(probe_classes, name="probe") if probe_classes else None
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1_tracker = keras.metrics.Mean(name="contrastive_acc")
        self.top5_tracker = keras.metrics.Mean(name="contrastive_top5")
        self.lr_tracker = keras.metrics.Mean(name="learning_rate")
        self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
        self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_acc")

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape[VIEW_KEYS[0]]
        if self.augmenter is not None and hasattr(self.augmenter, "image_size"):
            size = self.augmenter.image_size
            input_shape = (input_shape[0], size, size, 3)
        h_shape = self.encoder.compute_output_shape(input_shape)
        for layer in (self.head, self.probe):
            if layer is not None and not layer.built:
                layer.build(h_shape)
        self.built = True

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.top1_tracker, self.top5_tracker, self.lr_tracker]
        if self.probe is not None:
            metrics += [self.probe_loss_tracker, self.probe_accuracy]
        return metrics

    def call(self, images, training=False):
        if isinstance(images, dict):  # the views input (Keras builds with it under a strategy)
            images = images[VIEW_KEYS[0]]
        return self.encoder(to_float_images(images), training=training)

    def _views(self, x):
        if isinstance(x, dict):
            return to_float_images(x[VIEW_KEYS[0]]), to_float_images(x[VIEW_KEYS[1]])
        if self.augmenter is None:
            raise ValueError(
                "this SimCLR model has no augmenter: feed {'view_1': ..., 'view_2': ...}"
            )
        return self.augmenter(x), self.augmenter(x)

    def _clean_images(self, x):
        """Un-augmented images at the views' size, for judging the probe."""
        images = to_float_images(x)
        size = getattr(self.augmenter, "image_size", None)
        return images if size is None else tf.image.resize(images, [size, size])

    def _contrastive(self, x, training):
        """Loss terms on one batch: (mean loss, logits, labels, h of the first view)."""
        v1, v2 = self._views(x)
        h = self.encoder(tf.concat([v1, v2], axis=0), training=training)
        z1, z2 = tf.split(self.head(h, training=training), 2, axis=0)
        logits, labels = losses.cross_replica_logits(
            z1, z2, self.temperature, self.global_negatives
        )
        loss = tf.reduce_mean(losses.per_anchor_loss(logits, labels))
        return loss, logits, labels, tf.split(h, 2, axis=0)[0]

    def _probe_loss(self, h, y):
        """Masked cross-entropy of the probe on stop_gradient(h); labels < 0 ignored."""
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        logits = tf.cast(self.probe(tf.stop_gradient(h)), tf.float32)
        mask = tf.cast(y >= 0, tf.float32)
        safe_y = tf.maximum(y, 0)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_y, logits=logits)
        loss = tf.reduce_sum(per_example * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        return loss, logits, safe_y, mask

    def _update_metrics(self, loss, logits, labels):
        self.loss_tracker.update_state(loss)
        self.top1_tracker.update_state(losses.contrastive_accuracy(logits, labels, 1))
        self.top5_tracker.update_state(losses.contrastive_accuracy(logits, labels, 5))

    def _ensure_built(self, x):
        # Without a distribution strategy Keras defers building to the first trace of
        # train_step, which never calls build(); saving then finds an unbuilt model.
        if not self.built:
            self.build(keras.tree.map_structure(lambda t: tuple(t.shape), x))

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        use_probe = self.probe is not None and y is not None
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, logits, labels, h = self._contrastive(x, training=True)
            total = loss
            if use_probe:
                probe_loss, probe_logits, y_true, mask = self._probe_loss(h, y)
                total = total + probe_loss
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        if self.probe is not None and not use_probe:
            probe_ids = {id(v) for v in self.probe.trainable_variables}
            variables = [v for v in variables if id(v) not in probe_ids]
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)

        self._update_metrics(loss, logits, labels)
        self.lr_tracker.update_state(self.optimizer.learning_rate)
        if use_probe:
            self.probe_loss_tracker.update_state(probe_loss)
            self.probe_accuracy.update_state(y_true, probe_logits, sample_weight=mask)
        return step_logs({m.name: m.result() for m in self.metrics})

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        loss, logits, labels, h_view = self._contrastive(x, training=False)
        self._update_metrics(loss, logits, labels)
        if self.probe is not None and y is not None:
            # The probe is judged on the clean images when the model has them.
            h = h_view if isinstance(x, dict) else self.encoder(
                self._clean_images(x), training=False
            )
            probe_loss, probe_logits, y_true, mask = self._probe_loss(h, y)
            self.probe_loss_tracker.update_state(probe_loss)
            self.probe_accuracy.update_state(y_true, probe_logits, sample_weight=mask)
        return step_logs({m.name: m.result() for m in self.metrics if m is not self.lr_tracker})

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=keras.saving.serialize_keras_object(self.head),
            augmenter=keras.saving.serialize_keras_object(self.augmenter),
            temperature=self.temperature,
            probe_classes=self.probe_classes,
            global_negatives=self.global_negatives,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "head", "augmenter"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_simclr(backbone="resnet18", stem="imagenet", width_multiplier=1.0, head_depth=3,
                 proj_dim=128, temperature=0.5, synchronized_bn=False, augmenter=None,
                 probe_classes=None):
    """An uncompiled SimCLR from a recipe's names and sizes (as apps.pretrain builds it).

    Call inside `strategy.scope()` under tf.distribute; `synchronized_bn` applies to every
    BN layer of encoder and head (global BN).
    """
    encoder = backbones.build_backbone(backbone, stem=stem, width_multiplier=width_multiplier,
                                       synchronized_bn=synchronized_bn)
    head = ProjectionHead(head_depth, output_dim=proj_dim, synchronized_bn=synchronized_bn)
    return SimCLR(encoder, head, augmenter=augmenter, temperature=temperature,
                  probe_classes=probe_classes)
