"""``summary.json`` of an export bundle, and the strict-JSON numbers in its entries.

``summary.json`` is strict JSON (``allow_nan=False``): every statistic goes through
:func:`finite_or_none`, so a NaN or an infinity is ``null``. :mod:`attnviz.io.export` builds one
entry per result; :func:`summary_json` wraps them with the attnviz version and the time.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from attnviz.core.scales import MapScale, value_range
from attnviz.core.version import __version__

__all__ = ["SUMMARY_FILENAME", "array_stats", "finite_or_none", "scale_entry", "summary_json"]

SUMMARY_FILENAME = "summary.json"
"""Name of the bundle's top-level summary."""


def summary_json(results: list[dict[str, Any]]) -> bytes:
    """``summary.json`` of a bundle from its per-result entries (strict JSON, UTF-8)."""

    summary = {
        "attnviz_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    return json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")


def finite_or_none(x: float) -> float | None:
    """A float for strict JSON: NaN and infinities become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def array_stats(values: np.ndarray) -> dict[str, float | None]:
    """min, max, mean and population std of every entry, in float64 (None each when empty)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None}
    return {
        "min": finite_or_none(v.min()),
        "max": finite_or_none(v.max()),
        "mean": finite_or_none(v.mean()),
        "std": finite_or_none(v.std()),
    }


def scale_entry(values: np.ndarray, scale: MapScale) -> dict[str, Any]:
    """A map's ``{"range": [lo, hi], "scale": {...}}`` entry: its own value range and the colour
    scale it was drawn on (:meth:`attnviz.core.scales.MapScale.to_dict`)."""
    lo, hi = value_range(values)
    return {
        "range": [finite_or_none(lo), finite_or_none(hi)],
        "scale": {k: _json_value(v) for k, v in scale.to_dict().items()},
    }


def _json_value(value: object) -> object:
    return finite_or_none(value) if isinstance(value, float) else value
