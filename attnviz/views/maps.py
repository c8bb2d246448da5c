"""One 2-D heat map per attention record: what the app overlays and what localisation scores.

Each record kind has one documented reduction to a map over the model input:

* ``SpatialMap`` (CBAM spatial gate, GC context softmax): the map itself.
* ``AxisGates`` (coordinate attention): the channel mean of ``h[c, i] * w[c, j]``, the factor
  the block multiplies position (i, j) by on average.
* ``TokenAttention`` with keys on the query grid (non-local, MHSA, ViTs, BoTNet) and
  ``WindowAttention`` (Swin, HaloNet): :func:`attnviz.views.transformer.summary_map` averaged over heads: the
  class token's attention to the patches (the mean of the class and distillation rows for
  distilled DeiT), or for models without a class token the attention each position *receives*,
  averaged over queries (a column mean of the attention matrix).
* ``SamplingPoints`` (DAT, deformable conv): the points' weights (DAT: attention received per
  sampled key; deformable conv: modulation mask, or 1) splatted bilinearly onto the feature
  grid at the sampled positions, divided by the total weight: the share of the module's sampling
  weight that lands on each cell, where the module reads from.
* ``GradCAM``: the map itself (model-input pixels).

Each map names its :class:`attnviz.core.scales.Quantity` (gate value, attention probability, share of
sampling weight, Grad-CAM relevance), which decides its colour scale and colour bar.

Maps are returned in their own resolution; :func:`attnviz.views.localisation.upsample_map` and
:func:`attnviz.render.overlay` bring them to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.records import (
    Analysis,
    AxisGates,
    GradCAM,
    Record,
    SamplingPoints,
    SpatialMap,
    TokenAttention,
    WindowAttention,
)
from attnviz.core.scales import GATE, GATE_PRODUCT, GRADCAM, PROBABILITY, SAMPLING_SHARE, Quantity
from attnviz.views.transformer import fuse_heads, is_self_attention, summary_map

__all__ = ["AttentionMap", "attention_maps", "record_map", "splat"]


@dataclass(frozen=True)
class AttentionMap:
    """A heat map derived from one record.

    Attributes:
        layer: the record's layer.
        kind: the record's kind.
        block: the record's block (-1 for Grad-CAM).
        values: ``[h, w]`` non-negative map covering the whole model input.
        how: one line saying how it was derived.
        quantity: what its values are (decides its colour scale).
    """

    layer: str
    kind: str
    block: int
    values: np.ndarray
    how: str
    quantity: Quantity = PROBABILITY

    @property
    def label(self) -> str:
        """``"block 1 · attn3 (cbam_spatial)"``-style label for tables and captions."""
        if self.block < 0:
            return f"Grad-CAM · {self.layer}"
        return f"block {self.block} · {self.layer} ({self.kind})"


def splat(
    points: np.ndarray, weights: np.ndarray, grid: tuple[int, int], stride: tuple[float, float]
) -> np.ndarray:
    """Bilinearly splat weighted points (model-input pixels, (y, x)) onto a feature grid.

    Args:
        points: ``[N, 2]`` (y, x) in input pixels (pixel centres at integers).
        weights: ``[N]`` non-negative weights.
        grid: (H, W) of the feature grid.
        stride: input pixels per feature cell (y, x).

    Returns:
        ``[H, W]``; points outside the grid lose their weight outside it.
    """
    h, w = grid
    fy = (points[:, 0] + 0.5) / stride[0] - 0.5
    fx = (points[:, 1] + 0.5) / stride[1] - 0.5
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    out = np.zeros((h, w), dtype=np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            wgt = weights * (1 - np.abs(fy - yy)) * (1 - np.abs(fx - xx))
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            np.add.at(out, (yy[inside], xx[inside]), wgt[inside])
    return out.astype(np.float32)


def record_map(record: Record, input_hw: tuple[int, int]) -> AttentionMap | None:
    """The heat map of one record, or None for records without a spatial reading (channel gates).

    Args:
        record: any record of an :class:`~attnviz.core.records.Analysis`.
        input_hw: (H, W) of the model input (``analysis.input_image.shape[:2]``).
    """
    if isinstance(record, GradCAM):
        how = f"Grad-CAM of “{record.target_label}”"
        return AttentionMap(record.layer, record.kind, -1, record.values, how, GRADCAM)
    if isinstance(record, SpatialMap):
        if record.kind == "gc_context":
            how, quantity = "the module's softmax over positions", PROBABILITY
        else:
            how, quantity = "the module's spatial gate", GATE
        return AttentionMap(record.layer, record.kind, record.block, record.values, how, quantity)
    if isinstance(record, AxisGates):
        how = "channel mean of the row gate times the column gate"
        return AttentionMap(record.layer, record.kind, record.block, record.values, how, GATE_PRODUCT)
    if isinstance(record, TokenAttention | WindowAttention) and is_self_attention(record):
        values = fuse_heads(summary_map(record), "mean")
        if isinstance(record, TokenAttention) and record.prefix_names[:1] == ("cls",):
            how = "class-token attention to the patches" + (
                " (mean with the distillation token)" if "dist" in record.prefix_names else ""
            )
        else:
            how = "attention received per position, mean over queries"
        return AttentionMap(
            record.layer, record.kind, record.block, values, how + ", mean over heads", PROBABILITY
        )
    if isinstance(record, SamplingPoints):
        pts = record.points.reshape(-1, 2)
        wts = np.ones(len(pts)) if record.weights is None else record.weights.reshape(-1)
        grid = record.query_grid or _grid_of(record, input_hw)
        stride = (input_hw[0] / grid[0], input_hw[1] / grid[1])
        how = (
            "share of the sampling weight per cell (points splatted onto the grid, weighted by "
            + (
                "attention"
                if record.kind == "dat"
                else "the modulation mask"
                if record.weights is not None
                else "1"
            )
            + ")"
        )
        total = float(np.sum(wts, dtype=np.float64))
        values = splat(pts, wts, grid, stride) / np.float32(total if total > 0 else 1.0)
        return AttentionMap(record.layer, record.kind, record.block, values, how, SAMPLING_SHARE)
    return None


def _grid_of(record: SamplingPoints, input_hw: tuple[int, int]) -> tuple[int, int]:
    """The feature grid of shared sampling points (DAT): the reference grid's own size."""
    ref = record.reference.reshape(-1, 2)
    ys, xs = np.unique(ref[:, 0]), np.unique(ref[:, 1])
    return (len(ys), len(xs))


def attention_maps(analysis: Analysis) -> list[AttentionMap]:
    """Every heat map of an analysis, in forward order, Grad-CAM last."""
    input_hw = analysis.input_image.shape[:2]
    maps = [record_map(r, input_hw) for r in analysis.records]
    return [m for m in maps if m is not None]
