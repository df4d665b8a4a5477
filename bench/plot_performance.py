"""The README's performance plot: val linear top-1 against pretraining minutes.

Reads the measured runs, nothing else: the rows of bench/RESULTS.md's accuracy table whose
recipe is a preset as it is (no extra flags) with a minute budget, and the learning curves
of bench/curves/*.json (bench/accuracy.py --curve_every; a curve of a preset varied by
extra flags is a series of its own). Draws one colour per preset:
its budget runs as dots (a line through the median of each budget), its learning curves
as a line, and its random-init floor (the same network untrained) as a dashed line. The
minute axis is logarithmic, so 5-minute and 8-hour runs fit one picture.

    python bench/plot_performance.py   # writes docs/images/performance.png
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import accuracy, common  # noqa: E402

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
SIZE = (900, 560)
MARGIN = {"left": 70, "right": 20, "top": 40, "bottom": 60}


def _percent(cell: str) -> float | None:
    cell = cell.strip()
    return float(cell.rstrip("%")) if cell.endswith("%") else None


def budget_runs(results_path: str) -> list[dict]:
    """Accuracy rows of unmodified presets with a minute budget, as dicts."""
    if not os.path.exists(results_path):
        return []
    lines = open(results_path).read().splitlines()
    try:
        start = lines.index(accuracy.SECTION)
    except ValueError:
        return []
    columns = [c.strip() for c in lines[start + 2].strip().strip("|").split("|")]
    runs = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        row = dict(zip(columns, (c.strip() for c in line.strip().strip("|").split("|"))))
        preset, _, rest = row.get("recipe", "").partition(":")
        if not preset.endswith(".cfg") or " " in preset or row["budget min"] == "-":
            continue  # a recipe varied by extra flags, or a fixed number of steps
        linear = _percent(row["linear top-1"])
        if linear is None:
            continue
        runs.append({"preset": preset, "minutes": float(row["pretraining min"].split()[0]),
                     "linear": linear, "random_linear": _percent(row["random-init linear"]),
                     "cpu": row["CPU"]})
    return runs


def curves(curve_dir: str) -> list[dict]:
    """The learning curves written by bench/accuracy.py --curve_every."""
    found = []
    for path in sorted(glob.glob(os.path.join(curve_dir, "*.json"))):
        with open(path) as f:
            curve = json.load(f)
        preset = " ".join([os.path.basename(curve["flagfile"]), *curve.get("pretrain_flags", [])])
        found.append({"preset": preset,
                      "label": os.path.basename(path),
                      "points": [(p["minutes"], 100 * p["linear_top1"])
                                 for p in curve["points"] if p.get("linear_top1") is not None],
                      "random_linear": (None if curve.get("random_linear_top1") is None
                                        else 100 * curve["random_linear_top1"])})
    return found


def draw(runs: list[dict], learning_curves: list[dict], path: str) -> str:
    """Draw the plot to `path` (PNG); returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    presets = sorted({r["preset"] for r in runs} | {c["preset"] for c in learning_curves})
    if not presets:
        raise SystemExit("error: no preset runs with a minute budget and no curves to draw")
    colour = {p: COLOURS[i % len(COLOURS)] for i, p in enumerate(presets)}
    floors = {}
    for item in runs + learning_curves:
        if item.get("random_linear") is not None:
            floors.setdefault(item["preset"], []).append(item["random_linear"])
    xs = [r["minutes"] for r in runs] + [x for c in learning_curves for x, _ in c["points"]]
    ys = ([r["linear"] for r in runs] + [y for c in learning_curves for _, y in c["points"]]
          + [y for values in floors.values() for y in values])
    x_lo, x_hi = math.log2(max(min(xs), 1) / 1.3), math.log2(max(xs) * 1.3)
    y_lo, y_hi = 10 * math.floor(min(ys) / 10 - 0.2), 10 * math.ceil(max(ys) / 10 + 0.2)

    image = Image.new("RGB", SIZE, "white")
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
    for preset, values in floors.items():
        floor = statistics.median(values)
        _, y = at(1, floor)
        for x in range(left, right, 12):
            canvas.line([(x, y), (min(x + 6, right), y)], fill=colour[preset], width=2)
        legend.append((colour[preset], f"{preset}: random-init floor {floor:.1f}%", "dash"))
    for preset in presets:
        mine = [r for r in runs if r["preset"] == preset]
        if not mine:
            continue
        buckets = {}
        for r in mine:  # runs of one budget (to 5 minutes) form one median point
            buckets.setdefault(round(r["minutes"] / 5) or r["minutes"], []).append(r)
        medians = [(statistics.median(r["minutes"] for r in group),
                    statistics.median(r["linear"] for r in group))
                   for _, group in sorted(buckets.items())]
        if len(medians) > 1:
            canvas.line([at(*m) for m in medians], fill=colour[preset], width=2)
        for r in mine:
            x, y = at(r["minutes"], r["linear"])
            canvas.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour[preset])
        legend.append((colour[preset], f"{preset}: runs planned for their budget", "dot"))
    for curve in learning_curves:
        if len(curve["points"]) > 1:
            canvas.line([at(*p) for p in curve["points"]], fill=colour[curve["preset"]], width=3)
        for point in curve["points"]:
            x, y = at(*point)
            canvas.rectangle([x - 3, y - 3, x + 3, y + 3], outline=colour[curve["preset"]], width=2)
        legend.append((colour[curve["preset"]],
                       f"{curve['preset']}: one run's learning curve", "line"))

    y = bottom - 22 * len(legend) - 6
    for rgb, text, style in legend:
        x = left + 340
        if style == "dot":
            canvas.ellipse([x + 6, y + 3, x + 14, y + 11], fill=rgb)
        elif style == "dash":
            canvas.line([(x, y + 7), (x + 8, y + 7)], fill=rgb, width=2)
            canvas.line([(x + 12, y + 7), (x + 20, y + 7)], fill=rgb, width=2)
        else:
            canvas.line([(x, y + 7), (x + 20, y + 7)], fill=rgb, width=3)
        canvas.text((x + 28, y), text, fill="black", font=font)
        y += 22
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
    runs, learning_curves = budget_runs(args.results), curves(args.curves)
    print(draw(runs, learning_curves, args.output))


if __name__ == "__main__":
    main()
