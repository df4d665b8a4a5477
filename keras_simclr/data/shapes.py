"""`shapes`, the embedded default data set: generated, so it needs no download.

32x32 RGB images of ten shapes (`SHAPES_CLASSES`) at a random position, scale and
rotation, with random foreground and background colours, a lighting gradient and noise:
colour and position are nuisances, shape is the class. Splits `train` (10,000) and `test`
(2,000), generated with numpy from a fixed seed in about a second and kept in memory,
identical on every machine.
"""
import functools

import numpy as np

from keras_simclr.data.source import ArraySource, DataError, DatasetInfo

DEFAULT_DATASET = "shapes"  # the pipelines' default `dataset`
SHAPES_CLASSES = ("disk", "square", "triangle", "plus", "ring", "frame", "stripes", "star",
                  "half_disk", "pair")
SHAPES_SPLITS = {"train": 10_000, "test": 2_000}
SHAPES_IMAGE_SIZE = 32
_SHAPES_SEED = 20200213  # SimCLR's arXiv date
_SUPERSAMPLE = 2  # anti-aliasing: masks are drawn at 2x and averaged


def _shape_masks(name, u, v):
    """Boolean mask of shape `name` in its own frame (radius about 1), arrays [N, H, W]."""
    r = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if name == "disk":
        return r <= 0.9
    if name == "square":
        return box <= 0.72
    if name == "triangle":
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        dist = np.max([u * np.cos(a) + v * np.sin(a) for a in angles], axis=0)
        return dist <= 0.5
    if name == "plus":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | (
            (np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if name == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if name == "frame":
        return (box <= 0.8) & (box >= 0.45)
    if name == "stripes":
        return (box <= 0.8) & (np.floor((v + 0.8) / 0.32) % 2 == 0)
    if name == "star":
        sector = np.mod(np.arctan2(v, u), 2 * np.pi / 5) - np.pi / 5
        edge = 0.4 + 0.6 * (np.abs(sector) / (np.pi / 5))
        return r <= edge
    if name == "half_disk":
        return (np.hypot(u, v + 0.35) <= 0.95) & (v + 0.35 >= 0)
    if name == "pair":
        return (np.hypot(u - 0.5, v) <= 0.42) | (np.hypot(u + 0.5, v) <= 0.42)
    raise ValueError(name)


def _render_shapes(labels, rng):
    """uint8 images [N, 32, 32, 3] of the given shape classes; nuisances drawn from rng."""
    n, size = len(labels), SHAPES_IMAGE_SIZE
    fine = size * _SUPERSAMPLE
    scale = rng.uniform(0.6, 0.95, n).astype(np.float32)  # large: survive small crops
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    centre = (rng.uniform(-1, 1, (n, 2)) * (1 - 0.8 * scale)[:, None]).astype(np.float32)
    grid = ((np.arange(fine) + 0.5) / fine * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / scale[:, None, None]
    v = (-dx * sin + dy * cos) / scale[:, None, None]
    mask = np.zeros((n, fine, fine), np.float32)
    for label, name in enumerate(SHAPES_CLASSES):
        idx = np.flatnonzero(labels == label)
        mask[idx] = _shape_masks(name, u[idx], v[idx])
    alpha = mask.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))

    # Colours: uniform RGB pairs whose luminance differs enough to survive grayscale.
    luma = np.array([0.299, 0.587, 0.114])
    fg, bg = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
    while True:
        low = np.abs((fg - bg) @ luma) < 0.25
        if not low.any():
            break
        fg[low], bg[low] = rng.uniform(0, 1, (low.sum(), 3)), rng.uniform(0, 1, (low.sum(), 3))
    # A linear lighting gradient across the image and pixel noise.
    direction = rng.uniform(0, 2 * np.pi, n)
    cells = (np.arange(size) + 0.5) / size * 2 - 1
    cy, cx = np.meshgrid(cells, cells, indexing="ij")
    ramp = (np.cos(direction)[:, None, None] * cx + np.sin(direction)[:, None, None] * cy)
    light = 1 + rng.uniform(0, 0.25, n)[:, None, None] * ramp
    image = (bg[:, None, None] * (1 - alpha[..., None]) + fg[:, None, None] * alpha[..., None])
    image = image * light[..., None] + rng.normal(0, 0.04, image.shape)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def shapes_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The `shapes` split as read-only numpy arrays, generated once per process.

    Args:
        split: "train" or "test".

    Returns:
        (uint8 images [N, 32, 32, 3], int64 labels [N]).
    """
    if split not in SHAPES_SPLITS:
        raise DataError(f"{DEFAULT_DATASET} has no split {split!r}; available splits: "
                        f"{', '.join(SHAPES_SPLITS)}")
    index = list(SHAPES_SPLITS).index(split)
    rng = np.random.default_rng([_SHAPES_SEED, index])
    num = SHAPES_SPLITS[split]
    labels = rng.permutation(np.arange(num) % len(SHAPES_CLASSES)).astype(np.int64)
    images = np.concatenate([_render_shapes(labels[i:i + 1000], rng)
                             for i in range(0, num, 1000)])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class ShapesSource(ArraySource):
    """The `shapes` source: records are decoded images with their labels."""

    def __init__(self, *, name=DEFAULT_DATASET, data_dir=None, strict=False):
        del data_dir, strict  # nothing to download, nothing unreadable
        self.info = DatasetInfo(name, dict(SHAPES_SPLITS), SHAPES_CLASSES,
                                SHAPES_IMAGE_SIZE)

    def arrays(self, split):
        return shapes_arrays(split)
