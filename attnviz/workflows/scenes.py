"""Generated scenes with one bold object whose location is known exactly.

The zoo trains small attention CNNs on these scenes and then asks of each attention map: does it
find the object? Every scene holds one target shape (the class) drawn bold and filled, on a
background made of a smooth colour gradient, a low-frequency noise texture and, scaled by
``clutter``, distractors that cannot decide the class: thin lines, small dots, soft blobs and small
thin outlines. The object's pixel mask and tight box come with the image. The shapes and their
rasteriser live in :mod:`attnviz.workflows.scene_shapes`, the background and its distractors in
:mod:`attnviz.workflows.scene_background`; this module places the object and draws scenes and
datasets.

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

import numpy as np

from attnviz.layers.zoo_net import CLASSES  # the K = 10 classes; a scene's ``label`` indexes them
from attnviz.workflows.scene_background import LUMA, Background, pick_colour, render_background
from attnviz.workflows.scene_shapes import UNIT_SHAPES, coverage, rotate

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
    background = Background.draw(rng, size, params.clutter)
    colour_draws = rng.random(5)

    label = label if params.label is None else params.label
    scale = scale if params.scale is None else params.scale
    rotation = rotation if params.rotation is None else params.rotation
    if scale * size < _MIN_OBJECT_PX:
        raise ValueError(
            f"a {size} px image makes the random object smaller than {_MIN_OBJECT_PX:.0f} px; give a scale"
        )
    side = scale * size
    shape = [rotate(c, rotation) * side for c in UNIT_SHAPES[label]]
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
    cover = coverage(shape, y0, x0, y1 - y0, x1 - x0)

    if params.colour is None:
        colour = pick_colour(colour_draws, float(background.window_mean(y0, x0, y1, x1) @ LUMA))
    else:
        colour = params.colour

    image = render_background(rng, background, params.clutter, (y0, x0, y1, x1))
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


def _dataset_labels(n: int, seed: int, classes: int = len(CLASSES)) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) % classes
    np.random.default_rng([seed, n]).shuffle(labels)
    return labels


def _make_chunk(
    seeds: Sequence[int],
    labels: Sequence[int | None],
    params: SceneParams,
    scales: Sequence[float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, size = len(seeds), params.size
    scales = [None] * n if scales is None else scales
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    out_labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for i, (seed, label, scale) in enumerate(zip(seeds, labels, scales, strict=True)):
        scene_params = params if label is None else replace(params, label=label)
        if scale is not None:
            scene_params = replace(scene_params, scale=scale)
        scene = make_scene(seed, scene_params)
        images[i], out_labels[i], boxes[i], masks[i] = scene.image, scene.label, scene.box, scene.mask
    return images, out_labels, boxes, masks


def make_dataset(
    n: int,
    seed: int,
    params: SceneParams = SceneParams(),
    *,
    size: int | None = None,
    workers: int = 1,
    classes: int | None = None,
    scale_range: tuple[float, float] | None = None,
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
        classes: draw only the first ``classes`` classes (2 to K; None: all K), balanced the
            same way (labels ``i % classes`` shuffled). Ignored when ``params.label`` is set.
        scale_range: draw each object's scale uniformly from ``(lo, hi)`` (within ``[0.05, 0.4]``)
            with a generator seeded by ``(seed, n, 1)`` instead of from :data:`SCALE_RANGE`; None
            (default) leaves the scenes exactly as ``make_scene`` draws them. Ignored when
            ``params.scale`` is set.

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
    if classes is not None and (not _is_int(classes) or not 2 <= classes <= len(CLASSES)):
        raise ValueError(f"classes must be an integer from 2 to {len(CLASSES)}, got {classes!r}")
    if size is not None:
        params = replace(params, size=size)
    n, seed = int(n), int(seed)
    scales: list[float | None] | None = None
    if scale_range is not None and params.scale is None:
        lo, hi = (float(v) for v in scale_range)
        if not (_SCALE_LIMITS[0] <= lo <= hi <= _SCALE_LIMITS[1]):
            raise ValueError(
                f"scale_range must be (lo, hi) within {list(_SCALE_LIMITS)}, got {scale_range!r}"
            )
        if lo * params.size < _MIN_OBJECT_PX:
            raise ValueError(
                f"scale_range {scale_range!r} makes objects smaller than {_MIN_OBJECT_PX:.0f} px "
                f"on a {params.size} px image"
            )
        scales = [float(v) for v in np.random.default_rng([seed, n, 1]).uniform(lo, hi, n)]
    seeds = [seed * DATASET_SEED_STRIDE + i for i in range(n)]
    k = len(CLASSES) if classes is None else int(classes)
    labels: list[int | None] = (
        [int(v) for v in _dataset_labels(n, seed, k)] if params.label is None else [None] * n
    )
    workers = (os.cpu_count() or 1) if workers == 0 else workers
    workers = min(workers, max(1, n // 64))  # a process is not worth it for a few scenes
    if workers == 1:
        return _make_chunk(seeds, labels, params, scales)
    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_make_chunk, seeds[a:b], labels[a:b], params, None if scales is None else scales[a:b])
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
