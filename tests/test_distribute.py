"""Distributed training: N replicas train exactly as one device; multi-worker; strategies.

Logical CPU devices and MultiWorkerMirroredStrategy must be set up before TensorFlow
initialises, so the multi-replica runs happen in subprocesses (tests/_distribute_helper.py)
that write their results to files; they are started together in the background when the
first test that needs them runs, and compared here. Augmentation is off in the equivalence
runs (the model is fed ready views) and the global batch is fixed (16 images, 32 views).
The multi-worker run has two workers on 127.0.0.1: worker 1 dies when epoch 2 begins,
worker 0 then fails on its own, and both are started again and resume from the chief's
checkpoints (`callbacks.EpochCheckpoint` and `latest_checkpoint`, as apps.pretrain does).

Relative difference of two arrays: |a - b| / |b| (Euclidean norms), per variable, the
largest over variables.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import threading

import numpy as np
import pytest

import _app_server as app_server
import keras_simclr  # noqa: F401  (before TensorFlow)
from keras_simclr.training import distribute

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distribute_helper.py")
TIMEOUT = 600  # seconds for any one background run (normally 20-90 s)
_NOISE = re.compile(r"^(WARNING: All log|I0000|W0000|E0000|To enable the following|\s*$)")


class _Run:
    """Helper subprocesses started in the background; `wait()` returns their outputs."""

    def __init__(self, directory, name, commands, exit_codes=None):
        self.name = name
        self.exit_codes = exit_codes or [0] * len(commands)
        self.logs = [os.path.join(directory, f"{name}.{i}.log") for i in range(len(commands))]
        self.procs = []
        for (args, env), log in zip(commands, self.logs):
            self.procs.append(app_server.start(  # forked from the app server
                [HELPER, *args], env={**os.environ, **(env or {})},
                cwd=os.path.dirname(HELPER), stdout=log, stderr=log))
        self._done = False

    def output(self, index=0):
        with open(self.logs[index]) as f:
            return "".join(line for line in f if not _NOISE.match(line))

    def wait(self):
        if not self._done:
            try:
                codes = [p.wait(timeout=TIMEOUT) for p in self.procs]
            except subprocess.TimeoutExpired:
                for p in self.procs:
                    p.kill()
                pytest.fail(f"{self.name} did not finish in {TIMEOUT} s:\n{self.output()[-3000:]}")
            self._done = True
            for index, code in enumerate(codes):
                if code != self.exit_codes[index]:
                    pytest.fail(f"{self.name} (process {index}) exited with {code}:\n"
                                f"{self.output(index)[-4000:]}")
        return self


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(directory, name, out_dir, model_dir, epochs, crash_epoch):
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1, each with its TF_CONFIG;
    with `crash_epoch` >= 0 worker 1 dies when that epoch begins (exit code 3)."""
    os.makedirs(out_dir, exist_ok=True)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    commands = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        commands.append((["worker", out_dir, model_dir, str(epochs), str(crash_epoch)],
                         {"TF_CONFIG": json.dumps(tf_config)}))
    return _Run(directory, name, commands, exit_codes=[0, 3 if crash_epoch >= 0 else 0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All background runs, started at once (they share the 2 CPU cores)."""
    root = str(tmp_path_factory.mktemp("distribute"))
    model_dir = os.path.join(root, "model")
    started = {
        "root": root,
        "model_dir": model_dir,
        # two processes, so that both cores have work until the end
        "equivalence": _Run(root, "equivalence", [
            (["equivalence", os.path.join(root, f"equivalence_{counts}.npz"), counts], None)
            for counts in ("1,2", "4")]),
        "two_replicas": _Run(root, "two_replicas",
                             [(["two_replicas", os.path.join(root, "two_replicas.json")], None)]),
        # 4 epochs of 2 steps; worker 1 dies when epoch 2 begins, worker 0 fails after it
        "workers": _two_workers(root, "workers", os.path.join(root, "first"), model_dir, 4, 2),
    }

    def restart_when_stopped():
        # the same two workers started again on the same model directory
        workers = started["workers"]
        if [p.wait() for p in workers.procs] == workers.exit_codes:
            started["after_first"] = {  # what the stopped run left behind
                directory: sorted(os.listdir(os.path.join(model_dir, directory)))
                for directory in ("", "checkpoints")
                if os.path.isdir(os.path.join(model_dir, directory))
            }
            started["restarted"] = _two_workers(
                root, "restarted", os.path.join(root, "second"), model_dir, 4, -1)

    started["restarter"] = threading.Thread(target=restart_when_stopped, daemon=True)
    started["restarter"].start()
    yield started
    started["restarter"].join(timeout=TIMEOUT)
    for run in started.values():
        if isinstance(run, _Run):
            for p in run.procs:
                if p.poll() is None:
                    p.kill()


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ----------------------------------------------------------------------------------------
# 1, 2 and 4 replicas on one machine


@pytest.fixture(scope="module")
def equivalence(runs):
    runs["equivalence"].wait()
    first, second = (dict(np.load(os.path.join(runs["root"], f"equivalence_{counts}.npz")))
                     for counts in ("1,2", "4"))
    # the two processes started from the same weights and computed the same direct loss
    for key in (k for k in first if k.startswith(("initial/", "direct/"))):
        np.testing.assert_array_equal(first[key], second[key])
    return {**first, **second}


def _state(results, key, prefix):
    return {int(name.rsplit("/", 1)[1]): value for name, value in results.items()
            if name.startswith(f"{key}/{prefix}/")}


@pytest.mark.parametrize("replicas", ["2", "4"])
def test_replicas_train_exactly_as_one_device(equivalence, replicas):
    r = equivalence
    names = list(r["1/names"])
    assert list(r[f"{replicas}/names"]) == names
    # the loss, as the model reports it and as nt_xent computes it on one device
    assert abs(r[f"{replicas}/loss"] - r["1/loss"]) <= 1e-5 * abs(r["1/loss"])
    assert abs(r["direct/loss"] - r["1/loss"]) <= 1e-5 * abs(r["1/loss"])
    # the gradients (all-reduced, as the optimizer applied them), every one non-zero
    grads, reference = _state(r, replicas, "grad"), _state(r, "1", "grad")
    assert grads.keys() == reference.keys() and len(grads) > 60
    assert all(np.linalg.norm(g) > 0 for g in reference.values())
    worst = max((_rel(grads[i], reference[i]), names[i]) for i in reference)
    assert worst[0] < 1e-4, worst
    # the weights after the LARS step, their updates, and the BN moving statistics
    weights, reference = _state(r, replicas, "weight"), _state(r, "1", "weight")
    initial = {int(k.split("/")[1]): v for k, v in r.items() if k.startswith("initial/")}
    worst = max((_rel(weights[i], reference[i]), names[i]) for i in reference)
    assert worst[0] < 1e-4, worst
    worst = max((_rel(weights[i] - initial[i], reference[i] - initial[i]), names[i])
                for i in reference)
    assert worst[0] < 1e-4, worst  # float32 rounding of w - w0 alone is about 4e-5
    moving = [i for i, name in enumerate(names) if "moving_" in name]
    assert len(moving) == 2 * (20 + 3)  # every BN of the ResNet-18 and of the head
    worst = max((_rel(weights[i] - initial[i], reference[i] - initial[i]), names[i])
                for i in moving)
    assert worst[0] < 1e-5, worst
    # every replica holds the same copy of every variable and gradient
    assert r[f"{replicas}/replica_spread"] <= 1e-6


def test_per_replica_negatives_change_the_loss(runs, equivalence):
    runs["two_replicas"].wait()
    with open(os.path.join(runs["root"], "two_replicas.json")) as f:
        result = json.load(f)
    assert result["replicas"] == 2
    global_loss, local_loss = equivalence["2/loss"], result["loss_local"]
    # fewer negatives: a clearly smaller loss, exactly the mean of each half's NT-Xent
    assert local_loss < global_loss - 0.1
    assert abs(local_loss - equivalence["direct/loss_two_halves"]) < 1e-5 * local_loss


def test_augmentation_differs_between_replicas_and_views(runs):
    runs["two_replicas"].wait()
    with open(os.path.join(runs["root"], "two_replicas.json")) as f:
        result = json.load(f)
    # created inside strategy.scope(), as a model's augmenter is: the same images give
    # different views on the two replicas, and the two views of a replica differ
    views = result["augment"]
    assert views["between_replicas"] > 0.05 and views["between_views"] > 0.05


def test_strategy_and_replica_count_are_logged(runs):
    output = runs["two_replicas"].wait().output()
    assert "distribution strategy MirroredStrategy with 2 replica(s) in sync" in output


# ----------------------------------------------------------------------------------------
# Two workers on 127.0.0.1


def _worker_results(directory):
    return [dict(np.load(os.path.join(directory, f"worker{i}.npz"))) for i in range(2)]


def _max_weight_difference(a, b):
    keys = [k for k in a if k.startswith("weight/")]
    assert keys and keys == [k for k in b if k.startswith("weight/")]
    assert [a[k].shape for k in keys] == [b[k].shape for k in keys]
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in keys)


def test_two_workers_train_identically_on_sharded_input(runs):
    runs["workers"].wait()
    chief, other = _worker_results(os.path.join(runs["root"], "first"))
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["is_chief"] and not other["is_chief"]
    # after 2 epochs of 2 steps, when epoch 2 began, both held the same weights
    assert list(chief["epochs_trained"]) == list(other["epochs_trained"]) == [0, 1]
    assert chief["weight_iterations"] == other["weight_iterations"] == 4
    assert _max_weight_difference(chief, other) == 0.0
    assert _max_weight_difference(chief, _prefixed(chief, "start")) > 0.0  # it did train
    # then worker 1 died, and worker 0 failed instead of waiting for it forever
    assert str(chief["error"])  # an OpError (UnavailableError here), not a hang
    # each worker fed its own half of the examples
    assert set(chief["seen"]).isdisjoint(other["seen"])
    assert sorted(set(chief["seen"]) | set(other["seen"])) == list(range(32))
    # both saved every epoch; the chief wrote into the model directory, the other worker
    # only to a private temporary one
    model_dir = runs["model_dir"]
    assert str(chief["checkpoint"]) == os.path.join(model_dir, "checkpoints")
    saved = ["ckpt-1.keras", "ckpt-2.keras"]
    assert list(chief["checkpoint_files"]) == list(other["checkpoint_files"]) == saved
    leftover = str(other["checkpoint"])
    assert not leftover.startswith(model_dir) and os.path.exists(leftover)  # it crashed
    shutil.rmtree(leftover[: -len(os.path.join(model_dir, "checkpoints"))])
    runs["restarter"].join(timeout=TIMEOUT)  # it lists the model directory first
    assert runs["after_first"] == {"": ["checkpoints"], "checkpoints": saved}


def _prefixed(results, prefix):
    return {k.replace(f"{prefix}/", "weight/"): v for k, v in results.items()
            if k.startswith(f"{prefix}/")}


def test_two_workers_resume_after_restart(runs):
    runs["workers"].wait()
    stopped = _worker_results(os.path.join(runs["root"], "first"))[0]
    runs["restarter"].join(timeout=TIMEOUT)
    assert "restarted" in runs, "the first run did not end as expected"
    runs["restarted"].wait()
    chief, other = _worker_results(os.path.join(runs["root"], "second"))
    # both resumed from the chief's checkpoint: epoch 2, weights and optimizer step restored
    assert list(chief["epochs_trained"]) == list(other["epochs_trained"]) == [2, 3]
    for restarted in (chief, other):
        assert restarted["resumed_epoch"] == 2 and restarted["start_iterations"] == 4
        assert _max_weight_difference(_prefixed(restarted, "start"), stopped) == 0.0
        assert str(restarted["error"]) == ""
    assert chief["weight_iterations"] == other["weight_iterations"] == 8
    assert _max_weight_difference(chief, other) == 0.0
    for restarted in (chief, other):  # workers that disagree fail instead of deadlocking
        assert "workers disagree on the resumed epoch" in str(restarted["disagreement"])
    assert _max_weight_difference(chief, stopped) > 0.0
    # the chief kept the last 3 checkpoints; worker 1 removed its temporary directory
    assert sorted(os.listdir(runs["model_dir"])) == ["checkpoints"]
    assert sorted(os.listdir(os.path.join(runs["model_dir"], "checkpoints"))) == [
        "ckpt-2.keras", "ckpt-3.keras", "ckpt-4.keras"]
    assert list(chief["checkpoint_files"]) == ["ckpt-2.keras", "ckpt-3.keras", "ckpt-4.keras"]
    assert list(other["checkpoint_files"]) == ["ckpt-3.keras", "ckpt-4.keras"]  # this run's
    assert not os.path.exists(str(other["checkpoint"]))
    # LinearClassifier.fit works across workers too (keras#20329 on its (x, y) batches)
    # and leaves both with the same trained Dense layer
    np.testing.assert_array_equal(chief["classifier_kernel"], other["classifier_kernel"])
    assert np.abs(chief["classifier_kernel"]).max() > 0


# ----------------------------------------------------------------------------------------
# In-process checks (no device split needed)


def test_training_input_on_one_machine_is_the_whole_dataset():
    # Across workers it is distribute_datasets_from_function with each worker's input
    # context: the two-worker run above feeds its model through it (disjoint halves).
    import tensorflow as tf

    def dataset_fn(context):
        contexts.append(context)
        ds = tf.data.Dataset.range(12)
        if context is not None:  # a worker's shard, as the pretraining input does
            ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.batch(4)

    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0"])):
        contexts = []
        made = distribute.training_input(strategy, dataset_fn)
        assert contexts == [None] and not distribute.is_multi_worker(strategy)
        assert sorted(np.concatenate(list(made.as_numpy_iterator()))) == list(range(12))


def test_per_replica_batch_size():
    assert distribute.per_replica_batch_size(512, 4) == 128
    assert distribute.per_replica_batch_size(16, 1) == 16
    with pytest.raises(ValueError, match=r"not divisible by the 4 replicas.*e\.g\. 8 or 12"):
        distribute.per_replica_batch_size(10, 4)
    with pytest.raises(ValueError, match="not divisible by the 4 replicas.*e.g. 4"):
        distribute.per_replica_batch_size(3, 4)
    with pytest.raises(ValueError, match="positive"):
        distribute.per_replica_batch_size(0, 2)
    import tensorflow as tf

    assert distribute.per_replica_batch_size(6, tf.distribute.get_strategy()) == 6


def test_global_bn_is_on_by_default_with_several_replicas():
    assert distribute.resolve_global_bn(None, 2) is True
    assert distribute.resolve_global_bn(None, 1) is False
    assert distribute.resolve_global_bn(False, 8) is False
    assert distribute.resolve_global_bn(True, 1) is True


def test_global_bn_set_on_a_loaded_model_reaches_every_layer_and_its_config():
    # A checkpoint of a 1-replica run resumed on 2 workers kept per-replica BN.
    import keras
    import keras_simclr as ks

    model = ks.build_simclr(backbone="resnet10", width_multiplier=0.125, head_depth=2,
                            proj_dim=8, synchronized_bn=False)
    model.build({key: (None, 16, 16, 3) for key in ("view_1", "view_2")})
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(layers) > 10 and not any(layer.synchronized for layer in layers)
    assert distribute.set_global_bn(model, True) is True
    assert all(layer.synchronized for layer in layers)
    assert model.head.get_config()["synchronized_bn"] is True  # the next checkpoint's
    assert distribute.set_global_bn(model, True) is False


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["h:1"]}}', "no 'task'"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
     "not in the cluster"),
    ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}',
     "list of 'host:port'"),
    ('{"cluster": {"ps": ["h:1"], "evaluator": ["h:2"], "master": ["h:3"]}, '
     '"task": {"type": "master", "index": 0}}', "takes 'worker'"),
])
def test_bad_tf_config_is_a_clear_error(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=re.escape(message)):
        distribute.make_strategy("multi_worker")


def test_tf_config_is_parsed(monkeypatch):
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"], "ps": ["d:4"]},
              "task": {"type": "worker", "index": 1}}
    assert distribute.parse_tf_config({"TF_CONFIG": json.dumps(config)}) == config
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.parse_tf_config() == config  # os.environ by default
    # The last worker's index is in the cluster, one past it is not.
    for index, valid in ((1, True), (2, False), (-1, False), ("1", False)):
        text = json.dumps({**config, "task": {"type": "worker", "index": index}})
        if valid:
            assert distribute.parse_tf_config({"TF_CONFIG": text})["task"]["index"] == index
        else:
            with pytest.raises(ValueError, match="is not in the cluster"):
                distribute.parse_tf_config({"TF_CONFIG": text})


def test_strategy_names_and_errors(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="unknown strategy 'gpus'.*mirrored"):
        distribute.make_strategy("gpus")
    with pytest.raises(ValueError, match="only applies to --strategy=mirrored or auto"):
        distribute.make_strategy("one_device", cpu_replicas=2)
    default = distribute.make_strategy("default")
    assert default is tf.distribute.get_strategy() and default.num_replicas_in_sync == 1
    assert distribute.make_strategy("auto").num_replicas_in_sync == 1  # one CPU, no split
    one = distribute.make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert "OneDeviceStrategy with 1 replica(s)" in distribute.describe(one)
    assert distribute.is_chief(default) and distribute.is_chief(one)
    assert distribute.write_path("/some/dir/ckpt.h5", default) == "/some/dir/ckpt.h5"
    assert distribute.task_id(default) == ("worker", 0)
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(RuntimeError, match="strategy 'tpu': no TPU found"):
        distribute.make_strategy("tpu")


def test_cpu_split_after_tensorflow_started_is_a_clear_error():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # devices are initialised by now
    with pytest.raises(RuntimeError, match="before any tensor, model, dataset or strategy"):
        distribute.configure_cpu_replicas(3)
    assert len(distribute.configure_cpu_replicas(1)) >= 1  # no split asked: fine


def test_unbuilt_model_fits_views_under_a_strategy():
    """Keras builds a model under a strategy by calling it on a first batch; SimCLR's dict
    of views used to fail there ("Unable to automatically build the model")."""
    import keras
    import tensorflow as tf

    from keras_simclr import ProjectionHead, SimCLR

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3)(inputs)
        x = keras.layers.BatchNormalization(synchronized=True)(x)
        encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        model = SimCLR(encoder, ProjectionHead(depth=2, output_dim=8, synchronized_bn=True))
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert not model.built
    rng = np.random.default_rng(0)
    views = {k: rng.uniform(0, 1, (8, 8, 8, 3)).astype("float32") for k in ("view_1", "view_2")}
    history = model.fit(views, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_step_logs_are_unchanged_outside_multi_worker():
    import tensorflow as tf

    from keras_simclr.training.keras_compat import step_logs

    logs = {"loss": tf.constant(1.5)}
    assert step_logs(logs) is logs
