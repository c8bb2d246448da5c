"""Query points picked by a click: the clickable picture with its sliders, and reading the click.

A click on the picture moves the query sliders to the token under it (its centre), the first time
and every time after: the chart's ``on_select`` callback runs once per click, before the page is
drawn again. Plotly sends the clicked point in several shapes; :func:`point_of_click` reads them all.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Mapping
from typing import TypeGuard

import numpy as np
import streamlit as st

from attnviz import render
from ui import compact

__all__ = ["point_of_click", "query_point"]


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _custom_values(custom: object) -> list[float] | None:
    """A point's ``customdata`` as numbers, whatever shape Plotly sent it in: a list, a dict keyed by
    position (``{"0": ..}``), or Plotly 6's typed array (``{"dtype": "f8", "bdata": base64}``)."""
    if isinstance(custom, list | tuple):
        values = list(custom)
    elif isinstance(custom, Mapping) and "bdata" in custom:
        try:
            raw = base64.b64decode(str(custom["bdata"]), validate=True)
            values = np.frombuffer(raw, dtype=np.dtype(str(custom.get("dtype", "f8")))).tolist()
        except (ValueError, TypeError, binascii.Error):
            return None
    elif isinstance(custom, Mapping):
        try:
            values = [custom[k] for k in sorted(custom, key=lambda k: int(k))]
        except (ValueError, TypeError):
            return None
    else:
        return None
    return values if all(_number(v) for v in values) else None


def point_of_click(event: object) -> tuple[float, float] | None:
    """The (y, x) pixel of the token clicked in :func:`attnviz.render.query_figure`, or None.

    ``event`` is what ``st.plotly_chart(on_select=...)`` gives (an attribute object, or the dict kept
    in session state). A point's ``x`` and ``y`` are the token's centre (plain numbers); its
    ``customdata`` ``[row, col, y, x]`` is read only when they are missing, in any shape it arrives.
    """
    selection = event.get("selection") if isinstance(event, Mapping) else getattr(event, "selection", None)
    points = selection.get("points") if isinstance(selection, Mapping) else getattr(selection, "points", None)
    for point in points or []:
        if not isinstance(point, Mapping):
            continue
        x, y = point.get("x"), point.get("y")
        if _number(x) and _number(y):
            return float(y), float(x)
        custom = _custom_values(point.get("customdata"))
        if custom is not None and len(custom) >= 4:
            return float(custom[2]), float(custom[3])
    return None


def _apply_click(chart_key: str, y_key: str, x_key: str, h: int, w: int) -> None:
    """``on_select`` callback of a query picker: move the query sliders to the clicked token."""
    clicked = point_of_click(st.session_state.get(chart_key))
    if clicked is not None:
        st.session_state[y_key] = min(max(round(clicked[0]), 0), h - 1)
        st.session_state[x_key] = min(max(round(clicked[1]), 0), w - 1)


def query_point(
    model: str,
    grid: tuple[int, int],
    stride: tuple[float, float],
    picture: np.ndarray,
    prefix: str = "compare_query",
    stacked: bool = False,
) -> tuple[float, float]:
    """Draw the clickable query picker and the pixel sliders; return the query pixel (y, x).

    The sliders also set the point directly, beside the picture or under it (``stacked``).
    ``prefix`` names the widgets' keys (``<prefix>_y``, ``<prefix>_x``, ``<prefix>_click_<model>``),
    one set per view.
    """
    y_key, x_key = f"{prefix}_y", f"{prefix}_x"
    chart_key = f"{prefix}_click_{model}"
    h, w = picture.shape[:2]
    if y_key not in st.session_state:
        st.session_state[y_key] = h // 2
        st.session_state[x_key] = w // 2
    st.session_state[y_key] = min(int(st.session_state[y_key]), h - 1)
    st.session_state[x_key] = min(int(st.session_state[x_key]), w - 1)
    pick, controls = (st.container(), st.container()) if stacked else st.columns([3, 2])
    with pick:
        point = (float(st.session_state[y_key]), float(st.session_state[x_key]))
        fig = render.query_figure(picture, grid, stride, point, title="Click a position to query it")
        st.plotly_chart(
            compact(fig, 420),
            on_select=functools.partial(_apply_click, chart_key, y_key, x_key, h, w),
            selection_mode="points",
            key=chart_key,
        )
    with controls:
        st.slider("Query pixel y (row)", 0, h - 1, key=y_key)
        st.slider("Query pixel x (column)", 0, w - 1, key=x_key)
        st.caption("Click the picture (or move the sliders): the ring marks the query.")
    return float(st.session_state[y_key]), float(st.session_state[x_key])
