"""The performance figure: val linear top-1 against pretraining minutes, per preset as shipped.

Reads the measured runs, nothing else: the rows of bench/RESULTS.md's accuracy table and the
learning curves of bench/curves/*.json (bench/accuracy.py --curve_every). A row or curve counts
as its preset when its extra flags are only seeds or settings the preset file now holds. Of
those, the recipe a preset ships is the recipe cell of its last row (the table is append-only,
so earlier recipes of a changed preset are not drawn). Each preset gets one colour: its runs
with a minute budget as dots and its best learning curve (highest final point) as a line. The
random-init floor (the same network untrained: backbone, widths and image size, from any row
or curve that measured it) is a dashed grey line. The minute axis is logarithmic.

    python bench/plot_performance.py   # writes docs/images/performance.png
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import accuracy, common  # noqa: E402

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (140, 86, 75), (227, 119, 194), (23, 190, 207), (188, 189, 34)]
FLOOR_COLOUR = (127, 127, 127)
CONFIGS = os.path.join(accuracy.REPO, "apps", "configs")
SIZE = (900, 560)
MARGIN = {"left": 70, "right": 20, "top": 40, "bottom": 60}
LEGEND_LINE = 22  # pixels per legend entry, drawn under the plot
TICKS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 960)


def _percent(cell: str) -> float | None:
    cell = cell.strip()
    return float(cell.rstrip("%")) if cell.endswith("%") else None


def network(recipe: str) -> str:
    """The part of a recipe cell that fixes the untrained network: backbone, stem, widths and
    image size ("resnet18 imagenet stem x0.5,0.5,0.5,1, 32 px")."""
    return ", ".join(recipe.split(", ")[:2])


@functools.cache
def preset_settings(preset: str, configs: str) -> frozenset[str]:
    """The flags a preset file sets now, as written there ("--batch_size=1024"); read once."""
    path = os.path.join(configs, preset)
    if not os.path.exists(path):
        return frozenset()
    with open(path) as f:
        return frozenset(line.strip() for line in f if line.startswith("--"))


def series_name(preset: str, flags: list[str], configs: str) -> str:
    """The preset plus the flags of a run that vary it (not seeds, not what it now sets)."""
    settings = preset_settings(preset, configs)
    varied = [f for f in flags if f not in settings and not f.startswith("--seed=")]
    return " ".join([preset, *varied])


def accuracy_rows(results_path: str) -> list[dict]:
    """The rows of bench/RESULTS.md's accuracy table, as dicts keyed by column."""
    if not os.path.exists(results_path):
        return []
    with open(results_path) as f:
        lines = f.read().splitlines()
    try:
        start = lines.index(accuracy.SECTION)
    except ValueError:
        return []
    columns = [c.strip() for c in lines[start + 2].strip().strip("|").split("|")]
    rows = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(columns, (c.strip() for c in line.strip().strip("|").split("|")))))
    return rows


def preset_rows(results_path: str, configs: str = CONFIGS) -> list[dict]:
    """Every accuracy row, in table order, as a dict: its series (name, recipe), whether it
    had a minute budget, minutes, views/s, linear top-1 and random-init linear top-1."""
    runs = []
    for row in accuracy_rows(results_path):
        command, _, recipe = row.get("recipe", "").partition(": ")
        preset, *flags = command.split() or [""]
        runs.append({"series": (series_name(preset, flags, configs), recipe),
                     "budget": row["budget min"] != "-",
                     "minutes": float(row["pretraining min"].split()[0]),
                     "views_per_second": int(row["views/s"].split()[0]),
                     "linear": _percent(row["linear top-1"]),
                     "random_linear": _percent(row["random-init linear"])})
    return runs


def curves(curve_dir: str, configs: str = CONFIGS, results_path: str | None = None
           ) -> list[dict]:
    """The learning curves written by bench/accuracy.py --curve_every, each with its date and
    the views/s of its run's row in `results_path` (the same date and command), if any: the
    curves' x axis is minutes, so a faster host's curve sits higher."""
    speeds = {(row["date"], row["command"].strip("`")): int(row["views/s"])
              for row in accuracy_rows(results_path or "") if row["views/s"].isdigit()}
    found = []
    for path in sorted(glob.glob(os.path.join(curve_dir, "*.json"))):
        with open(path) as f:
            curve = json.load(f)
        recipe = accuracy.recipe_cell(curve).partition(": ")[2]
        name = series_name(os.path.basename(curve["flagfile"]),
                           curve.get("pretrain_flags", []), configs)
        found.append({"series": (name, recipe),
                      "points": [(p["minutes"], 100 * p["linear_top1"])
                                 for p in curve["points"] if p.get("linear_top1") is not None],
                      "random_linear": (None if curve.get("random_linear_top1") is None
                                        else 100 * curve["random_linear_top1"]),
                      "date": curve.get("date"),
                      "views_per_second": speeds.get((curve.get("date"), curve.get("command")))})
    return found


def floors(items: list[dict]) -> dict[str, float]:
    """The median random-init linear top-1 of each network, over rows and curves."""
    values = {}
    for item in items:
        if item.get("random_linear") is not None:
            values.setdefault(network(item["series"][1]), []).append(item["random_linear"])
    return {net: statistics.median(v) for net, v in values.items()}


def shipped(rows: list[dict], learning_curves: list[dict]) -> list[dict]:
    """Per preset, the recipe it ships (its last row's), that recipe's budget runs, its best
    curve (or None) and the random-init floor of its network (or None)."""
    recipes = {}
    for row in rows:
        if row["series"][0].endswith(".cfg"):
            recipes[row["series"][0]] = row["series"]
    floor = floors(rows + learning_curves)
    found = []
    for preset, key in sorted(recipes.items()):
        mine = [c for c in learning_curves if c["series"] == key and c["points"]]
        found.append({"preset": preset,
                      "runs": [r for r in rows if r["series"] == key and r["budget"]
                               and r["linear"] is not None],
                      "curve": max(mine, key=lambda c: c["points"][-1][1], default=None),
                      "floor": floor.get(network(key[1]))})
    return found


class Axes:
    """Maps (minutes, percent) to pixels: a log2 minute axis and a linear percent axis that
    hold every point with a margin."""

    def __init__(self, minutes: list[float], percents: list[float]):
        self.x_lo = math.log2(max(min(minutes), 1) / 1.3)
        self.x_hi = math.log2(max(minutes) * 1.3)
        self.y_lo = 10 * math.floor(min(percents) / 10 - 0.2)
        self.y_hi = 10 * math.ceil(max(percents) / 10 + 0.2)
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.right, self.bottom = SIZE[0] - MARGIN["right"], SIZE[1] - MARGIN["bottom"]

    def __call__(self, minutes: float, percent: float) -> tuple[float, float]:
        u = (math.log2(minutes) - self.x_lo) / (self.x_hi - self.x_lo)
        v = (percent - self.y_lo) / (self.y_hi - self.y_lo)
        return (self.left + u * (self.right - self.left),
                self.bottom - v * (self.bottom - self.top))


def _frame(canvas, at: Axes, font) -> None:
    """Grid lines, tick labels, the box, the axis label and the title."""
    for percent in range(at.y_lo, at.y_hi + 1, 5):
        _, y = at(1, percent)
        canvas.line([(at.left, y), (at.right, y)], fill=(225, 225, 225))
        canvas.text((at.left - 8, y), f"{percent}%", fill="black", font=font, anchor="rm")
    for minutes in TICKS:
        x, _ = at(minutes, at.y_lo)
        if at.left <= x <= at.right:
            canvas.line([(x, at.top), (x, at.bottom)], fill=(225, 225, 225))
            canvas.text((x, at.bottom + 6), f"{minutes:g}", fill="black", font=font,
                        anchor="mt")
    canvas.rectangle([at.left, at.top, at.right, at.bottom], outline="black")
    canvas.text(((at.left + at.right) / 2, SIZE[1] - 22), "pretraining minutes (log scale)",
                fill="black", font=font, anchor="mm")
    canvas.text((at.left, 12), "CIFAR-10 val, linear top-1 of the frozen encoder, presets as "
                "shipped, 2 CPU cores", fill="black", font=font)


def _preset(canvas, at: Axes, preset: dict, rgb) -> list[tuple]:
    """One preset's budget runs (dots) and best curve (line); returns its legend entries."""
    legend = []
    curve = preset["curve"]
    if curve:
        canvas.line([at(*p) for p in curve["points"]], fill=rgb, width=3)
        for point in curve["points"]:
            x, y = at(*point)
            canvas.rectangle([x - 3, y - 3, x + 3, y + 3], outline=rgb, width=2)
        run = ", ".join(filter(None, [curve["date"], curve["views_per_second"] and
                                      f"{curve['views_per_second']:,} views/s"]))
        legend.append((rgb, f"{preset['preset']}: learning curve of its best run"
                       + (f" ({run})" if run else ""), "line"))
    for run in preset["runs"]:
        x, y = at(run["minutes"], run["linear"])
        canvas.ellipse([x - 5, y - 5, x + 5, y + 5], fill=rgb)
    if preset["runs"]:
        lo, hi = (f(r["views_per_second"] for r in preset["runs"]) for f in (min, max))
        speeds = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
        legend.append((rgb, f"{preset['preset']}: runs with a minute budget ({speeds} views/s)",
                       "dot"))
    return legend


def _floors(canvas, at: Axes, presets: list[dict]) -> list[tuple]:
    """A dashed line at each distinct random-init floor; returns its legend entries."""
    legend = []
    for floor in sorted({p["floor"] for p in presets if p["floor"] is not None}):
        _, y = at(1, floor)
        for x in range(at.left, at.right, 12):
            canvas.line([(x, y), (min(x + 6, at.right), y)], fill=FLOOR_COLOUR, width=2)
        names = ", ".join(p["preset"] for p in presets if p["floor"] == floor)
        legend.append((FLOOR_COLOUR, f"random-init encoder of {names}: {floor:.1f}%", "dash"))
    return legend


def _legend(canvas, entries: list[tuple], font) -> None:
    y = SIZE[1]
    for rgb, text, style in entries:
        x = MARGIN["left"] + 10
        if style == "dot":
            canvas.ellipse([x + 5, y + 2, x + 15, y + 12], fill=rgb)
        elif style == "dash":
            canvas.line([(x, y + 7), (x + 8, y + 7)], fill=rgb, width=2)
            canvas.line([(x + 12, y + 7), (x + 20, y + 7)], fill=rgb, width=2)
        else:
            canvas.line([(x, y + 7), (x + 20, y + 7)], fill=rgb, width=3)
        canvas.text((x + 28, y), text, fill="black", font=font)
        y += LEGEND_LINE


def draw(presets: list[dict], path: str) -> str:
    """Draw the `shipped` presets to `path` (PNG); returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    points = [(r["minutes"], r["linear"]) for p in presets for r in p["runs"]]
    points += [point for p in presets if p["curve"] for point in p["curve"]["points"]]
    if not points:
        raise SystemExit("error: no preset runs with a minute budget and no curves to draw")
    at = Axes([x for x, _ in points], [y for _, y in points]
              + [p["floor"] for p in presets if p["floor"] is not None])
    entries = (sum(bool(p["runs"]) + bool(p["curve"]) for p in presets)
               + len({p["floor"] for p in presets} - {None}))
    image = Image.new("RGB", (SIZE[0], SIZE[1] + LEGEND_LINE * entries), "white")
    canvas = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    _frame(canvas, at, font)
    floor_legend = _floors(canvas, at, presets)  # under the runs and curves
    legend = [entry for i, preset in enumerate(presets)
              for entry in _preset(canvas, at, preset, COLOURS[i % len(COLOURS)])]
    _legend(canvas, legend + floor_legend, font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=common.RESULTS)
    parser.add_argument("--curves", default=os.path.join(common.BENCH_DIR, "curves"))
    parser.add_argument("--output", default=os.path.join(accuracy.REPO, "docs", "images",
                                                         "performance.png"))
    args = parser.parse_args(argv)
    presets = shipped(preset_rows(args.results),
                      curves(args.curves, results_path=args.results))
    print(draw(presets, args.output))


if __name__ == "__main__":
    main()
