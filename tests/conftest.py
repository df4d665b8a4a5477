"""Shared fixtures: tiny generated images so that tests need no download and no ../shared."""
import keras_simclr  # noqa: F401  (sets the TensorFlow runtime flags before TF is imported)
import numpy as np
import pytest


def blob_images(n, size=16, classes=4, seed=0):
    """n uint8 RGB images of coloured blobs on plain backgrounds, and their class labels.

    Each class puts its blob in a different quadrant; colours are random per image, so
    two views of one image share colours and layout while different images rarely do.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        cy, cx = (0.3 + 0.4 * (label // 2), 0.3 + 0.4 * (label % 2))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)[..., None]
        background, colour = rng.uniform(0, 1, (2, 3))
        images[i] = background * (1 - blob) + colour * blob
    return (images * 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture
def tiny_images():
    return blob_images(128)
