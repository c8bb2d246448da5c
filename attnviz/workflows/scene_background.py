"""The backgrounds of the generated scenes: a smooth colour gradient, low-frequency noise and, scaled
by ``clutter``, distractors that cannot decide the class; and the object colour that stands out
from them. Part of :mod:`attnviz.workflows.scenes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["LUMA", "Background", "pick_colour", "render_background"]

#: Rec. 601 luma weights of (r, g, b).
LUMA = np.array([0.299, 0.587, 0.114])
_MIN_CONTRAST = 90.0  # luminance distance of the object's colour from the local background
_BLAS_SINGLE_THREAD_WORK = 200_000  # m * n * k below OpenBLAS's threading threshold (4 * 65536)


@lru_cache(maxsize=16)
def _smooth_basis(size: int, cells: int) -> np.ndarray:
    """``[size, cells]`` weights that spread ``cells`` noise values smoothly over ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(cells)) / 0.6) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=16)
def _background_basis(size: int) -> np.ndarray:
    """``[S, 2 + 5 + 12]`` separable basis of the background: constant, ramp, coarse and fine noise."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    basis = np.concatenate(
        [np.ones((size, 1), np.float32), t[:, None], _smooth_basis(size, 5), _smooth_basis(size, 12)], axis=1
    )
    basis.setflags(write=False)
    return basis


@dataclass(frozen=True)
class Background:
    """Random draws of the smooth background; ``weights [3, m, m]`` pairs with ``_background_basis``.

    Channel ``c`` of the smooth background is ``basis @ weights[c] @ basis.T``: a linear colour
    gradient between two random colours plus coarse (5 x 5) and fine (12 x 12) smooth noise, the
    fine noise and most of the coarse one scaled by clutter. Being separable, it costs one small
    matrix product, and its mean over any window is as cheap.
    """

    weights: np.ndarray
    grain: np.ndarray  # [S, S, 1] faint pixel grain

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int, clutter: float) -> Background:
        """Draw the gradient, the noise and the grain of a ``size`` px background from ``rng``."""
        c0 = rng.uniform(30.0, 225.0, 3)
        c1 = rng.uniform(30.0, 225.0, 3)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        coarse = rng.standard_normal((3, 5, 5))
        fine = rng.standard_normal((3, 12, 12))
        grain = rng.random((size, size, 1), dtype=np.float32)
        grain = 6.0 * grain - 2.5  # faint grain in [-3, 3), plus 0.5 to round by truncation
        weights = np.zeros((3, 19, 19))
        # ramp(y, x) = 0.5 + sin(angle) * t_y + cos(angle) * t_x, in about [-0.2, 1.2]
        weights[:, 0, 0] = c0 + 0.5 * (c1 - c0)
        weights[:, 1, 0] = math.sin(angle) * (c1 - c0)
        weights[:, 0, 1] = math.cos(angle) * (c1 - c0)
        weights[:, 2:7, 2:7] = (12.0 + 18.0 * clutter) / 2.5 * coarse
        weights[:, 7:, 7:] = 30.0 * clutter / 2.5 * fine
        return cls(weights=weights, grain=grain)

    def window_mean(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """``[3]`` mean colour of the smooth background over a window."""
        basis = _background_basis(self.grain.shape[0]).astype(np.float64)
        return basis[y0:y1].mean(axis=0) @ self.weights @ basis[x0:x1].mean(axis=0)


def pick_colour(draws: np.ndarray, local_luma: float) -> tuple[int, int, int]:
    """A random hue (``draws[:3]``) pushed to a luminance far from ``local_luma``.

    The object goes darker or brighter than the background (``draws[3]`` picks where both are
    possible) by at least ``_MIN_CONTRAST`` luma levels, ``draws[4]`` choosing how far.
    """
    base = draws[:3] * 255.0
    side_u, target_u = draws[3], draws[4]
    dark_ok = local_luma - _MIN_CONTRAST >= 0.0
    bright_ok = local_luma + _MIN_CONTRAST <= 255.0
    dark = dark_ok and (not bright_ok or side_u < 0.5)
    luma = float(base @ LUMA)
    if dark:
        target = target_u * max(local_luma - _MIN_CONTRAST, 0.0)
        colour = base * (target / luma) if luma > target else base
    else:
        target = 255.0 - target_u * max(255.0 - local_luma - _MIN_CONTRAST, 0.0)
        colour = 255.0 - (255.0 - base) * ((255.0 - target) / (255.0 - luma)) if luma < target else base
    rgb = np.clip(np.rint(colour), 0, 255).astype(int)
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _away_from(
    rng: np.random.Generator, count: int, size: int, keep_out: tuple[int, int, int, int], pad: float
) -> np.ndarray:
    """``[<=count, 2]`` (y, x) positions outside ``keep_out`` grown by ``pad`` (four tries each)."""
    y0, x0, y1, x1 = keep_out
    pos = rng.uniform(0.0, size, (4, count, 2))
    inside = (pos[..., 0] > y0 - pad) & (pos[..., 0] < y1 + pad)
    inside &= (pos[..., 1] > x0 - pad) & (pos[..., 1] < x1 + pad)
    first = np.argmax(~inside, axis=0)
    found = ~inside.all(axis=0)
    return pos[first, np.arange(count)][found]


def _single_thread_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row blocks small enough that OpenBLAS keeps each product on one thread.

    A threaded product of this size is no faster, and while other processes (a training loop)
    hold the cores its threads wait on each other: scenes came out ten times slower.
    """
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    step = max(1, _BLAS_SINGLE_THREAD_WORK // max(1, a.shape[1] * b.shape[1]))
    for start in range(0, a.shape[0], step):
        np.matmul(a[start : start + step], b, out=out[start : start + step])
    return out


def render_background(
    rng: np.random.Generator, background: Background, clutter: float, keep_out: tuple[int, int, int, int]
) -> np.ndarray:
    """The ``[S, S, 3]`` uint8 background with its distractors, none of them inside ``keep_out``.

    Distractors: soft low-contrast blobs a few pixels wide, thin lines, small dots and small thin
    outlines of circles and squares; all thin, small or hollow, so none looks like a target.
    """
    size = background.grain.shape[0]
    unit = size / 128.0
    n_lines, n_dots, n_blobs, n_outlines = (int(v) for v in rng.binomial([8, 24, 6, 4], clutter))

    # Blobs are separable Gaussians, so they join the background's matrix product.
    blobs = _away_from(rng, n_blobs, size, keep_out, 6.0 * unit)
    sigma = rng.uniform(1.5, 3.5, len(blobs)) * unit
    delta = rng.uniform(-60.0, 60.0, (len(blobs), 3))
    pix = (np.arange(size, dtype=np.float64) + 0.5)[:, None]
    basis = _background_basis(size)
    rows = np.concatenate([basis, np.exp(-0.5 * ((pix - blobs[:, 0]) / sigma) ** 2)], axis=1)
    cols = np.concatenate([basis, np.exp(-0.5 * ((pix - blobs[:, 1]) / sigma) ** 2)], axis=1)
    m = basis.shape[1]
    weights = np.zeros((3, m + len(blobs), m + len(blobs)))
    weights[:, :m, :m] = background.weights
    weights[:, np.arange(m, m + len(blobs)), np.arange(m, m + len(blobs))] = delta.T
    # rows @ weights[c] @ cols.T for every channel c, computed so that the result comes out in
    # [S, S, 3] order (transposing a whole image would cost more than the products).
    right = (weights @ cols.T).transpose(1, 2, 0).reshape(weights.shape[1], 3 * size)
    smooth = _single_thread_matmul(rows.astype(np.float32), right.astype(np.float32)).reshape(size, size, 3)
    smooth += background.grain  # already shifted by +0.5 so that truncation rounds
    np.clip(smooth, 0.0, 255.0, out=smooth)
    image = smooth.astype(np.uint8)

    lines = rng.uniform(0.0, 1.0, (n_lines, 4))  # y, x, length, angle
    line_colours = rng.integers(0, 256, (n_lines, 3))
    dots = _away_from(rng, n_dots, size, keep_out, 3.0 * unit)
    dot_radii = rng.uniform(0.8, 2.0, len(dots)) * unit
    dot_colours = rng.integers(0, 256, (len(dots), 3))
    outlines = _away_from(rng, n_outlines, size, keep_out, 7.0 * unit)
    outline_radii = rng.uniform(2.5, 5.5, len(outlines)) * unit
    outline_colours = rng.integers(0, 256, (len(outlines), 3))
    outline_round = rng.random(len(outlines)) < 0.5
    if n_lines + len(dots) + len(outlines) == 0:
        return image

    canvas = Image.fromarray(image, "RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(unit))
    # Loops over Python floats (.tolist()): the same values, without numpy-scalar overhead.
    for (y, x, length, angle), colour in zip(
        (lines * [size, size, 0.5 * size, 2 * math.pi]).tolist(), line_colours.tolist(), strict=True
    ):
        length += 0.2 * size
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        draw.line([(x, y), end], fill=tuple(colour), width=width)
    for (y, x), r, colour in zip(dots.tolist(), dot_radii.tolist(), dot_colours.tolist(), strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(colour))
    for (y, x), r, colour, is_round in zip(
        outlines.tolist(),
        outline_radii.tolist(),
        outline_colours.tolist(),
        outline_round.tolist(),
        strict=True,
    ):
        shape = draw.ellipse if is_round else draw.rectangle
        shape([x - r, y - r, x + r, y + r], outline=tuple(colour), width=width)
    return np.array(canvas)
