"""bench/memory.py's analysis: runs grouped by configuration, lines through the peaks, cells.

Pure functions of the runs' figures (no TensorFlow, no processes), so the memory bench's
arithmetic can be read and tested apart from the measuring.
"""
from __future__ import annotations

import math
import statistics

from bench import common


def fit_line(points: list[tuple]) -> tuple[float, float] | None:
    """(fixed GiB, GiB per image) of peak = fixed + per_image * batch over measured points.

    `points`: [(batch, peak_gib, built_gib)] of completed runs. Least squares with two or
    more batch sizes; with one, the line through its post-build resident set and its peak.
    """
    if not points:
        return None
    if len({b for b, _, _ in points}) == 1:
        batch, peak, built = points[0]
        return built, max(peak - built, 0.0) / batch
    n = len(points)
    mean_b = sum(b for b, _, _ in points) / n
    mean_p = sum(p for _, p, _ in points) / n
    slope = (sum((b - mean_b) * (p - mean_p) for b, p, _ in points)
             / sum((b - mean_b) ** 2 for b, _, _ in points))
    return mean_p - slope * mean_b, slope


def largest_batch(line: tuple[float, float] | None, budget_gib: float,
                  measured: list[tuple]) -> dict | None:
    """Largest global batch whose fitted peak is within `budget_gib`, and how it was found."""
    if line is None:
        return None
    fixed, per_image = line
    if per_image <= 0 or fixed > budget_gib:
        return None
    batch = int(math.floor((budget_gib - fixed) / per_image))
    fitting = [b for b, p, _ in measured if p <= budget_gib]
    return {"batch": batch, "extrapolated": batch > max(b for b, _, _ in measured),
            "measured_batch_sizes": len({b for b, _, _ in measured}),
            "largest_measured_fitting": max(fitting) if fitting else None,
            "fixed_gib": fixed, "gib_per_1000_images": 1000 * per_image}


def median(values) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> list[dict]:
    """One entry per stem, chunk size and batch: peak (max) and step times (medians over
    the rounds), the chunked step's CPU and wall time over the plain step's at that batch,
    and per stem and chunk size the largest batch within `budget_gib`."""
    keys = sorted({(r["stem"], r["chunk_size"], r["batch_size"]) for r in runs})
    entries = []
    for stem, chunk, batch in keys:
        group = [r for r in runs if (r["stem"], r["chunk_size"], r["batch_size"])
                 == (stem, chunk, batch)]
        ok = [r for r in group if r["status"] == "ok"]
        entry = {"stem": stem, "chunk_size": chunk, "batch_size": batch,
                 "status": "ok" if ok else group[0]["status"], "rounds": len(ok),
                 "note": group[0].get("note", ""), "limit_gib": group[0]["limit_gib"],
                 "peak_gib": max((r["peak_gib"] for r in (ok or group) if "peak_gib" in r),
                                 default=None),
                 "estimated_gib": group[0]["estimated_gib"]}
        for key in ("built_gib", "first_step_wall_s", "first_step_cpu_s", "step_wall_s",
                    "step_cpu_s", "process_wall_s", "process_cpu_s"):
            entry[key] = median(r.get(key) for r in ok)
        entry["step_cpu_over_wall"] = (common.cpu_over_wall(entry["step_cpu_s"],
                                                            entry["step_wall_s"])
                                       if entry["step_wall_s"] else None)
        entries.append(entry)
    for entry in entries:
        plain = next((e for e in entries if e["chunk_size"] == 0 and e["stem"] == entry["stem"]
                      and e["batch_size"] == entry["batch_size"]), None)
        both = entry["chunk_size"] and plain and entry["step_cpu_s"] and plain["step_cpu_s"]
        entry["cpu_over_plain"] = entry["step_cpu_s"] / plain["step_cpu_s"] if both else None
        entry["wall_over_plain"] = entry["step_wall_s"] / plain["step_wall_s"] if both else None
    return entries


def largest_batches(entries: list[dict], budget_gib: float) -> dict:
    """{"stem, step": largest batch summary} from the measured peaks of each stem and step."""
    out = {}
    for stem, chunk in sorted({(e["stem"], e["chunk_size"]) for e in entries}):
        measured = [(e["batch_size"], e["peak_gib"], e["built_gib"]) for e in entries
                    if (e["stem"], e["chunk_size"]) == (stem, chunk) and e["status"] == "ok"]
        out[f"{stem}, {step_name(chunk)}"] = largest_batch(fit_line(measured), budget_gib,
                                                            measured)
    return out


def step_name(chunk: int) -> str:
    """"plain" for chunk size 0, else "chunk C"."""
    return f"chunk {chunk}" if chunk else "plain"


def peak_cell(run: dict) -> str:
    """Peak GiB of a run or configuration, or why there is none."""
    if run["status"] == "ok":
        return f"{run['peak_gib']:.2f}"
    if run["status"] == "over limit":
        return f">{run['limit_gib']:.2f} (killed)"
    if run.get("estimated_gib") is not None:
        return f"skipped (estimated {run['estimated_gib']:.1f})"
    return run["status"]


def step_cell(run: dict, cpu: bool = True) -> str:
    """Wall (and CPU) seconds per timed step, else of the first step, which includes tracing."""
    prefix, note = "step_", ""
    if run.get("step_wall_s") is None:
        if run.get("first_step_wall_s") is None:
            return "-"
        prefix, note = "first_step_", " first step, with tracing"
    if not cpu:
        return f"{run[prefix + 'wall_s']:.1f}{note}"
    return common.time_cell(run[prefix + "wall_s"], run[prefix + "cpu_s"]) + note


def largest_cell(summary: dict | None, budget_gib: float) -> str:
    """The largest batch within the budget and how it was found, or "-"."""
    if summary is None:
        return "-"
    how = ("extrapolated beyond the measured batches" if summary["extrapolated"]
           else "within the measured batches")
    if summary["measured_batch_sizes"] == 1:
        how = "lower bound from one measured batch"
    return f"{summary['batch']} ({how}; {budget_gib:g} GiB)"
