"""Generated scenes with one bold object whose location is known exactly.

The zoo trains small attention CNNs on these scenes and then asks of each attention map: does it
find the object? Every scene holds one target shape (the class) drawn bold and filled, on a
background made of a smooth colour gradient, a low-frequency noise texture and, scaled by
``clutter``, distractors that cannot decide the class: thin lines, small dots, soft blobs and small
thin outlines. The object's pixel mask and tight box come with the image.

Coordinates: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)`` (row ``y``, column ``x``); a
relative position ``(0, 0)`` is the top-left corner of the image and ``(1, 1)`` its bottom-right
corner. Boxes are ``(y0, x0, y1, x1)`` pixel indices with ``y1``/``x1`` exclusive.

Scenes are deterministic: ``make_scene(seed, params)`` returns identical bytes for the same seed
and parameters, and ``make_scene(seed, scene.params)`` rebuilds a scene from its resolved
parameters. The object's random choices are drawn before the background's and the distractors'
from the one generator, so two scenes that differ only in ``clutter`` share the object (class,
place, size, rotation, colour) and the background's gradient; two that differ only in ``label``
share the size, the rotation and the gradient, and nearly the place (the random centre is drawn
within the range where the object fits, which depends on its shape).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from attnviz.layers.zoo_net import CLASSES  # the K = 10 classes; a scene's ``label`` indexes them

__all__ = [
    "CLASSES",
    "DATASET_SEED_STRIDE",
    "SCALE_RANGE",
    "Scene",
    "SceneParams",
    "draw_box",
    "make_dataset",
    "make_scene",
]

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

DATASET_SEED_STRIDE: int = 1_000_003
"""Scene ``i`` of ``make_dataset(n, seed)`` uses the seed ``seed * DATASET_SEED_STRIDE + i``."""

SCALE_RANGE: tuple[float, float] = (0.14, 0.24)
"""Range of the random object scale: the object's area is ``scale**2`` of the image (2–6 %)."""

_SCALE_LIMITS = (0.05, 0.4)  # allowed explicit scales; at 0.4 every class fits at any rotation
_MIN_OBJECT_PX = 8.0  # smallest object side (sqrt of its area) in pixels
_MIN_SIZE = 64
_MARGIN_PX = 2.0  # the object keeps this far from the image border
_SUBROWS = 8  # vertical supersampling of the rasteriser (horizontal coverage is exact)
_MIN_CONTRAST = 90.0  # luminance distance of the object's colour from the local background
_LUMA = np.array([0.299, 0.587, 0.114])
_BLAS_SINGLE_THREAD_WORK = 200_000  # m * n * k below OpenBLAS's threading threshold (4 * 65536)


# --- target shapes -------------------------------------------------------------------------------
# Each class is a list of closed contours in (x, y) unit coordinates (y down): an outline and
# possibly holes. They are normalised below to unit area and centred on their centroid, so that
# ``scale`` fixes the area whatever the class.


def _regular(n: int, radius: float = 1.0, phase_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(phase_deg + np.arange(n) * 360.0 / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.5) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    angles = np.deg2rad(-90.0 + np.arange(2 * points) * 180.0 / points)
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross(half_width: float = 0.36) -> np.ndarray:
    a = half_width
    return np.array(
        [
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
        ],
        dtype=float,
    )


def _arrow() -> np.ndarray:
    # Points right: a bold shaft and a wide head.
    return np.array(
        [(-1, -0.24), (0.1, -0.24), (0.1, -0.62), (1, 0), (0.1, 0.62), (0.1, 0.24), (-1, 0.24)], dtype=float
    )


def _letter_h() -> np.ndarray:
    o, i, b = 0.8, 0.42, 0.19  # outer and inner half-widths, half-height of the crossbar
    return np.array(
        [
            (-o, -1),
            (-i, -1),
            (-i, -b),
            (i, -b),
            (i, -1),
            (o, -1),
            (o, 1),
            (i, 1),
            (i, b),
            (-i, b),
            (-i, 1),
            (-o, 1),
        ],
        dtype=float,
    )


_SHAPES: dict[str, list[np.ndarray]] = {
    "circle": [_regular(96)],
    "square": [np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)],
    "triangle": [_regular(3)],
    "cross": [_cross()],
    "star": [_star()],
    "ring": [_regular(96), _regular(96, radius=0.55)],
    "diamond": [np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], dtype=float)],
    "hexagon": [_regular(6, phase_deg=0.0)],
    "arrow": [_arrow()],
    "letter_h": [_letter_h()],
}

# _SHAPES lists the shapes in the order of CLASSES (the zoo's logits); tests/ checks that it does.


def _signed_area_and_centroid(contour: np.ndarray) -> tuple[float, np.ndarray]:
    x, y = contour[:, 0], contour[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    centroid = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)
    return float(area), centroid


def _normalise(contours: list[np.ndarray]) -> list[np.ndarray]:
    """Unit area, centroid at the origin, holes oriented against the outline.

    The first contour is the outline, the others are holes inside it. With opposite orientations
    the winding number is 1 inside the shape and 0 elsewhere (holes included), which is what
    :func:`_coverage` integrates.
    """
    parts = [_signed_area_and_centroid(c) for c in contours]
    signs = np.array([1.0] + [-1.0] * (len(parts) - 1))
    areas = np.array([abs(a) for a, _ in parts]) * signs
    area = areas.sum()
    centroid = sum(a * c for a, (_, c) in zip(areas, parts, strict=True)) / area
    oriented = [c if a * s > 0 else c[::-1] for c, (a, _), s in zip(contours, parts, signs, strict=True)]
    return [(c - centroid) / math.sqrt(area) for c in oriented]


_UNIT_SHAPES: tuple[list[np.ndarray], ...] = tuple(_normalise(_SHAPES[name]) for name in CLASSES)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    # Counter-clockwise on screen (y points down).
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    x, y = points[:, 0], points[:, 1]
    return np.stack([x * c + y * s, -x * s + y * c], axis=1)


def _coverage(contours: list[np.ndarray], y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """``[h, w]`` fraction of each pixel of the window at ``(y0, x0)`` that the shape covers.

    Scanline rasteriser: every pixel row is sampled on ``_SUBROWS`` horizontal lines, and along
    each line the coverage is exact. Each edge crossing a line starts (or ends) a run of winding
    number +-1 at its x; integrated over a pixel column, a crossing at ``x = q + f`` adds
    ``1 - f`` to column ``q`` and 1 to every later one, i.e. a step of ``1 - f`` at ``q`` and
    ``f`` at ``q + 1`` in a cumulative sum. No sorting is needed, as the winding number is 1
    inside the shape and 0 outside (see :func:`_normalise`). The window must hold the shape.
    """
    pts = np.concatenate(contours) - (x0, y0)
    nxt = np.concatenate([np.roll(c, -1, axis=0) for c in contours]) - (x0, y0)
    xa, ya, xb, yb = pts[:, 0], pts[:, 1], nxt[:, 0], nxt[:, 1]
    # Line k lies at y = (k + 0.5) / _SUBROWS; an edge crosses it when min(ya, yb) <= y < max(ya, yb),
    # half-open so that a line through a vertex counts it once.
    k_lo = np.ceil(np.minimum(ya, yb) * _SUBROWS - 0.5).astype(np.int64)
    counts = np.ceil(np.maximum(ya, yb) * _SUBROWS - 0.5).astype(np.int64) - k_lo
    edge = np.repeat(np.arange(len(counts)), counts)  # one entry per crossing
    k = k_lo[edge] + np.arange(len(edge)) - (np.cumsum(counts) - counts)[edge]
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges cross no line
        slope = (xb - xa) / (yb - ya)
    x = xa[edge] + ((k + 0.5) / _SUBROWS - ya[edge]) * slope[edge]
    sign = np.sign(yb - ya)[edge]
    q = np.floor(x).astype(np.int64)
    f = x - q
    at = (k // _SUBROWS) * (w + 2) + q
    steps = np.bincount(
        np.concatenate([at, at + 1]),
        weights=np.concatenate([sign * (1 - f), sign * f]),
        minlength=h * (w + 2),
    )
    winding = np.cumsum(steps.reshape(h, w + 2), axis=1)[:, :w] / _SUBROWS
    return np.clip(np.abs(winding), 0.0, 1.0)  # the sign only tells the orientation


# --- parameters and results ----------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class SceneParams:
    """What to draw; ``None`` fields are chosen at random from the scene's seed.

    Attributes:
        size: side ``S`` of the square image in pixels (at least 64).
        label: class index into :data:`CLASSES`, or ``None`` for a random class.
        center: relative ``(y, x)`` position of the object's centroid, each in ``[0, 1]``
            (``(0.5, 0.5)`` is the image centre), or ``None`` for a random place. The object always
            lies fully inside the image (2 px from the border): a centre too close to the border is
            moved inwards just as far as needed.
        scale: object size as a fraction of the image side, measured as the square root of its
            area, so the object covers ``scale**2`` of the image whatever its class; in
            ``[0.05, 0.4]`` and at least 8 px. ``None`` draws it uniformly from
            :data:`SCALE_RANGE` (``[0.14, 0.24]``: 2–6 % of the image).
        clutter: amount of background texture and distractors, in ``[0, 1]``; 0 leaves a smooth
            gradient with faint texture and no distractors.
        rotation: counter-clockwise rotation of the object in degrees, or ``None`` for a random
            one in ``[0, 360)``.
        colour: object colour as ``(r, g, b)`` in ``0..255``, or ``None`` for a random hue made
            at least 90 luma levels (Rec. 601) darker or brighter than the mean of the smooth
            background under the object; one of the two sides always has room.
    """

    size: int = 128
    label: int | None = None
    center: tuple[float, float] | None = None
    scale: float | None = None
    clutter: float = 0.5
    rotation: float | None = None
    colour: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.size) or self.size < _MIN_SIZE:
            raise ValueError(f"size must be an integer of at least {_MIN_SIZE} pixels, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        if self.label is not None:
            if not _is_int(self.label) or not 0 <= self.label < len(CLASSES):
                raise ValueError(f"label must be an integer in [0, {len(CLASSES)}), got {self.label!r}")
            object.__setattr__(self, "label", int(self.label))
        if self.center is not None:
            center = tuple(float(v) for v in np.asarray(self.center, dtype=float).reshape(-1))
            if len(center) != 2 or not all(0.0 <= v <= 1.0 for v in center):
                raise ValueError(f"center must be a relative (y, x) pair in [0, 1], got {self.center!r}")
            object.__setattr__(self, "center", center)
        if self.scale is not None:
            lo, hi = _SCALE_LIMITS
            if not (isinstance(self.scale, int | float | np.number) and lo <= self.scale <= hi):
                raise ValueError(f"scale must be in [{lo}, {hi}], got {self.scale!r}")
            if self.scale * self.size < _MIN_OBJECT_PX:
                raise ValueError(
                    f"scale {self.scale} makes the object smaller than {_MIN_OBJECT_PX:.0f} px "
                    f"on a {self.size} px image"
                )
            object.__setattr__(self, "scale", float(self.scale))
        if not (isinstance(self.clutter, int | float | np.number) and 0.0 <= self.clutter <= 1.0):
            raise ValueError(f"clutter must be in [0, 1], got {self.clutter!r}")
        object.__setattr__(self, "clutter", float(self.clutter))
        if self.rotation is not None:
            if not (isinstance(self.rotation, int | float | np.number) and math.isfinite(self.rotation)):
                raise ValueError(f"rotation must be a finite number of degrees, got {self.rotation!r}")
            object.__setattr__(self, "rotation", float(self.rotation))
        if self.colour is not None:
            colour = tuple(self.colour)
            if len(colour) != 3 or not all(_is_int(v) and 0 <= v <= 255 for v in colour):
                raise ValueError(f"colour must be three integers in 0..255, got {self.colour!r}")
            object.__setattr__(self, "colour", tuple(int(v) for v in colour))


@dataclass(frozen=True, eq=False)
class Scene:
    """One generated scene and where its object is.

    Attributes:
        image: ``[S, S, 3]`` uint8 RGB image (read-only).
        label: class index into :data:`CLASSES`.
        class_name: ``CLASSES[label]``.
        box: ``(y0, x0, y1, x1)`` tight pixel bounds of ``mask`` (``y1``/``x1`` exclusive).
        mask: ``[S, S]`` bool, the object's pixels: those at least half covered by the shape
            (read-only).
        seed: the seed the scene was made from.
        params: the parameters with every random choice filled in (label, centre, scale,
            rotation, colour), so ``make_scene(seed, params)`` rebuilds the same scene.
    """

    image: np.ndarray
    label: int
    class_name: str
    box: Box
    mask: np.ndarray
    seed: int
    params: SceneParams = field(default_factory=SceneParams)

    def __post_init__(self) -> None:
        for name in ("image", "mask"):
            arr = np.ascontiguousarray(getattr(self, name))
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)


# --- drawing -------------------------------------------------------------------------------------


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
class _Background:
    """Random draws of the smooth background; ``weights [3, m, m]`` pairs with ``_background_basis``.

    Channel ``c`` of the smooth background is ``basis @ weights[c] @ basis.T``: a linear colour
    gradient between two random colours plus coarse (5 x 5) and fine (12 x 12) smooth noise, the
    fine noise and most of the coarse one scaled by clutter. Being separable, it costs one small
    matrix product, and its mean over any window is as cheap.
    """

    weights: np.ndarray
    grain: np.ndarray  # [S, S, 1] faint pixel grain

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int, clutter: float) -> _Background:
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


def _pick_colour(draws: np.ndarray, local_luma: float) -> tuple[int, int, int]:
    """A random hue (``draws[:3]``) pushed to a luminance far from ``local_luma``.

    The object goes darker or brighter than the background (``draws[3]`` picks where both are
    possible) by at least ``_MIN_CONTRAST`` luma levels, ``draws[4]`` choosing how far.
    """
    base = draws[:3] * 255.0
    side_u, target_u = draws[3], draws[4]
    dark_ok = local_luma - _MIN_CONTRAST >= 0.0
    bright_ok = local_luma + _MIN_CONTRAST <= 255.0
    dark = dark_ok and (not bright_ok or side_u < 0.5)
    luma = float(base @ _LUMA)
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


def _render_background(
    rng: np.random.Generator, background: _Background, clutter: float, keep_out: tuple[int, int, int, int]
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


def make_scene(seed: int, params: SceneParams = SceneParams()) -> Scene:
    """Draw one scene.

    Args:
        seed: non-negative integer; it seeds a ``numpy.random.Generator`` that makes every random
            choice, so the same seed and parameters give identical bytes.
        params: what to draw; its ``None`` fields are drawn at random.

    Returns:
        The scene: ``image [S, S, 3]`` uint8, ``mask [S, S]`` bool, ``box``, ``label`` and the
        resolved ``params``.

    Raises:
        ValueError: ``seed`` is not a non-negative integer, or a random scale makes the object
            too small for ``params.size``.
        TypeError: ``params`` is not a :class:`SceneParams`.
    """
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(params, SceneParams):
        raise TypeError(f"params must be a SceneParams, got {type(params).__name__}")
    seed = int(seed)
    size = params.size
    rng = np.random.default_rng(seed)

    # Draws whose number never depends on params come first, so that the object, its colour and
    # the smooth background stay put when only label, clutter or another field changes.
    label = int(rng.integers(len(CLASSES)))
    center_u = rng.random(2)
    scale = float(rng.uniform(*SCALE_RANGE))
    rotation = float(rng.uniform(0.0, 360.0))
    background = _Background.draw(rng, size, params.clutter)
    colour_draws = rng.random(5)

    label = label if params.label is None else params.label
    scale = scale if params.scale is None else params.scale
    rotation = rotation if params.rotation is None else params.rotation
    if scale * size < _MIN_OBJECT_PX:
        raise ValueError(
            f"a {size} px image makes the random object smaller than {_MIN_OBJECT_PX:.0f} px; give a scale"
        )
    side = scale * size
    shape = [_rotate(c, rotation) * side for c in _UNIT_SHAPES[label]]
    lo = np.min(shape[0], axis=0)  # (x, y) extent around the centroid; holes lie inside
    hi = np.max(shape[0], axis=0)
    lower = np.array([_MARGIN_PX - lo[1], _MARGIN_PX - lo[0]])  # (y, x) range of the centroid
    upper = np.array([size - _MARGIN_PX - hi[1], size - _MARGIN_PX - hi[0]])
    if params.center is None:
        rel = (lower + center_u * (upper - lower)) / size
        center = (float(rel[0]), float(rel[1]))
    else:
        center = params.center
    cy, cx = np.clip(np.array(center) * size, lower, upper)
    shape = [c + np.array([cx, cy]) for c in shape]
    y0, x0 = math.floor(cy + lo[1]), math.floor(cx + lo[0])
    y1, x1 = math.ceil(cy + hi[1]), math.ceil(cx + hi[0])
    cover = _coverage(shape, y0, x0, y1 - y0, x1 - x0)

    if params.colour is None:
        colour = _pick_colour(colour_draws, float(background.window_mean(y0, x0, y1, x1) @ _LUMA))
    else:
        colour = params.colour

    image = _render_background(rng, background, params.clutter, (y0, x0, y1, x1))
    cov = cover[..., None].astype(np.float32)
    patch = image[y0:y1, x0:x1] * (1.0 - cov) + np.array(colour, dtype=np.float32) * cov
    image[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)

    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = cover >= 0.5
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    resolved = replace(params, label=label, center=center, scale=scale, rotation=rotation, colour=colour)
    return Scene(
        image=image, label=label, class_name=CLASSES[label], box=box, mask=mask, seed=seed, params=resolved
    )


def _dataset_labels(n: int, seed: int) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    np.random.default_rng([seed, n]).shuffle(labels)
    return labels


def _make_chunk(
    seeds: Sequence[int], labels: Sequence[int | None], params: SceneParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, size = len(seeds), params.size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    out_labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for i, (seed, label) in enumerate(zip(seeds, labels, strict=True)):
        scene = make_scene(seed, params if label is None else replace(params, label=label))
        images[i], out_labels[i], boxes[i], masks[i] = scene.image, scene.label, scene.box, scene.mask
    return images, out_labels, boxes, masks


def make_dataset(
    n: int,
    seed: int,
    params: SceneParams = SceneParams(),
    *,
    size: int | None = None,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` scenes as stacked arrays.

    Scene ``i`` is ``make_scene(seed * 1_000_003 + i, params)`` (see :data:`DATASET_SEED_STRIDE`),
    except that when ``params.label`` is ``None`` its label is fixed to ``labels[i]``: the labels
    are ``i % K`` shuffled by a generator seeded with ``(seed, n)``, so every class appears
    ``n // K`` or ``n // K + 1`` times and accuracy means something.

    Args:
        n: number of scenes (at least 1).
        seed: non-negative integer dataset seed.
        params: parameters shared by all scenes (their ``None`` fields vary per scene).
        size: image side; overrides ``params.size`` when given.
        workers: processes to draw with (1: in this process; 0: one per CPU).

    Returns:
        ``images [n, S, S, 3]`` uint8, ``labels [n]`` int64, ``boxes [n, 4]`` int64 as
        ``(y0, x0, y1, x1)`` with ``y1``/``x1`` exclusive, ``masks [n, S, S]`` bool.

    Raises:
        ValueError: ``n``, ``seed`` or ``workers`` is out of range, or ``size`` is invalid.
    """
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_int(workers) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if not isinstance(params, SceneParams):
        raise TypeError(f"params must be a SceneParams, got {type(params).__name__}")
    if size is not None:
        params = replace(params, size=size)
    n, seed = int(n), int(seed)
    seeds = [seed * DATASET_SEED_STRIDE + i for i in range(n)]
    labels: list[int | None] = (
        [int(v) for v in _dataset_labels(n, seed)] if params.label is None else [None] * n
    )
    workers = (os.cpu_count() or 1) if workers == 0 else workers
    workers = min(workers, max(1, n // 64))  # a process is not worth it for a few scenes
    if workers == 1:
        return _make_chunk(seeds, labels, params)
    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_make_chunk, seeds[a:b], labels[a:b], params)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        parts = [f.result() for f in futures]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))  # type: ignore[return-value]


def draw_box(
    image: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = (255, 0, 0), width: int = 2
) -> np.ndarray:
    """Draw a box outline just outside ``box`` so that the boxed pixels stay visible.

    Args:
        image: ``[H, W, 3]`` uint8 image (not modified).
        box: ``(y0, x0, y1, x1)`` with ``y1``/``x1`` exclusive.
        colour: outline colour ``(r, g, b)``.
        width: outline width in pixels; the parts beyond the image border are clipped.

    Returns:
        A copy of ``image`` with the outline drawn.

    Raises:
        ValueError: bad image shape or dtype, bad box, colour or width.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an [H, W, 3] uint8 array, got {image.shape} {image.dtype}")
    if len(box) != 4 or not all(_is_int(v) for v in box):
        raise ValueError(f"box must be four integers (y0, x0, y1, x1), got {box!r}")
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (y0 < y1 and x0 < x1):
        raise ValueError(f"box must have y0 < y1 and x0 < x1, got {box!r}")
    if not _is_int(width) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if len(colour) != 3 or not all(_is_int(v) and 0 <= v <= 255 for v in colour):
        raise ValueError(f"colour must be three integers in 0..255, got {colour!r}")
    out = image.copy()
    h, w = out.shape[:2]
    ya, yb, xa, xb = y0 - width, y1 + width, x0 - width, x1 + width
    rgb = np.array(colour, dtype=np.uint8)
    for r0, r1, c0, c1 in (
        (ya, y0, xa, xb),  # top
        (y1, yb, xa, xb),  # bottom
        (y0, y1, xa, x0),  # left
        (y0, y1, x1, xb),  # right
    ):
        r0, r1, c0, c1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] = rgb
    return out
