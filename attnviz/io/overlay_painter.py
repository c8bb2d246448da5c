"""Overlays of one result with their colour bars, as the export bundle draws them.

:class:`OverlayPainter` enlarges the crop the model saw by a whole factor (nearest neighbour) to a
readable width once, then draws each map on it with the colour bar strip of its
:class:`attnviz.core.scales.MapScale` underneath, and returns the PNG with the map's entry for
``summary.json`` (:func:`attnviz.io.summary.scale_entry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attnviz import render
from attnviz.core.scales import PROBABILITY, Quantity, map_scale
from attnviz.io.summary import scale_entry

__all__ = ["OverlayPainter"]


class OverlayPainter:
    """Draws one result's overlays with their colour bars, on the enlarged crop, in one style.

    Args:
        picture: the crop the model saw, ``[H, W, 3]`` uint8.
        cmap: colormap of the overlays.
        alpha: opacity of the overlay colour, in [0, 1].
        mode: ``"absolute"`` or ``"stretched"`` (:data:`attnviz.core.scales.SCALE_MODES`).
        min_width: the crop is enlarged by the smallest whole factor that makes it at least this
            wide (not at all when it is already).

    Attributes:
        picture: the enlarged crop (a PIL image).
        factor: the whole enlargement factor (1 when not enlarged).
    """

    def __init__(self, picture: np.ndarray, cmap: str, alpha: float, mode: str, *, min_width: int) -> None:
        self.picture = render.enlarge(picture, min_width)
        self.factor = self.picture.width // picture.shape[1]
        self.cmap, self.alpha, self.mode = cmap, alpha, mode

    def overlay(self, values: np.ndarray, quantity: Quantity) -> tuple[bytes, dict[str, Any]]:
        """PNG bytes of the overlay with its colour bar, and the scale entry for ``summary.json``."""
        scale = map_scale(values, quantity, self.mode)
        shown = render.overlay(
            self.picture, values, cmap=self.cmap, alpha=self.alpha, value_range=scale.value_range
        )
        return render.to_png_bytes(render.with_colorbar(shown, scale, cmap=self.cmap)), scale_entry(
            values, scale
        )

    def grid(self, maps: Sequence[np.ndarray]) -> tuple[bytes, dict[str, Any]]:
        """The layer x head grid on one scale (absolute), or each tile on its own (stretched)."""
        scale = map_scale(list(maps), PROBABILITY, self.mode)
        shared = None if scale.stretched else scale.value_range
        img = render.head_grid_image(self.picture, maps, cmap=self.cmap, alpha=self.alpha, value_range=shared)
        title = "attention probability · stretched (each tile to its own min-max)" if shared is None else None
        entry = scale_entry(np.concatenate([np.ravel(m) for m in maps]), scale)
        if shared is None:
            entry["scale"]["per_tile"] = True
        return render.to_png_bytes(render.with_colorbar(img, scale, cmap=self.cmap, title=title)), entry
