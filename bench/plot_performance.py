"""The README's performance plot: val linear top-1 against pretraining minutes.

Reads the measured runs, nothing else: the rows of bench/RESULTS.md's accuracy table that ran
a preset with a minute budget, and the learning curves of bench/curves/*.json
(bench/accuracy.py --curve_every). A run counts as its preset when its extra flags are only
seeds or settings the preset file now holds (so the runs that tried a setting before a preset
adopted it count), and a curve with other flags is a series of its own. A preset whose recipe
changed over time (the recipe cell of the row) gets one series per recipe, named by the
settings that differ, so its old runs are never drawn as the new recipe. Draws one colour per
series: its budget runs as dots (a line through the median of each budget), its learning
curves as lines (named by date and by the views/s of their RESULTS row, since a faster
host's curve sits higher on a minute axis), and its random-init floor (the same network
untrained) as a dashed line. The minute axis is logarithmic, so 5-minute and 8-hour runs fit
one picture.

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
           (140, 86, 75), (227, 119, 194), (23, 190, 207), (127, 127, 127), (188, 189, 34)]
CONFIGS = os.path.join(accuracy.REPO, "apps", "configs")
SIZE = (900, 560)
MARGIN = {"left": 70, "right": 20, "top": 40, "bottom": 60}
LEGEND_LINE = 22  # pixels per legend entry, drawn under the plot


def _percent(cell: str) -> float | None:
    cell = cell.strip()
    return float(cell.rstrip("%")) if cell.endswith("%") else None


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


def budget_runs(results_path: str, configs: str = CONFIGS) -> list[dict]:
    """Accuracy rows of presets with a minute budget, as dicts keyed by their series."""
    runs = []
    for row in accuracy_rows(results_path):
        command, _, recipe = row.get("recipe", "").partition(": ")
        preset, *flags = command.split()
        if (not preset.endswith(".cfg") or series_name(preset, flags, configs) != preset
                or row["budget min"] == "-"):
            continue  # a recipe varied by extra flags, or a fixed number of steps
        linear = _percent(row["linear top-1"])
        if linear is None:
            continue
        runs.append({"series": (preset, recipe),
                     "minutes": float(row["pretraining min"].split()[0]),
                     "linear": linear, "random_linear": _percent(row["random-init linear"]),
                     "cpu": row["CPU"]})
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


def series_names(keys) -> dict:
    """Legend name of each (name, recipe) series: the name, and where one name was run with
    several recipes, the recipe settings that differ ("cifar10_cpu.cfg (x0.5, batch 256)")."""
    variants = {}
    for name, recipe in keys:
        variants.setdefault(name, []).append(recipe.split(", "))
    names = {}
    for name, recipe in keys:
        if len(variants[name]) == 1:
            names[(name, recipe)] = name
            continue
        settings = recipe.split(", ")
        differing = [_differing_words(i, settings, variants[name]) for i in range(len(settings))
                     if any(settings[i] not in v for v in variants[name])]
        names[(name, recipe)] = f"{name} ({', '.join(differing)})"
    return names


def _differing_words(index, settings, variants):
    """settings[index] from its first word that another variant's setting there lacks; a
    bare number keeps the word before it ("batch 1024", not "1024")."""
    words = settings[index].split()
    others = [v[index].split() for v in variants if len(v) > index]
    first = next((i for i, word in enumerate(words)
                  if any(len(o) <= i or o[i] != word for o in others)), 0)
    if first and words[first][0].isdigit():
        first -= 1
    return " ".join(words[first:])


def series_colours(keys: list) -> dict:
    """One colour per series, in order: matplotlib's ten "tab10" colours, reused past ten."""
    return {key: COLOURS[i % len(COLOURS)] for i, key in enumerate(keys)}


def draw(runs: list[dict], learning_curves: list[dict], path: str) -> str:
    """Draw the plot to `path` (PNG); returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    keys = sorted({r["series"] for r in runs} | {c["series"] for c in learning_curves})
    if not keys:
        raise SystemExit("error: no preset runs with a minute budget and no curves to draw")
    colour = series_colours(keys)
    name = series_names(keys)
    floors = {}
    for item in runs + learning_curves:
        if item.get("random_linear") is not None:
            floors.setdefault(item["series"], []).append(item["random_linear"])
    xs = [r["minutes"] for r in runs] + [x for c in learning_curves for x, _ in c["points"]]
    ys = ([r["linear"] for r in runs] + [y for c in learning_curves for _, y in c["points"]]
          + [y for values in floors.values() for y in values])
    x_lo, x_hi = math.log2(max(min(xs), 1) / 1.3), math.log2(max(xs) * 1.3)
    y_lo, y_hi = 10 * math.floor(min(ys) / 10 - 0.2), 10 * math.ceil(max(ys) / 10 + 0.2)

    entries = len(floors) + len({r["series"] for r in runs}) + len(learning_curves)
    image = Image.new("RGB", (SIZE[0], SIZE[1] + LEGEND_LINE * entries), "white")  # legend below
    canvas = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = SIZE[0] - MARGIN["right"], SIZE[1] - MARGIN["bottom"]

    def at(minutes, percent):
        u = (math.log2(minutes) - x_lo) / (x_hi - x_lo)
        v = (percent - y_lo) / (y_hi - y_lo)
        return left + u * (right - left), bottom - v * (bottom - top)

    for percent in range(y_lo, y_hi + 1, 5):
        _, y = at(1, percent)
        canvas.line([(left, y), (right, y)], fill=(225, 225, 225))
        canvas.text((left - 8, y), f"{percent}%", fill="black", font=font, anchor="rm")
    for minutes in (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 960):
        x, _ = at(minutes, y_lo)
        if left <= x <= right:
            canvas.line([(x, top), (x, bottom)], fill=(225, 225, 225))
            canvas.text((x, bottom + 6), f"{minutes:g}", fill="black", font=font, anchor="mt")
    canvas.rectangle([left, top, right, bottom], outline="black")
    canvas.text(((left + right) / 2, SIZE[1] - 22), "pretraining minutes (log scale)",
                fill="black", font=font, anchor="mm")
    canvas.text((left, 12), "CIFAR-10 val, linear top-1 of the frozen encoder", fill="black",
                font=font)

    legend = []
    for key, values in floors.items():
        floor = statistics.median(values)
        _, y = at(1, floor)
        for x in range(left, right, 12):
            canvas.line([(x, y), (min(x + 6, right), y)], fill=colour[key], width=2)
        legend.append((colour[key], f"{name[key]}: random init {floor:.1f}%", "dash"))
    for key in keys:
        mine = [r for r in runs if r["series"] == key]
        if not mine:
            continue
        buckets = {}
        for r in mine:  # runs of one budget (to 5 minutes) form one median point
            buckets.setdefault(round(r["minutes"] / 5) or r["minutes"], []).append(r)
        medians = [(statistics.median(r["minutes"] for r in group),
                    statistics.median(r["linear"] for r in group))
                   for _, group in sorted(buckets.items())]
        if len(medians) > 1:
            canvas.line([at(*m) for m in medians], fill=colour[key], width=2)
        for r in mine:
            x, y = at(r["minutes"], r["linear"])
            canvas.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour[key])
        legend.append((colour[key], f"{name[key]}: budget runs", "dot"))
    for curve in learning_curves:
        if len(curve["points"]) > 1:
            canvas.line([at(*p) for p in curve["points"]], fill=colour[curve["series"]], width=3)
        for point in curve["points"]:
            x, y = at(*point)
            canvas.rectangle([x - 3, y - 3, x + 3, y + 3], outline=colour[curve["series"]],
                           width=2)
        run = ", ".join(filter(None, [curve["date"], curve["views_per_second"] and
                                      f"{curve['views_per_second']:,} views/s"]))
        legend.append((colour[curve["series"]], f"{name[curve['series']]}: learning curve"
                       + (f" ({run})" if run else ""), "line"))

    y = SIZE[1]
    for rgb, text, style in legend:
        x = left + 10
        if style == "dot":
            canvas.ellipse([x + 6, y + 3, x + 14, y + 11], fill=rgb)
        elif style == "dash":
            canvas.line([(x, y + 7), (x + 8, y + 7)], fill=rgb, width=2)
            canvas.line([(x + 12, y + 7), (x + 20, y + 7)], fill=rgb, width=2)
        else:
            canvas.line([(x, y + 7), (x + 20, y + 7)], fill=rgb, width=3)
        canvas.text((x + 28, y), text, fill="black", font=font)
        y += LEGEND_LINE
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
    runs = budget_runs(args.results)
    learning_curves = curves(args.curves, results_path=args.results)
    print(draw(runs, learning_curves, args.output))


if __name__ == "__main__":
    main()
