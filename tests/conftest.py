"""Shared fixtures: tiny generated images so that tests need no download and no ../shared."""
import os

# The test workers (-n 2) share the machine's cores: each TensorFlow process they start
# computes on one intra-op thread rather than on as many as there are cores, which would
# contend with the other worker's.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import keras_simclr  # noqa: E402,F401  (sets the TensorFlow runtime flags before TF is imported)
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


# The files that take 40 s or more of one test worker (`--durations`, summed per file),
# longest first. Each worker runs whole files (`--dist loadfile`) in this order
# (`--no-loadscope-reorder`: xdist otherwise sorts the files by their number of tests), so
# the longest start first and the short ones fill in at the end; started late, one long
# file left a worker running alone for the suite's last minute and a half.
LONGEST_FIRST = ["test_official.py", "test_apps_resilience.py", "test_apps.py",
                 "test_apps_distill.py", "test_distribute.py", "test_model.py",
                 "test_storage.py", "test_cluster.py", "test_gradient_cache.py",
                 "test_data.py", "test_backbones.py"]


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
