"""Heat maps on the pages: every map drawn with its colour bar, on the scale the page chose.

A page offers one :func:`scale_control` (absolute or stretched, :data:`attnviz.core.scales.SCALE_MODES`),
computes one :class:`attnviz.core.scales.MapScale` per map (shared by the maps of one quantity that it
shows side by side: :func:`attnviz.core.scales.shared_scales`) and draws each map with :func:`show_map`:
the overlay on the picture, enlarged for the screen, with the colour bar underneath and the value
range in the caption. Captions and messages pass through :func:`md`, so that formulas such as
``0.5*A + 0.5*I`` keep their asterisks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import streamlit as st
from PIL import Image

from attnviz import render
from attnviz.core.scales import SCALE_MODES, MapScale
from attnviz.workflows.scenes import draw_box

__all__ = [
    "BOX_COLOUR",
    "DISPLAY_WIDTH",
    "SCALE_HELP",
    "boxed_map",
    "error_parts",
    "error_with_details",
    "map_picture",
    "md",
    "scale_control",
    "short",
    "show_map",
]

DISPLAY_WIDTH = 448
"""Pictures are drawn at least this wide (small inputs such as the zoo's 96 px are enlarged by a
whole factor, nearest neighbour), so that the colour bar's text stays readable when the browser
fits the picture to its column."""

BOX_COLOUR = (255, 255, 255)
"""The true box of a generated scene: white stays visible over every colormap of the sidebar."""

SCALE_HELP = (
    "absolute: gates and Grad-CAM on their natural range 0 to 1; attention probabilities, shares of "
    "sampling weight and offset lengths from 0 to the largest value among the maps shown side by side, "
    "so that one colour means one value in all of them. stretched: each map from its own minimum to its "
    "own maximum, which shows the pattern of a nearly flat map but not how strong it is (its colour bar "
    "says so)."
)

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+!|~$])")


def md(text: str) -> str:
    """``text`` with Markdown's (and Streamlit's LaTeX ``$``) special characters escaped, so that it
    shows as written: ``0.5*A + 0.5*I`` keeps its asterisks."""
    return _MARKDOWN.sub(r"\\\1", text)


short = render.shorten
"""``text`` cut to ``limit`` characters with an ellipsis (the full text goes into a tooltip)."""


def scale_control(key: str) -> str:
    """The page's choice of colour scale for its heat maps: ``"absolute"`` or ``"stretched"``."""
    choice = st.segmented_control(
        "Map colour scale", SCALE_MODES, default=SCALE_MODES[0], key=key, help=SCALE_HELP
    )
    return choice or SCALE_MODES[0]


def map_picture(
    picture: Image.Image | np.ndarray,
    values: np.ndarray,
    scale: MapScale,
    cmap: str,
    alpha: float,
    *,
    title: str | None = None,
    min_width: int = DISPLAY_WIDTH,
) -> Image.Image:
    """The overlay of ``values`` on ``picture`` (enlarged to ``min_width``) with its colour bar."""
    big = render.enlarge(picture, max(int(min_width), 1))
    shown = render.overlay(big, values, cmap=cmap, alpha=alpha, value_range=scale.value_range)
    return render.with_colorbar(shown, scale, cmap=cmap, title=title)


def boxed_map(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    heat: np.ndarray | None = None,
    scale: MapScale | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """A generated scene enlarged like every map (:data:`DISPLAY_WIDTH`), optionally overlaid with
    ``heat`` on ``scale``, with its true ``(y0, x0, y1, x1)`` box drawn, and the colour bar underneath
    when there is a scale (without one a heat map is stretched to its own min-max, with no bar)."""
    big = render.enlarge(image, DISPLAY_WIDTH)
    factor = big.width // np.asarray(image).shape[1]
    if heat is not None:
        value_range = scale.value_range if scale is not None else None
        big = render.overlay(big, heat, cmap=cmap, alpha=alpha, value_range=value_range)
    boxed = Image.fromarray(draw_box(np.asarray(big), tuple(v * factor for v in box), BOX_COLOUR, width=2))
    if heat is None or scale is None:
        return boxed
    return render.with_colorbar(boxed, scale, cmap=cmap)


def show_map(
    picture: Image.Image | np.ndarray,
    values: np.ndarray,
    scale: MapScale,
    cmap: str,
    alpha: float,
    caption: str,
    *,
    width: int | Literal["stretch", "content"] = "stretch",
    min_width: int = DISPLAY_WIDTH,
) -> None:
    """Draw a heat map with its colour bar; the caption ends with the values' range and the scale."""
    st.image(
        map_picture(picture, values, scale, cmap, alpha, min_width=min_width),
        caption=md(f"{caption} · {scale.caption(values)}" if caption else scale.caption(values)),
        width=width,
    )


def error_with_details(summary: str, details: Sequence[str] = (), *, icon: str = ":material/error:") -> None:
    """One plain sentence, and what a person who wants to fix it needs in an expander below."""
    st.error(md(summary), icon=icon)
    if details:
        with st.expander("Details"):
            st.code("\n".join(details), language=None, wrap_lines=True)


def error_parts(err: Exception) -> tuple[str, tuple[str, ...]]:
    """(one sentence, details) of an attnviz error: its ``summary`` and ``details`` when it has them
    (missing weights), and the whole message among the details when it says more than the sentence."""
    summary = str(getattr(err, "summary", "") or err)
    details = tuple(getattr(err, "details", ()))
    if str(err) != summary:
        details += (str(err),)
    return summary, details
