"""bench/augment_cost.py: times this checkout's augmenter, and its rows name both checkouts."""
from bench import augment_cost


def test_measure_times_the_augmenter_and_the_jitter():
    args = augment_cost.parse_args(["--image_size=8", "--batch_size=4", "--calls=1"])
    result = augment_cost.measure(args)
    for part in ("augment", "jitter"):
        assert result[part]["cpu_ms"] > 0 and result[part]["wall_ms"] > 0


def test_rows_give_each_checkout_and_the_ratio_to_the_baseline(tmp_path):
    results = tmp_path / "RESULTS.md"
    args = augment_cost.parse_args(["--baseline=/elsewhere", "--rounds=2",
                                    f"--results={results}"])
    figures = {"augment": {"cpu_ms": 200.0, "wall_ms": 250.0},
               "jitter": {"cpu_ms": 120.0, "wall_ms": 130.0}}
    faster = {"augment": {"cpu_ms": 50.0, "wall_ms": 60.0},
              "jitter": {"cpu_ms": 20.0, "wall_ms": 25.0}}
    result = {"baseline": figures, "this": faster, "rounds": 2,
              "codes": {"baseline": "/elsewhere", "this": augment_cost.ROOT}}
    augment_cost.append_rows(args, result)
    rows = [line for line in results.read_text().splitlines() if line.startswith("| 20")]
    assert len(rows) == 2
    assert "baseline (/elsewhere; medians of 2 rounds) | 200 (250) | 120 (130) | 1.00x |" in rows[0]
    assert "| 50 (60) | 20 (25) | 0.25x |" in rows[1]
