"""bench/memory_summary.py: runs grouped by configuration, chunked against plain, cells."""
import pytest

from bench import memory_summary


def _run(chunk, batch, round_index, step_cpu, peak=3.0, status="ok", **extra):
    run = {"status": status, "stem": "cifar", "chunk_size": chunk, "batch_size": batch,
           "round": round_index, "limit_gib": 20.0, "estimated_gib": None,
           "peak_gib": peak, "built_gib": 0.7, "first_step_wall_s": 50.0,
           "first_step_cpu_s": 30.0, "process_wall_s": 60.0, "process_cpu_s": 40.0}
    if step_cpu is not None:
        run.update(step_wall_s=2 * step_cpu, step_cpu_s=step_cpu)
    run.update(extra)
    return run


def test_summarize_takes_medians_over_rounds_and_compares_with_the_plain_step():
    runs = [_run(0, 256, 0, 10.0), _run(128, 256, 0, 13.0, peak=2.0),
            _run(0, 256, 1, 12.0), _run(128, 256, 1, 15.0, peak=2.5),
            _run(0, 256, 2, 11.0), _run(128, 256, 2, 14.0, peak=2.2)]
    plain, chunked = memory_summary.summarize(runs)
    assert (plain["chunk_size"], chunked["chunk_size"]) == (0, 128)
    assert plain["step_cpu_s"] == 11.0 and chunked["step_cpu_s"] == 14.0
    assert chunked["peak_gib"] == 2.5 and chunked["rounds"] == 3
    assert chunked["cpu_over_plain"] == pytest.approx(14.0 / 11.0)
    assert chunked["wall_over_plain"] == pytest.approx(28.0 / 22.0)
    assert plain["cpu_over_plain"] is None
    assert plain["step_cpu_over_wall"] == pytest.approx(0.5)


def test_cells_of_a_first_step_only_run_and_of_a_skipped_one():
    first_only = memory_summary.summarize([_run(512, 4096, 0, None, peak=9.5)])[0]
    assert memory_summary.peak_cell(first_only) == "9.50"
    assert memory_summary.step_cell(first_only) == "30.0 (0.60) first step, with tracing"
    assert memory_summary.step_cell(first_only, cpu=False) == "50.0 first step, with tracing"
    skipped = {"status": "skipped", "estimated_gib": 41.2, "limit_gib": 20.0}
    assert memory_summary.peak_cell(skipped) == "skipped (estimated 41.2)"
    assert memory_summary.step_cell(skipped) == "-"


def test_line_through_the_peaks_and_the_largest_batch():
    fixed, per_image = memory_summary.fit_line([(256, 3.0, 1.0), (512, 5.0, 1.0)])
    assert (fixed, per_image) == pytest.approx((1.0, 2.0 / 256))
    entries = memory_summary.summarize([_run(0, 256, 0, 1.0, peak=3.0),
                                        _run(0, 512, 0, 1.0, peak=5.0)])
    largest = memory_summary.largest_batches(entries, 24.0)["cifar, plain"]
    assert largest["batch"] == int((24.0 - 1.0) / (2.0 / 256))
    assert largest["extrapolated"] and largest["measured_batch_sizes"] == 2
