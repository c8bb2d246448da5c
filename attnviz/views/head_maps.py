"""Per-head maps of self-attention on the image: each head's summary map, the head grid of every
layer, and where one query token attends.

Pure numpy over :class:`~attnviz.core.records.TokenAttention` and
:class:`~attnviz.core.records.WindowAttention` records. Coordinates: token (i, j) of a grid with
stride (sy, sx) covers model-input pixels ``[i*sy, (i+1)*sy) x [j*sx, (j+1)*sx)``. Part of
:mod:`attnviz.views.transformer`, which re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from attnviz.core.records import Analysis, Record, WindowAttention
from attnviz.views.self_attention import (
    SelfAttention,
    check_self_attention,
    frozen_float32,
    self_attention_records,
)

__all__ = ["HeadGrid", "QueryMap", "fuse_heads", "head_grid", "query_map", "summary_map"]


def _cell_of(point: float, stride: float, cells: int, axis: str) -> int:
    extent = cells * stride
    if not 0 <= point < extent:
        raise ValueError(f"point {axis}={point} is outside the image: {axis} must be in [0, {extent:g})")
    return min(int(np.floor(point / stride)), cells - 1)


def _summary_how(record: SelfAttention) -> str:
    if isinstance(record, WindowAttention):
        return "attention each key receives, mean over the valid queries of its windows"
    names = [n for n in record.prefix_names if n in ("cls", "dist")]
    if len(names) > 1:
        return f"mean of the {' and '.join(names)} token rows over the grid keys"
    if names:
        return f"{names[0]} token row over the grid keys"
    return "attention each grid key receives, mean over the grid queries"


def summary_map(record: SelfAttention) -> np.ndarray:
    """The per-head map over the key grid that speaks for the whole image.

    * TokenAttention with a class (and distillation) token: the mean of those rows over the grid
      keys; prefix columns are dropped, not renormalised away, so register mass stays missing.
    * TokenAttention without one: the attention each grid key receives, mean over grid queries.
    * WindowAttention: :meth:`~attnviz.core.records.WindowAttention.received` on the key grid.

    Args:
        record: a self-attention record.

    Returns:
        ``[heads, Hk, Wk]`` float32, read-only.

    Raises:
        ValueError: for deformable attention (``key_grid`` set) or another record kind.
    """
    check_self_attention(record, "summary_map")
    if isinstance(record, WindowAttention):
        return frozen_float32(record.received().reshape(record.heads, *record.key_grid))
    p = record.prefix_tokens
    rows = np.asarray(record.summary_rows)
    mean = record.values[:, rows, p:].astype(np.float64).mean(axis=1)
    return frozen_float32(mean.reshape(record.heads, *record.grid))


def fuse_heads(maps: np.ndarray, how: str = "mean") -> np.ndarray:
    """Fuse per-head maps into one.

    Args:
        maps: ``[heads, H, W]``.
        how: ``"mean"`` or ``"max"`` over the heads.

    Returns:
        ``[H, W]`` float32.

    Raises:
        ValueError: for another ``how`` or maps that are not 3-D.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"fuse_heads needs [heads, H, W] maps, got shape {maps.shape}")
    if how == "mean":
        return maps.mean(axis=0).astype(np.float32)
    if how == "max":
        return maps.max(axis=0).astype(np.float32)
    raise ValueError(f"how must be 'mean' or 'max', got {how!r}")


@dataclass(frozen=True)
class HeadGrid:
    """Every head's summary map, layer by layer (see :func:`summary_map`).

    Attributes:
        layers: qualified module names, forward order.
        blocks: each layer's block index.
        maps: per layer ``[heads, H, W]``; heads and grids may differ between layers (Swin stages).
        how: how the maps were derived (one clause per distinct reduction).
    """

    layers: tuple[str, ...]
    blocks: tuple[int, ...]
    maps: tuple[np.ndarray, ...]
    how: str


def head_grid(records: Analysis | Iterable[Record]) -> HeadGrid:
    """Per layer, every head's :func:`summary_map`.

    Args:
        records: an analysis or records; those that are not self-attention are skipped.

    Returns:
        A :class:`HeadGrid` (empty tuples when there is no self-attention).
    """
    recs = self_attention_records(records)
    hows = list(dict.fromkeys(_summary_how(r) for r in recs))
    return HeadGrid(
        layers=tuple(r.layer for r in recs),
        blocks=tuple(r.block for r in recs),
        maps=tuple(summary_map(r) for r in recs),
        how="; ".join(hows),
    )


@dataclass(frozen=True)
class QueryMap:
    """Where one query token attends.

    Attributes:
        values: ``[heads, Hk, Wk]`` the query's attention over the key grid (prefix and padding
            keys excluded, not renormalised).
        query: (row, col) of the query token on the query grid.
        query_index: its row-major index on the query grid.
        prefix_mass: ``[heads, prefix_tokens]`` attention from the query to each prefix token
            (``[heads, 0]`` when there is none).
        padding_mass: ``[heads]`` share of attention on padding keys (windows); zeros otherwise.
        stride: input pixels per key-grid cell, (y, x).
        layer: the record's layer.
        block: the record's block.
        how: how it was derived.
    """

    values: np.ndarray
    query: tuple[int, int]
    query_index: int
    prefix_mass: np.ndarray
    padding_mass: np.ndarray
    stride: tuple[float, float]
    layer: str
    block: int
    how: str


def query_map(record: SelfAttention, point_yx: tuple[float, float]) -> QueryMap:
    """The attention row of the query token that covers a model-input pixel.

    Args:
        record: a self-attention record.
        point_yx: (y, x) in model-input pixels; must lie in ``[0, H*sy) x [0, W*sx)`` of the
            record's query grid (H, W) and stride (sy, sx). Points on the far edge of a cell
            belong to it; rounding at the image border is clamped to the last cell.

    Returns:
        A :class:`QueryMap`.

    Raises:
        ValueError: for a point outside the image, deformable attention or another record kind.
    """
    check_self_attention(record, "query_map")
    y, x = float(point_yx[0]), float(point_yx[1])
    row = _cell_of(y, float(record.stride[0]), record.grid[0], "y")
    col = _cell_of(x, float(record.stride[1]), record.grid[1], "x")
    qi = row * record.grid[1] + col
    where = f"query token ({row}, {col}) of the {record.grid[0]}x{record.grid[1]} grid"
    if isinstance(record, WindowAttention):
        values = record.query(qi).reshape(record.heads, *record.key_grid)
        win, pos = np.argwhere(record.query_index == qi)[0]
        padding = record.values[win, :, pos][:, record.key_index[win] < 0].sum(axis=-1, dtype=np.float32)
        return QueryMap(
            values=frozen_float32(values),
            query=(row, col),
            query_index=qi,
            prefix_mass=frozen_float32(np.zeros((record.heads, 0))),
            padding_mass=frozen_float32(padding),
            stride=(float(record.key_stride[0]), float(record.key_stride[1])),
            layer=record.layer,
            block=record.block,
            how=f"row of {where} over its window's keys on the {record.key_grid[0]}x{record.key_grid[1]} "
            "key grid; padding keys in padding_mass",
        )
    p = record.prefix_tokens
    full = record.values[:, p + qi].astype(np.float32)
    return QueryMap(
        values=frozen_float32(full[:, p:].reshape(record.heads, *record.grid)),
        query=(row, col),
        query_index=qi,
        prefix_mass=frozen_float32(full[:, :p]),
        padding_mass=frozen_float32(np.zeros(record.heads)),
        stride=(float(record.stride[0]), float(record.stride[1])),
        layer=record.layer,
        block=record.block,
        how=f"row of {where} over the grid keys; prefix tokens in prefix_mass",
    )
