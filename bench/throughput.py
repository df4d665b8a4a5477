"""Pretraining speed: end-to-end views/s, train-step views/s, FLOP rate against the machine's peak.

Measures in one run, after warm-up, the median over --steps steps of
- `views_per_s`: pretraining as `apps.pretrain` runs it: the real input pipeline (decode,
  cache, shuffle, keras-cv-based SimCLR augmentation where --augment_in says) feeding
  `SimCLR.fit` with LARS;
- `step_views_per_s`: the train step alone on views already in memory;
- `gflops_per_s`: training FLOPs per view times `step_views_per_s`. FLOPs are counted
  analytically from the layer shapes: 2 x multiply-adds of every Conv2D and Dense layer of
  encoder and head for the forward pass, times 3 for forward + backward (the backward pass
  computes gradients for inputs and weights, each about one forward pass). This is the
  usual nominal count, every kernel tap at every output pixel;
- `useful_gflops_per_s`: the same but counting only the kernel taps that read image data,
  not "same" padding. At 32 px the last stages' 3x3 convolutions run on 2x2 and 1x1 maps
  where most taps read padding (a 1x1 map: 1 of 9), and `SmallMapConv2D` skips that work,
  so the nominal rate there overstates what the CPU computes; this one does not;
- `peak_gflops_per_s`: the best of a large float32 matmul in TensorFlow and in NumPy on
  this machine, measured in the same run, so `utilization` is machine-independent;
- `cpu_utilization`: the same ratio by CPU time, training GFLOP per CPU second of the step
  over the matmul's GFLOP per CPU second, which other processes sharing the machine
  distort far less than the wall-clock ratio.

Every step time is taken twice: wall seconds and process CPU seconds (all threads,
`time.process_time`), with their ratio (about the number of cores kept busy); on a shared
machine other processes inflate the wall time, so precisions are compared by CPU time.

Precisions (`--precisions`, default float32 and mixed_bfloat16) are measured side by side
in one process: each model is built under its Keras dtype policy (`precision.set_precision`,
float32 restored after), and the train-step measurements alternate between them in
--rounds rounds (A B A B ...), each precision's figure the median over all its steps. The
row also gives the CPU's native bfloat16 support (`precision.cpu_bfloat16_support`): where
it is "none" (AVX2-only CPUs, e.g. AMD EPYC before Zen 4) TensorFlow emulates bfloat16 and
mixed_bfloat16 is slower than float32, so measure it with few steps at a small batch.

    python bench/throughput.py --dataset=folder:../shared/data/cifar10 --backbone=resnet18 \\
        --stem=imagenet --image_size=32 --batch_size=256 --steps=20 --json
    python bench/throughput.py --batch_size=64 --steps=3 --rounds=3 --skip_end_to_end

`--guard_overhead` measures instead what apps.pretrain's non-finite guard and preemption
callbacks (`keras_simclr.training.resilience`) add to a step: whole `fit` calls of --steps steps on
views in memory, with the callbacks the app had before them (`Throughput`) and with them
added, alternating in --rounds rounds; the ratio of the median CPU seconds per step. Each
`fit` is one epoch, so the guard's weight check at the end of an epoch is counted against
--steps steps (a real epoch has more). On a shared machine the paired ratio moves by more
than the callbacks cost, so the CPU seconds spent inside their hooks are also added up
(`HookTimer`): those of the per-step hooks per step and as a fraction of the step.

`--agreement_overhead` measures what the stop agreement of multi-worker runs
(`keras_simclr.training.preemption`) adds to a step: this script starts itself as two
workers on 127.0.0.1 (`TF_CONFIG`, free ports), each training the model with global BN on
its half of --batch_size, and times whole `fit` calls of --steps steps without and with the
agreement in the train step (the same model, two traced train functions), alternating in
--rounds rounds, with apps.pretrain's per-step callbacks (the guard; with the agreement also
`Preemption`, which reads its result every step). It reports the chief's median CPU
seconds per step of each and their ratio, and the agreement's all-reduce timed alone (a
compiled function doing only that, 200 calls): the paired difference on a shared machine
can be smaller than its noise, the collective alone bounds the cost from above.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras_simclr  # noqa: E402  (before TensorFlow)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from keras_simclr import ProjectionHead, SimCLRAugment, build_simclr, data, optimizers  # noqa: E402
from keras_simclr.networks import backbones, conv
from keras_simclr.training import precision

SECTION = "## Pretraining throughput (bench/throughput.py)"
HEADER = ("| date | CPU | cores | command | precision | bf16 support | views/s end to end "
          "| train step views/s | train step CPU s/step (CPU/wall) | CPU time against "
          "the first precision | end to end / step | GFLOP/s | useful GFLOP/s "
          "| peak GFLOP/s | utilization | useful utilization | utilization by CPU time |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=common.CIFAR10_FOLDER)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=256, help="global batch (images)")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per measurement (per round for the train step)")
    parser.add_argument("--warmup_steps", type=int, default=3)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                        help="comma-separated Keras dtype policies (keras_simclr.training.precision)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of train-step measurements per precision")
    parser.add_argument("--augment_in", default="data", choices=["data", "model"])
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--skip_end_to_end", action="store_true")
    parser.add_argument("--agreement_overhead", action="store_true",
                        help="time fit on two local workers with and without the workers' "
                        "stop agreement instead")
    parser.add_argument("--guard_overhead", action="store_true",
                        help="time fit with and without the resilience callbacks instead")
    common.add_output_flags(parser, "the rows")
    args = common.parse_with_encoder_flags(parser, argv)
    args.precisions = [p.strip() for p in args.precisions.split(",")]
    if args.warmup_steps < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup_steps, --steps and --rounds must be at least 1")
    for name in args.precisions:
        if name not in precision.PRECISIONS:
            parser.error(f"--precisions: {name!r} is not one of {precision.PRECISIONS}")
    return args


class StepTimes(keras.callbacks.Callback):
    """Wall and process CPU seconds of every training batch."""

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), common.cpu_seconds())

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start[0])
        self.cpu_times.append(common.cpu_seconds() - self._start[1])

    def on_train_begin(self, logs=None):
        self.times, self.cpu_times = [], []


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set for `name` inside the block, float32 after it."""
    precision.set_precision(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def build_model(args, augment_in_model, synchronized_bn=False):
    model = build_simclr(backbone=args.backbone, **common.encoder_arguments(args),
                         augmenter=SimCLRAugment(args.image_size) if augment_in_model else None,
                         synchronized_bn=synchronized_bn)
    schedule = optimizers.warmup_cosine_for(1.0, args.batch_size, "linear", 100, 100, 10)
    model.compile(optimizer=optimizers.build_optimizer("lars", learning_rate=schedule,
                                                       weight_decay=1e-4))
    return model


def step_times(model, dataset, steps: int, skip: int = 0) -> tuple[list, list]:
    """(wall, CPU) seconds of each of `steps` fit steps on `dataset`, less the first `skip`."""
    timer = StepTimes()
    model.fit(dataset, steps_per_epoch=skip + steps, epochs=1, verbose=0, callbacks=[timer],
              shuffle=False)
    return timer.times[skip:], timer.cpu_times[skip:]


def step_figures(args, wall: list, cpu: list, prefix: str) -> dict:
    """Medians of per-step wall and CPU seconds as `{prefix}views_per_s` and friends."""
    wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
    return {f"{prefix}views_per_s": 2 * args.batch_size / wall_s,
            f"{prefix}wall_s": wall_s, f"{prefix}cpu_s": cpu_s,
            f"{prefix}cpu_over_wall": common.cpu_over_wall(cpu_s, wall_s),
            f"{prefix}steps_timed": len(wall), f"{prefix}batch_size": args.batch_size}


def in_memory_views(args, batch_size: int | None = None) -> tf.data.Dataset:
    """Endless batches (of --batch_size, or `batch_size`) of two random views and zero
    labels, already in memory."""
    shape = (batch_size or args.batch_size, args.image_size, args.image_size, 3)
    views = {key: tf.random.uniform(shape, seed=i) for i, key in enumerate(("view_1", "view_2"))}
    return tf.data.Dataset.from_tensors((views, tf.zeros(shape[:1], tf.int64))).repeat()


def measure_train_steps(args) -> dict:
    """Train step alone, every precision, alternating in --rounds rounds: {name: figures}."""
    in_memory = in_memory_views(args)
    models, times = {}, {name: ([], []) for name in args.precisions}
    for name in args.precisions:
        with dtype_policy(name):
            models[name] = build_model(args, augment_in_model=False)
            step_times(models[name], in_memory, 0, skip=args.warmup_steps)  # trace, warm up
    for round_index in range(args.rounds):
        for name in args.precisions:
            with dtype_policy(name):
                wall, cpu = step_times(models[name], in_memory, args.steps)
            times[name][0].extend(wall)
            times[name][1].extend(cpu)
            print(f"round {round_index + 1}, {name}: {statistics.median(wall):.2f} s wall, "
                  f"{statistics.median(cpu):.2f} s CPU per step", file=sys.stderr, flush=True)
    return {name: step_figures(args, *times[name], "step_") for name in args.precisions}


def measure_end_to_end(args, name: str) -> dict:
    """Fit steps fed by the real input pipeline, under the dtype policy `name`."""
    augment_in_model = args.augment_in == "model"
    pipeline = data.pretrain_dataset(
        args.dataset, args.split, image_size=args.image_size,
        global_batch_size=args.batch_size, cache=True,
        augmenter=None if augment_in_model else SimCLRAugment(args.image_size))
    with dtype_policy(name):
        model = build_model(args, augment_in_model)
        wall, cpu = step_times(model, pipeline.repeat(), args.steps, skip=args.warmup_steps)
    return step_figures(args, wall, cpu, "")


def training_flops_per_view(args):
    """Analytic FLOPs of forward + backward for one view through encoder and head.

    Returns (nominal, useful): all kernel taps, or only those that read data, not padding.
    """
    encoder = backbones.build_backbone(args.backbone, **common.encoder_arguments(args),
                                       input_shape=(args.image_size, args.image_size, 3))
    nominal = useful = 0
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer_nominal, layer_useful = conv.multiply_adds(layer)
            nominal += layer_nominal
            useful += layer_useful
    width = encoder.output.shape[-1]
    head = ProjectionHead(3)
    head.build((None, width))
    head_macs = sum(int(np.prod(dense.kernel.shape)) for dense in head.dense_layers)
    return 3 * 2 * (nominal + head_macs), 3 * 2 * (useful + head_macs)


def peak_gflops(size: int = 4096, repeats: int = 5) -> dict:
    """Best GFLOP/s and GFLOP per CPU second of a size x size float32 matmul (TF and NumPy)."""
    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), np.float32)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    ta, tb = tf.constant(a), tf.constant(b)
    matmul(ta, tb)
    best = {"peak_gflops_per_s": 0.0, "peak_gflops_per_cpu_s": 0.0}
    for run in (lambda: matmul(ta, tb).numpy(), lambda: a @ b):
        run()
        for _ in range(repeats):
            with common.Stopwatch() as watch:
                run()
            gflop = 2 * size ** 3 / 1e9
            best["peak_gflops_per_s"] = max(best["peak_gflops_per_s"], gflop / watch.wall_s)
            best["peak_gflops_per_cpu_s"] = max(best["peak_gflops_per_cpu_s"],
                                                gflop / max(watch.cpu_s, 1e-9))
    return best


def derived_figures(figures: dict, nominal: float, useful: float, peak: dict) -> dict:
    """FLOP rates and utilisation (by wall and by CPU time) of one precision's train step."""
    out = {"training_gflops_per_view": nominal / 1e9,
           "useful_training_gflops_per_view": useful / 1e9}
    out["gflops_per_s"] = out["training_gflops_per_view"] * figures["step_views_per_s"]
    out["useful_gflops_per_s"] = (out["useful_training_gflops_per_view"]
                                  * figures["step_views_per_s"])
    out["utilization"] = out["gflops_per_s"] / peak["peak_gflops_per_s"]
    out["useful_utilization"] = out["useful_gflops_per_s"] / peak["peak_gflops_per_s"]
    out["cpu_utilization"] = (out["training_gflops_per_view"] * 2 * figures["step_batch_size"]
                              / figures["step_cpu_s"] / peak["peak_gflops_per_cpu_s"])
    if "views_per_s" in figures:
        out["end_to_end_over_step"] = figures["views_per_s"] / figures["step_views_per_s"]
    return out


def row(result: dict, name: str) -> list[str]:
    """The RESULTS.md cells of one precision."""
    r = result["by_precision"][name]
    first = result["by_precision"][result["precisions"][0]]
    return [result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            name, result["cpu_bfloat16_support"],
            f"{r['views_per_s']:.0f}" if "views_per_s" in r else "-",
            f"{r['step_views_per_s']:.0f}",
            common.time_cell(r["step_wall_s"], r["step_cpu_s"], digits=2),
            f"{r['step_cpu_s'] / first['step_cpu_s']:.2f}x",
            f"{100 * r['end_to_end_over_step']:.0f}%" if "views_per_s" in r else "-",
            f"{r['gflops_per_s']:.1f}", f"{r['useful_gflops_per_s']:.1f}",
            f"{result['peak_gflops_per_s']:.1f}", f"{100 * r['utilization']:.0f}%",
            f"{100 * r['useful_utilization']:.0f}%", f"{100 * r['cpu_utilization']:.0f}%"]


def main(argv: list[str] | None = None) -> dict:
    """Measure the train step per precision, end to end, FLOP rates; print and record."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    keras.utils.set_random_seed(0)
    if args.guard_overhead:
        return guard_overhead_main(args)
    if args.agreement_overhead:
        return agreement_worker_main(args) if os.environ.get("TF_CONFIG") else (
            agreement_overhead_main(args, sys.argv[1:] if argv is None else argv))
    result = common.run_info("bench/throughput.py")
    result.update(vars(args))
    result.pop("results")
    result["cpu_bfloat16_support"] = precision.cpu_bfloat16_support()

    with common.Stopwatch() as whole:
        by_precision = measure_train_steps(args)
        if not args.skip_end_to_end:
            for name in args.precisions:
                by_precision[name].update(measure_end_to_end(args, name))
        nominal, useful = training_flops_per_view(args)
        result.update(peak_gflops())
    result.update(whole.as_dict("run_"))
    for figures in by_precision.values():
        figures.update(derived_figures(figures, nominal, useful, result))
    result["by_precision"] = by_precision

    print(f"CPU bfloat16 support: {result['cpu_bfloat16_support']}; train step medians over "
          f"{args.rounds} alternating rounds of {args.steps} steps (batch {args.batch_size}):")
    first = by_precision[args.precisions[0]]
    for name, r in by_precision.items():
        print(f"  {name:15s} {r['step_views_per_s']:7.0f} views/s, {r['step_wall_s']:.2f} s "
              f"wall and {r['step_cpu_s']:.2f} s CPU per step (CPU/wall "
              f"{r['step_cpu_over_wall']:.2f}; CPU time "
              f"{r['step_cpu_s'] / first['step_cpu_s']:.2f}x "
              f"{args.precisions[0]}), {r['gflops_per_s']:.1f} GFLOP/s nominal "
              f"({r['useful_gflops_per_s']:.1f} useful) of a {result['peak_gflops_per_s']:.1f} "
              f"GFLOP/s float32 matmul peak ({100 * r['utilization']:.0f}%; by CPU time "
              f"{100 * r['cpu_utilization']:.0f}% of {result['peak_gflops_per_cpu_s']:.1f} "
              f"GFLOP per CPU s)")
        if "views_per_s" in r:
            print(f"  {'':15s} end to end (augmentation in the {args.augment_in}): "
                  f"{r['views_per_s']:.0f} views/s = {100 * r['end_to_end_over_step']:.0f}% of "
                  f"the train step; {r['cpu_s']:.2f} s CPU per step")
    print(f"whole run: {result['run_wall_s']:.0f} s wall, {result['run_cpu_s']:.0f} s CPU "
          f"(CPU/wall {result['run_cpu_over_wall']:.2f})")
    if args.json:
        print(json.dumps(result))
    if args.results:
        for name in args.precisions:
            common.append_row(args.results, SECTION, HEADER, row(result, name))
    return result


GUARD_SECTION = ("## Non-finite guard and preemption callbacks, cost per step "
                 "(bench/throughput.py --guard_overhead)")
GUARD_HEADER = ("| date | CPU | cores | command | model | steps x rounds | without: CPU s/step "
                "(CPU/wall) | with: CPU s/step (CPU/wall) | CPU time with / without "
                "| in their per-step hooks: CPU ms/step (of the step) "
                "| weight check CPU ms (per epoch) |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


class HookTimer(keras.callbacks.Callback):
    """Runs `callbacks`' hooks, adding up the process CPU seconds spent in them: in
    `cpu_s["step"]` those run at every step, in `cpu_s["other"]` the rest."""

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
             "on_train_batch_begin", "on_train_batch_end")

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks, self.cpu_s = callbacks, {"step": 0.0, "other": 0.0}
        for hook in self.HOOKS:
            setattr(self, hook, self._timed(hook))

    def _timed(self, hook):
        def run(*args, **kwargs):
            start = common.cpu_seconds()
            for callback in self.callbacks:
                getattr(callback, hook)(*args, **kwargs)
            kind = "step" if "batch" in hook else "other"
            self.cpu_s[kind] += common.cpu_seconds() - start
        return run

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)


def report_pair(args, result: dict, note: str, section: str, header: str,
                cells: list[str]) -> None:
    """Print a without/with measurement (and its JSON with --json); append its row."""
    medians, ratio = result["medians"], result["cpu_ratio"]
    print(f"CPU s/step without {medians['without'][1]:.4f}, with {medians['with'][1]:.4f}: "
          f"{ratio:.4f}x ({100 * (ratio - 1):+.2f}%); {note}")
    if args.json:
        print(json.dumps(result))
    if args.results:
        common.append_row(args.results, section, header, cells)


def paired_cells(result: dict, args, where: str) -> list[str]:
    """The first cells of a without/with row: run, model (`where` it ran), steps x rounds,
    and each variant's median seconds per step."""
    medians = result["medians"]
    return [result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            f"{common.encoder_cell(args)}, batch {args.batch_size}{where}",
            f"{args.steps} x {args.rounds}",
            *(common.time_cell(medians[n][0], medians[n][1], digits=3)
              for n in ("without", "with"))]


def fit_seconds(model, dataset, steps: int, callbacks: list) -> tuple[float, float]:
    """(wall, CPU) seconds per step of one whole `fit` of `steps` steps with `callbacks`."""
    with common.Stopwatch() as watch:
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
                  callbacks=callbacks)
    return watch.wall_s / steps, watch.cpu_s / steps


def guard_overhead_main(args) -> dict:
    """Time `fit` without and with `NonFiniteGuard` + `Preemption`, alternating; record."""
    import tempfile

    from keras_simclr.training import resilience
    from keras_simclr.training.callbacks import EpochCheckpoint, Throughput

    in_memory = in_memory_views(args)
    model = build_model(args, augment_in_model=False)
    checkpoint = EpochCheckpoint(tempfile.mkdtemp())  # saves only on a signal here

    timers = []

    def variant(name):
        if name == "without":
            return [Throughput(args.batch_size)]
        timers.append(HookTimer([resilience.NonFiniteGuard(),
                                 resilience.Preemption(checkpoint, steps_per_epoch=10**9)]))
        return [timers[-1], Throughput(args.batch_size)]

    fit_seconds(model, in_memory, args.warmup_steps, variant("with"))  # trace, warm up
    timers.clear()
    times = {"without": [], "with": []}
    for round_index in range(args.rounds):
        for name in times:
            times[name].append(fit_seconds(model, in_memory, args.steps, variant(name)))
            print(f"round {round_index + 1}, {name}: {times[name][-1][1]:.3f} CPU s/step",
                  file=sys.stderr, flush=True)
    hook_s = statistics.median(timer.cpu_s["step"] / args.steps for timer in timers)
    checks = []
    for _ in range(5):
        with common.Stopwatch() as watch:
            resilience.non_finite_variables(model)
        checks.append(watch.cpu_s * 1000)
    result = common.run_info("bench/throughput.py")
    medians = {name: [statistics.median(t[i] for t in runs) for i in (0, 1)]
               for name, runs in times.items()}
    ratio = medians["with"][1] / medians["without"][1]
    result.update(medians=medians, cpu_ratio=ratio, rounds=times, hook_cpu_s_per_step=hook_s,
                  hook_fraction=hook_s / medians["with"][1],
                  weight_check_cpu_ms=statistics.median(checks))
    report_pair(args, result, f"in the hooks {1000 * hook_s:.3f} CPU ms/step "
                f"({100 * result['hook_fraction']:.2f}% of the step) per step; weight check "
                f"{result['weight_check_cpu_ms']:.1f} CPU ms", GUARD_SECTION, GUARD_HEADER, [
                    *paired_cells(result, args, ""), f"{ratio:.3f}x",
                    f"{1000 * hook_s:.3f} ({100 * result['hook_fraction']:.3f}%)",
                    f"{result['weight_check_cpu_ms']:.0f}"])
    return result


AGREEMENT_SECTION = ("## Stop agreement across workers, cost per step "
                     "(bench/throughput.py --agreement_overhead)")
AGREEMENT_HEADER = ("| date | CPU | cores | command | model | steps x rounds | without: CPU "
                    "s/step (CPU/wall) | with: CPU s/step (CPU/wall) | CPU time with / "
                    "without | the all-reduce alone: CPU ms (wall ms) |\n"
                    "|---|---|---|---|---|---|---|---|---|---|")


def agreement_overhead_main(args, argv: list[str]) -> dict:
    """Run this script as two workers on 127.0.0.1; print and record the chief's figures."""
    import socket
    import subprocess

    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    command = [sys.executable, os.path.abspath(__file__),
               *(a for a in argv if not a.startswith(("--results", "--json"))), "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={
        **os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                               "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker failed: {[proc.returncode for proc in procs]}")
    result = json.loads(outputs[0].strip().splitlines()[-1])
    result["command"] = common.run_info("bench/throughput.py")["command"]
    alone, step_s = result["all_reduce_alone"], result["medians"]["without"][1]
    report_pair(args, result, f"two workers; the agreement's all-reduce alone "
                f"{alone['cpu_ms']:.2f} CPU ms ({alone['wall_ms']:.2f} ms wall) = "
                f"{100 * alone['cpu_ms'] / 1000 / step_s:.3f}% of the step",
                AGREEMENT_SECTION, AGREEMENT_HEADER, [
                    *paired_cells(result, args, " on 2 workers"), f"{result['cpu_ratio']:.4f}x",
                    f"{alone['cpu_ms']:.2f} ({alone['wall_ms']:.2f})"])
    return result


def agreement_worker_main(args) -> dict:
    """One worker: alternate fits without and with the agreement; the chief prints JSON."""
    import tempfile

    from keras_simclr.training import distribute, preemption, resilience
    from keras_simclr.training.callbacks import EpochCheckpoint

    strategy = distribute.make_strategy("multi_worker")
    with strategy.scope():
        model = build_model(args, augment_in_model=False, synchronized_bn=True)
    views = distribute.training_input(strategy, lambda context: in_memory_views(
        args, context.get_per_replica_batch_size(args.batch_size)))
    guard = [resilience.NonFiniteGuard()]
    fit_seconds(model, views, args.warmup_steps, guard)  # traced without the agreement
    without = model.train_function
    preemption.StopAgreement.current(strategy)
    model.make_train_function(force=True)
    checkpoint = EpochCheckpoint(tempfile.mkdtemp())  # written only on a signal
    variants = {"without": (without, lambda: guard),
                "with": (model.train_function, lambda: guard + [
                    resilience.Preemption(checkpoint, steps_per_epoch=10**9)])}
    fit_seconds(model, views, args.warmup_steps, variants["with"][1]())
    times = {name: [] for name in variants}
    for round_index in range(args.rounds):  # A B, B A, A B, ...
        for name in list(variants)[::1 if round_index % 2 == 0 else -1]:
            function, callbacks = variants[name]
            model.train_function = function
            times[name].append(fit_seconds(model, views, args.steps, callbacks()))
            print(f"round {round_index + 1}, {name}: {times[name][-1][1]:.3f} CPU s/step",
                  file=sys.stderr, flush=True)
    medians = {name: [statistics.median(t[i] for t in runs) for i in (0, 1)]
               for name, runs in times.items()}
    result = common.run_info("bench/throughput.py")
    result.update(medians=medians, rounds=times, all_reduce_alone=_agreement_alone(strategy),
                  cpu_ratio=medians["with"][1] / medians["without"][1], workers=2)
    if distribute.is_chief(strategy):
        print(json.dumps(result), flush=True)
    return result


def _agreement_alone(strategy, calls: int = 200) -> dict:
    """CPU and wall ms of one compiled call doing only the agreement's all-reduce."""
    from keras_simclr.training import preemption

    agree = tf.function(lambda: strategy.run(preemption.take_part))
    for _ in range(10):
        agree()
    with common.Stopwatch() as watch:
        for _ in range(calls):
            agree()
    return {"cpu_ms": 1000 * watch.cpu_s / calls, "wall_ms": 1000 * watch.wall_s / calls,
            "calls": calls}


if __name__ == "__main__":
    main()
