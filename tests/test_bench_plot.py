"""bench/plot_performance.py: what it reads from RESULTS.md and the curves, and its PNG."""
import json

import numpy as np
from PIL import Image

from bench import accuracy, plot_performance

ROW = ("| 2026-11-28 | AMD EPYC | 2 | `cmd` | {recipe} | {budget} | {minutes} (+0.7 calibration) "
       "| - | 10 (1 x 10) | 1800 | {linear} | 50.00% | 39.66% | 31.06% |")


def _results(tmp_path, rows):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n" + accuracy.SECTION + "\n\n" + accuracy.HEADER
                    + "\n" + "\n".join(rows) + "\n\n## Next section\n\n| a |\n|---|\n| 1 |\n")
    return str(path)


def test_budget_runs_keep_unmodified_presets_with_a_budget(tmp_path):
    path = _results(tmp_path, [
        ROW.format(recipe="cifar10_cpu.cfg: resnet18", budget="30", minutes="29.4",
                   linear="60.52%"),
        ROW.format(recipe="cifar10_cpu.cfg --stem=cifar: resnet18", budget="30",
                   minutes="30.1", linear="70.00%"),
        ROW.format(recipe="cifar10_cpu.cfg: resnet18", budget="-", minutes="3.6",
                   linear="50.92%"),
        ROW.format(recipe="cifar10_cpu_long.cfg: resnet18", budget="120", minutes="119.0",
                   linear="75.00%"),
    ])
    runs = plot_performance.budget_runs(path)
    assert [(r["preset"], r["minutes"], r["linear"]) for r in runs] == [
        ("cifar10_cpu.cfg", 29.4, 60.52), ("cifar10_cpu_long.cfg", 119.0, 75.0)]
    assert runs[0]["random_linear"] == 39.66


def test_draw_writes_a_png_with_every_preset_colour(tmp_path):
    path = _results(tmp_path, [
        ROW.format(recipe="cifar10_cpu.cfg: resnet18", budget="30", minutes="29.4",
                   linear="60.52%")])
    curves = tmp_path / "curves"
    curves.mkdir()
    (curves / "long.json").write_text(json.dumps({
        "flagfile": "apps/configs/cifar10_cpu_long.cfg", "random_linear_top1": 0.40,
        "points": [{"minutes": 30, "linear_top1": 0.55}, {"minutes": 60, "linear_top1": 0.62},
                   {"minutes": 120, "linear_top1": 0.70, "final": True}]}))
    out = plot_performance.draw(plot_performance.budget_runs(path),
                                plot_performance.curves(str(curves)), str(tmp_path / "p.png"))
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    for rgb in plot_performance.COLOURS[:2]:
        assert rgb in colours
