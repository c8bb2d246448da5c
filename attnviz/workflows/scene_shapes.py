"""The target shapes of the generated scenes, and the rasteriser that draws them exactly.

Each class of :data:`attnviz.layers.zoo_net.CLASSES` is a list of closed contours in (x, y) unit
coordinates (y down): an outline and possibly holes (:data:`SHAPE_CONTOURS`). They are normalised
to unit area and centred on their centroid (:data:`UNIT_SHAPES`), so that a scene's ``scale``
fixes the area whatever the class. :func:`coverage` gives each pixel's covered fraction. Part of
:mod:`attnviz.workflows.scenes`.
"""

from __future__ import annotations

import math

import numpy as np

from attnviz.layers.zoo_net import CLASSES

__all__ = ["SHAPE_CONTOURS", "UNIT_SHAPES", "coverage", "rotate"]

_SUBROWS = 8  # vertical supersampling of the rasteriser (horizontal coverage is exact)


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


#: Class name -> its contours (outline first, then holes), before normalisation. Listed in the
#: order of CLASSES (the zoo's logits); tests/workflows/test_scenes.py checks that it is.
SHAPE_CONTOURS: dict[str, list[np.ndarray]] = {
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
    :func:`coverage` integrates.
    """
    parts = [_signed_area_and_centroid(c) for c in contours]
    signs = np.array([1.0] + [-1.0] * (len(parts) - 1))
    areas = np.array([abs(a) for a, _ in parts]) * signs
    area = areas.sum()
    centroid = sum(a * c for a, (_, c) in zip(areas, parts, strict=True)) / area
    oriented = [c if a * s > 0 else c[::-1] for c, (a, _), s in zip(contours, parts, signs, strict=True)]
    return [(c - centroid) / math.sqrt(area) for c in oriented]


#: ``UNIT_SHAPES[label]``: the contours of ``CLASSES[label]`` at unit area, centroid at the origin.
UNIT_SHAPES: tuple[list[np.ndarray], ...] = tuple(_normalise(SHAPE_CONTOURS[name]) for name in CLASSES)


def rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    """``[N, 2]`` (x, y) points turned by ``degrees`` about the origin, counter-clockwise on screen
    (y points down)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    x, y = points[:, 0], points[:, 1]
    return np.stack([x * c + y * s, -x * s + y * c], axis=1)


def coverage(contours: list[np.ndarray], y0: int, x0: int, h: int, w: int) -> np.ndarray:
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
