"""PNG grids of images, for looking at views and nearest neighbours instead of numbers."""
import numpy as np


def image_grid(rows, pad=2, scale=1, background=255):
    """Tile a list of rows of images (uint8 or float in [0, 1], HxWx3) into one uint8 array.

    Every image is resized (nearest neighbour) to the first image's size times `scale`.
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
            grid[top:top + height, left:left + width] = np.asarray(tile)
    return grid


def save_png(array, path):
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")
    return path


def _to_uint8(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image
