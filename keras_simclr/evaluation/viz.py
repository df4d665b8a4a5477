"""PNG pictures for looking at views, neighbours and embeddings instead of numbers.

- `image_grid`: rows of images tiled into one picture (a column can be framed in colour).
- `sample_across_classes`: a seeded choice of images that takes turns over the classes.
- `project_2d`: a 2-D map of features (PCA, or t-SNE with scikit-learn).
- `embedding_map`: those points as coloured dots with a legend of class names and a few
  image thumbnails at their points.

Everything is drawn with PIL and NumPy (no plotting library).
"""
import numpy as np

# Ten well-separated colours (the "tableau" palette), then evenly spaced hues.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
UNLABELLED = (150, 150, 150)
MARK = (220, 30, 30)
# The methods of `project_2d`, with the names shown on a map.
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}


def image_grid(rows: list, pad: int = 2, scale: int = 1, background: int = 255,
               marked_column: int | None = None, mark=MARK) -> np.ndarray:
    """Tile a list of rows of images (uint8 or float in [0, 1], HxWx3) into one uint8 array.

    Args:
        rows: lists of images; every image is resized (nearest neighbour) to the first
            image's size times `scale`.
        pad: pixels between and around the tiles.
        scale: magnification.
        background: grey level of the padding.
        marked_column: index of a column whose tiles get a frame of colour `mark` in the
            padding around them (e.g. the query images of a neighbour grid).
        mark: RGB colour of that frame.

    Returns:
        uint8 array [len(rows) * (H + pad) + pad, columns * (W + pad) + pad, 3].
    """
    from PIL import Image

    first = _to_uint8(rows[0][0])
    height, width = first.shape[0] * scale, first.shape[1] * scale
    columns = max(len(row) for row in rows)
    grid = np.full((len(rows) * (height + pad) + pad, columns * (width + pad) + pad, 3),
                   background, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            tile = Image.fromarray(_to_uint8(image)).resize((width, height), Image.NEAREST)
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            if c == marked_column:
                grid[top - pad:top + height + pad, left - pad:left + width + pad] = mark
            grid[top:top + height, left:left + width] = np.asarray(tile)
    return grid


def save_png(array: np.ndarray, path: str) -> str:
    """Write a uint8 HxWx3 array as a PNG.

    Args:
        array: the picture.
        path: file to write.

    Returns:
        `path`.
    """
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", optimize=True)
    return path


def sample_across_classes(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` examples that take turns over the classes: one of each class
    (classes in a seeded random order), then a second of each, and so on.

    Args:
        labels: int labels of a split, -1 for unlabelled examples.
        count: how many to pick (fewer when the split is smaller).
        seed: random seed of the choice.

    Returns:
        int64 indices into `labels`, grouped by turn (unlabelled data: a random sample).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    if not len(classes):
        return rng.permutation(len(labels))[:count].astype(np.int64)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in rng.permutation(classes)]
    turns = max(len(m) for m in members)
    order = [m[turn] for turn in range(turns) for m in members if turn < len(m)]
    return np.asarray(order[:count], np.int64)


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of `features`.

    Args:
        features: [N, D] embeddings.
        method: "pca" (the two principal axes of the centred features) or "tsne"
            (scikit-learn's t-SNE from a PCA start, perplexity up to 30).
        seed: random seed of t-SNE.

    Returns:
        float32 [N, 2].
    """
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    if method == "pca":
        _, _, axes = np.linalg.svd(x, full_matrices=False)
        return (x @ axes[:2].T).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(x).astype(np.float32)
    raise ValueError(f"unknown projection {method!r}; use one of {tuple(PROJECTIONS)}")


def class_colour(label: int) -> tuple:
    """RGB colour of class `label` (grey for -1, no label).

    Args:
        label: class index.

    Returns:
        (r, g, b) in 0-255.
    """
    if label < 0:
        return UNLABELLED
    if label < len(PALETTE):
        return PALETTE[label]
    import colorsys

    hue = (label - len(PALETTE)) * 0.618034 % 1.0  # golden-ratio steps keep hues apart
    return tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.75, 0.85))


def embedding_map(points: np.ndarray, labels: np.ndarray | None = None,
                  class_names: tuple = (), images: np.ndarray | None = None,
                  thumbnails: int = 12, size: int = 640, title: str = "",
                  seed: int = 0) -> np.ndarray:
    """A picture of 2-D points: dots coloured by class, a legend, thumbnails at a few points.

    Args:
        points: [N, 2] coordinates (e.g. `project_2d`); the map keeps their aspect ratio
            and shows the central 99% of them (outliers are drawn on its edge).
        labels: [N] int classes (-1 or None: no label, grey dots).
        class_names: names of the classes for the legend (default "class i").
        images: [N, H, W, 3] images (uint8 or float in [0, 1]) for the thumbnails.
        thumbnails: how many thumbnails, at points spread over the map (farthest-point
            sampling from a seeded start), each framed in its class colour.
        size: side of the square plot area in pixels.
        title: a line of text above the plot.
        seed: random seed of the drawing order and the thumbnail choice.

    Returns:
        uint8 array [H, W, 3].
    """
    from PIL import Image, ImageDraw, ImageFont

    points = np.asarray(points, np.float64)
    labels = np.full(len(points), -1) if labels is None else np.asarray(labels)
    font = ImageFont.load_default(size=14)
    top, margin, dot = 28 if title else 8, 8, 3
    labelled = sorted(int(c) for c in np.unique(labels[labels >= 0]))
    names = [class_names[c] if c < len(class_names) else f"class {c}" for c in labelled]
    legend = 0 if not labelled else 36 + int(max(font.getlength(n) for n in names))
    canvas = Image.new("RGB", (size + legend, size + top), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, 6), title, fill="black", font=font)

    thumb = 0 if images is None else max(24, size // 14)
    inner = size - 2 * margin - thumb  # thumbnails centred on points stay inside
    # The central 99% of the points fill the plot; the few outliers sit on its edge.
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    span = max(float((high - low).max()), 1e-12)
    xy = (np.clip(points, low, high) - (low + high) / 2) / span * inner + size / 2
    xy[:, 1] = size - xy[:, 1] + top  # y grows upwards on the map
    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(points)):  # no class drawn entirely on top of another
        x, y = xy[i]
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=class_colour(int(labels[i])))

    if thumb and thumbnails:
        for i in _spread(xy, min(thumbnails, len(points)), rng):
            image = Image.fromarray(_to_uint8(images[i])).resize((thumb, thumb), Image.NEAREST)
            left, upper = int(xy[i, 0] - thumb / 2), int(xy[i, 1] - thumb / 2)
            draw.rectangle((left - 3, upper - 3, left + thumb + 2, upper + thumb + 2),
                           fill=class_colour(int(labels[i])))
            canvas.paste(image, (left, upper))
    _draw_legend(draw, font, labelled, names, (size + 8, top + margin), size - 2 * margin)
    return np.asarray(canvas)


def _draw_legend(draw, font, labelled, names, corner, height):
    """One line per class (colour and name) from `corner` down, as many as fit `height`
    pixels; "+ N more" on the last line when some do not fit."""
    rows = max(1, height // 20)
    shown = labelled if len(labelled) <= rows else labelled[:rows - 1]
    for row, (label, name) in enumerate(zip(shown, names)):
        x, y = corner[0], corner[1] + 20 * row
        draw.rectangle((x, y + 3, x + 12, y + 15), fill=class_colour(label))
        draw.text((x + 20, y), name, fill="black", font=font)
    if len(shown) < len(labelled):
        draw.text((corner[0] + 20, corner[1] + 20 * len(shown)),
                  f"+ {len(labelled) - len(shown)} more", fill="black", font=font)


def _spread(xy, count, rng):
    """Indices of `count` points far from each other (greedy farthest-point sampling)."""
    chosen = [int(rng.integers(len(xy)))]
    distance = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    while len(chosen) < count:
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(xy - xy[chosen[-1]], axis=1))
    return chosen


def _to_uint8(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image
