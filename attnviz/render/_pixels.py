"""Heat maps to pixels, shared by every picture of :mod:`attnviz.render`.

Colormap lookup tables, checking and scaling heat maps, bilinear resizing (one map or a stack) and
alpha blending, on RGBX pixels. Nothing here is public API: the renderers
(:mod:`attnviz.render.overlays`, :mod:`attnviz.render.transformer`) build on it.
"""

from __future__ import annotations

import functools
import logging
import math

import matplotlib
import numpy as np
from matplotlib.colors import Colormap
from PIL import Image

__all__ = [
    "blend",
    "check_alpha",
    "check_range",
    "colorize",
    "colour_table",
    "get_cmap",
    "normalized_stack",
    "ranged_stack",
    "resize_bilinear",
    "resize_stack",
    "rgbx_image",
    "scaled_heat",
    "shifted_rgbx",
]

logger = logging.getLogger(__name__)

# Colouring and blending go through lookup tables, so a render is a few array gathers. Every table
# entry is computed with exactly the float64 operations of the direct formulas
# (``np.rint(255 * cmap(x)[:3])`` and ``np.rint((1 - alpha) * image + alpha * colour)``), so the
# pixels equal those of colouring with ``cmap(x)`` and blending in float64. Pixels travel as 4-byte
# RGBX (Pillow's own layout of RGB images): a colour is one aligned word to gather, and Pillow
# converts between RGB and RGBX in C, where numpy is slow on 3-byte pixels.


def get_cmap(cmap: str | Colormap) -> Colormap:
    """The colormap named ``cmap`` in ``matplotlib.colormaps`` (a ``Colormap`` is returned as is)."""
    if isinstance(cmap, Colormap):
        return cmap
    if not isinstance(cmap, str):
        raise TypeError(f"cmap must be a matplotlib colormap name or Colormap, got {type(cmap).__name__}")
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; see matplotlib.colormaps for the names") from None


def _lookup_table(colormap: Colormap) -> np.ndarray:
    """``[N + 1, 4]`` uint8 RGBX, read-only: row i is ``round(255 * colormap(i)[:3])`` for the N
    colours (integer input indexes the colormap's table directly), row N the colour of NaN ("bad")."""
    n = colormap.N
    rgba = np.concatenate([colormap(np.arange(n)), colormap(np.array([np.nan]))]).astype(np.float64)
    table = np.zeros((n + 1, 4), dtype=np.uint8)
    table[:, :3] = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=256)
def _named_lookup_table(name: str) -> np.ndarray:
    # matplotlib.colormaps[name] hands out a fresh copy that rebuilds its table on first use, so a
    # name is resolved once per process. (Unknown names raise, and lru_cache keeps no errors. A
    # custom colormap re-registered under a used name with force=True needs a cache_clear().)
    return _lookup_table(get_cmap(name))


def colour_table(cmap: str | Colormap) -> np.ndarray:
    """The lookup table of ``cmap``: cached for names, rebuilt for ``Colormap`` objects, which are
    mutable (``set_bad``, ``_lut`` edits) and so cannot be cached by identity."""
    if isinstance(cmap, str):
        return _named_lookup_table(cmap)
    return _lookup_table(get_cmap(cmap))


def _colour_index(x: np.ndarray, n: int) -> np.ndarray:
    """Row of the lookup table for each value of ``x`` (clipped to [0, 1]), quantised as
    ``Colormap.__call__`` does for floats: ``int(v * N)``, with ``v == 1`` in the top bin and
    NaN in row N.

    ``v * N`` is exact in float32 when N is a power of two; for any other N it is taken in float64
    like matplotlib (a rounded float32 product could land in the next bin).
    """
    x = np.clip(x, 0.0, 1.0)
    if x.dtype != np.float64 and n & (n - 1):
        x = x.astype(np.float64)
    x *= n
    np.minimum(x, n - 1, out=x)  # moves only v == 1; NaN stays NaN
    if np.isnan(x.min()):
        x[np.isnan(x)] = n
    return x.astype(np.intp)


def colorize(arr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``[..., 4]`` uint8 RGBX colours (X = 0) of ``arr`` through a lookup table."""
    words = table.view(np.uint32).reshape(-1)
    return words.take(_colour_index(arr, table.shape[0] - 1)).view(np.uint8).reshape(*arr.shape, 4)


@functools.lru_cache(maxsize=64)
def _blend_table(alpha: float) -> np.ndarray:
    """``[256 * 256]`` uint8, read-only: entry ``256 * p + c`` is ``round((1 - alpha) * p + alpha * c)``."""
    level = np.arange(256, dtype=np.float64)
    mixed = (1.0 - alpha) * level[:, None] + alpha * level[None, :]
    table = np.clip(np.rint(mixed), 0, 255).astype(np.uint8).reshape(-1)
    table.flags.writeable = False
    return table


_TAKE_CHUNK = 1 << 16
"""Index entries per ``take`` in :func:`blend`: numpy copies a uint16 index to intp before
gathering, and a chunk's copy stays in cache (a whole head grid's would not: about 2x slower)."""


def blend(shifted: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """``round((1 - alpha) * image + alpha * colour)`` per channel, as uint8.

    Args:
        shifted: the image levels as uint16, shifted left by 8 (``image << 8``).
        colour: uint8 colour levels, broadcasting with ``shifted``.
    """
    table = _blend_table(alpha)
    index = shifted | colour
    flat = index.reshape(-1)
    out = np.empty(index.shape, dtype=np.uint8)
    out_flat = out.reshape(-1)
    for start in range(0, flat.size, _TAKE_CHUNK):
        table.take(flat[start : start + _TAKE_CHUNK], out=out_flat[start : start + _TAKE_CHUNK])
    return out


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def _as_heat(heat: np.ndarray) -> np.ndarray:
    """Checks a heat map and returns it as finite float64 ``[h, w]`` (non-finite -> 0, logged)."""
    arr = np.asarray(heat)
    if arr.ndim != 2:
        raise ValueError(f"heat must be a 2-D array [H, W], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"heat must not be empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"heat must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        logger.warning(
            "heat map has %d non-finite value(s) of %d; treating them as 0", int(bad.sum()), arr.size
        )
        arr = np.where(bad, 0.0, arr)
    return arr


def _normalize(arr: np.ndarray) -> np.ndarray:
    """Min-max scales to [0, 1]; a constant map becomes zeros (no division by zero)."""
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo <= 0.0:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


def check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise TypeError(f"value_range must be two numbers (lo, hi), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"value_range must be finite with lo <= hi, got {value_range!r}")
    return lo, hi


def scaled_heat(
    heat: np.ndarray, normalize: bool, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    arr = _as_heat(heat)
    if value_range is not None:
        lo, hi = check_range(value_range)
        if hi <= lo:
            return np.zeros_like(arr)
        arr = (arr - lo) / (hi - lo)
        return np.clip(arr, 0.0, 1.0, out=arr)
    return _normalize(arr) if normalize else np.clip(arr, 0.0, 1.0)


def normalized_stack(maps: np.ndarray) -> np.ndarray:
    """``_normalize(_as_heat(m))`` of every map of an ``[n, h, w]`` stack, in one pass when all are
    real, non-empty and finite (otherwise map by map, for the same errors and warnings)."""
    arr = maps.astype(np.float64) if maps.dtype.kind in "biuf" and maps.size else None
    if arr is None or not np.isfinite(arr).all():
        return np.stack([scaled_heat(m, True) for m in maps])
    lo = arr.min(axis=(1, 2), keepdims=True)
    span = arr.max(axis=(1, 2), keepdims=True) - lo
    return (arr - lo) / np.where(span > 0.0, span, 1.0)  # a constant map: 0 / 1


def ranged_stack(maps: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """``scaled_heat(m, True, value_range)`` of every map of an ``[n, h, w]`` stack, in one pass when
    all are real, non-empty and finite (otherwise map by map, for the same errors and warnings)."""
    arr = maps.astype(np.float64) if maps.dtype.kind in "biuf" and maps.size else None
    if arr is None or not np.isfinite(arr).all():
        return np.stack([scaled_heat(m, True, value_range) for m in maps])
    lo, hi = value_range
    if hi <= lo:
        return np.zeros_like(arr)
    arr = (arr - lo) / (hi - lo)
    return np.clip(arr, 0.0, 1.0, out=arr)


def shifted_rgbx(img: Image.Image) -> np.ndarray:
    """``[H, W, 4]`` uint16 levels of an RGB image as RGBX, shifted left by 8 for :func:`blend`."""
    rgbx = np.frombuffer(img.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(img.height, img.width, 4)
    shifted = rgbx.astype(np.uint16)
    shifted <<= 8
    return shifted


def rgbx_image(rgbx: np.ndarray) -> Image.Image:
    """An RGB image from ``[H, W, 4]`` uint8 RGBX pixels (the 4th byte is dropped)."""
    height, width = rgbx.shape[:2]
    return Image.frombytes("RGB", (width, height), np.ascontiguousarray(rgbx), "raw", "RGBX")


def _resize_f(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's bilinear resize of a 2-D map in float32 ("F" mode) to ``[height, width]``."""
    img = Image.frombytes("F", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr, dtype=np.float32))
    resized = img.resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.frombuffer(resized.tobytes(), dtype=np.float32).reshape(height, width)


def resize_bilinear(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float map to ``[height, width]``: float32 from Pillow, or ``arr`` itself
    (not a copy) when it already has that shape.

    Pillow's resampling places samples at pixel centres (source coordinate
    ``(dst + 0.5) * src / dst - 0.5``, edges replicated), i.e. ``align_corners=False`` in torch terms.
    """
    if arr.shape == (height, width):
        return arr
    return _resize_f(arr, height, width)


def resize_stack(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`resize_bilinear` of every map of an ``[n, h, w]`` stack, as ``[height, n, width]``.

    Pillow resizes in two passes, horizontal then vertical, whose weights depend only on the sizes
    and which compute each output from one row or one column. So a horizontal-only resize of the
    maps stacked top to bottom, then a vertical-only resize of them side by side, gives every map
    exactly its own resize, in two Pillow calls instead of n.
    """
    n, h, w = maps.shape
    if (h, w) == (height, width):
        return maps.transpose(1, 0, 2)
    rows = _resize_f(maps.reshape(n * h, w), n * h, width)
    side_by_side = rows.reshape(n, h, width).transpose(1, 0, 2).reshape(h, n * width)
    return _resize_f(side_by_side, height, n * width).reshape(height, n, width)
