"""Subprocess side of tests/test_distribute.py (and test_batchnorm.py): runs that need their
own TensorFlow process.

Logical CPU devices (and MultiWorkerMirroredStrategy) must be set up before TensorFlow
initialises, so each check runs here, in a fresh interpreter, and writes its results to
an .npz or .json file that the test compares. Usage:

    python tests/_distribute_helper.py equivalence OUT.npz [1,2,4]
    python tests/_distribute_helper.py two_replicas OUT.json
    python tests/_distribute_helper.py batchnorm OUT.npz
    python tests/_distribute_helper.py worker OUT_DIR MODEL_DIR EPOCHS [CRASH_EPOCH]
        (with TF_CONFIG set; one process per worker)
"""
import json
import os
import re
import shutil
import sys
import time

# This checkout's package, not whichever one `pip install -e` last pointed at.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_simclr  # noqa: E402,F401  (sets the TensorFlow runtime flags first)
from absl import logging  # noqa: E402

from keras_simclr.training import distribute  # noqa: E402

logging.set_verbosity(logging.INFO)  # make_strategy logs the strategy at INFO

IMAGE_SIZE = 8
GLOBAL_BATCH = 16
TEMPERATURE = 0.5


def _tiny_model(strategy, synchronized_bn=True, global_negatives=True, augmenter=None,
                encoder="resnet18"):
    """SimCLR with a ResNet-18 of width 1/8 (or, encoder="convnet", two convolutions and
    a BN: cheaper to trace, for the multi-worker mechanics) and a 3-layer head."""
    import keras
    import keras_simclr as ks

    with strategy.scope():
        if encoder == "resnet18":
            encoder = ks.resnet(18, stem="cifar", width_multiplier=0.125,
                                synchronized_bn=synchronized_bn, input_shape=(None, None, 3))
        else:
            inputs = keras.Input((None, None, 3))
            x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
            x = keras.layers.BatchNormalization(synchronized=synchronized_bn)(x)
            x = keras.layers.Conv2D(16, 3, activation="relu")(keras.layers.ReLU()(x))
            encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        head = ks.ProjectionHead(output_dim=16, synchronized_bn=synchronized_bn)
        model = ks.SimCLR(encoder, head, augmenter=augmenter,
                          loss=ks.NTXent(TEMPERATURE, global_negatives=global_negatives))
        model.build({k: (None, IMAGE_SIZE, IMAGE_SIZE, 3) for k in ("view_1", "view_2")})
    return model


def _initial_weights(strategy):
    """Seeded initial weights of the tiny model, BN scales and shifts perturbed: the last
    BN of each residual branch starts at gamma = 0, which would leave the whole branch
    without gradient in a one-step comparison."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(1)
    model = _tiny_model(strategy)
    rng = np.random.default_rng(2)
    return [
        w + rng.normal(0.0, 0.2, w.shape).astype(w.dtype)
        if v.path.endswith(("/gamma", "/beta")) else w
        for v, w in zip(model.weights, model.get_weights())
    ]


def _views(seed=0, batches=1):
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (GLOBAL_BATCH * batches, IMAGE_SIZE, IMAGE_SIZE, 3)
    return {"view_1": rng.uniform(0, 1, shape).astype("float32"),
            "view_2": rng.uniform(0, 1, shape).astype("float32")}


def _capturing_lars():
    """LARS that also stores the (all-reduced) gradient it applies, per variable."""
    from keras_simclr.optimizers import LARS

    class CapturingLARS(LARS):
        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self.captured = self.add_optimizer_variables(variables, "captured")

        def update_step(self, gradient, variable, learning_rate):
            self.assign(self.captured[self._get_variable_index(variable)], gradient)
            super().update_step(gradient, variable, learning_rate)

    return CapturingLARS(learning_rate=0.5, momentum=0.9, weight_decay=1e-4)


def _local_values(strategy, variable):
    """The copies of `variable` on every replica, as numpy arrays."""
    value = getattr(variable, "value", variable)
    return [v.numpy() for v in strategy.experimental_local_results(value)]


def _spread(copies):
    """Largest difference between the replicas' copies of one array."""
    import numpy as np

    return max(float(np.max(np.abs(c - copies[0]))) for c in copies)


def _one_step(strategy, initial, views, **model_kwargs):
    """Loss, gradients and updated state after one fit step from `initial` weights."""
    import numpy as np

    model = _tiny_model(strategy, **model_kwargs)
    model.set_weights(initial)
    with strategy.scope():
        model.compile(optimizer=_capturing_lars())
    history = model.fit(views, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    out = {"loss": np.float64(history.history["loss"][0])}
    spread = 0.0  # largest difference between replicas' copies of any variable
    trainable = {id(v): i for i, v in enumerate(model.trainable_variables)}
    names, kinds = [], []
    for i, v in enumerate(model.weights):
        copies = _local_values(strategy, v)
        spread = max(spread, _spread(copies))
        out[f"weight/{i:03d}"] = copies[0]
        if id(v) in trainable:
            grads = _local_values(strategy, model.optimizer.captured[trainable[id(v)]])
            spread = max(spread, _spread(grads))
            out[f"grad/{i:03d}"] = grads[0]
        # Without the model's name, and without the suffix Keras adds to the second
        # "projection_head" of the process: the same variable gets the same name.
        names.append(re.sub(r"^(\w+?)(_\d+)?/", r"\1/", v.path.split("/", 1)[-1]))
        kinds.append("trainable" if id(v) in trainable else "non_trainable")
    out["names"], out["kinds"] = np.array(names), np.array(kinds)
    out["replica_spread"] = np.float64(spread)
    return out


def equivalence(out_path, replica_counts="1,2,4"):
    """One step on the same global batch from the same weights with each replica count:
    1 is the default strategy (no distribution), n > 1 mirrored over n logical CPUs.
    Seeded, so runs of different counts in different processes compare too."""
    import numpy as np

    counts = [int(n) for n in replica_counts.split(",")]
    distribute.configure_cpu_replicas(max(counts))
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategies = {"1": tf.distribute.get_strategy()} if 1 in counts else {}
    for n in (n for n in counts if n > 1):
        # Two MirroredStrategy objects in one process would otherwise both number their
        # collective groups from 1 and collide (TensorFlow's own tests set this too).
        tf.distribute.MirroredStrategy._collective_key_base = 1000 * n
        strategies[str(n)] = tf.distribute.MirroredStrategy(devices[:n])
    initial = _initial_weights(tf.distribute.get_strategy())
    views = _views()
    results, timings = {}, {}
    # NT-Xent computed directly on one device from the same projections: over the whole
    # batch, and as the mean over two halves (what 2 replicas with per-replica negatives
    # should report, since synchronized BN gives them the same projections).
    from keras_simclr import losses

    model = _tiny_model(tf.distribute.get_strategy())
    model.set_weights(initial)
    h = model.encoder(tf.concat([views["view_1"], views["view_2"]], 0), training=True)
    z1, z2 = tf.split(model.head(h, training=True), 2, axis=0)
    half = GLOBAL_BATCH // 2
    results["direct/loss"] = np.float64(losses.nt_xent(z1, z2, TEMPERATURE))
    results["direct/loss_two_halves"] = np.float64(
        (losses.nt_xent(z1[:half], z2[:half], TEMPERATURE)
         + losses.nt_xent(z1[half:], z2[half:], TEMPERATURE)) / 2
    )
    for key, strategy in strategies.items():
        start = time.time()
        for name, value in _one_step(strategy, initial, views).items():
            results[f"{key}/{name}"] = value
        timings[key] = time.time() - start
    for i, w in enumerate(initial):
        results[f"initial/{i:03d}"] = w
    results["timings"] = np.array(json.dumps(timings))
    np.savez(out_path, **results)


def two_replicas(out_path):
    """With 2 mirrored CPU replicas: the loss with per-replica negatives (the weights and
    batch of `equivalence`), and augmentation randomness across replicas and views."""
    import numpy as np

    strategy = distribute.make_strategy("mirrored", cpu_replicas=2)
    import tensorflow as tf

    initial = _initial_weights(strategy)
    views = _views()
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "loss_local": float(_one_step(strategy, initial, views, global_negatives=False)["loss"]),
    }

    from keras_simclr import SimCLRAugment

    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    with strategy.scope():  # as a SimCLR model's augmenter is created
        augmenter = SimCLRAugment(IMAGE_SIZE, seed=7)

    @tf.function
    def two_views():
        return strategy.run(lambda: tf.stack([augmenter(images), augmenter(images)]))

    per_replica = [v.numpy() for v in strategy.experimental_local_results(two_views())]
    result["augment"] = {
        # |replica 0 view 1 - replica 1 view 1|, and view 1 vs view 2 on replica 0
        "between_replicas": float(np.abs(per_replica[0][0] - per_replica[1][0]).mean()),
        "between_views": float(np.abs(per_replica[0][0] - per_replica[0][1]).mean()),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


def _indexed_views(ctx, total=64):
    """Dataset function for distribute_datasets_from_function: `total` examples whose
    label is their index and whose views are a function of the index; sharded across
    input pipelines (workers) and batched per replica, repeated."""
    import tensorflow as tf

    def views(index):
        seed = tf.stack([index, tf.constant(0, tf.int64)])
        shape = [IMAGE_SIZE, IMAGE_SIZE, 3]
        return ({"view_1": tf.random.stateless_uniform(shape, seed),
                 "view_2": tf.random.stateless_uniform(shape, seed + 1)}, index)

    ds = tf.data.Dataset.range(total)
    ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    batch = ctx.get_per_replica_batch_size(GLOBAL_BATCH)
    return ds.map(views).batch(batch, drop_remainder=True).repeat()


def worker(out_dir, model_dir, epochs, crash_epoch="-1"):
    """One worker of a MultiWorkerMirroredStrategy run (TF_CONFIG set by the caller).

    Resumes from the newest checkpoint in MODEL_DIR/checkpoints if there is one (as
    apps.pretrain does: `callbacks.latest_checkpoint`, loaded inside the strategy scope)
    and trains up to `epochs` epochs of 2 steps with `callbacks.EpochCheckpoint`, which
    writes there on the chief only. With `crash_epoch` >= 0, worker 1 dies (os._exit(3),
    no clean-up) when that epoch begins, and worker 0 then fails in its next collective
    operation (TensorFlow notices the missing heartbeats) and exits 0 after writing its
    results.
    Writes OUT_DIR/<task>.npz: final weights (or, after a crash, the weights when the
    crash epoch began), the epochs trained, the weights and optimizer step fit started
    from, the example indices the worker fed in its first 2 steps, where it wrote its
    checkpoints and which files it wrote there.
    """
    import numpy as np

    epochs, crash_epoch = int(epochs), int(crash_epoch)
    strategy = distribute.make_strategy("multi_worker")
    import keras
    import tensorflow as tf

    from keras_simclr.training.callbacks import EpochCheckpoint, latest_checkpoint

    kind, index = distribute.task_id(strategy)
    dataset = distribute.training_input(strategy, _indexed_views)  # as apps.pretrain
    seen = []
    for step, (_, labels) in enumerate(dataset):
        for local in strategy.experimental_local_results(labels):
            seen.extend(int(i) for i in local.numpy())
        if step == 1:
            break
    checkpoint_dir = os.path.join(model_dir, "checkpoints")
    path, done_epochs = latest_checkpoint(checkpoint_dir, strategy)
    if path:
        with strategy.scope():
            model = keras.saving.load_model(path)
    else:
        keras.utils.set_random_seed(index + 1)  # workers differ; MWMS broadcasts the chief's
        model = _tiny_model(strategy, encoder="convnet")
        with strategy.scope():
            from keras_simclr.optimizers import LARS

            model.compile(optimizer=LARS(learning_rate=0.2))
    written = distribute.write_path(checkpoint_dir, strategy)  # where this worker writes
    result = {
        "seen": np.array(seen, np.int64), "checkpoint": np.array(written),
        "is_chief": np.bool_(distribute.is_chief(strategy)),
        "replicas": np.int64(strategy.num_replicas_in_sync), "error": np.array(""),
        "resumed_epoch": np.int64(done_epochs),
    }
    trained = []

    def record(prefix):
        # by position: a loaded model's variable paths gain its name ("sim_clr/...")
        result.update({f"{prefix}/{i:03d}": v.numpy() for i, v in enumerate(model.weights)})
        result[f"{prefix}_iterations"] = np.int64(model.optimizer.iterations.numpy())
        result["epochs_trained"] = np.array(trained, np.int64)
        listing = sorted(os.listdir(written)) if os.path.isdir(written) else []
        result["checkpoint_files"] = np.array(listing, dtype=str)

    def save():
        np.savez(os.path.join(out_dir, f"{kind}{index}.npz"), **result)

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # the loaded (or new) model fit starts from
            record("start")

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == crash_epoch:
                record("weight")
                if index == 1:
                    save()
                    os._exit(3)
            else:
                trained.append(epoch)

    callbacks = [EpochCheckpoint(checkpoint_dir, strategy=strategy), Record()]
    try:
        model.fit(dataset, epochs=epochs, initial_epoch=done_epochs, steps_per_epoch=2,
                  callbacks=callbacks, verbose=0)
        record("weight")
    except tf.errors.OpError as e:  # the other worker died
        result["error"] = np.array(type(e).__name__)
        save()
        return
    # the agreement check latest_checkpoint relies on: equal values pass, unequal raise
    distribute.check_same_on_all_workers(7, strategy, "seven")
    # workers that see different checkpoints fail instead of deadlocking: here worker 1
    # looks at a copy of its own newest checkpoint, the chief at an empty directory
    own = os.path.join(out_dir, f"own_checkpoints_{index}")
    os.makedirs(own, exist_ok=True)
    if index == 1:
        newest = sorted(os.listdir(written))[-1]
        shutil.copy(os.path.join(written, newest), os.path.join(own, newest))
    try:
        latest_checkpoint(own, strategy)
    except RuntimeError as e:
        result["disagreement"] = np.array(str(e))
    if crash_epoch < 0:  # linear evaluation of the trained encoder, on both workers
        import keras_simclr as ks

        def labelled(ctx):
            return _indexed_views(ctx).map(lambda views, index: (views["view_1"], index % 2))

        with strategy.scope():
            classifier = ks.LinearClassifier(model.encoder, num_classes=2)
            classifier.compile(optimizer=keras.optimizers.SGD(0.5),
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        classifier.fit(strategy.distribute_datasets_from_function(labelled), epochs=1,
                       steps_per_epoch=2, verbose=0)
        result["classifier_kernel"] = classifier.classifier.kernel.numpy()
    save()


def _batchnorm_once(strategy, x, weights, **layer_kwargs):
    """One training call of a FusedBatchNormalization on `x` split over the replicas: the
    output, the gradients of sum(y * weights) for x, gamma and beta, the moving statistics."""
    import numpy as np
    import tensorflow as tf

    from keras_simclr.networks.batchnorm import FusedBatchNormalization

    with strategy.scope():
        layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, **layer_kwargs)
        layer.build(x.shape)
        layer.gamma.assign(tf.linspace(0.5, 1.5, x.shape[-1]))
        layer.beta.assign(tf.linspace(-0.2, 0.2, x.shape[-1]))
    batches = tf.data.Dataset.from_tensors((x, weights))
    inputs, per_replica_weights = next(iter(strategy.experimental_distribute_dataset(batches)))

    def replica_step(x, weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))

    outputs = tf.function(lambda *a: strategy.run(replica_step, a))(inputs, per_replica_weights)
    y, dx, dgamma, dbeta = (strategy.experimental_local_results(t) for t in outputs)
    return [np.concatenate(y), np.concatenate(dx), np.sum(dgamma, 0), np.sum(dbeta, 0),
            layer.moving_mean.numpy(), layer.moving_variance.numpy()]


def batchnorm(out_path):
    """`_batchnorm_once` on one device (the reference: the whole batch's moments), and over
    2 mirrored CPU replicas synchronized (they must agree with it) and not (per-replica
    moments, which must not: the check can tell)."""
    import numpy as np

    distribute.configure_cpu_replicas(2)
    import tensorflow as tf

    # each replica's half shifted apart, so that its own moments are far from the global
    shift = tf.reshape(tf.repeat([0.0, 3.0], 8), (16, 1, 1, 1))
    x = tf.random.stateless_normal((16, 4, 4, 8), [0, 1]) + shift
    weights = tf.random.stateless_normal(x.shape, [1, 2])
    results = {}
    for key, sync in (("one_device", False), ("synchronized", True), ("unsynchronized", False)):
        if key == "one_device":
            strategy = tf.distribute.get_strategy()
        else:  # see `equivalence` on the collective keys of two strategies in one process
            tf.distribute.MirroredStrategy._collective_key_base = 1000 * len(results)
            strategy = tf.distribute.MirroredStrategy()
        for i, value in enumerate(_batchnorm_once(strategy, x, weights, synchronized=sync)):
            results[f"{key}/{i}"] = value
    np.savez(out_path, **results)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"equivalence": equivalence, "two_replicas": two_replicas, "worker": worker,
     "batchnorm": batchnorm}[mode](*args)
