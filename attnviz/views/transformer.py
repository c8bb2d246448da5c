"""Transformer views over captured self-attention: head grids, query maps, rollout, head statistics.

Pure numpy over :class:`~attnviz.core.records.TokenAttention` and
:class:`~attnviz.core.records.WindowAttention`
records; nothing here needs torch. The reductions follow:

* Dosovitskiy et al., "An Image is Worth 16x16 Words" (https://arxiv.org/abs/2010.11929): the
  mean attention distance of each head, in input pixels.
* Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (https://arxiv.org/abs/2005.00928):
  attention rollout, ``R = A_L ... A_1`` with each ``A = norm(0.5 * A_heads + 0.5 * I)``.
* Darcet et al., "Vision Transformers Need Registers" (https://arxiv.org/abs/2309.16588): the
  attention that goes to register tokens is reported apart from the spatial map.

Coordinates: token (i, j) of a grid with stride (sy, sx) covers model-input pixels
``[i*sy, (i+1)*sy) x [j*sx, (j+1)*sx)``; its centre is ``((i+0.5)*sy - 0.5, (j+0.5)*sx - 0.5)`` with
pixel centres at integers. Deformable attention (``TokenAttention.key_grid`` set) attends to sampled
keys, not to the image's tokens: the collection functions skip it and the per-record functions
refuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from attnviz.core.records import Analysis, Record, TokenAttention, WindowAttention
from attnviz.views import statistics

__all__ = [
    "HeadGrid",
    "HeadStats",
    "PrefixAttention",
    "QueryMap",
    "Rollout",
    "fuse_heads",
    "head_grid",
    "head_statistics",
    "is_self_attention",
    "prefix_attention",
    "query_map",
    "rollout",
    "rollout_supported",
    "self_attention_records",
    "summary_map",
]

SelfAttention = TokenAttention | WindowAttention

_FUSE = {"mean": np.mean, "max": np.max, "min": np.min}


def _frozen(values: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=dtype)
    arr.setflags(write=False)
    return arr


def _frozen_tuple(arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(_frozen(a) for a in arrays)


def is_self_attention(record: object) -> bool:
    """True for self-attention among the image's tokens: token attention whose keys are the query
    tokens, or window attention (not deformable attention's sampled keys, not other records)."""
    if isinstance(record, TokenAttention):
        return record.key_grid is None
    return isinstance(record, WindowAttention)


def _check_self_attention(record: object, what: str) -> None:
    if isinstance(record, TokenAttention) and record.key_grid is not None:
        raise ValueError(
            f"{what} needs self-attention among the image's tokens; {record.layer!r} is deformable "
            f"attention whose keys are sampled points on a {record.key_grid} grid, not the query tokens"
        )
    if not isinstance(record, TokenAttention | WindowAttention):
        kind = type(record).__name__
        raise ValueError(f"{what} needs a TokenAttention or WindowAttention record, got {kind}")


def _prefix_names(record: TokenAttention) -> tuple[str, ...]:
    """The record's prefix names, or ``prefix0``... when the model did not say."""
    if record.prefix_names:
        return record.prefix_names
    return tuple(f"prefix{i}" for i in range(record.prefix_tokens))


def _cell_of(point: float, stride: float, cells: int, axis: str) -> int:
    extent = cells * stride
    if not 0 <= point < extent:
        raise ValueError(f"point {axis}={point} is outside the image: {axis} must be in [0, {extent:g})")
    return min(int(np.floor(point / stride)), cells - 1)


def _centres(index: np.ndarray, grid: tuple[int, int], stride: tuple[float, float]) -> np.ndarray:
    """``[..., 2]`` (y, x) pixel centres of row-major grid indices (any shape; -1 gives junk)."""
    rows, cols = np.divmod(index, grid[1])
    return np.stack([(rows + 0.5) * stride[0] - 0.5, (cols + 0.5) * stride[1] - 0.5], axis=-1)


def self_attention_records(analysis_or_records: Analysis | Iterable[Record]) -> tuple[SelfAttention, ...]:
    """The records of self-attention among the image's tokens, in forward order.

    Args:
        analysis_or_records: an :class:`~attnviz.core.records.Analysis` or its records (any kinds).

    Returns:
        The :class:`TokenAttention` records whose keys are the query tokens (``key_grid is None``)
        and every :class:`WindowAttention` record (Swin, HaloNet), in the order given.
    """
    records = analysis_or_records
    if isinstance(records, Analysis):
        records = records.records
    return tuple(r for r in records if is_self_attention(r))


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
    _check_self_attention(record, "summary_map")
    if isinstance(record, WindowAttention):
        return _frozen(record.received().reshape(record.heads, *record.key_grid))
    p = record.prefix_tokens
    rows = np.asarray(record.summary_rows)
    mean = record.values[:, rows, p:].astype(np.float64).mean(axis=1)
    return _frozen(mean.reshape(record.heads, *record.grid))


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
    _check_self_attention(record, "query_map")
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
            values=_frozen(values),
            query=(row, col),
            query_index=qi,
            prefix_mass=_frozen(np.zeros((record.heads, 0))),
            padding_mass=_frozen(padding),
            stride=(float(record.key_stride[0]), float(record.key_stride[1])),
            layer=record.layer,
            block=record.block,
            how=f"row of {where} over its window's keys on the {record.key_grid[0]}x{record.key_grid[1]} "
            "key grid; padding keys in padding_mass",
        )
    p = record.prefix_tokens
    full = record.values[:, p + qi].astype(np.float32)
    return QueryMap(
        values=_frozen(full[:, p:].reshape(record.heads, *record.grid)),
        query=(row, col),
        query_index=qi,
        prefix_mass=_frozen(full[:, :p]),
        padding_mass=_frozen(np.zeros(record.heads)),
        stride=(float(record.stride[0]), float(record.stride[1])),
        layer=record.layer,
        block=record.block,
        how=f"row of {where} over the grid keys; prefix tokens in prefix_mass",
    )


@dataclass(frozen=True)
class Rollout:
    """Attention rollout through every block (Abnar & Zuidema 2020).

    Attributes:
        values: ``[H, W]`` the read row(s) of ``matrix`` on the grid columns.
        matrix: ``[N, N]`` the rollout ``R = A_L ... A_1`` over all tokens (prefix first).
        rows: the rows of ``matrix`` read (averaged) for ``values``.
        prefix_mass: ``[prefix_tokens]`` the read row's mass on each prefix column.
        prefix_names: names of the prefix tokens.
        layers: the layers rolled out, forward order.
        how: how it was derived.
    """

    values: np.ndarray
    matrix: np.ndarray
    rows: tuple[int, ...]
    prefix_mass: np.ndarray
    prefix_names: tuple[str, ...]
    layers: tuple[str, ...]
    how: str


def _rollout_problem(records: Sequence[object]) -> str | None:
    """Why these records cannot be rolled out, or None when they can."""
    if not len(records):
        return "rollout needs at least one attention record"
    for r in records:
        if not isinstance(r, TokenAttention):
            return f"{getattr(r, 'layer', type(r).__name__)!r} is {type(r).__name__}, not token attention"
        if r.key_grid is not None:
            return f"{r.layer!r} attends to sampled keys on a {r.key_grid} grid (deformable attention)"
    tokens = [r for r in records if isinstance(r, TokenAttention)]
    first = tokens[0]
    for r in tokens[1:]:
        if r.values.shape[1] != first.values.shape[1]:
            return f"{r.layer!r} has {r.values.shape[1]} tokens, {first.layer!r} has {first.values.shape[1]}"
        if r.prefix_tokens != first.prefix_tokens or r.grid != first.grid:
            return (
                f"{r.layer!r} has {r.prefix_tokens} prefix tokens and a {r.grid} grid, {first.layer!r} has "
                f"{first.prefix_tokens} and {first.grid}"
            )
    return None


def _rollout_records(records: Analysis | Sequence[TokenAttention]) -> Sequence[object]:
    if isinstance(records, Analysis):
        return self_attention_records(records)
    return list(records)


def rollout_supported(records: Analysis | Sequence[Record]) -> bool:
    """True when :func:`rollout` applies: token attention whose blocks all keep the same tokens.

    Args:
        records: an analysis (its self-attention records are used) or the records to roll out.
    """
    return _rollout_problem(_rollout_records(records)) is None


def rollout(
    records: Analysis | Sequence[TokenAttention], *, head_fusion: str = "mean", discard_ratio: float = 0.0
) -> Rollout:
    """Attention rollout (Abnar & Zuidema 2020) through the given blocks.

    Per block, in forward order: fuse the heads (``A [N, N]``); when ``discard_ratio > 0``, zero in
    every row the lowest ``discard_ratio`` fraction of the grid columns (prefix columns are
    never discarded); mix in the residual path, ``A = 0.5 * A + 0.5 * I``, and renormalise each
    row to sum 1; then ``R = A @ R`` starting from the identity.

    The read row is the class token (row 0), the mean of the class and distillation rows for
    distilled models, or the mean over the grid rows for models without a class token
    (the record's ``summary_rows``).

    Args:
        records: token-attention records of consecutive blocks, or an analysis.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        discard_ratio: fraction of grid columns zeroed per row, in [0, 1).

    Returns:
        A :class:`Rollout`.

    Raises:
        ValueError: for no records, records whose tokens differ between blocks (hierarchical
            models), deformable or window attention, or bad arguments.
    """
    if head_fusion not in _FUSE:
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    recs = _rollout_records(records)
    problem = _rollout_problem(recs)
    if problem is not None:
        raise ValueError(
            "rollout needs every block to keep the same tokens (Swin, BoT or HaloNet change resolution "
            f"between stages): {problem}"
        )
    token_recs: list[TokenAttention] = [r for r in recs if isinstance(r, TokenAttention)]
    first = token_recs[0]
    n, p = first.values.shape[1], first.prefix_tokens
    n_grid = n - p
    drop = int(np.floor(discard_ratio * n_grid))
    eye = np.eye(n)
    result = np.eye(n)
    for r in token_recs:
        a = _FUSE[head_fusion](r.values.astype(np.float64), axis=0)
        if drop:
            grid_cols = a[:, p:]
            lowest = np.argsort(grid_cols, axis=1, kind="stable")[:, :drop]
            np.put_along_axis(grid_cols, lowest, 0.0, axis=1)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    rows = first.summary_rows
    read = result[np.asarray(rows)].mean(axis=0)
    names = _prefix_names(first)
    if rows[0] >= p:
        reading = "mean over the grid rows (no class token)"
    elif len(rows) == 1:
        reading = f"row {rows[0]} ({names[rows[0]]} token)"
    else:
        reading = "mean of rows " + ", ".join(f"{i} ({names[i]})" for i in rows)
    how = (
        f"rollout of {len(token_recs)} blocks: {head_fusion} over heads"
        + (f", lowest {discard_ratio:g} of grid columns discarded per row" if drop else "")
        + f", 0.5*A + 0.5*I renormalised per row; {reading}, grid columns"
    )
    return Rollout(
        values=_frozen(read[p:].reshape(first.grid)),
        matrix=_frozen(result),
        rows=tuple(int(i) for i in rows),
        prefix_mass=_frozen(read[:p]),
        prefix_names=names,
        layers=tuple(r.layer for r in token_recs),
        how=how,
    )


@dataclass(frozen=True)
class HeadStats:
    """Per layer and head: mean attention distance and entropy.

    Attributes:
        layers: qualified module names, forward order.
        blocks: each layer's block index.
        distance: per layer ``[heads]`` mean attention distance in model-input pixels: for each
            grid query, its attention over the grid keys renormalised to 1 times the distance
            between the query's and the key's token centres; mean over the grid queries.
        entropy: per layer ``[heads]`` mean over the grid queries of the Shannon entropy (nats)
            of the query's full row (prefix keys included; window rows include padding keys).
        max_entropy: per layer ``log(keys per row)``, the entropy of a uniform row.
        how: how it was derived.
    """

    layers: tuple[str, ...]
    blocks: tuple[int, ...]
    distance: tuple[np.ndarray, ...]
    entropy: tuple[np.ndarray, ...]
    max_entropy: tuple[float, ...]
    how: str


def _token_stats(record: TokenAttention) -> tuple[np.ndarray, np.ndarray, float]:
    p = record.prefix_tokens
    rows = record.values[:, p:].astype(np.float64)  # [heads, n, N]
    grid = rows[:, :, p:]  # [heads, n, n]
    index = np.arange(record.grid[0] * record.grid[1])
    centres = _centres(index, record.grid, record.stride)
    dist = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))  # [n, n]
    mass = grid.sum(axis=-1)  # [heads, n]
    weighted = np.einsum("hqk,qk->hq", grid, dist)
    distance = _masked_mean(weighted, mass, np.ones(mass.shape[-1], dtype=bool))
    entropy = statistics.entropy(rows).mean(axis=-1)
    return distance, entropy, float(np.log(record.values.shape[-1]))


def _masked_mean(weighted: np.ndarray, mass: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over the last axes of ``weighted / mass`` for valid queries with grid mass.

    ``weighted``/``mass`` are ``[heads, *q]`` and ``valid`` is ``[*q]``; queries whose attention
    went entirely to prefix or padding keys have no grid distance and are left out.
    """
    ok = valid & (mass > 0)
    ratio = np.divide(weighted, mass, out=np.zeros_like(weighted), where=ok)
    axes = tuple(range(1, weighted.ndim))
    return ratio.sum(axis=axes) / np.maximum(ok.sum(axis=axes), 1)


def _window_stats(record: WindowAttention) -> tuple[np.ndarray, np.ndarray, float]:
    values = record.values.astype(np.float64)  # [W, heads, Lq, Lk]
    qv, kv = record.query_index >= 0, record.key_index >= 0  # [W, Lq], [W, Lk]
    q_centres = _centres(record.query_index, record.grid, record.stride)  # [W, Lq, 2]
    k_centres = _centres(record.key_index, record.key_grid, record.key_stride)  # [W, Lk, 2]
    dist = np.sqrt(((q_centres[:, :, None, :] - k_centres[:, None, :, :]) ** 2).sum(-1))  # [W, Lq, Lk]
    on_grid = values * kv[:, None, None, :]
    mass = on_grid.sum(axis=-1)  # [W, heads, Lq]
    weighted = np.einsum("whqk,wqk->whq", on_grid, dist)
    # move heads first: [heads, W, Lq]
    distance = _masked_mean(weighted.transpose(1, 0, 2), mass.transpose(1, 0, 2), qv)
    ent = statistics.entropy(values)  # [W, heads, Lq]
    entropy = (ent * qv[:, None, :]).sum(axis=(0, 2)) / max(int(qv.sum()), 1)
    return distance, entropy, float(np.log(values.shape[-1]))


def head_statistics(records: Analysis | Iterable[Record]) -> HeadStats:
    """Mean attention distance and entropy of every head, layer by layer.

    Args:
        records: an analysis or records; those that are not self-attention are skipped. Window
            records use their valid queries and keys only; key centres come from the key grid
            and its own stride (HaloNet's keys may be finer than its queries).

    Returns:
        A :class:`HeadStats` (empty tuples when there is no self-attention).
    """
    recs = self_attention_records(records)
    stats = [_window_stats(r) if isinstance(r, WindowAttention) else _token_stats(r) for r in recs]
    return HeadStats(
        layers=tuple(r.layer for r in recs),
        blocks=tuple(r.block for r in recs),
        distance=_frozen_tuple(s[0] for s in stats),
        entropy=_frozen_tuple(s[1] for s in stats),
        max_entropy=tuple(s[2] for s in stats),
        how="distance: per grid query, pixel distance between token centres weighted by its attention "
        "over grid keys renormalised to 1, mean over queries; entropy: nats of the full row, mean over "
        "queries",
    )


@dataclass(frozen=True)
class PrefixAttention:
    """How much the image-level rows attend to each prefix token (class, distillation, registers).

    Attributes:
        values: ``[L, prefix]`` per layer, the summary rows' mass on each prefix token, mean over
            heads and summary rows.
        names: the prefix tokens' names.
        grid_mass: ``[L]`` the same rows' mass on the grid tokens; ``values.sum(1) + grid_mass``
            is 1.
        layers: qualified module names, forward order.
        blocks: each layer's block index.
        how: how it was derived.
    """

    values: np.ndarray
    names: tuple[str, ...]
    grid_mass: np.ndarray
    layers: tuple[str, ...]
    blocks: tuple[int, ...]
    how: str


def prefix_attention(records: Analysis | Iterable[Record]) -> PrefixAttention | None:
    """Per layer, the attention of the summary rows on each prefix token.

    Args:
        records: an analysis or records; token attention with prefix tokens is used, the rest
            skipped.

    Returns:
        A :class:`PrefixAttention`, or None when no record has prefix tokens.

    Raises:
        ValueError: when the records disagree on the number of prefix tokens.
    """
    recs = [r for r in self_attention_records(records) if isinstance(r, TokenAttention) and r.prefix_tokens]
    if not recs:
        return None
    p = recs[0].prefix_tokens
    if any(r.prefix_tokens != p for r in recs):
        counts = sorted({r.prefix_tokens for r in recs})
        raise ValueError(f"prefix_attention needs the same prefix tokens in every layer, got {counts}")
    values, grid_mass = [], []
    for r in recs:
        rows = r.values[:, np.asarray(r.summary_rows)].astype(np.float64)  # [heads, rows, N]
        values.append(rows[..., :p].mean(axis=(0, 1)))
        grid_mass.append(rows[..., p:].sum(axis=-1).mean())
    names = next((r.prefix_names for r in recs if r.prefix_names), _prefix_names(recs[0]))
    return PrefixAttention(
        values=_frozen(np.stack(values)),
        names=names,
        grid_mass=_frozen(np.asarray(grid_mass)),
        layers=tuple(r.layer for r in recs),
        blocks=tuple(r.block for r in recs),
        how="mass of the summary rows (cls/dist, else every grid row) on each prefix token, mean over "
        "heads and rows",
    )
