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


OLD = "resnet18 imagenet stem x0.5, 32 px, batch 256, T 0.2, loss ntxent"
NEW = "resnet18 imagenet stem x0.5,0.5,0.5,1, 32 px, batch 1024, T 0.2, loss ntxent"
BATCH_ONLY = "resnet18 imagenet stem x0.5, 32 px, batch 1024, T 0.2, loss ntxent"
RECIPE = {"backbone": "resnet18", "stem": "imagenet", "width_multiplier": 0.5,
          "stage_widths": [0.5, 0.5, 0.5, 1.0], "image_size": 32, "batch_size": 1024,
          "temperature": 0.2, "optimizer": "lars", "learning_rate": 1.0, "lr_scaling": "linear",
          "warmup_epochs": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5, "loss": "ntxent",
          "small_views": 0}


def _configs(tmp_path):
    """A config folder whose cifar10_cpu.cfg has adopted the wide last stage and batch 1024."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "cifar10_cpu.cfg").write_text(
        "# comment --batch_size=1\n--stem=imagenet\n--stage_widths=0.5,0.5,0.5,1\n"
        "--batch_size=1024\n")
    return str(configs)


def test_budget_runs_keep_presets_their_seeds_and_the_settings_they_adopted(tmp_path):
    path = _results(tmp_path, [
        ROW.format(recipe=f"cifar10_cpu.cfg: {OLD}", budget="30", minutes="29.4",
                   linear="60.52%"),
        ROW.format(recipe=f"cifar10_cpu.cfg --stem=cifar: {OLD}", budget="30",
                   minutes="30.1", linear="70.00%"),
        ROW.format(recipe=f"cifar10_cpu.cfg: {OLD}", budget="-", minutes="3.6",
                   linear="50.92%"),
        ROW.format(recipe=f"cifar10_cpu.cfg --seed=1: {OLD}", budget="30", minutes="26.0",
                   linear="58.10%"),
        ROW.format(recipe=f"cifar10_cpu.cfg --stage_widths=0.5,0.5,0.5,1 --batch_size=1024 "
                          f"--seed=1: {NEW}", budget="30", minutes="30.8", linear="60.06%"),
        ROW.format(recipe=f"cifar10_cpu.cfg --batch_size=1024: {BATCH_ONLY}", budget="10",
                   minutes="9.9", linear="54.00%"),
        ROW.format(recipe=f"cifar10_cpu_long.cfg: {OLD}", budget="120", minutes="119.0",
                   linear="75.00%"),
    ])
    runs = plot_performance.budget_runs(path, _configs(tmp_path))
    assert [(r["series"], r["minutes"], r["linear"]) for r in runs] == [
        (("cifar10_cpu.cfg", OLD), 29.4, 60.52), (("cifar10_cpu.cfg", OLD), 26.0, 58.10),
        (("cifar10_cpu.cfg", NEW), 30.8, 60.06),
        (("cifar10_cpu.cfg", BATCH_ONLY), 9.9, 54.0),
        (("cifar10_cpu_long.cfg", OLD), 119.0, 75.0)]
    assert runs[0]["random_linear"] == 39.66


def test_series_names_tell_a_presets_recipes_apart():
    names = plot_performance.series_names([
        ("cifar10_cpu.cfg", OLD), ("cifar10_cpu.cfg", NEW),
        ("cifar10_cpu.cfg", NEW + ", 2 x 16 px small views"), ("cifar10_cpu_long.cfg", OLD)])
    assert names == {
        ("cifar10_cpu.cfg", OLD): "cifar10_cpu.cfg (x0.5, batch 256)",
        ("cifar10_cpu.cfg", NEW): "cifar10_cpu.cfg (x0.5,0.5,0.5,1, batch 1024)",
        ("cifar10_cpu.cfg", NEW + ", 2 x 16 px small views"):
            "cifar10_cpu.cfg (x0.5,0.5,0.5,1, batch 1024, 2 x 16 px small views)",
        ("cifar10_cpu_long.cfg", OLD): "cifar10_cpu_long.cfg"}


def test_curves_drop_the_flags_their_preset_adopted(tmp_path):
    curve_dir = tmp_path / "curves"
    curve_dir.mkdir()
    for flags in (["--stage_widths=0.5,0.5,0.5,1", "--batch_size=1024"], ["--stem=stride2"]):
        (curve_dir / f"{flags[0][2:6]}.json").write_text(json.dumps({
            "flagfile": "apps/configs/cifar10_cpu.cfg", "pretrain_flags": flags,
            "recipe": RECIPE, "random_linear_top1": None,
            "points": [{"minutes": 30, "linear_top1": 0.6}]}))
    found = plot_performance.curves(str(curve_dir), _configs(tmp_path))
    assert sorted(c["series"][0] for c in found) == [
        "cifar10_cpu.cfg", "cifar10_cpu.cfg --stem=stride2"]
    assert found[0]["series"][1].startswith(
        "resnet18 imagenet stem x0.5,0.5,0.5,1, 32 px, batch 1024")


def test_curves_carry_their_date_and_the_views_per_second_of_their_run(tmp_path):
    """Two curves of one preset differ by their host's speed (the x axis is minutes); the
    legend names both, the speed read from the run's RESULTS row (same date and command)."""
    results = _results(tmp_path, [ROW.replace("`cmd`", "`python bench/accuracy.py --x`")
                                  .format(recipe="cifar10_cpu_long.cfg: r", budget="140",
                                          minutes="127.5", linear="71.90%")])
    curve_dir = tmp_path / "curves"
    curve_dir.mkdir()
    for name, command in (("a", "python bench/accuracy.py --x"), ("b", "other")):
        (curve_dir / f"{name}.json").write_text(json.dumps({
            "date": "2026-11-28", "command": command,
            "flagfile": "apps/configs/cifar10_cpu_long.cfg", "pretrain_flags": [],
            "recipe": RECIPE, "points": [{"minutes": 30, "linear_top1": 0.6}]}))
    found = plot_performance.curves(str(curve_dir), _configs(tmp_path), results)
    assert [(c["date"], c["views_per_second"]) for c in found] == [
        ("2026-11-28", 1800), ("2026-11-28", None)]


def test_a_preset_whose_warm_up_changed_gets_a_series_per_warm_up():
    """The recipe cell holds the warm-up, so runs from before a preset changed it are not
    drawn as the preset."""
    cells = [accuracy.recipe_cell({"flagfile": "apps/configs/cifar10_cpu.cfg", "pretrain_flags": [],
                                   "recipe": {**RECIPE, "warmup_epochs": warmup}})
             for warmup in (1.0, 10.0)]
    keys = [("cifar10_cpu.cfg", cell.partition(": ")[2]) for cell in cells]
    assert keys[0] != keys[1]
    assert sorted(plot_performance.series_names(keys).values()) == [
        "cifar10_cpu.cfg (1-epoch warm-up)", "cifar10_cpu.cfg (10-epoch warm-up)"]


def test_the_recipe_cell_names_a_cosine_that_ends_above_zero_only_when_set():
    """Recipes recorded before --final_lr_fraction existed (no key) keep their cell, so their
    series do not split."""
    def cell(**changes):
        return accuracy.recipe_cell({"flagfile": "apps/configs/cifar10_cpu.cfg",
                                     "pretrain_flags": [], "recipe": {**RECIPE, **changes}})
    assert cell() == cell(final_lr_fraction=0.0)
    assert cell(final_lr_fraction=0.5).endswith("loss ntxent, cosine to 0.5 of the peak")


def test_draw_writes_a_png_with_every_preset_colour(tmp_path):
    path = _results(tmp_path, [
        ROW.format(recipe=f"cifar10_cpu.cfg: {OLD}", budget="30", minutes="29.4",
                   linear="60.52%")])
    curves = tmp_path / "curves"
    curves.mkdir()
    (curves / "long.json").write_text(json.dumps({
        "flagfile": "apps/configs/cifar10_cpu_long.cfg", "random_linear_top1": 0.40,
        "pretrain_flags": [], "recipe": RECIPE,
        "points": [{"minutes": 30, "linear_top1": 0.55}, {"minutes": 60, "linear_top1": 0.62},
                   {"minutes": 120, "linear_top1": 0.70, "final": True}]}))
    configs = _configs(tmp_path)
    out = plot_performance.draw(plot_performance.budget_runs(path, configs),
                                plot_performance.curves(str(curves), configs),
                                str(tmp_path / "p.png"))
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    for rgb in plot_performance.COLOURS[:2]:
        assert rgb in colours


def test_ten_series_get_ten_colours():
    """With eight colours the ninth series (the long preset at rate 1.5) took the first's."""
    keys = [f"preset {i}" for i in range(10)]
    assert len(set(plot_performance.series_colours(keys).values())) == 10
