"""bench/common.py: wall and CPU time side by side, and RESULTS.md tables that grow columns."""
import importlib
import time

import pytest

from bench import common


def test_stopwatch_counts_cpu_of_work_not_of_sleep():
    with common.Stopwatch() as watch:
        time.sleep(0.2)
    assert watch.wall_s >= 0.19 and watch.cpu_s < 0.1
    assert watch.cpu_over_wall < 0.5
    with common.Stopwatch() as busy:  # busy until it has used 0.1 s of CPU, however shared
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
    assert 0.1 <= busy.cpu_s <= busy.wall_s * common.cores() + 0.01
    figures = busy.as_dict("step_", per=2)
    assert figures["step_wall_s"] == pytest.approx(busy.wall_s / 2)
    assert figures["step_cpu_s"] == pytest.approx(busy.cpu_s / 2)
    assert figures["step_cpu_over_wall"] == busy.cpu_over_wall


def test_stopwatch_of_children_counts_a_finished_child():
    import subprocess
    import sys

    with common.Stopwatch(children=True) as watch:
        subprocess.run([sys.executable, "-c",
                        "import time\nend = time.process_time() + 0.3\n"
                        "while time.process_time() < end: pass"],
                       check=True)
    assert watch.cpu_s >= 0.3


def test_time_cell_and_ratio():
    assert common.time_cell(10.0, 19.5) == "19.5 (1.95)"
    assert common.time_cell(2.0, 1.0, digits=2) == "1.00 (0.50)"
    assert common.time_cell(None, 1.0) == "-"
    assert common.cpu_over_wall(1.0, 0.0) is None


HEADER_OLD = "| date | views/s |\n|---|---|"
HEADER_NEW = "| date | precision | views/s | CPU s |\n|---|---|---|---|"


def test_migrate_table_fills_new_columns_with_dashes():
    lines = HEADER_OLD.split("\n") + ["| d1 | 10 |", "| d2 | 20 |"]
    assert common.migrate_table(lines, HEADER_NEW) == HEADER_NEW.split("\n") + [
        "| d1 | - | 10 | - |", "| d2 | - | 20 | - |"]
    with pytest.raises(ValueError, match="views/s"):
        common.migrate_table(lines, "| date |\n|---|")


def test_append_row_migrates_then_appends_and_keeps_other_sections(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## A\n\n" + HEADER_OLD + "\n| d1 | 10 |\n\n"
                    "## B\n\n| x |\n|---|\n| 1 |\n")
    common.append_row(str(path), "## A", HEADER_NEW, ["d2", "float32", "30", "4.0 (1.90)"])
    common.append_row(str(path), "## C", "| y |\n|---|", ["2"])
    assert path.read_text() == (
        "# Benchmark results\n\n## A\n\n" + HEADER_NEW + "\n| d1 | - | 10 | - |\n"
        "| d2 | float32 | 30 | 4.0 (1.90) |\n\n## B\n\n| x |\n|---|\n| 1 |\n\n"
        "## C\n\n| y |\n|---|\n| 2 |\n")
    with pytest.raises(ValueError, match="cells"):
        common.append_row(str(path), "## C", "| y |\n|---|", ["2", "3"])


def test_encoder_arguments_reach_the_encoder_of_the_benchmarks(capsys):
    from bench import conv_layers, throughput
    from keras_simclr.networks import backbones

    preset = ["--width_multiplier=0.5", "--stage_widths=0.5,0.5,0.5,1"]
    for script in (conv_layers, throughput):
        args = script.parse_args(preset)
        encoder = backbones.build_backbone(args.backbone, **common.encoder_arguments(args))
        assert backbones.output_width(encoder) == 512  # the last stage at width 1
        assert encoder.get_layer("stem_conv").filters == 32  # the stem at width 0.5
    assert common.encoder_cell(args) == "resnet18, imagenet stem, width 0.5, stages 0.5,0.5,0.5,1"
    # the defaults are apps.pretrain's (one definition): the width of the CPU presets
    assert common.encoder_cell(throughput.parse_args([])) == "resnet18, imagenet stem, width 0.5"
    assert common.encoder_cell(conv_layers.parse_args(["--backbone=resnet10", "--stem=cifar"])
                               ) == "resnet10, cifar stem, width 0.5"
    for bad in ("--stage_widths=0.5,0.5,1", "--stage_widths=0.5,0.5,0.5,0",
                "--stage_widths=a,b,c,d"):
        with pytest.raises(SystemExit):
            conv_layers.parse_args([bad])
        assert "must be four positive numbers" in capsys.readouterr().err
    for bad, message in (("--backbone=nope", "--backbone=nope is not registered"),
                         ("--stem=nope", "--stem"), ("--nope=1", "nope")):
        with pytest.raises(SystemExit):
            throughput.parse_args([bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        conv_layers.parse_args(["--help"])
    assert "encoder flags (as apps.pretrain's)" in capsys.readouterr().out


def test_cpu_model_tells_apart_generations_that_share_a_name(tmp_path):
    block = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
             "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1).replace(": 17", ": 1"))
    assert common.cpu_model(str(cpuinfo)) == "AMD EPYC (family 25, model 17)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert common.cpu_model(str(cpuinfo)) == "Some CPU"
    assert common.cpu_model(str(tmp_path / "missing"))  # platform's name instead


@pytest.mark.parametrize("script,argv", [
    ("accuracy", []), ("augment_cost", []), ("conv_layers", []), ("input_pipeline", []),
    ("large_images", []), ("memory", []), ("official", ["--official=any"]),
    ("profile_step", []), ("throughput", []), ("distill", []),
])
def test_every_benchmark_parses_its_command_line(script, argv):
    """A script's parser breaks only when run, so each one parses here (with its defaults)."""
    args = importlib.import_module(f"bench.{script}").parse_args(argv)
    assert args.json is False and args.results.endswith("RESULTS.md")
