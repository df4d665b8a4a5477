"""bench/plot_performance.py: what it reads from RESULTS.md and the curves, and its PNG."""
import json

import numpy as np
from PIL import Image

from bench import accuracy, plot_performance

ROW = ("| 2026-11-28 | AMD EPYC | 2 | `cmd` | {recipe} | {budget} | {minutes} (+0.7 calibration) "
       "| - | 10 (1 x 10) | {speed} | {linear} | 50.00% | {random} | 31.06% |")


def _row(recipe, budget="30", minutes="30.0", linear="60.00%", random="-", speed="1800"):
    return ROW.format(recipe=recipe, budget=budget, minutes=minutes, linear=linear,
                      random=random, speed=speed)


def _results(tmp_path, rows):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n" + accuracy.SECTION + "\n\n" + accuracy.HEADER
                    + "\n" + "\n".join(rows) + "\n\n## Next section\n\n| a |\n|---|\n| 1 |\n")
    return str(path)


OLD = "resnet18 imagenet stem x0.5, 32 px, batch 256, T 0.2, loss ntxent"
NEW = "resnet18 imagenet stem x0.5,0.5,0.5,1, 32 px, batch 1024, T 0.2, loss ntxent"
NEW_RATE = "resnet18 imagenet stem x0.5,0.5,0.5,1, 32 px, batch 1024, T 0.2, lr 1.5, loss ntxent"
RECIPE = {"backbone": "resnet18", "stem": "imagenet", "width_multiplier": 0.5,
          "stage_widths": [0.5, 0.5, 0.5, 1.0], "image_size": 32, "batch_size": 1024,
          "temperature": 0.2, "optimizer": "lars", "learning_rate": 1.0, "lr_scaling": "linear",
          "warmup_epochs": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5, "loss": "ntxent",
          "small_views": 0}


def _configs(tmp_path):
    """A config folder whose cifar10_cpu.cfg has adopted the wide last stage and batch 1024."""
    configs = tmp_path / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "cifar10_cpu.cfg").write_text(
        "# comment --batch_size=1\n--stem=imagenet\n--stage_widths=0.5,0.5,0.5,1\n"
        "--batch_size=1024\n")
    return str(configs)


def _curve(curve_dir, name, flagfile, flags, finals, random=None, recipe=RECIPE):
    curve_dir.mkdir(exist_ok=True)
    (curve_dir / f"{name}.json").write_text(json.dumps({
        "flagfile": flagfile, "pretrain_flags": flags, "recipe": recipe,
        "random_linear_top1": random,
        "points": [{"minutes": 30 * (i + 1), "linear_top1": f} for i, f in enumerate(finals)]}))


def test_rows_count_as_their_preset_with_seeds_and_the_settings_it_adopted(tmp_path):
    path = _results(tmp_path, [
        _row(f"cifar10_cpu.cfg: {OLD}", minutes="29.4", random="39.66%"),
        _row(f"cifar10_cpu.cfg --stem=cifar: {OLD}"),
        _row(f"cifar10_cpu.cfg --seed=1: {OLD}", budget="-", minutes="26.0"),
        _row(f"cifar10_cpu.cfg --stage_widths=0.5,0.5,0.5,1 --batch_size=1024 --seed=1: {NEW}",
             speed="672 (CPU shared with tests)")])
    rows = plot_performance.preset_rows(path, _configs(tmp_path))
    assert [(r["series"][0], r["budget"], r["minutes"]) for r in rows] == [
        ("cifar10_cpu.cfg", True, 29.4), ("cifar10_cpu.cfg --stem=cifar", True, 30.0),
        ("cifar10_cpu.cfg", False, 26.0), ("cifar10_cpu.cfg", True, 30.0)]
    assert (rows[0]["random_linear"], rows[1]["random_linear"]) == (39.66, None)
    assert rows[3]["views_per_second"] == 672


def test_a_preset_ships_the_recipe_of_its_last_row_and_only_its_budget_runs_are_drawn(tmp_path):
    path = _results(tmp_path, [
        _row(f"cifar10_cpu.cfg: {OLD}", minutes="29.4", linear="58.00%"),
        _row(f"cifar10_cpu.cfg --stage_widths=0.5,0.5,0.5,1 --batch_size=1024: {NEW}",
             minutes="30.3", linear="61.80%"),
        _row(f"cifar10_cpu.cfg --temperature=0.1: {NEW}", minutes="30.1", linear="70.00%"),
        _row(f"cifar10_cpu.cfg: {NEW}", budget="-", minutes="26.0", linear="63.28%"),
        _row(f"cifar10_cpu_long.cfg: {OLD}", budget="120", minutes="119.0", linear="66.90%")])
    presets = plot_performance.shipped(plot_performance.preset_rows(path, _configs(tmp_path)),
                                       [])
    assert [(p["preset"], [(r["minutes"], r["linear"]) for r in p["runs"]]) for p in presets] == [
        ("cifar10_cpu.cfg", [(30.3, 61.8)]), ("cifar10_cpu_long.cfg", [(119.0, 66.9)])]


def test_the_floor_is_the_same_networks_random_init_whatever_the_rest_of_the_recipe(tmp_path):
    """The shipped runs skipped random init; an earlier row of the same network measured it,
    and another network's floor is not used."""
    path = _results(tmp_path, [
        _row(f"cifar10_cpu.cfg: {OLD}", random="39.66%"),
        _row(f"cifar10_cpu.cfg: {NEW}", random="43.00%"),
        _row(f"cifar10_cpu.cfg: {NEW_RATE}")])
    curve_dir = tmp_path / "curves"
    _curve(curve_dir, "a", "apps/configs/cifar10_cpu.cfg", [], [0.6], random=0.44)
    configs = _configs(tmp_path)
    presets = plot_performance.shipped(plot_performance.preset_rows(path, configs),
                                       plot_performance.curves(str(curve_dir), configs))
    assert [(p["preset"], p["floor"]) for p in presets] == [("cifar10_cpu.cfg", 43.5)]


def test_a_preset_draws_its_best_curve_of_the_shipped_recipe(tmp_path):
    curve_dir = tmp_path / "curves"
    for name, flags, finals in (("a", [], [0.60, 0.66]), ("b", [], [0.65, 0.70]),
                                ("c", ["--stem=stride2"], [0.68, 0.75])):
        _curve(curve_dir, name, "apps/configs/cifar10_cpu.cfg", flags, finals)
    configs = _configs(tmp_path)
    learning_curves = plot_performance.curves(str(curve_dir), configs)
    recipe = learning_curves[0]["series"][1]
    path = _results(tmp_path, [_row(f"cifar10_cpu.cfg: {recipe}")])
    [preset] = plot_performance.shipped(plot_performance.preset_rows(path, configs),
                                        learning_curves)
    assert [y for _, y in preset["curve"]["points"]] == [65.0, 70.0]


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
    results = _results(tmp_path, [_row("cifar10_cpu_long.cfg: r", budget="140", minutes="127.5")
                                  .replace("`cmd`", "`python bench/accuracy.py --x`")])
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


def test_a_preset_whose_warm_up_changed_ships_only_its_latest_warm_up(tmp_path):
    """The recipe cell holds the warm-up, so runs from before a preset changed it are not
    drawn as the preset."""
    cells = [accuracy.recipe_cell({"flagfile": "apps/configs/cifar10_cpu.cfg", "pretrain_flags": [],
                                   "recipe": {**RECIPE, "warmup_epochs": warmup}})
             for warmup in (1.0, 10.0)]
    path = _results(tmp_path, [_row(cell, linear=linear)
                               for cell, linear in zip(cells, ("60.10%", "61.80%"))])
    [preset] = plot_performance.shipped(
        plot_performance.preset_rows(path, _configs(tmp_path)), [])
    assert "10-epoch warm-up" in cells[1] and [r["linear"] for r in preset["runs"]] == [61.8]


def test_the_recipe_cell_names_a_cosine_that_ends_above_zero_only_when_set():
    """Recipes recorded before --final_lr_fraction existed (no key) keep their cell, so their
    series do not split."""
    def cell(**changes):
        return accuracy.recipe_cell({"flagfile": "apps/configs/cifar10_cpu.cfg",
                                     "pretrain_flags": [], "recipe": {**RECIPE, **changes}})
    assert cell() == cell(final_lr_fraction=0.0)
    assert cell(final_lr_fraction=0.5).endswith("loss ntxent, cosine to 0.5 of the peak")


def test_draw_writes_a_png_with_every_preset_colour_and_the_floor(tmp_path):
    cell = accuracy.recipe_cell({"flagfile": "x.cfg", "pretrain_flags": [], "recipe": RECIPE})
    recipe = cell.partition(": ")[2]
    path = _results(tmp_path, [
        _row(f"cifar10_cpu.cfg: {recipe}", minutes="29.4", linear="60.52%", random="43.00%"),
        _row(f"cifar10_cpu_long.cfg: {recipe}", budget="-")])
    curve_dir = tmp_path / "curves"
    _curve(curve_dir, "long", "apps/configs/cifar10_cpu_long.cfg", [], [0.55, 0.62, 0.70])
    configs = _configs(tmp_path)
    presets = plot_performance.shipped(plot_performance.preset_rows(path, configs),
                                       plot_performance.curves(str(curve_dir), configs))
    out = plot_performance.draw(presets, str(tmp_path / "p.png"))
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    for rgb in [*plot_performance.COLOURS[:2], plot_performance.FLOOR_COLOUR]:
        assert rgb in colours
