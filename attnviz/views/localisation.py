"""How well an attention map finds a known object: the pointing game and energy in the box.

Maps live on a feature grid ``[h, w]``; they are first brought to the image's pixels ``[H, W]`` by
bilinear interpolation with pixel centres aligned (as ``torch.nn.functional.interpolate`` with
``mode="bilinear", align_corners=False``), so a 7 x 7 map scores on a 128 x 128 image as well as
a 16 x 16 one. Boxes are ``(y0, x0, y1, x1)`` pixel indices with ``y1``/``x1`` exclusive (as
:mod:`attnviz.workflows.scenes` makes them).

Metrics:

- **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
  https://arxiv.org/abs/1608.00507): a hit when the map's maximum lies on the object.
- **Energy in box** (the "energy-based pointing game" of Wang et al., "Score-CAM", CVPR-W 2020,
  https://arxiv.org/abs/1910.01279): the share of the map's positive mass that falls inside the
  box. Comparing it with the box's share of the image (``energy_ratio``) tells how much better
  than a uniform map it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CLASSIC_TOLERANCE_FRACTION",
    "LocalizationScore",
    "box_area_share",
    "energy_in_box",
    "pointing_game",
    "score_maps",
    "upsample_map",
]

Box = tuple[int, int, int, int]

CLASSIC_TOLERANCE_FRACTION: float = 15.0 / 224.0
"""The classic pointing game's 15 px tolerance at 224 px, as a fraction of the image side."""


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            values = tuple(image_size)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"image_size must be an int or an (H, W) pair, got {image_size!r}") from None
        if len(values) != 2 or not all(isinstance(v, int | np.integer) for v in values):
            raise ValueError(f"image_size must be an int or an (H, W) pair of ints, got {image_size!r}")
        size = (int(values[0]), int(values[1]))
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {size}")
    return size


def _heat(heat: np.ndarray) -> np.ndarray:
    arr = np.array(heat, dtype=np.float64)  # a copy: the caller's array is never returned
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"heat must be a non-empty 2-D [h, w] map, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("heat must be finite (it holds NaN or inf)")
    return arr


def _box(box: Sequence[int] | np.ndarray, size: tuple[int, int]) -> Box:
    values = np.asarray(box)
    if values.shape != (4,):
        raise ValueError(f"box must be four values (y0, x0, y1, x1), got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or np.all(np.mod(values, 1) == 0)):
        raise ValueError(f"box must hold integer pixel indices, got {box!r}")
    y0, x0, y1, x1 = (int(v) for v in values)
    h, w = size
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(
            f"box {(y0, x0, y1, x1)} is empty or outside the {h}x{w} image "
            f"(need 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w}, y1/x1 exclusive)"
        )
    return y0, x0, y1, x1


def upsample_map(heat: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map to image pixels, pixel centres aligned.

    Computed by ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` in
    float64 (no antialiasing when shrinking). The weights of each output pixel sum to 1, so a
    constant map stays constant.

    Args:
        heat: ``[h, w]`` map on the feature grid.
        size: ``(H, W)`` of the image, or one int for a square image.

    Returns:
        ``[H, W]`` float64 map (a copy of ``heat`` when it has the image's size already).

    Raises:
        ValueError: ``heat`` is not a finite 2-D array, or ``size`` is not positive.
    """
    arr = _heat(heat)
    out_size = _image_size(size)
    if arr.shape == out_size:
        return arr
    up = F.interpolate(torch.from_numpy(arr)[None, None], size=out_size, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _check_tolerance(tolerance: float) -> None:
    if not (isinstance(tolerance, int | float | np.number) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance!r}")


def _hit(up: np.ndarray, box: Box, tolerance: float) -> bool:
    y0, x0, y1, x1 = box
    py, px = (int(i) for i in np.unravel_index(int(np.argmax(up)), up.shape))
    dy = max(y0 - py, 0, py - (y1 - 1))  # distance to the nearest box pixel, 0 inside
    dx = max(x0 - px, 0, px - (x1 - 1))
    return bool(math.hypot(dy, dx) <= tolerance)


def _energy(up: np.ndarray, box: Box) -> float:
    y0, x0, y1, x1 = box
    positive = np.clip(up, 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return 0.0
    return float(positive[y0:y1, x0:x1].sum()) / total


def pointing_game(
    heat: np.ndarray,
    box: Sequence[int] | np.ndarray,
    image_size: int | tuple[int, int],
    tolerance: float = 0.0,
) -> bool:
    """Does the map's maximum land on the box?

    The map is upsampled to the image (:func:`upsample_map`) and its argmax pixel taken; ties go
    to the first pixel in row-major order, so a constant map points at the top-left pixel. It is
    a hit when that pixel lies in the box or within ``tolerance`` pixels (Euclidean distance
    between pixel indices) of a box pixel.

    The default tolerance is 0 because our objects are small (about 18–30 px on 128 px scenes),
    whereas the classic game allows 15 px at 224 px on photos with large objects; pass
    ``CLASSIC_TOLERANCE_FRACTION * side`` for the classic setting.

    Args:
        heat: ``[h, w]`` map on the feature grid (larger means more attention).
        box: ``(y0, x0, y1, x1)`` object box in image pixels, ``y1``/``x1`` exclusive.
        image_size: ``(H, W)`` of the image, or one int for a square image.
        tolerance: slack in pixels, at least 0.

    Returns:
        True for a hit.

    Raises:
        ValueError: bad ``heat``, ``box``, ``image_size`` or ``tolerance``.
    """
    size = _image_size(image_size)
    y0, x0, y1, x1 = _box(box, size)
    _check_tolerance(tolerance)
    return _hit(upsample_map(heat, size), (y0, x0, y1, x1), tolerance)


def box_area_share(box: Sequence[int] | np.ndarray, image_size: int | tuple[int, int]) -> float:
    """The box's share of the image area, the energy a uniform map puts into it.

    Args:
        box: ``(y0, x0, y1, x1)`` in image pixels, ``y1``/``x1`` exclusive.
        image_size: ``(H, W)`` of the image, or one int for a square image.

    Returns:
        ``(y1 - y0) * (x1 - x0) / (H * W)``, in ``(0, 1]``.

    Raises:
        ValueError: bad ``box`` or ``image_size``.
    """
    size = _image_size(image_size)
    y0, x0, y1, x1 = _box(box, size)
    return (y1 - y0) * (x1 - x0) / (size[0] * size[1])


def energy_in_box(
    heat: np.ndarray, box: Sequence[int] | np.ndarray, image_size: int | tuple[int, int]
) -> float:
    """Share of the map's positive mass that falls inside the box.

    The map is upsampled to the image first, and negative values are clipped to 0 after
    upsampling: only attention counts, not its absence (Grad-CAM takes a ReLU for the same
    reason). A map with no positive value at all puts no energy anywhere and scores 0.

    Args:
        heat: ``[h, w]`` map on the feature grid.
        box: ``(y0, x0, y1, x1)`` in image pixels, ``y1``/``x1`` exclusive.
        image_size: ``(H, W)`` of the image, or one int for a square image.

    Returns:
        A share in ``[0, 1]``; a uniform positive map gives :func:`box_area_share`.

    Raises:
        ValueError: bad ``heat``, ``box`` or ``image_size``.
    """
    size = _image_size(image_size)
    return _energy(upsample_map(heat, size), _box(box, size))


@dataclass(frozen=True)
class LocalizationScore:
    """How well one kind of map finds the objects of a set of images.

    Attributes:
        name: what was scored (e.g. ``"cbam.layer3 spatial gate"``).
        n: number of images.
        pointing: fraction of pointing-game hits, in ``[0, 1]``.
        energy: mean energy in the box, in ``[0, 1]``.
        area_share: mean share of the image taken by the boxes (what a uniform map would score).
        energy_ratio: ``energy / area_share``, the ratio of the two means; above 1 is better
            than a uniform map.
    """

    name: str
    n: int
    pointing: float
    energy: float
    area_share: float
    energy_ratio: float


def score_maps(
    maps: Sequence[np.ndarray] | np.ndarray,
    boxes: Sequence[Sequence[int]] | np.ndarray,
    image_size: int | tuple[int, int],
    name: str,
    *,
    tolerance: float = 0.0,
) -> LocalizationScore:
    """Score a set of maps against their objects' boxes.

    Args:
        maps: ``n`` maps ``[h, w]`` (a list, or an ``[n, h, w]`` array); their sizes may differ.
        boxes: ``n`` boxes ``(y0, x0, y1, x1)`` (a list, or an ``[n, 4]`` int array).
        image_size: ``(H, W)`` of the images, or one int for square images.
        name: label of the result.
        tolerance: pointing-game slack in pixels (see :func:`pointing_game`).

    Returns:
        The :class:`LocalizationScore` (plain floats, so ``dataclasses.asdict`` gives JSON).

    Raises:
        ValueError: no maps, a different number of maps and boxes, a bad map or box (the
            message names its index), or a bad ``image_size`` or ``tolerance``.
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    _check_tolerance(tolerance)
    n = len(maps)
    if n == 0:
        raise ValueError("need one box per map and at least one map, got none")
    if len(boxes) != n:
        raise ValueError(f"need one box per map, got {n} maps and {len(boxes)} boxes")
    size = _image_size(image_size)
    hits = np.zeros(n, dtype=bool)
    energies = np.zeros(n)
    shares = np.zeros(n)
    for i, (heat, box) in enumerate(zip(maps, boxes, strict=True)):
        try:
            checked = _box(box, size)
            up = upsample_map(heat, size)  # once for both metrics
        except ValueError as err:
            raise ValueError(f"map {i}: {err}") from err
        hits[i] = _hit(up, checked, tolerance)
        energies[i] = _energy(up, checked)
        shares[i] = box_area_share(checked, size)
    energy, area_share = float(energies.mean()), float(shares.mean())
    return LocalizationScore(
        name=name,
        n=n,
        pointing=float(hits.mean()),
        energy=energy,
        area_share=area_share,
        energy_ratio=energy / area_share,
    )
