"""Colour jitter in one pass: brightness, contrast, saturation and hue in a random order per image.

The four operations are TensorFlow's (`tf.image.adjust_brightness`, `adjust_contrast`,
`adjust_saturation`, `adjust_hue`, each followed by clipping to [0, 1] as keras-cv's layers
do): brightness adds a delta (or multiplies by a factor), contrast scales each channel about
its mean over the image, saturation multiplies S and hue shifts H in HSV. Done one by one,
saturation and hue each convert RGB -> HSV -> RGB and every step is a pass over memory.

Here every image draws its own order. Saturation and hue commute (V is untouched, S is
scaled, H is shifted), so two of them adjacent in an order are one HSV step; brightness and
contrast are per-channel affine maps with a clip ("RGB" steps). Every one of the 24 orders
is a subsequence of the fixed schedule RGB, HSV, RGB, RGB, HSV, RGB (`PHASES`): each image
runs its operations in its phases and the identity in the others, so the batch makes two
HSV steps whatever the orders (one image's order needs two when brightness or contrast
comes between saturation and hue). An HSV step is computed without
`tf.image.rgb_to_hsv`: with V the largest channel and C = V - min the chroma, each channel
is V - C * f_c(H) (f_c the piecewise-linear hue profile of channel c); saturation m makes
C' = min(m C, V) and hue d replaces H by H + d. Each phase is one XLA-compiled function,
which fuses its element-wise work into one or two passes over the batch.
"""
import itertools

import numpy as np
import tensorflow as tf

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
ORDERS = tuple(itertools.permutations(range(4)))
PHASES = ("rgb", "hsv", "rgb", "rgb", "hsv", "rgb")
_KIND = {BRIGHTNESS: "rgb", CONTRAST: "rgb", SATURATION: "hsv", HUE: "hsv"}


def phase_table() -> np.ndarray:
    """[24, 4] int: the phase of `PHASES` that runs each operation, for each of `ORDERS`.

    Operations go to the earliest phase of their kind after the previous operation's; a
    saturation and a hue next to each other in the order share one HSV phase.
    """
    table = np.zeros((len(ORDERS), 4), np.int32)
    for row, order in enumerate(ORDERS):
        phase, previous = -1, None
        for op in order:
            if _KIND[op] == "hsv" and previous is not None and _KIND[previous] == "hsv":
                table[row, op] = phase
            else:
                phase = PHASES.index(_KIND[op], phase + 1)
                table[row, op] = phase
            previous = op
    return table


_TABLE = phase_table()


def _in_phase(phases, op, index):
    """[B] bool: whether operation `op` runs in phase `index` for each image."""
    return tf.equal(phases[:, op], index)


def phase_parameters(params: dict, order: tf.Tensor) -> list:
    """Per-image parameters of each phase of `PHASES` for `order` ([B] indices of `ORDERS`).

    Args:
        params: `SimCLRAugment.jitter_parameters`: "brightness_delta" or
            "brightness_multiplier" and "contrast_multiplier" ([B, 1, 1, 1]),
            "saturation_multiplier" and "hue_delta" ([B]).
        order: [B] int, each image's order.

    Returns:
        One tuple per phase: RGB (scale, mean weight, offset), each [B, 1, 1], for
        clip(scale * x + weight * channel mean + offset); HSV (saturation multiplier, hue
        delta), each [B, 1, 1].
    """
    phases = tf.gather(tf.constant(_TABLE), tf.cast(order, tf.int32))
    contrast = tf.reshape(params["contrast_multiplier"], [-1])
    if "brightness_multiplier" in params:
        b_scale = tf.reshape(params["brightness_multiplier"], [-1])
        b_offset = tf.zeros_like(b_scale)
    else:
        b_offset = tf.reshape(params["brightness_delta"], [-1])
        b_scale = tf.ones_like(b_offset)
    one, zero = tf.ones_like(contrast), tf.zeros_like(contrast)
    result = []
    for index, kind in enumerate(PHASES):
        if kind == "rgb":
            is_b = _in_phase(phases, BRIGHTNESS, index)
            is_c = _in_phase(phases, CONTRAST, index)
            scale = tf.where(is_b, b_scale, tf.where(is_c, contrast, one))
            weight = tf.where(is_c, 1.0 - contrast, zero)
            offset = tf.where(is_b, b_offset, zero)
            result.append(tuple(tf.reshape(v, [-1, 1, 1]) for v in (scale, weight, offset)))
        else:
            saturation = tf.where(_in_phase(phases, SATURATION, index),
                                  tf.reshape(params["saturation_multiplier"], [-1]), one)
            hue = tf.where(_in_phase(phases, HUE, index),
                           tf.reshape(params["hue_delta"], [-1]), zero)
            result.append((tf.reshape(saturation, [-1, 1, 1]), tf.reshape(hue, [-1, 1, 1])))
    return result


def _rgb_step(planes, scale, weight, offset):
    """clip(scale * x + weight * mean + offset): brightness, contrast or the identity."""
    mean = tf.reduce_mean(planes, axis=(2, 3), keepdims=True)
    return tf.clip_by_value(scale * planes + weight * mean + offset, 0.0, 1.0)


def _hue_of(r, g, b, chroma):
    """Hue in sixths of the circle, [-1, 6), as tf.image.rgb_to_hsv computes it (0 for grey).

    The largest channel is found by comparing channels, not by equality with their maximum:
    XLA may compute the maximum in another fusion, with other roundings than the channel.
    """
    inverse = 1.0 / tf.where(chroma > 0, chroma, tf.ones_like(chroma))
    red_max = tf.logical_and(r >= g, r >= b)
    hue = tf.where(red_max, (g - b) * inverse,
                   tf.where(g >= b, (b - r) * inverse + 2.0, (r - g) * inverse + 4.0))
    return tf.where(chroma > 0, hue, tf.zeros_like(hue))


def _hsv_step(planes, saturation, hue_delta):
    """Saturation multiplier and hue shift in HSV, without leaving RGB.

    A pixel is V - C * f_c(H) per channel c, with f_c(h) = clip(min(k, 4 - k), 0, 1) and
    k = (n_c + 6h) mod 6, n = (5, 3, 1) for (R, G, B): the formula tf.image.hsv_to_rgb
    evaluates by sextant. The modulo is k - 6 floor(k / 6): XLA's floormod is a libm call
    per element, ten times slower here.
    """
    r, g, b = planes[0], planes[1], planes[2]
    value = tf.maximum(tf.maximum(r, g), b)
    chroma = value - tf.minimum(tf.minimum(r, g), b)
    new_chroma = tf.minimum(chroma * saturation, value)
    sixths = _hue_of(r, g, b, chroma) + 6.0 * hue_delta
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = n + sixths
        k = k - 6.0 * tf.floor(k * (1.0 / 6.0))
        channels.append(value - new_chroma * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.clip_by_value(tf.stack(channels), 0.0, 1.0)


_rgb_phase = tf.function(_rgb_step, jit_compile=True)
_hsv_phase = tf.function(_hsv_step, jit_compile=True)


@tf.function(jit_compile=True)
def _to_planes(images):
    return tf.transpose(images, [3, 0, 1, 2])


@tf.function(jit_compile=True)
def _to_pixels(planes):
    return tf.transpose(planes, [1, 2, 3, 0])


def _run_phases(images, phases):
    """The schedule, one XLA function per phase, on channel planes [3, B, H, W].

    Planes vectorise (channels last, the per-channel slices are strided). One function for
    the whole schedule runs twice as slow: XLA then recomputes each phase's element-wise
    work inside the next phase's mean instead of storing it.
    """
    planes = _to_planes(images)
    for kind, args in zip(PHASES, phases):
        planes = _rgb_phase(planes, *args) if kind == "rgb" else _hsv_phase(planes, *args)
    return _to_pixels(planes)


def jitter_parameters(uniform, batch, strength: float, brightness: str) -> dict:
    """Per-image draws of the paper's colour jitter of strength s (Chen et al. 2020, app. A).

    Brightness delta U(-0.8s, 0.8s) ("additive", SimCLRv1) or multiplier
    U(max(0, 1-0.8s), 1+0.8s) ("multiplicative", SimCLRv2); contrast and saturation
    multipliers U(1-0.8s, 1+0.8s) (floored at 0); hue delta U(-0.2s, 0.2s).

    Args:
        uniform: `uniform(shape, low, high)`, e.g. a `tf.random.Generator`'s.
        batch: images in the batch.
        strength: s.
        brightness: "additive" or "multiplicative".
    """
    def draw(low, high, rank=1):
        return uniform((batch,) + (1,) * (rank - 1), low, high)

    low, high = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
    if brightness == "multiplicative":
        shift = {"brightness_multiplier": draw(low, high, rank=4)}
    else:
        shift = {"brightness_delta": draw(-0.8 * strength, 0.8 * strength, rank=4)}
    return {**shift, "contrast_multiplier": draw(low, high, rank=4),
            "saturation_multiplier": draw(low, high),
            "hue_delta": draw(-0.2 * strength, 0.2 * strength)}


def color_jitter(images: tf.Tensor, params: dict, order: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast, saturation and hue of each image, in each image's order.

    Args:
        images: float32 [B, H, W, 3] in [0, 1].
        params: per-image draws, as `phase_parameters` takes them.
        order: [B] int in [0, 24): each image's order, an index of `ORDERS`.

    Returns:
        float32 [B, H, W, 3] in [0, 1]: what the four tf.image.adjust_* operations,
        each followed by a clip to [0, 1], give in that order.
    """
    return _run_phases(images, phase_parameters(params, order))
