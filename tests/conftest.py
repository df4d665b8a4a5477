"""Shared fixtures: tiny generated images so that tests need no download and no ../shared."""
import keras_simclr  # noqa: F401  (sets the TensorFlow runtime flags before TF is imported)
import numpy as np
import pytest


def blob_images(n, size=16, classes=4, seed=0):
    """n uint8 RGB images with per-image and per-class structure, and their labels.

    Each image is a coarse 4x4 brightness grid, half a fixed per-class template and half
    its own noise, tinted with a random colour and upsampled to `size`: the two views of
    an image share a layout that colour jitter cannot remove, and classes are separable.
    """
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(1234).uniform(0, 1, (classes, 4, 4, 1))
    labels = rng.integers(0, classes, n)
    grid = 0.5 * templates[labels] + 0.5 * rng.uniform(0, 1, (n, 4, 4, 1))
    tinted = grid * rng.uniform(0.3, 1.0, (n, 1, 1, 3))
    upsampled = tinted.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    return (upsampled * 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture
def tiny_images():
    return blob_images(128)


def pytest_collection_modifyitems(items):
    """Keep the tests that share a module-scoped fixture on one xdist worker.

    setup.cfg runs `--dist loadgroup`: each test goes to whichever worker is free, except
    that tests in one `xdist_group` run together. Grouping by the module fixtures
    (a pretraining run, the background multi-replica runs) builds it once, while the
    file's other slow tests are spread over both workers. A file's module fixtures form
    one group, since one of them may build on another.
    """
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        if definitions is None:
            continue
        module = item.module.__name__
        if any(defs[-1].scope == "module" and defs[-1].func.__module__ == module
               for defs in definitions.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(f"{module}.module_fixtures"))
