"""Accuracy per CPU budget: pretrain CIFAR-10 for --minutes, then linear and kNN top-1 on val.

1. Pretraining: `python -m apps.pretrain --flagfile=FLAGFILE [pretrain flags] --dataset=...
   --time_budget=MINUTESm --model_dir=WORK/pretrain`. The app itself fits the run to the
   budget (`keras_simclr.training.budget`): it times its first steps, plans the steps that
   the time left holds, fits the warm-up + cosine to them, re-fits both as the host's speed
   drifts, and stops when the budget ends; the steps and epochs it trained come from its
   summary.json. The budget counts from the app's start (loading the data and building the
   model count too), not from the process's (importing TensorFlow, a few seconds).
2. With --total_steps instead, a fixed number of steps and no budget: `--epochs=E
   --steps_per_epoch=S` with E x S the steps (S at most one pass over the data) and the
   recipe's --warmup_epochs rescaled to keep its number of warm-up steps.
3. Evaluation of the pretrained encoder and of a random-initialised one of the same
   architecture (`evaluation.random_init_like`, as `apps.linear_eval --random_init`), each
   on frozen features of the train split (extracted once per encoder, as `apps.linear_eval`
   and `apps.knn_eval` extract them): linear top-1 in the fast feature mode
   (`evaluation.linear_probe_on_features`) and weighted kNN top-1 (k=200, T=0.1), on the
   --eval_split (val: only val may guide the choice of a recipe).

4. With --curve_every=M, a learning curve: the checkpoint that ends first after every M
   minutes of the pretraining process is kept while it runs (`bench/curve.py`) and
   evaluated as the final model is, after the run; the points and the final result go to
   bench/curves/PRESET-DATE.json (-2, -3... for later runs that day), which
   bench/plot_performance.py draws. Points before the end come from a schedule still in
   progress (learning rate not decayed yet), so they are below what a run planned for that
   many minutes reaches.

Flags this script does not know are passed to `apps.pretrain` after the flagfile, so a
recipe can be varied from the command line. Prints progress, a JSON line with `--json`,
and appends a row to bench/RESULTS.md (`--results=` to skip). The pretraining wall time
reported is that of the whole `apps.pretrain` process, beside its CPU time (user + system
of the child, `RUSAGE_CHILDREN`) and their ratio (about the cores kept busy: 2.0 when both
cores of a 2-core machine worked). On a machine shared with other work the budget is
wall-clock, so fewer steps fit: compare recipes by CPU time.

    python bench/accuracy.py --minutes=30 --json
    python bench/accuracy.py --minutes=60 --flagfile=apps/configs/cifar10_cpu.cfg --temperature=0.3
"""
import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import common, curve  # noqa: E402

REPO = os.path.dirname(common.BENCH_DIR)
SECTION = "## Accuracy per CPU budget (bench/accuracy.py)"
HEADER = ("| date | CPU | cores | command | recipe | budget min | pretraining min "
          "| pretraining CPU min (CPU/wall) | steps (epochs x steps) | views/s "
          "| linear top-1 | kNN top-1 | random-init linear | random-init kNN |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
# Flags of apps.pretrain that this script sets itself.
OWN_PRETRAIN_FLAGS = ("dataset", "train_split", "epochs", "steps_per_epoch", "time_budget",
                      "model_dir", "verbose", "flagfile")

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False,
        epilog="Other --flags are passed to apps.pretrain (after the flagfile).")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="wall-clock budget of the pretraining process")
    parser.add_argument("--flagfile", default=os.path.join("apps", "configs", "cifar10_cpu.cfg"),
                        help="apps.pretrain preset (relative to the repository root)")
    parser.add_argument("--dataset", default=common.CIFAR10_FOLDER)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="val")
    parser.add_argument("--total_steps", type=int, default=0,
                        help="pretraining steps instead of a time budget (0: --minutes)")
    parser.add_argument("--k", type=int, default=200, help="kNN neighbours")
    parser.add_argument("--knn_temperature", type=float, default=0.1)
    parser.add_argument("--regularization", type=float, default=1e-4,
                        help="L2 strength of the linear probe (apps.linear_eval's default)")
    parser.add_argument("--eval_batch_size", type=int, default=256)
    parser.add_argument("--eval_image_size", type=int, default=None,
                        help="side of the images the frozen features are taken at (default: "
                             "the views' size; e.g. 32 for a run pretrained on 24-px views)")
    parser.add_argument("--random_init_seed", type=int, default=0,
                        help="seed of the random-initialised encoder")
    parser.add_argument("--skip_random_init", action="store_true",
                        help="evaluate only the pretrained encoder (recipe sweeps of one "
                             "architecture, whose random-init floor is already known)")
    parser.add_argument("--work_dir", default=None,
                        help="new directory for the runs (default: runs/bench_accuracy/TIME)")
    parser.add_argument("--curve_every", type=float, default=0.0,
                        help="minutes between the points of a learning curve: the "
                             "checkpoints passing each mark are kept and evaluated after "
                             "the run (0: only the final model)")
    parser.add_argument("--curve_json", default=None,
                        help="where the curve goes (default: bench/curves/PRESET-DATE.json, "
                             "numbered -2, -3... after the day's first)")
    common.add_output_flags(parser)
    args, pretrain_flags = parser.parse_known_args(argv)
    for flag in pretrain_flags:
        name = flag.lstrip("-").split("=", 1)[0]
        if not flag.startswith("--") or name in OWN_PRETRAIN_FLAGS:
            parser.error(f"{flag}: set by this script, or not a --flag=value for apps.pretrain")
    args.pretrain_flags = pretrain_flags
    if args.curve_every and args.total_steps:
        parser.error("--curve_every marks minutes of a --minutes budget, not --total_steps")
    args.flagfile = os.path.join(REPO, args.flagfile)
    if not os.path.isfile(args.flagfile):
        parser.error(f"--flagfile {args.flagfile} does not exist")
    if args.work_dir is None:
        args.work_dir = os.path.join(REPO, "runs", "bench_accuracy",
                                     datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if os.path.isdir(args.work_dir) and os.listdir(args.work_dir):
        parser.error(f"--work_dir {args.work_dir} is not empty (apps.pretrain would resume)")
    return args


def say(message):
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def resolve_recipe(args):
    """The apps.pretrain flag values of the run, parsed by absl as the app parses them."""
    from absl import flags

    from apps import pretrain  # noqa: F401  (defines the flags; with TensorFlow)

    argv = ["pretrain", "--model_dir=unused", f"--flagfile={args.flagfile}",
            *args.pretrain_flags, f"--dataset={args.dataset}",
            f"--train_split={args.train_split}"]
    try:
        flags.FLAGS(argv)
    except flags.Error as error:
        raise SystemExit(f"error: apps.pretrain flags: {error}")
    return flags.FLAGS


def run_pretrain(args, model_dir, length_flags):
    """Run apps.pretrain to completion; (`Stopwatch` of the process, its summary.json).

    `length_flags`: how long it trains (`length_flags`)."""
    command = [sys.executable, "-m", "apps.pretrain", f"--flagfile={args.flagfile}",
               *args.pretrain_flags, *length_flags, f"--dataset={args.dataset}",
               f"--train_split={args.train_split}", f"--model_dir={model_dir}", "--verbose=2"]
    log_path = model_dir + ".log"
    say(" ".join(command[1:]) + f"  (log: {log_path})")
    with open(log_path, "w") as log, common.Stopwatch(children=True) as watch:
        status = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if status != 0:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-10:])
        raise SystemExit(f"error: apps.pretrain exited with status {status}; end of "
                         f"{log_path}:\n{tail}")
    with open(os.path.join(model_dir, "summary.json")) as f:
        return watch, json.load(f)


def fixed_steps(args, recipe, full_steps):
    """For --total_steps: epochs and steps per epoch (at most one pass over the data), and
    --warmup_epochs rescaled to keep the recipe's number of warm-up steps."""
    epochs = math.ceil(args.total_steps / full_steps)
    steps_per_epoch = args.total_steps // epochs
    warmup_steps = round(recipe.warmup_epochs * full_steps)
    return {"total_steps": epochs * steps_per_epoch, "epochs": epochs,
            "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup_steps,
            "warmup_epochs": min(epochs, warmup_steps / steps_per_epoch)}


def length_flags(args, fixed):
    """The apps.pretrain flags of how long it trains: --time_budget for --minutes, or the
    `fixed_steps` (and no budget: the presets set one)."""
    if fixed is None:
        return [f"--time_budget={args.minutes:g}m"]
    return ["--time_budget=", f"--epochs={fixed['epochs']}",
            f"--steps_per_epoch={fixed['steps_per_epoch']}",
            f"--warmup_epochs={fixed['warmup_epochs']!r}"]


def trained(summary, fixed, full_steps):
    """Steps, epochs and steps per epoch a finished apps.pretrain run trained, and the plan
    its time budget made (None for `fixed_steps`), from its summary.json."""
    if fixed is not None:
        return {**fixed, "budget_plan": None}
    timed = summary["time_budget"]
    steps_per_epoch = timed["plan"]["steps_per_epoch"] if timed["plan"] else full_steps
    return {"total_steps": timed["steps"], "epochs": summary["epochs"],
            "steps_per_epoch": steps_per_epoch, "budget_plan": timed["plan"]}


def evaluate(args, model, image_size, with_random_init):
    """Linear (feature mode) and kNN top-1/top-5 of `model`'s encoder (and a random-init one)."""
    from apps import common as app_common
    from keras_simclr import evaluation

    results = {}
    encoders = [("pretrained", model.encoder)]
    if with_random_init:
        encoders.append(("random_init", evaluation.random_init_like(model.encoder,
                                                                    args.random_init_seed)))
    for name, encoder in encoders:
        with common.Stopwatch() as watch:
            train_x, train_y, eval_x, eval_y = (
                array for split in (args.train_split, args.eval_split)
                for array in app_common.frozen_features(encoder, args.dataset, split,
                                                        image_size, args.eval_batch_size))
            linear = evaluation.linear_probe_on_features(train_x, train_y, eval_x, eval_y,
                                                         regularization=args.regularization)
            knn = evaluation.knn_accuracy(train_x, train_y, eval_x, eval_y, args.k,
                                          args.knn_temperature)
        results[name] = {"linear_top1": linear["top1"], "linear_top5": linear["top5"],
                         "knn_top1": knn["top1"], "knn_top5": knn["top5"],
                         "num_train": linear["num_train"], "num_eval": linear["num_eval"],
                         "seconds": watch.wall_s, "cpu_seconds": watch.cpu_s}
        say(f"{name}: linear top-1 {100 * linear['top1']:.2f}%, kNN top-1 "
            f"{100 * knn['top1']:.2f}% on {args.eval_split} "
            f"({watch.wall_s:.0f} s wall, {watch.cpu_s:.0f} s CPU)")
    return results


def evaluate_curve(args, kept, image_size, plan_):
    """Evaluate the checkpoints kept along the run: a list of curve points."""
    from apps import common as app_common

    points = []
    for checkpoint in kept:
        say(f"curve: epoch {checkpoint['epoch']} at {checkpoint['minutes']:.1f} min")
        model = app_common.load_model_file(checkpoint["path"])
        scores = evaluate(args, model, image_size, with_random_init=False)["pretrained"]
        points.append({**{k: v for k, v in checkpoint.items() if k != "path"},
                       "steps": checkpoint["epoch"] * plan_["steps_per_epoch"],
                       **{k: scores[k] for k in ("linear_top1", "knn_top1")}})
        os.remove(checkpoint["path"])
    return points


def write_curve(args, result, points):
    """Write the curve (points and the final result) to --curve_json for the plot script.

    The default name is PRESET-DATE.json, or PRESET-DATE-2.json and on when a run of the same
    preset that day already wrote one: the plot draws every file, so none may be overwritten.
    """
    path = args.curve_json
    if not path:
        preset = os.path.splitext(os.path.basename(args.flagfile))[0]
        stem = os.path.join(common.BENCH_DIR, "curves", f"{preset}-{result['date']}")
        path, number = f"{stem}.json", 2
        while os.path.exists(path):
            path, number = f"{stem}-{number}.json", number + 1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    final = {"minutes": result["pretrain_wall_s"] / 60, "epoch": result["plan"]["epochs"],
             "steps": result["plan"]["total_steps"], "linear_top1": result["linear_top1"],
             "knn_top1": result["knn_top1"], "final": True}
    curve = {k: result[k] for k in ("date", "cpu", "cores", "command", "flagfile",
                                     "pretrain_flags", "minutes", "recipe")}
    curve.update(random_linear_top1=result["random_linear_top1"],
                 random_knn_top1=result["random_knn_top1"], points=[*points, final])
    with open(path, "w") as f:
        json.dump(curve, f, indent=1)
    say(f"curve written to {path}")
    return path


def budget_text(args):
    if args.total_steps:
        return f"a fixed {args.total_steps} steps (no time budget)"
    return f"a {args.minutes:g}-minute budget"


def widths_text(recipe):
    """"0.5", or "0.5,0.5,0.5,2" with per-stage widths."""
    return ",".join(f"{float(w):g}" for w in recipe.get("stage_widths") or
                    (recipe["width_multiplier"],))


def recipe_cell(result):
    r = result["recipe"]
    return (f"{os.path.basename(result['flagfile'])}"
            f"{' ' + ' '.join(result['pretrain_flags']) if result['pretrain_flags'] else ''}: "
            f"{r['backbone']} {r['stem']} stem x{widths_text(r)}, {r['image_size']} px, "
            f"batch {r['batch_size']}, T {r['temperature']:g}, {r['optimizer']} lr "
            f"{r['learning_rate']:g} ({r['lr_scaling']}), {r['warmup_epochs']:g}-epoch warm-up, "
            f"wd {r['weight_decay']:g}, jitter {r['jitter_strength']:g}, loss {r['loss']}"
            + (f", {r['small_views']} x {r['small_view_size']} px small views"
               if r["small_views"] else "")
            + (f", cosine to {r['final_lr_fraction']:g} of the peak"
               if r.get("final_lr_fraction") else ""))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.eval_split == "test":
        say("warning: evaluating on the test split; only val may guide the choice of a recipe")
    result = common.run_info("bench/accuracy.py")
    recipe = resolve_recipe(args)
    if recipe["epochs"].present and not args.total_steps:
        raise SystemExit(f"error: {os.path.relpath(args.flagfile, REPO)} sets --epochs, which "
                         "apps.pretrain refuses beside the --time_budget of --minutes: give "
                         "--total_steps, or a preset without --epochs (cifar10_cpu.cfg)")
    from apps import recipe_flags
    from keras_simclr import data

    info = data.describe(args.dataset, recipe.data_dir)
    for split in (args.train_split, args.eval_split):
        info.num_examples(split)  # a clear error naming the splits that exist
    full_steps = info.num_examples(args.train_split) // recipe.batch_size
    if full_steps < 1:
        raise SystemExit(f"error: batch {recipe.batch_size} is larger than the "
                         f"{args.train_split} split")
    os.makedirs(args.work_dir, exist_ok=True)
    result.update(minutes=args.minutes, flagfile=os.path.relpath(args.flagfile, REPO),
                  pretrain_flags=args.pretrain_flags, dataset=args.dataset,
                  train_split=args.train_split, eval_split=args.eval_split,
                  recipe={name: recipe[name].value for name in recipe_flags.RECIPE_FLAGS},
                  work_dir=args.work_dir)

    fixed = fixed_steps(args, recipe, full_steps) if args.total_steps else None
    if fixed:
        say(f"pretraining {fixed['total_steps']} steps = {fixed['epochs']} epochs x "
            f"{fixed['steps_per_epoch']} (a full pass is {full_steps}), warm-up "
            f"{fixed['warmup_steps']} steps")
    model_dir = os.path.join(args.work_dir, "pretrain")
    keeper = curve.CheckpointKeeper(
        os.path.join(model_dir, "checkpoints"), os.path.join(args.work_dir, "curve"),
        curve.marks(args.curve_every, args.minutes), start=time.time())
    with keeper:
        watch, summary = run_pretrain(args, model_dir, length_flags(args, fixed))
    wall = watch.wall_s
    p = result["plan"] = trained(summary, fixed, full_steps)
    result.update(**watch.as_dict("pretrain_"), pretrain_summary=summary,
                  over_budget_s=None if args.total_steps else wall - 60 * args.minutes)
    say(f"pretraining took {wall / 60:.1f} min"
        + ("" if args.total_steps else f" ({wall - 60 * args.minutes:+.0f} s against the budget)")
        + f" for {p['total_steps']} steps ({p['epochs']:.1f} epochs of {p['steps_per_epoch']})"
        + f", {summary.get('views_per_s') or 0:.0f} views/s, {watch.cpu_s / 60:.1f} CPU min "
        f"(CPU/wall {watch.cpu_over_wall:.2f})")

    from apps import common as app_common

    with common.Stopwatch() as evaluation_watch:
        model = app_common.load_pretrained(model_dir)
        image_size = args.eval_image_size or app_common.image_size_of(model_dir, model)
        evaluations = evaluate(args, model, image_size, not args.skip_random_init)
    result.update(evaluation_watch.as_dict("eval_"))
    result["evaluations"] = evaluations
    for name, prefix in (("pretrained", ""), ("random_init", "random_")):
        for metric in ("linear_top1", "knn_top1"):
            result[prefix + metric] = evaluations.get(name, {}).get(metric)

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    print(f"{budget_text(args)}, pretraining {wall / 60:.1f} min: linear top-1 "
          f"{percent(result['linear_top1'])} "
          f"(random-init {percent(result['random_linear_top1'])}), "
          f"kNN top-1 {percent(result['knn_top1'])} (random-init "
          f"{percent(result['random_knn_top1'])}) on {args.eval_split}")
    if args.curve_every:
        result["curve"] = evaluate_curve(args, keeper.kept, image_size, p)
        result["curve_json"] = write_curve(args, result, result["curve"])
    if args.json:
        print(json.dumps(result))
    if args.results:
        common.append_row(args.results, SECTION, HEADER, [
            result["date"], result["cpu"], str(result["cores"]), f"`{result['command']}`",
            recipe_cell(result), "-" if args.total_steps else f"{args.minutes:g}",
            f"{wall / 60:.1f}", common.time_cell(wall / 60, watch.cpu_s / 60),
            f"{p['total_steps']} ({p['epochs']:.3g} x {p['steps_per_epoch']})",
            f"{summary.get('views_per_s') or 0:.0f}",
            percent(result["linear_top1"]), percent(result["knn_top1"]),
            percent(result["random_linear_top1"]), percent(result["random_knn_top1"])])
    return result


if __name__ == "__main__":
    main()
