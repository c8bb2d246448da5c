"""Deformable sampling views: where one query samples, and the offset field of a whole layer.

Pure numpy over :class:`~attnviz.core.records.SamplingPoints` records (deformable convolution, DAT,
Deformable DETR), in model-input pixels, (y, x) order like the records. The renderers in
:mod:`attnviz.render` draw what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.records import SamplingPoints

__all__ = [
    "OffsetField",
    "QuerySamples",
    "nearest_query",
    "offset_field",
    "query_samples",
]


def _frozen(values: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class QuerySamples:
    """The sampling points of one query.

    Attributes:
        layer, kind, block: the record's.
        query: the query's index in the record.
        query_point: ``[2]`` (y, x) input pixel of the query, or None when it has no position
            (DAT: every query shares the same points).
        points: ``[G, P, 2]`` (y, x) sampled positions, input pixels.
        reference: ``[G, P, 2]`` the same points without their learned offsets.
        weights: ``[G, P]`` modulation or attention weight per point, or None.
        level: ``[P]`` int level of each point (zeros for single-scale modules).
        levels: (H, W) of each level (empty for single-scale modules).
        group_name: ``"group"`` or ``"head"``.
    """

    layer: str
    kind: str
    block: int
    query: int
    query_point: np.ndarray | None
    points: np.ndarray
    reference: np.ndarray
    weights: np.ndarray | None
    level: np.ndarray
    levels: tuple[tuple[int, int], ...]
    group_name: str

    @property
    def offsets(self) -> np.ndarray:
        """``[G, P, 2]`` learned displacement of each point, (dy, dx) pixels."""
        return self.points - self.reference


def _query_pixels(record: SamplingPoints, input_hw: tuple[int, int]) -> np.ndarray | None:
    """``[Q, 2]`` pixel of every query: recorded, or the centre of its cell on the query grid."""
    if record.query_points is not None:
        return np.asarray(record.query_points, dtype=np.float64)
    if record.query_grid is None:
        return None
    h, w = record.query_grid
    sy, sx = input_hw[0] / h, input_hw[1] / w
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([(ii.reshape(-1) + 0.5) * sy - 0.5, (jj.reshape(-1) + 0.5) * sx - 0.5], axis=1)


def nearest_query(record: SamplingPoints, point_yx: tuple[float, float], input_hw: tuple[int, int]) -> int:
    """The query whose position is nearest to an input pixel (0 when the queries share their points).

    Args:
        record: a sampling record.
        point_yx: (y, x) model-input pixel, inside ``[0, H) x [0, W)``.
        input_hw: (H, W) of the model input.

    Raises:
        ValueError: for a point outside the image.
    """
    y, x = float(point_yx[0]), float(point_yx[1])
    if not (0 <= y < input_hw[0] and 0 <= x < input_hw[1]):
        raise ValueError(f"point {point_yx} is outside the {input_hw[0]}x{input_hw[1]} image")
    pixels = _query_pixels(record, input_hw)
    if pixels is None or len(pixels) == 1:
        return 0
    d = (pixels[:, 0] - y) ** 2 + (pixels[:, 1] - x) ** 2
    return int(np.argmin(d))


def query_samples(record: SamplingPoints, query: int, input_hw: tuple[int, int]) -> QuerySamples:
    """Where query ``query`` samples, per group/head and level.

    Args:
        record: a sampling record.
        query: index in ``[0, Q)``.
        input_hw: (H, W) of the model input (for the query's own pixel on a query grid).
    """
    q_count = record.points.shape[0]
    if not 0 <= int(query) < q_count:
        raise ValueError(f"query must be in [0, {q_count}), got {query}")
    q = int(query)
    pixels = _query_pixels(record, input_hw)
    return QuerySamples(
        layer=record.layer,
        kind=record.kind,
        block=record.block,
        query=q,
        query_point=None if pixels is None or q_count == 1 else _frozen(pixels[q]),
        points=_frozen(record.points[q]),
        reference=_frozen(record.reference[q]),
        weights=None if record.weights is None else _frozen(record.weights[q]),
        level=record.level_of_points(),
        levels=record.levels,
        group_name=record.group_name,
    )


@dataclass(frozen=True)
class OffsetField:
    """A layer's offsets as a field over the image.

    Attributes:
        magnitude: ``[h, w]`` mean offset length in input pixels on the field's grid (per query
            for query grids; per sampled point for DAT's shared points; level 0's queries for
            Deformable DETR's encoder).
        grid: (h, w) of ``magnitude``.
        starts: ``[N, 2]`` (y, x) arrow tails, input pixels (a subsample).
        ends: ``[N, 2]`` arrow heads.
        group: ``[N]`` int group/head of each arrow.
        how: how it was derived.
    """

    magnitude: np.ndarray
    grid: tuple[int, int]
    starts: np.ndarray
    ends: np.ndarray
    group: np.ndarray
    how: str


def _subsample(n_rows: int, n_cols: int, max_cells: int) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(n_rows * n_cols / max(max_cells, 1)))))
    ii, jj = np.meshgrid(np.arange(0, n_rows, step), np.arange(0, n_cols, step), indexing="ij")
    return (ii * n_cols + jj).reshape(-1)


def offset_field(
    record: SamplingPoints, input_hw: tuple[int, int], *, max_arrows: int = 400
) -> OffsetField | None:
    """The offset magnitude map and a subsampled arrow field of one layer.

    * Query-grid records (deformable conv): per query, the mean length of its points' offsets;
      one arrow per (subsampled) query and group, from the query's pixel to the mean of its sampled
      points (where the kernel as a whole moved).
    * Shared points (DAT, Q = 1): per reference point, the offset length averaged over groups;
      one arrow per (subsampled) point and group, from the reference point to the sampled point.
    * Multi-scale queries (Deformable DETR's encoder): the queries of level 0 (the finest), as for
      a query grid. Decoder queries have no grid: None.

    Args:
        record: a sampling record.
        input_hw: (H, W) of the model input.
        max_arrows: about how many arrow positions to keep (per group).
    """
    pts = np.asarray(record.points, dtype=np.float64)
    ref = np.asarray(record.reference, dtype=np.float64)
    q_count, groups, n_pts, _ = pts.shape
    lengths = np.linalg.norm(pts - ref, axis=-1)  # [Q, G, P]
    if q_count == 1:  # DAT: the points form the key grid
        ys, xs = np.unique(ref[0, 0, :, 0]), np.unique(ref[0, 0, :, 1])
        grid = (len(ys), len(xs))
        if grid[0] * grid[1] != n_pts:
            return None
        magnitude = lengths[0].mean(axis=0).reshape(grid)
        keep = _subsample(*grid, max_arrows)
        starts = ref[0][:, keep].reshape(-1, 2)
        ends = pts[0][:, keep].reshape(-1, 2)
        group = np.repeat(np.arange(groups), len(keep))
        how = "offset length per sampled point, mean over groups; arrows from reference to sampled point"
    else:
        if record.query_grid is not None:
            grid, rows = record.query_grid, np.arange(q_count)
        elif record.levels and record.query_points is not None:
            grid = record.levels[0]
            rows = np.arange(grid[0] * grid[1])
            if rows.size > q_count:
                return None
        else:
            return None
        magnitude = lengths[rows].mean(axis=(1, 2)).reshape(grid)
        pixels = _query_pixels(record, input_hw)
        if pixels is None:
            return None
        keep = rows[_subsample(*grid, max_arrows)]
        centre = pts[keep].mean(axis=2)  # [N, G, 2]
        starts = np.repeat(pixels[keep][:, None], groups, axis=1).reshape(-1, 2)
        ends = centre.reshape(-1, 2)
        group = np.tile(np.arange(groups), len(keep))
        how = "mean offset length of each query's points; arrows from the query to the mean of its points"
        if record.query_grid is None:
            how += f" (level 0, {grid[0]}x{grid[1]} queries)"
    return OffsetField(
        magnitude=_frozen(magnitude),
        grid=(int(grid[0]), int(grid[1])),
        starts=_frozen(starts),
        ends=_frozen(ends),
        group=np.asarray(group, dtype=np.int64),
        how=how,
    )
