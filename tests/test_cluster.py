"""apps.pretrain on a cluster of two local worker processes: a signal that every worker
honours, a worker that dies, a restart with another number of workers, a Slurm launch.

The runs use the toy backbone and a view maker without randomness (`toy_mirror`: the
image and its mirror image, tests/_toy_apps.py), so a run's weights depend only on the
seed and the data order, and an interrupted and resumed run must end exactly where an
uninterrupted one does. The workers listen on free ports of 127.0.0.1; a signal is sent
once the chief has written the first epoch's checkpoint, early in epoch 2.

Three scenarios run in background threads, started together (they share the 2 cores):
- `reference`: docs/slurm/pretrain.sbatch run as a batch job would run it, with stand-ins
  for `srun` and `scontrol` first on PATH (tests/slurm_stand_ins: two tasks on this
  machine, the `SLURM_*` variables of a two-task step), trains 3 epochs to the end;
- `worker_signalled`: a TF_CONFIG launch, SIGTERM to worker 1; the same launch again;
- `chief_signalled`: SIGTERM to the chief; the rerun on one worker (2 -> 1) gets SIGTERM
  in epoch 3; the rerun on two workers (1 -> 2) loses worker 1 to kill -9 in epoch 4.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile

import keras
import numpy as np
import pytest

from keras_simclr.training import cluster, distribute
from keras_simclr.training.callbacks import checkpoint_position
import _app_server as app_server
from test_apps import NOISE, ROOT, run_app, write_folder

TOY_APPS = os.path.join(ROOT, "tests", "_toy_apps.py")
SBATCH = os.path.join(ROOT, "docs", "slurm", "pretrain.sbatch")
STAND_INS = os.path.join(ROOT, "tests", "slurm_stand_ins")
TIMEOUT = 300  # seconds for any one launch (normally 20-60 s)
FLAGS = ["--backbone=toy_convnet", "--view_maker=toy_mirror", "--image_size=8",
         "--batch_size=16", "--head_depth=2", "--proj_dim=8", "--verbose=0", "--noprobe"]
STEPS = 20  # per epoch: 320 images in batches of 16


_HANDED_OUT = set()
_PORTS_LOCK = threading.Lock()


def _free_ports(n, consecutive=False):
    """n ports free on 127.0.0.1 (consecutive ones for a Slurm node's tasks), never the
    same twice in this process: the launches of the scenarios pick theirs at once, and
    the kernel may hand a just released port to the next bind."""
    with _PORTS_LOCK:
        for _ in range(200):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
            probe.close()
            wanted = list(range(first, first + n)) if consecutive else None
            sockets = []
            try:
                for port in wanted or [0] * n:
                    sockets.append(socket.socket())
                    sockets[-1].bind(("127.0.0.1", port))
                ports = [s.getsockname()[1] for s in sockets]
            except OSError:
                continue
            finally:
                for s in sockets:
                    s.close()
            if not _HANDED_OUT & set(ports):
                _HANDED_OUT.update(ports)
                return ports
    raise RuntimeError(f"found no {n} free ports")


def tf_config_env(workers):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(workers)]
    return [{"TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                      "task": {"type": "worker", "index": i}})}
            for i in range(workers)]


def _environment(extra):
    """This process's environment without its own cluster variables, plus `extra`."""
    return {**{name: value for name, value in os.environ.items()
               if name != "TF_CONFIG" and not name.startswith("SLURM_")}, **extra}


class Launch:
    """The worker processes of one launch of apps.pretrain (through tests/_toy_apps.py),
    one per environment; `command` replaces the app's (the Slurm batch script)."""

    def __init__(self, directory, name, model_dir, environments, args, command=None):
        self.logs = [os.path.join(directory, f"{name}.{i}.log") for i in range(len(environments))]
        self.procs, self.exited = [], {}
        for env, log in zip(environments, self.logs):
            argv = [*(command or [TOY_APPS, "pretrain"]), f"--model_dir={model_dir}", *FLAGS,
                    *args]
            if command:  # the batch script, run by bash
                with open(log, "w") as out:
                    self.procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=out,
                                                       stderr=subprocess.STDOUT,
                                                       env=_environment(env)))
            else:  # a worker: tests/_toy_apps.py forked from the app server
                self.procs.append(app_server.start(argv, env=_environment(env), stdout=log,
                                                   stderr=log))

    def signal_when(self, path, index, signum):
        """Send worker `index` `signum` once `path` exists; the time it was sent."""
        deadline = time.time() + TIMEOUT
        while not os.path.exists(path) and time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"a worker ended before {path} was written")
            time.sleep(0.01)
        if not os.path.exists(path):
            self.wait(timeout=0)
            raise AssertionError(f"{path} was not written in {TIMEOUT} s")
        self.procs[index].send_signal(signum)
        return time.time()

    def wait(self, timeout=TIMEOUT):
        """Exit statuses, in order (those still running after `timeout` s are killed);
        records when each process ended."""
        deadline = time.time() + timeout
        while len(self.exited) < len(self.procs) and time.time() <= deadline:
            for index, proc in enumerate(self.procs):
                if index not in self.exited and proc.poll() is not None:
                    self.exited[index] = time.time()
            time.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        return [proc.wait() for proc in self.procs]

    def output(self, index):
        with open(self.logs[index]) as f:
            return f.read()


def _checkpoints(model_dir):
    """The checkpoint names in `model_dir`, oldest first."""
    return sorted(os.listdir(os.path.join(model_dir, "checkpoints")), key=checkpoint_position)


def reference(root, dataset):
    """The batch script of docs/slurm as a two-task job on this machine runs it."""
    model_dir = os.path.join(root, "reference")
    job = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost",
           "PATH": f"{STAND_INS}{os.pathsep}{os.environ['PATH']}",
           "PRETRAIN": f"{sys.executable} {TOY_APPS} pretrain",
           "SCONTROL_LOG": os.path.join(root, "scontrol.log")}
    launch = Launch(root, "reference", model_dir, [job],
                    [f"--dataset={dataset}", "--epochs=3",
                     f"--cluster_port={_free_ports(2, consecutive=True)[0]}"],
                    command=["bash", SBATCH])
    return {"model_dir": model_dir, "codes": launch.wait(), "launch": launch,
            "scontrol": os.path.exists(job["SCONTROL_LOG"])}


def worker_signalled(root, dataset):
    model_dir = os.path.join(root, "worker_signalled")
    args = [f"--dataset={dataset}", "--epochs=3"]
    first = Launch(root, "worker_signalled", model_dir, tf_config_env(2), args)
    first.signal_when(os.path.join(model_dir, "checkpoints", "ckpt-1.keras"), 1, signal.SIGTERM)
    result = {"model_dir": model_dir, "first": first, "first_codes": first.wait(),
              "checkpoints": _checkpoints(model_dir)}
    rerun = Launch(root, "worker_signalled_rerun", model_dir, tf_config_env(2), args)
    result.update(rerun=rerun, rerun_codes=rerun.wait())
    return result


def chief_signalled(root, dataset):
    model_dir = os.path.join(root, "chief_signalled")
    args = [f"--dataset={dataset}", "--epochs=4"]
    checkpoint = os.path.join(model_dir, "checkpoints", "ckpt-{}.keras").format
    first = Launch(root, "chief_signalled", model_dir, tf_config_env(2), args)
    first.signal_when(checkpoint(1), 0, signal.SIGTERM)
    result = {"model_dir": model_dir, "first": first, "first_codes": first.wait(),
              "checkpoints": _checkpoints(model_dir)}
    one = Launch(root, "one_worker", model_dir, [{}], args)
    one.signal_when(checkpoint(2), 0, signal.SIGTERM)
    result.update(one=one, one_codes=one.wait(), one_checkpoints=_checkpoints(model_dir))
    two = Launch(root, "two_workers", model_dir, tf_config_env(2), args)
    result["killed_at"] = two.signal_when(checkpoint(3), 1, signal.SIGKILL)
    result.update(two=two, two_codes=two.wait(), two_checkpoints=_checkpoints(model_dir))
    return result


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cluster"))
    dataset = write_folder(os.path.join(root, "images"), {"train": 16 * STEPS})
    results, threads = {}, {}
    for name, run in (("reference", lambda: reference(root, dataset)),
                      ("worker_signalled", lambda: worker_signalled(root, dataset)),
                      ("chief_signalled", lambda: chief_signalled(root, dataset))):
        def target(name=name, run=run):
            try:
                results[name] = run()
            except BaseException as error:  # reported by the tests that need it
                results[name] = error
        threads[name] = threading.Thread(target=target, daemon=True)
        threads[name].start()

    def get(name):
        threads[name].join(timeout=4 * TIMEOUT)
        if isinstance(results.get(name), BaseException):
            raise results[name]
        return results[name]
    return get


def _stop_line(output):
    lines = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def _weights(model_dir):
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    return model.get_weights(), int(model.optimizer.iterations)


def test_a_signal_to_one_worker_stops_every_worker_at_the_same_step(scenarios):
    for name, signalled in (("worker_signalled", "worker 1"), ("chief_signalled", "worker 0")):
        run = scenarios(name)
        first, codes = run["first"], run["first_codes"]
        assert codes == [75, 75], (name, codes, first.output(0)[-3000:], first.output(1)[-3000:])
        lines = [_stop_line(first.output(index)) for index in range(2)]
        assert lines[0] == lines[1], lines  # the same step, the same checkpoint
        found = re.fullmatch(
            rf"stopped: SIGTERM received by {signalled}: saved step (\d+) \(epoch 2, step "
            rf"(\d+) of {STEPS}\) to {run['model_dir']}/checkpoints/(ckpt-1-\d+\.keras); rerun "
            r"every worker to resume there", lines[0])
        assert found, lines[0]
        assert int(found[1]) == STEPS + int(found[2]) and int(found[2]) < STEPS
        assert set(run["checkpoints"]) == {"ckpt-1.keras", found[3]}  # one checkpoint, one step
        for index in range(2):  # as quiet as one machine: no eager all-reduce warning
            console = first.output(index)
            assert not [n for n in [*NOISE, "eagerly", "Traceback"] if n in console], console


def test_the_same_launch_resumes_where_an_uninterrupted_slurm_launch_ends(scenarios):
    # the TF_CONFIG launch, stopped and resumed, against the Slurm batch script's launch
    reference_run, run = scenarios("reference"), scenarios("worker_signalled")
    job = reference_run["launch"].output(0)
    assert reference_run["codes"] == [0], job[-3000:]
    assert "this is worker 0 (chief)" in job and "this is worker 1 with" in job
    assert not reference_run["scontrol"]  # finished: not requeued
    assert run["rerun_codes"] == [0, 0], run["rerun"].output(0)[-3000:]
    for index in range(2):
        assert f"resuming from {run['model_dir']}/checkpoints/{run['checkpoints'][-1]}" in (
            run["rerun"].output(index))
    expected, steps = _weights(reference_run["model_dir"])
    got, resumed_steps = _weights(run["model_dir"])
    assert steps == resumed_steps == 3 * STEPS
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_restarts_on_one_worker_then_two_resume_at_the_checkpoints_step(scenarios):
    run = scenarios("chief_signalled")
    stopped = run["checkpoints"][-1]
    assert run["one_codes"] == [75], run["one"].output(0)[-3000:]
    one = run["one"].output(0)
    assert f"resuming from {run['model_dir']}/checkpoints/{stopped}" in one
    assert "read the data on 2 worker(s), this one on 1" in one
    later = run["one_checkpoints"][-1]
    assert re.fullmatch(r"ckpt-2-\d+\.keras", later), run["one_checkpoints"]
    two = run["two"].output(0)
    assert f"resuming from {run['model_dir']}/checkpoints/{later}" in two
    assert "read the data on 1 worker(s), this one on 2" in two
    assert "BatchNormalization is synchronized across the 2 replica(s)" in two
    with zipfile.ZipFile(os.path.join(run["model_dir"], "checkpoints", "ckpt-3.keras")) as saved:
        head = json.loads(saved.read("config.json"))["config"]["head"]["config"]
    assert head["synchronized_bn"] is True  # the checkpoint the two workers wrote


def test_a_killed_worker_stops_the_other_within_a_minute_naming_it(scenarios):
    run = scenarios("chief_signalled")
    assert run["two_codes"][1] == -signal.SIGKILL
    assert run["two_codes"][0] == 69, run["two"].output(0)[-3000:]
    assert run["two"].exited[0] - run["killed_at"] < 60
    lines = run["two"].output(0).strip().splitlines()
    assert lines[-1] == ("error: lost contact with worker 1: training stopped; relaunch every "
                         "worker to resume from the newest checkpoint"), lines[-5:]
    assert "model.keras" not in os.listdir(run["model_dir"])
    assert not [name for name in run["two_checkpoints"] if "partial" in name]


# ----------------------------------------------------------------------------------------
# Which cluster, in process


SLURM_STEP = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
              "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "2"}


def test_the_cluster_is_detected_where_unambiguous():
    assert cluster.detect({}) == "none"
    assert cluster.detect({"TF_CONFIG": "{}"}) == "tf_config"
    assert cluster.detect(SLURM_STEP) == "slurm"
    assert cluster.detect({**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1"}) == "none"  # one task
    assert cluster.detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) == "none"  # sbatch, no srun
    with pytest.raises(ValueError, match="choose one with --cluster=tf_config or --cluster=slurm"):
        cluster.detect({**SLURM_STEP, "TF_CONFIG": "{}"})


def test_a_slurm_step_resolves_to_workers_on_consecutive_ports(monkeypatch):
    for name, value in SLURM_STEP.items():
        monkeypatch.setenv(name, value)
    resolver = cluster.resolve("slurm", port=23456)
    assert resolver.cluster_spec().as_dict() == {"worker": ["localhost:23456", "localhost:23457"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.num_accelerators() == {"GPU": 0}  # this CPU machine: no GPU, no nvidia-smi
    assert cluster.resolve("none") is None


def test_an_incomplete_cluster_environment_is_one_error_line(tmp_path):
    model_dir = str(tmp_path / "run")
    result = run_app("pretrain", f"--model_dir={model_dir}", "--cluster=slurm", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: --cluster=slurm needs the variables srun sets for each task; SLURM_PROCID, "
        "SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE not set (run "
        "the app under srun)"]
    assert not os.path.exists(model_dir)


def test_the_kubernetes_recipe_gives_each_pod_its_tf_config():
    with open(os.path.join(ROOT, "docs", "kubernetes", "pretrain.yaml")) as f:
        recipe = f.read()
    export = re.search(r"^ *(export TF_CONFIG=.*)$", recipe, re.M).group(1)
    workers = int(re.search(r"^  completions: (\d+)$", recipe, re.M).group(1))
    for index in range(workers):  # what the container's shell sets in pod `index`
        shell = subprocess.run(["sh", "-c", f'{export}\necho "$TF_CONFIG"'], text=True,
                               capture_output=True, env={"JOB_COMPLETION_INDEX": str(index)})
        config = json.loads(shell.stdout)
        assert config == {"cluster": {"worker": [
            f"simclr-pretrain-{i}.simclr-pretrain:2222" for i in range(workers)]},
            "task": {"type": "worker", "index": index}}
        assert distribute.parse_tf_config({"TF_CONFIG": shell.stdout}) == config
    assert "subdomain: simclr-pretrain" in recipe and "  name: simclr-pretrain\n" in recipe
