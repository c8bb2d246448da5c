"""Records of where deformable modules sample (deformable convolution, DAT, Deformable DETR) and
of what a detector found.

Part of :mod:`attnviz.core.records`, which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.arrays import frozen_array

__all__ = ["Detections", "SamplingPoints"]


@dataclass(frozen=True)
class SamplingPoints:
    """Where a deformable module samples, in input-image pixels, (y, x) order.

    Layout ``[Q, G, P, 2]``: Q queries (output positions), G groups or heads, P points per query
    and group. The sampled position of point p is ``points[q, g, p]``; the same point without
    its learned offset is ``reference[q, g, p]`` (the regular kernel grid for deformable
    convolution, the reference grid for DAT). When every query shares the points (DAT), Q = 1.

    Attributes:
        layer: qualified module name.
        kind: ``"deform_conv"``, ``"dat"``, ``"detr_encoder"``, ``"detr_decoder"``, ...
        points: ``[Q, G, P, 2]`` float, (y, x) pixels of the model input.
        reference: ``[Q, G, P, 2]`` float, (y, x) pixels of the model input.
        weights: ``[Q, G, P]`` modulation or attention weight of each point, or None.
        query_grid: (H, W) of the queries when they form one grid (row-major), else None.
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
        levels: for multi-scale modules (Deformable DETR), the (H, W) feature shape of each level;
            the P points are then level-major: point p belongs to level ``p // (P // L)``. Empty
            for single-scale modules.
        query_points: ``[Q, 2]`` (y, x) input pixel of each query (the output position of a
            deformable conv, an encoder query's own pixel, a decoder query's reference point),
            or None when the queries have no position.
        group_name: what G counts: ``"group"`` (offset groups) or ``"head"``.
    """

    layer: str
    kind: str
    points: np.ndarray
    reference: np.ndarray
    weights: np.ndarray | None
    query_grid: tuple[int, int] | None
    block: int
    untrained: bool = False
    levels: tuple[tuple[int, int], ...] = ()
    query_points: np.ndarray | None = None
    group_name: str = "group"

    def __post_init__(self) -> None:
        pts = frozen_array(self.points, (4,), "SamplingPoints.points")
        ref = frozen_array(self.reference, (4,), "SamplingPoints.reference")
        if pts.shape != ref.shape or pts.shape[-1] != 2:
            raise ValueError(
                f"SamplingPoints points and reference must both be [Q, G, P, 2], got {pts.shape}, {ref.shape}"
            )
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "reference", ref)
        if self.weights is not None:
            wts = frozen_array(self.weights, (3,), "SamplingPoints.weights")
            if wts.shape != pts.shape[:3]:
                raise ValueError(f"SamplingPoints.weights must be {pts.shape[:3]}, got {wts.shape}")
            object.__setattr__(self, "weights", wts)
        levels = tuple((int(h), int(w)) for h, w in self.levels)
        if levels and pts.shape[2] % len(levels):
            raise ValueError(f"SamplingPoints: {pts.shape[2]} points do not split into {len(levels)} levels")
        object.__setattr__(self, "levels", levels)
        if self.query_points is not None:
            qp = frozen_array(self.query_points, (2,), "SamplingPoints.query_points")
            if qp.shape != (pts.shape[0], 2):
                raise ValueError(f"SamplingPoints.query_points must be [{pts.shape[0]}, 2], got {qp.shape}")
            object.__setattr__(self, "query_points", qp)

    @property
    def points_per_level(self) -> int:
        """Points per level (all P points for a single-scale module)."""
        return self.points.shape[2] // max(len(self.levels), 1)

    def level_of_points(self) -> np.ndarray:
        """``[P]`` int: the level of each point (zeros for a single-scale module)."""
        return np.arange(self.points.shape[2]) // self.points_per_level

    @property
    def offsets(self) -> np.ndarray:
        """``[Q, G, P, 2]`` learned displacement of each point, (dy, dx) pixels."""
        return self.points - self.reference


@dataclass(frozen=True)
class Detections:
    """Objects a detector found, in model-input pixels.

    Attributes:
        layer: the head that produced them (e.g. ``"class_embed"``).
        boxes: ``[K, 4]`` float (x0, y0, x1, y1) in model-input pixels.
        scores: ``[K]`` confidence in [0, 1], highest first.
        classes: ``[K]`` int class ids of the detector's label set.
        labels: K class names.
        query_index: ``[K]`` int: the decoder query each object came from (to show its sampling
            points).
        untrained: True when the model's weights are random.
    """

    layer: str
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: tuple[str, ...]
    query_index: np.ndarray
    untrained: bool = False
    kind: str = "detections"
    block: int = -1

    def __post_init__(self) -> None:
        boxes = frozen_array(
            np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4), (2,), "Detections.boxes"
        )
        k = boxes.shape[0]
        for name in ("scores", "classes", "query_index"):
            arr = frozen_array(getattr(self, name), (1,), f"Detections.{name}")
            if arr.shape != (k,):
                raise ValueError(f"Detections.{name} must have {k} entries, got {arr.shape}")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) != k:
            raise ValueError(f"Detections.labels must have {k} entries, got {len(self.labels)}")
