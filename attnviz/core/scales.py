"""Colour scales of heat maps: what a map's values mean, their unit, and which values its colours span.

A heat map without a scale misleads: stretched from its own minimum to its maximum, a CBAM spatial
gate that varies between 0.997 and 1.000 is drawn blue-to-red as if it attended strongly, and two
columns side by side use different colours for the same value. Every map attnviz draws therefore
carries a :class:`MapScale`, and the renderers (:func:`attnviz.render.overlay` with
``value_range``, :func:`attnviz.render.colorbar`) draw with it.

Two modes (:data:`SCALE_MODES`):

* ``"absolute"`` (the default): a quantity with a natural range is drawn on it (gates on 0-1,
  Grad-CAM on 0-1, since pytorch-grad-cam scales each map so that its maximum is 1). Quantities
  without a useful upper bound (attention probabilities spread over many positions, shares of
  sampling weight, offset lengths in pixels) are drawn from 0 to the largest value among the maps
  compared, so that the same colour means the same value in every map that shares the scale.
* ``"stretched"``: each map from its own minimum to its own maximum; the colour bar says so.

Nothing here needs torch or streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GATE",
    "GATE_PRODUCT",
    "GRADCAM",
    "OFFSET_LENGTH",
    "PROBABILITY",
    "ROLLOUT",
    "SAMPLING_SHARE",
    "SCALE_MODES",
    "MapScale",
    "Quantity",
    "check_mode",
    "format_range",
    "map_scale",
    "shared_scales",
    "value_range",
]

SCALE_MODES = ("absolute", "stretched")
"""The scale modes: ``"absolute"`` (natural range, or 0 to the largest compared value) and
``"stretched"`` (each map's own minimum to maximum)."""


@dataclass(frozen=True)
class Quantity:
    """What the values of a heat map are.

    Attributes:
        name: what one value is, for the colour bar (``"gate value"``).
        unit: its unit (``"px"``), or ``""`` for a pure number.
        natural: the range the values can take and are compared on, e.g. ``(0, 1)`` for sigmoid
            gates; None when the absolute scale runs from 0 to the largest compared value.
    """

    name: str
    unit: str
    natural: tuple[float, float] | None

    @property
    def label(self) -> str:
        """``"offset length (px)"``: the name with its unit."""
        return f"{self.name} ({self.unit})" if self.unit else self.name


# The factor a module multiplies the features at a position by (sigmoid, 0 to 1).
GATE = Quantity("gate value", "", (0.0, 1.0))
# Coordinate attention: row gate times column gate, mean over channels (0 to 1).
GATE_PRODUCT = Quantity("gate product", "", (0.0, 1.0))
# Softmax attention on each position; a map's values add up to at most 1.
PROBABILITY = Quantity("attention probability", "", None)
# The read token's attention flowing to each patch through all blocks (adds up to at most 1).
ROLLOUT = Quantity("rollout weight", "", None)
# The share of a deformable module's sampling weight (attention or modulation) per cell; adds up to 1.
SAMPLING_SHARE = Quantity("share of sampling weight", "", None)
# Class-specific relevance, scaled by pytorch-grad-cam so that each map's maximum is 1.
GRADCAM = Quantity("Grad-CAM relevance", "", (0.0, 1.0))
# How far the learned offsets move the sampling points, in model-input pixels.
OFFSET_LENGTH = Quantity("offset length", "px", None)


def check_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`SCALE_MODES`.

    Raises:
        ValueError: for another value.
    """
    if mode not in SCALE_MODES:
        raise ValueError(f"scale must be one of {', '.join(SCALE_MODES)}, got {mode!r}")
    return mode


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of a map; (0, 0) when it has none."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return (0.0, 0.0)
    return (float(finite.min()), float(finite.max()))


def _places(lo: float, hi: float) -> int:
    """Decimals that tell ``lo`` from ``hi`` and show at least two significant digits of the larger."""
    top = max(abs(lo), abs(hi))
    if top == 0:
        return 0
    places = 1 - math.floor(math.log10(top))
    if hi > lo:
        places = max(places, math.floor(-math.log10(hi - lo)) + 1)
    return min(max(places, 0), 8)


def format_range(lo: float, hi: float) -> tuple[str, str]:
    """``lo`` and ``hi`` with the same decimals, enough to tell them apart (``0.997``/``1.000``)."""
    places = _places(float(lo), float(hi))
    return f"{float(lo):.{places}f}", f"{float(hi):.{places}f}"


@dataclass(frozen=True)
class MapScale:
    """The values a heat map's colours span: ``lo`` gets the colormap's first colour, ``hi`` its last.

    Attributes:
        lo, hi: the value range (``lo < hi``, or both 0 for a map with nothing to show).
        quantity: what the values are.
        mode: ``"absolute"`` or ``"stretched"``.
        shared: how many maps are drawn on this scale (side-by-side columns, a grid of heads).
        natural: True when ``(lo, hi)`` is the quantity's natural range.
    """

    lo: float
    hi: float
    quantity: Quantity
    mode: str
    shared: int = 1
    natural: bool = False

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.hi < self.lo:
            raise ValueError(f"a scale needs finite lo <= hi, got {self.lo}, {self.hi}")

    @property
    def value_range(self) -> tuple[float, float]:
        """``(lo, hi)``, what :func:`attnviz.render.overlay` takes as ``value_range``."""
        return (self.lo, self.hi)

    @property
    def stretched(self) -> bool:
        """True when the colours span one map's own minimum to maximum."""
        return self.mode == "stretched"

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """``(values - lo) / (hi - lo)`` clipped to [0, 1], float64; zeros when ``hi == lo``."""
        arr = np.asarray(values, dtype=np.float64)
        span = self.hi - self.lo
        if span <= 0:
            return np.zeros_like(arr)
        return np.clip((arr - self.lo) / span, 0.0, 1.0)

    def ticks(self, n: int = 3) -> list[tuple[float, str]]:
        """``n`` evenly spaced (value, label) pairs from ``lo`` to ``hi`` for a colour bar."""
        if n < 2:
            raise ValueError(f"a colour bar needs at least 2 ticks, got {n}")
        places = _places(self.lo, self.hi)
        return [(float(v), f"{v:.{places}f}") for v in np.linspace(self.lo, self.hi, n)]

    @property
    def how(self) -> str:
        """One phrase: which values the colours span and why."""
        lo, hi = format_range(self.lo, self.hi)
        unit = f" {self.quantity.unit}" if self.quantity.unit else ""
        if self.stretched:
            return f"stretched to this map's own range {lo}–{hi}{unit}"
        if self.natural:
            return f"absolute, natural range {lo}–{hi}{unit}"
        if self.shared > 1:
            return f"absolute {lo}–{hi}{unit} (0 to the largest value of the {self.shared} maps shown)"
        return f"absolute {lo}–{hi}{unit} (0 to this map's largest value)"

    def caption(self, values: np.ndarray | None = None) -> str:
        """``"gate value · values 0.997–1.000 · scale: absolute, natural range 0.0–1.0"``."""
        parts = [self.quantity.label]
        if values is not None:
            lo, hi = format_range(*value_range(values))
            unit = f" {self.quantity.unit}" if self.quantity.unit else ""
            parts.append(f"values {lo}–{hi}{unit}")
        parts.append(f"scale: {self.how}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """The scale for ``summary.json``."""
        return {
            "mode": self.mode,
            "min": self.lo,
            "max": self.hi,
            "quantity": self.quantity.name,
            "unit": self.quantity.unit,
            "natural_range": self.natural,
            "shared_by": self.shared,
        }


def _as_maps(maps: np.ndarray | Iterable[np.ndarray]) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray):
        return [maps]
    return [np.asarray(m) for m in maps]


def map_scale(
    maps: np.ndarray | Iterable[np.ndarray], quantity: Quantity, mode: str = "absolute"
) -> MapScale:
    """One scale for ``maps`` (a single map, or several drawn side by side).

    Args:
        maps: one array or several, of any shapes; non-finite values are ignored.
        quantity: what the values are.
        mode: ``"absolute"``: the quantity's natural range, or 0 to the largest value of ``maps``
            (1 when they have none above 0). ``"stretched"``: the smallest to the largest value of
            ``maps`` (for one map: its own min-max).

    Returns:
        The :class:`MapScale`.

    Raises:
        ValueError: unknown ``mode`` or no maps.
    """
    check_mode(mode)
    arrays = _as_maps(maps)
    if not arrays:
        raise ValueError("map_scale needs at least one map")
    ranges = [value_range(m) for m in arrays]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if mode == "stretched":
        return MapScale(lo, hi, quantity, mode, len(arrays))
    if quantity.natural is not None:
        return MapScale(*quantity.natural, quantity, mode, len(arrays), natural=True)
    return MapScale(0.0, hi if hi > 0 else 1.0, quantity, mode, len(arrays))


def shared_scales(
    maps: Mapping[Hashable, tuple[np.ndarray, Quantity]], mode: str = "absolute"
) -> dict[Hashable, MapScale]:
    """The scale of each map when maps are compared side by side.

    In ``"absolute"`` mode, maps of the same quantity share one scale (:func:`map_scale` of all of
    them), so the same colour means the same value in each. In ``"stretched"`` mode every map gets
    its own minimum-to-maximum scale.

    Args:
        maps: key -> (values, quantity), e.g. one entry per column of a comparison.
        mode: ``"absolute"`` or ``"stretched"``.

    Returns:
        key -> :class:`MapScale`, for every key of ``maps``.
    """
    check_mode(mode)
    if mode == "stretched":
        return {key: map_scale(values, q, mode) for key, (values, q) in maps.items()}
    by_quantity: dict[Quantity, list[Hashable]] = {}
    for key, (_values, q) in maps.items():
        by_quantity.setdefault(q, []).append(key)
    out: dict[Hashable, MapScale] = {}
    for q, keys in by_quantity.items():
        scale = map_scale([maps[k][0] for k in keys], q, mode)
        out.update(dict.fromkeys(keys, scale))
    return {key: out[key] for key in maps}
