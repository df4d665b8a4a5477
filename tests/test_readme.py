"""The README's library example runs as written, with its sizes shrunk for a test."""
import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# Only sizes change; every call, name and argument is the README's own.
SHRINK = {"width_multiplier=1.0": "width_multiplier=0.125", "batch_size=512": "batch_size=16",
          "epochs=100": "epochs=1", "steps_per_epoch=97": "steps_per_epoch=2",
          "warmup_epochs=10": "warmup_epochs=1"}


def library_example():
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Library API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs():
    code = library_example()
    for old, new in SHRINK.items():
        assert old in code, f"the README example no longer contains {old!r}"
        code = code.replace(old, new)
    rng = np.random.default_rng(0)
    namespace = {
        "images_uint8": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 10, 32),
        "z1": rng.normal(size=(8, 16)).astype("float32"),
        "z2": rng.normal(size=(8, 16)).astype("float32"),
    }
    exec(compile(code, README, "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert namespace["classifier"](namespace["images_uint8"][:2]).shape == (2, 10)
    assert int(namespace["model"].optimizer.iterations) == 2
