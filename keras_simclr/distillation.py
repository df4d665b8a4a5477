"""SimCLRv2's third stage: distil a frozen teacher classifier into a student on unlabelled images.

    t = stop_gradient(teacher(x, training=False))        # the teacher never changes
    s = student(x, training=True)                          # the same view x, the same step
    loss = mean(T^2 * CE(softmax(t / T), s / T))            # + label_weight * CE(y, s) on y >= 0

The formula is the official notebook's `add_kd_loss` (google-research/simclr, the
distillation section of its Colab): the cross-entropy of the student's tempered logits against
the teacher's tempered probabilities, scaled by T^2 so the gradient's size does not shrink with
the temperature (Hinton et al. 2015). The teacher runs in inference mode with
`trainable=False`, so neither its weights nor its BatchNormalization statistics move, and its
logits are cut from the graph. Keras sums the replicas' gradients without dividing a loss
computed in `train_step` by their number, so the step differentiates `loss / replicas` (as
`SimCLR` does): the summed gradient is that of the global mean.

A batch of pairs `(teacher_view, student_view)` gives the student a view of its own, the
teacher's view with noise added (Noisy Student, Xie et al. 2020); one tensor: both see it.

The student is any Keras classifier from images to logits; the apps use a `LinearClassifier`
with `fine_tune=True` (what apps.finetune writes), so the distilled student is evaluated,
exported and checkpointed like a fine-tuned one. Calling the `Distiller` runs the student.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_simclr.evaluation.online_probe import masked_cross_entropy
from keras_simclr.training import preemption
from keras_simclr.training.keras_compat import DistributedFitMixin, step_logs
from keras_simclr.views.view_dict import to_float_images


def distillation_loss(teacher_logits, student_logits, temperature: float = 1.0):
    """mean over the batch of T^2 * CE(softmax(teacher / T), student / T), in float32.

    Args:
        teacher_logits: [B, C] logits of the teacher (no gradient is taken through them).
        student_logits: [B, C] logits of the student.
        temperature: T > 0 (1.0 in SimCLRv2).
    Returns:
        The scalar loss.
    """
    t = tf.cast(temperature, tf.float32)
    targets = tf.nn.softmax(tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / t)
    per_example = tf.nn.softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(student_logits, tf.float32) / t)
    return tf.reduce_mean(t * t * per_example)


def _float_views(x):
    """A batch's (teacher's, student's) images as float in [0, 1]: a pair (teacher's view,
    student's view with noise of its own), or one view both see, converted once."""
    if isinstance(x, (tuple, list)):
        return tuple(to_float_images(view) for view in x)
    images = to_float_images(x)
    return images, images


def _freeze(network: keras.Model) -> keras.Model:
    """`network` with every layer and variable non-trainable; returns it.

    Setting `trainable` on the network alone did not reach the encoder of a
    `LinearClassifier` just deserialized from a checkpoint (Keras 3.15), so each layer and
    variable is set.
    """
    for layer in network._flatten_layers(include_self=True):
        layer.trainable = False
    for variable in network.variables:
        variable.trainable = False
    return network


@keras.saving.register_keras_serializable(package="keras_simclr")
class Distiller(DistributedFitMixin, keras.Model):
    """Train `student` on the predictions of the frozen `teacher`; see the module docstring.

    Args:
        teacher: a classifier from images in [0, 1] to logits; frozen here.
        student: a classifier to the same number of classes, trained.
        temperature: T of the distillation loss.
        label_weight: weight of the cross-entropy on the labelled examples of a batch
            (labels < 0 are unlabelled); 0: labels are not used.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, temperature: float = 1.0,
                 label_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if label_weight < 0:
            raise ValueError(f"label_weight must be 0 or more, got {label_weight}")
        self.teacher = _freeze(teacher)
        self.student = student
        self.temperature = float(temperature)
        self.label_weight = float(label_weight)
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        # "loss": the objective (NonFiniteGuard reads it after every step); the student's
        # top-1 against the teacher's, and against the labels
        self.loss_tracker, self.distill_tracker = mean("loss"), mean("distill_loss")
        self.agreement = accuracy("teacher_agreement")
        self.label_loss_tracker, self.label_accuracy = mean("label_loss"), accuracy("label_acc")
        self.lr_tracker = mean("learning_rate")

    def build(self, input_shape):
        for network in (self.teacher, self.student):
            if not network.built:
                network.build(input_shape)
        # Again: variables made after freezing (a teacher built only now, as when a
        # checkpoint loads) would count as trainable, and the optimizer, built for more
        # variables than it saved, would skip its saved state on loading.
        _freeze(self.teacher)
        self.built = True

    def _input_shape_for_build(self):
        student = getattr(self.student, "encoder", self.student)
        return getattr(student, "input_shape", None)

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.distill_tracker, self.agreement, self.lr_tracker]
        if self.label_weight:
            metrics += [self.label_loss_tracker, self.label_accuracy]
        return metrics

    def call(self, images, training=False):
        return self.student(_float_views(images)[1], training=training)

    def teacher_logits(self, images):
        """The teacher's float32 logits, in inference mode and cut from the graph."""
        return tf.stop_gradient(tf.cast(self.teacher(images, training=False), tf.float32))

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_images, student_images = _float_views(x)
        if not self.built:  # without a strategy Keras builds at the first trace only
            self.build(tuple(teacher_images.shape))
        targets = self.teacher_logits(teacher_images)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        use_labels = bool(self.label_weight) and y is not None
        with tf.GradientTape() as tape:
            logits = tf.cast(self.student(student_images, training=True), tf.float32)
            loss = distillation_loss(targets, logits, self.temperature)
            total = loss
            if use_labels:
                label_loss, labels, mask = masked_cross_entropy(logits, y)
                total = total + self.label_weight * label_loss
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(total)
        self.distill_tracker.update_state(loss)
        self.agreement.update_state(tf.argmax(targets, axis=-1), logits)
        if use_labels:
            self.label_loss_tracker.update_state(label_loss)
            self.label_accuracy.update_state(labels, logits, sample_weight=mask)
        self.lr_tracker.update_state(self.optimizer.learning_rate)
        preemption.take_part()  # the workers' stop agreement
        return step_logs({m.name: m.result() for m in self.metrics})

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = to_float_images(x)
        targets = self.teacher_logits(images)
        logits = tf.cast(self.student(images, training=False), tf.float32)
        self.distill_tracker.update_state(distillation_loss(targets, logits, self.temperature))
        self.agreement.update_state(tf.argmax(targets, axis=-1), logits)
        return step_logs({m.name: m.result() for m in (self.distill_tracker, self.agreement)})

    def get_config(self):
        config = super().get_config()
        config.update(teacher=keras.saving.serialize_keras_object(self.teacher),
                      student=keras.saving.serialize_keras_object(self.student),
                      temperature=self.temperature, label_weight=self.label_weight)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
