"""How well an attention map finds the object: the pointing game and the energy in the box.

Maps come at their own resolution (a 6x6 feature map, a 96x96 Grad-CAM); every metric first
brings them to the image with :func:`upsample_map` (bilinear, pixel centres aligned, as
``torch.nn.functional.interpolate(..., align_corners=False)``). Boxes are ``(y0, x0, y1, x1)``
pixel indices with ``y1``/``x1`` exclusive, as :class:`attnviz.scenes.Scene` gives them.

* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2016): a hit
  when the map's maximum lies inside the box, or within ``tolerance`` pixels of it. The classic
  setting uses 15 px at 224; attnviz's default is 0 px, since its boxes are tight and its
  objects small.
* Energy in box: the share of the map's mass inside the box, negative values clipped to 0. A
  uniform map scores exactly the box's area share, so ``energy / area_share`` says how many times
  better than uniform the attention is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LocalizationScore",
    "box_area_share",
    "energy_in_box",
    "pointing_game",
    "score_maps",
    "upsample_map",
]

Box = tuple[int, int, int, int]


def _check_heat(heat: np.ndarray) -> np.ndarray:
    arr = np.asarray(heat, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"heat must be a non-empty 2-D map [h, w], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("heat must be finite")
    return arr


def _check_box(box: Sequence[int], image_size: tuple[int, int]) -> Box:
    if len(box) != 4:
        raise ValueError(f"box must be (y0, x0, y1, x1), got {box!r}")
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = image_size
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"box {box!r} is empty or outside the {h}x{w} image")
    return y0, x0, y1, x1


def upsample_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, pixel-centre aligned resize of ``heat`` [h, w] to ``size`` (H, W)."""
    arr = _check_heat(heat)
    if arr.shape == tuple(size):
        return arr
    t = torch.from_numpy(arr)[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()


def pointing_game(
    heat: np.ndarray, box: Sequence[int], image_size: tuple[int, int], tolerance: float = 0.0
) -> bool:
    """True when the upsampled map's maximum (the first one) is inside ``box`` or within ``tolerance`` px."""
    y0, x0, y1, x1 = _check_box(box, image_size)
    up = upsample_map(heat, image_size)
    py, px = np.unravel_index(int(np.argmax(up)), up.shape)
    # distance from the pixel to the box's pixels (0 inside)
    dy = max(y0 - py, 0, py - (y1 - 1))
    dx = max(x0 - px, 0, px - (x1 - 1))
    return bool(np.hypot(dy, dx) <= tolerance)


def box_area_share(box: Sequence[int], image_size: tuple[int, int]) -> float:
    """The box's share of the image area."""
    y0, x0, y1, x1 = _check_box(box, image_size)
    return (y1 - y0) * (x1 - x0) / (image_size[0] * image_size[1])


def energy_in_box(heat: np.ndarray, box: Sequence[int], image_size: tuple[int, int]) -> float:
    """Share of the upsampled map's (non-negative) mass inside ``box``; 0 for an all-zero map."""
    y0, x0, y1, x1 = _check_box(box, image_size)
    up = np.clip(upsample_map(heat, image_size), 0, None)
    total = up.sum()
    return float(up[y0:y1, x0:x1].sum() / total) if total > 0 else 0.0


@dataclass(frozen=True)
class LocalizationScore:
    """Localisation of one kind of map over a set of scenes.

    Attributes:
        name: what was scored (e.g. ``"block 1 · attn3 (cbam_spatial)"``).
        n: number of scenes.
        pointing: fraction of pointing-game hits.
        energy: mean energy in box.
        area_share: mean box area share (what a uniform map scores).
        energy_ratio: ``energy / area_share``; above 1 is better than uniform.
    """

    name: str
    n: int
    pointing: float
    energy: float
    area_share: float
    energy_ratio: float


def score_maps(
    maps: Sequence[np.ndarray], boxes: Sequence[Sequence[int]], image_size: tuple[int, int], name: str
) -> LocalizationScore:
    """Score one map per scene against its box.

    Raises:
        ValueError: different numbers of maps and boxes, none at all, or a bad map or box.
    """
    if len(maps) != len(boxes) or not maps:
        raise ValueError(f"need one box per map, got {len(maps)} maps and {len(boxes)} boxes")
    hits = [pointing_game(m, b, image_size) for m, b in zip(maps, boxes, strict=True)]
    energy = float(np.mean([energy_in_box(m, b, image_size) for m, b in zip(maps, boxes, strict=True)]))
    share = float(np.mean([box_area_share(b, image_size) for b in boxes]))
    return LocalizationScore(name, len(maps), float(np.mean(hits)), energy, share, energy / share)
