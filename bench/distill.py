"""Fine-tune, then distil: teacher and self-distilled student top-1 on CIFAR-10 val (issue 39).

For each --label_fractions f and --seeds s, from one pretraining run of the CPU preset
(`python -m apps.pretrain --flagfile=apps/configs/cifar10_cpu.cfg --model_dir=runs/cifar10_cpu`),
or from two (--teacher_pretrained: a wider or longer-trained run fine-tuned as the teacher,
distilled into a student started from --pretrained: big to small):

1. teacher: `python -m apps.finetune --model_dir=WORK/seed<s> --label_fraction=f --seed=s
   --epochs=--finetune_epochs [--finetune_from_head_layer=K]`, where WORK/seed<s> links the
   teacher's run's model.keras and config.json (apps.finetune writes finetune_<f>/ beside them, one
   directory per seed);
2. student: `python -m apps.distill --teacher=WORK/seed<s>/finetune_<f>
   --model_dir=WORK/seed<s>/distill_<f> --seed=s --epochs=--distill_epochs
   --distill_flags` on the whole
   --train_split (the 45k-image train folder; its labels unused), the teacher's
   architecture (self-distillation) with new weights, or with --student_from_pretrained
   started from the pretraining run (`--student_from=--pretrained`: its encoder, and its
   head's first layer with --finetune_from_head_layer=1);
3. top-1 of both on --eval_split (val), from the apps' result.json files, and the CPU time
   (user + system of the child process, start-up and evaluation included) of each app;
   each pair's row is printed and appended to --results as soon as it is done.

Then the per-step cost in this process, on one random batch of --batch_size 32-px images:
a fine-tuning step (`LinearClassifier(fine_tune=True).train_on_batch`, as apps.finetune)
beside a distillation step (the same plus the teacher's forward pass), the median CPU time
of --timing_steps steps after two warm-up steps. Time it on a quiet machine only.

    python bench/distill.py --pretrained=runs/cifar10_cpu --json
    python bench/distill.py --pretrained=runs/cifar10_cpu --label_fractions=0.01 --seeds=0
    python bench/distill.py --pretrained=runs/cifar10_cpu --teacher_pretrained=runs/cifar10_cpu_90 \
        --student_from_pretrained --label_fractions=0.01
    python bench/distill.py --pretrained=runs/cifar10_cpu --student_from_pretrained \
        --label_fractions=0.01 "--distill_flags=--student_color_jitter=1.0"
"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import common  # noqa: E402

REPO = os.path.dirname(common.BENCH_DIR)
SECTION = "## Fine-tune, then distil (bench/distill.py)"
COLUMNS = ["date", "CPU", "cores", "command", "label fraction", "seed", "teacher top-1",
           "student start", "student top-1", "fine-tune CPU min", "distil epochs",
           "distil CPU min", "fine-tune step CPU s", "distil step CPU s"]
HEADER = "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|"


def parse_args(argv):
    parser = common.batch_parser(__doc__, 256, batch_help="batch of both apps and timings")
    parser.add_argument("--pretrained", default="runs/cifar10_cpu",
                        help="the CPU preset's pretraining run (model.keras, config.json)")
    parser.add_argument("--teacher_pretrained", default=None,
                        help="fine-tune the teacher from this run instead of --pretrained "
                             "(big to small: the student still starts from --pretrained)")
    parser.add_argument("--work_dir", default="runs/bench_distill")
    parser.add_argument("--dataset", default="folder:../shared/data/cifar10")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="val")
    parser.add_argument("--label_fractions", default="0.01,0.1")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--finetune_epochs", type=int, default=30)
    parser.add_argument("--finetune_from_head_layer", type=int, default=None,
                        help="apps.finetune's flag (SimCLRv2: 1); default: from the encoder")
    parser.add_argument("--distill_epochs", type=int, default=10)
    parser.add_argument("--distill_flags", default="",
                        help="more flags for apps.distill, space-separated (e.g. "
                             "'--temperature=2 --learning_rate=0.4')")
    parser.add_argument("--student_from_pretrained", action="store_true",
                        help="start the student from --pretrained (its encoder, and the head "
                             "layers the teacher reads), not new weights")
    parser.add_argument("--timing_steps", type=int, default=10)
    common.add_output_flags(parser, "a row per fraction and seed")
    return parser.parse_args(argv)


def run_app(name: str, *args: str) -> float:
    """Run `python -m apps.NAME args` from the repository; its CPU seconds."""
    with common.Stopwatch(children=True) as watch:
        subprocess.run([sys.executable, "-m", f"apps.{name}", *args], cwd=REPO, check=True)
    return watch.cpu_s


def seed_dir(args, seed: int) -> str:
    """WORK/seed<s> with links to the teacher's pretraining run's model.keras and config.json."""
    directory = os.path.abspath(os.path.join(args.work_dir, f"seed{seed}"))
    os.makedirs(directory, exist_ok=True)
    for name in ("model.keras", "config.json"):
        link = os.path.join(directory, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(args.teacher_pretrained or args.pretrained,
                                                    name)), link)
    return directory


def teacher_and_student(args, fraction: float, seed: int) -> dict:
    """Fine-tune a teacher on `fraction` of the labels, distil it; both apps' figures."""
    run = seed_dir(args, seed)
    common_flags = [f"--dataset={args.dataset}", f"--train_split={args.train_split}",
                    f"--eval_split={args.eval_split}", f"--seed={seed}",
                    f"--batch_size={args.batch_size}"]
    head = ([] if args.finetune_from_head_layer is None
            else [f"--finetune_from_head_layer={args.finetune_from_head_layer}"])
    finetune_cpu = run_app("finetune", f"--model_dir={run}", f"--label_fraction={fraction:g}",
                           f"--epochs={args.finetune_epochs}", *head, *common_flags)
    teacher = os.path.join(run, f"finetune_{fraction:g}")
    student = os.path.join(run, f"distill_{fraction:g}")
    start = [f"--student_from={os.path.abspath(args.pretrained)}"] * args.student_from_pretrained
    distill_cpu = run_app("distill", f"--teacher={teacher}", f"--model_dir={student}",
                          f"--epochs={args.distill_epochs}", *args.distill_flags.split(),
                          *start, *common_flags)
    teacher_result = json.load(open(os.path.join(teacher, "result.json")))
    student_result = json.load(open(os.path.join(student, "result.json")))
    return {"label_fraction": fraction, "seed": seed, "teacher_top1": teacher_result["top1"],
            "student_top1": student_result["top1"], "finetune_cpu_min": finetune_cpu / 60,
            "distill_epochs": args.distill_epochs, "distill_cpu_min": distill_cpu / 60,
            "student_from_pretrained": args.student_from_pretrained}


def median_step_cpu(step, steps: int) -> float:
    """Median CPU seconds of `step()` over `steps` calls after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        with common.Stopwatch() as watch:
            step()
        times.append(watch.cpu_s)
    return statistics.median(times)


def step_costs(args) -> dict:
    """CPU s of one fine-tuning and one distillation step of the run's encoder (in-process)."""
    import keras
    import numpy as np

    import keras_simclr as ks

    run = keras.saving.load_model(os.path.join(args.pretrained, "model.keras"))
    size = args.image_size
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)
    teacher = ks.LinearClassifier(run.encoder, 10, fine_tune=True)
    teacher.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    finetune_s = median_step_cpu(lambda: teacher.train_on_batch(images, labels),
                                 args.timing_steps)
    student = ks.LinearClassifier(keras.models.clone_model(run.encoder), 10, fine_tune=True)
    distiller = ks.Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    distill_s = median_step_cpu(lambda: distiller.train_on_batch(images), args.timing_steps)
    return {"finetune_step_cpu_s": finetune_s, "distill_step_cpu_s": distill_s}


def report(args, info: dict, costs: dict, row: dict) -> None:
    """Print one fraction and seed's figures; append its row to --results."""
    start = "pretrained" if row["student_from_pretrained"] else "new weights"
    if args.teacher_pretrained:  # big to small
        start += f" (teacher fine-tuned from {args.teacher_pretrained})"
    print(f"{100 * row['label_fraction']:g}% labels, seed {row['seed']}: teacher top-1 "
          f"{100 * row['teacher_top1']:.2f}%, student ({start}) "
          f"{100 * row['student_top1']:.2f}%", flush=True)
    if args.results:
        common.append_row(args.results, SECTION, HEADER, [
            info["date"], info["cpu"], str(info["cores"]), f"`{info['command']}`",
            f"{row['label_fraction']:g}", str(row["seed"]),
            f"{100 * row['teacher_top1']:.2f}", start, f"{100 * row['student_top1']:.2f}",
            f"{row['finetune_cpu_min']:.1f}", str(row["distill_epochs"]),
            f"{row['distill_cpu_min']:.1f}", f"{costs['finetune_step_cpu_s']:.3f}",
            f"{costs['distill_step_cpu_s']:.3f}"])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    info = common.run_info("bench/distill.py")
    costs = step_costs(args)
    rows = []
    for fraction in args.label_fractions.split(","):
        for seed in args.seeds.split(","):
            row = teacher_and_student(args, float(fraction), int(seed))
            rows.append(row)
            report(args, info, costs, row)
    if args.json:
        print(json.dumps({**info, **costs, "runs": rows}, sort_keys=True))


if __name__ == "__main__":
    main()
