"""What the benchmark scripts share: the machine, honest timing and the RESULTS.md tables.

Timing: every figure of wall time comes with the process CPU time of the same interval
(`Stopwatch`), and their ratio CPU / wall, about the number of cores kept busy (2.0 when
both cores of a 2-core machine worked, lower when the process waited for the CPU or for
input). On a machine shared with other work, wall times are inflated by the others while
CPU times are not (much), so variants are compared by CPU time.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shlex
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(BENCH_DIR, "RESULTS.md")
CIFAR10_FOLDER = "folder:" + os.path.normpath(
    os.path.join(BENCH_DIR, "..", "..", "shared", "data", "cifar10"))


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU as /proc/cpuinfo (or `platform`) reports it: model name, family and model.

    Family and model are part of it because virtual machines may report one name for
    several generations: "AMD EPYC" covers CPUs without bfloat16 instructions and
    family-25 model-17 ones with AVX-512 BF16 and a faster float32 matmul.
    """
    fields = {}
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the end of the first processor's block
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_info(script: str) -> dict:
    """Date, machine and the exact command of this run, for the JSON line and RESULTS.md."""
    return {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": cores(),
            "command": " ".join(["python", script] + [shlex.quote(a) for a in sys.argv[1:]])}


def batch_parser(doc: str, batch_size: int, image_size: int = 32,
                 batch_help: str = "global batch (images)") -> argparse.ArgumentParser:
    """A script's parser (described by its docstring's first line) with --image_size and
    --batch_size, the two settings every timing of the network takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=image_size)
    parser.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    return parser


def add_output_flags(parser: argparse.ArgumentParser, what: str = "a row") -> None:
    """--json (print one JSON line) and --results (the Markdown file `what` is appended to)."""
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--results", default=RESULTS,
                        help=f"Markdown file to append {what} to ('' to skip)")


def parse_with_encoder_flags(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """`parser`'s arguments plus apps.pretrain's encoder flags, parsed by their one definition.

    The encoder flags (--backbone, --stem, --width_multiplier, --stage_widths: names,
    defaults, checks) are `apps.recipe_flags.define_encoder_flags`, so a benchmark times the
    network a preset trains (e.g. `--stage_widths=0.5,0.5,0.5,1`); they are listed in the
    script's --help. An unknown flag or a bad value ends with the parser's usage error.
    """
    from absl import flags  # with TensorFlow: only for the scripts that build models

    from apps import recipe_flags

    holder = flags.FlagValues()
    recipe_flags.define_encoder_flags(holder)
    parser.epilog = "encoder flags (as apps.pretrain's): " + "; ".join(
        f"--{name} (default {holder[name].default}): {holder[name].help}" for name in holder)
    args, rest = parser.parse_known_args(argv)
    try:
        holder([parser.prog, *rest])
    except flags.Error as error:
        parser.error(str(error))
    vars(args).update(backbone=holder.backbone, **recipe_flags.encoder_arguments(holder))
    return args


def encoder_arguments(args) -> dict:
    """The `backbones.build_backbone` / `build_simclr` keywords of the encoder flags."""
    return {"stem": args.stem, "width_multiplier": args.width_multiplier,
            "stage_widths": args.stage_widths}


def encoder_cell(args) -> str:
    """The encoder in a RESULTS.md cell: "resnet18, imagenet stem, width 0.5" and, when
    set, the stage widths."""
    widths = (f", stages {','.join(f'{w:g}' for w in args.stage_widths)}"
              if args.stage_widths else "")
    return f"{args.backbone}, {args.stem} stem, width {args.width_multiplier:g}{widths}"


# ----------------------------------------------------------------------------------------
# Timing: wall and CPU time side by side.


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU seconds of this process (all its threads), or of its children.

    `children=True` counts the child processes that have ended and been waited for
    (`RUSAGE_CHILDREN`), e.g. those of `subprocess.run`.
    """
    if not children:
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_over_wall(cpu_s: float, wall_s: float) -> float | None:
    """CPU seconds per wall second (cores kept busy on average); None for no wall time."""
    return cpu_s / wall_s if wall_s > 0 else None


class Stopwatch:
    """Wall and CPU time of a `with` block (of this process, or of the children it waited for).

        with Stopwatch() as watch:
            work()
        watch.wall_s, watch.cpu_s, watch.cpu_over_wall
    """

    def __init__(self, children: bool = False):
        self.children = children
        self.wall_s = self.cpu_s = 0.0

    def __enter__(self) -> "Stopwatch":
        self._wall = time.perf_counter()
        self._cpu = cpu_seconds(self.children)
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = cpu_seconds(self.children) - self._cpu

    @property
    def cpu_over_wall(self) -> float | None:
        return cpu_over_wall(self.cpu_s, self.wall_s)

    def as_dict(self, prefix: str = "", per: int = 1) -> dict:
        """`{prefix}wall_s`, `{prefix}cpu_s` (divided by `per`, e.g. steps) and the ratio."""
        return {f"{prefix}wall_s": self.wall_s / per, f"{prefix}cpu_s": self.cpu_s / per,
                f"{prefix}cpu_over_wall": self.cpu_over_wall}


def time_cell(wall_s: float | None, cpu_s: float | None, digits: int = 1) -> str:
    """A RESULTS.md cell "CPU s (CPU/wall)", e.g. "41.2 (1.93)"; "-" when not measured."""
    if wall_s is None or cpu_s is None:
        return "-"
    ratio = cpu_over_wall(cpu_s, wall_s)
    return f"{cpu_s:.{digits}f} ({ratio:.2f})" if ratio is not None else f"{cpu_s:.{digits}f}"


# ----------------------------------------------------------------------------------------
# RESULTS.md tables.


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def migrate_table(lines: list[str], header: str) -> list[str]:
    """The table `lines` (header, separator, rows) under a new `header` (two lines).

    Columns are matched by name: a row keeps its cells under their old column names and
    gets "-" in the new ones, so a table stays valid Markdown when a bench adds a column.
    Raises ValueError when the new header drops one of the old columns.
    """
    old_names = _cells(lines[0])
    new_header = header.strip("\n").split("\n")
    new_names = _cells(new_header[0])
    missing = [name for name in old_names if name not in new_names]
    if missing:
        raise ValueError(f"the new header drops the columns {missing}")
    rows = []
    for line in lines[2:]:
        by_name = dict(zip(old_names, _cells(line)))
        rows.append("| " + " | ".join(by_name.get(name, "-") for name in new_names) + " |")
    return new_header + rows


def _update_section(text: str, section: str, header: str, row: str | None) -> str:
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{header.strip(chr(10))}\n"
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    end = len(text) if end < 0 else end + 1
    lines = text[start:end].rstrip("\n").split("\n")
    table_at = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table_end = next((i for i in range(table_at, len(lines)) if not lines[i].startswith("|")),
                     len(lines))
    table = lines[table_at:table_end]
    if table[:2] != header.strip("\n").split("\n"):
        table = migrate_table(table, header)
    body = "\n".join(lines[:table_at] + table + ([row] if row else [])
                     + lines[table_end:]) + "\n"
    return text[:start] + body + ("\n" + text[end:] if end < len(text) else "")


def append_row(path: str, section: str, header: str, cells: list[str]) -> None:
    """Append one table row under `section` of the Markdown file (created when missing).

    A table whose header differs from `header` is migrated first (`migrate_table`).
    """
    row = "| " + " | ".join(cells) + " |"
    if len(cells) != len(_cells(header.split("\n")[0])):
        raise ValueError(f"{len(cells)} cells for a table of "
                         f"{len(_cells(header.split(chr(10))[0]))} columns")
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    with open(path, "w") as f:
        f.write(_update_section(text, section, header, row))
