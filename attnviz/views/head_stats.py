"""Statistics of every head, layer by layer: mean attention distance, entropy, and the attention
the image-level rows give to prefix tokens.

* Dosovitskiy et al., "An Image is Worth 16x16 Words" (https://arxiv.org/abs/2010.11929): the
  mean attention distance of each head, in input pixels.
* Darcet et al., "Vision Transformers Need Registers" (https://arxiv.org/abs/2309.16588): the
  attention that goes to register tokens is reported apart from the spatial map.

Coordinates: the centre of token (i, j) of a grid with stride (sy, sx) is
``((i+0.5)*sy - 0.5, (j+0.5)*sx - 0.5)`` with pixel centres at integers. Part of
:mod:`attnviz.views.transformer`, which re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from attnviz.core.records import Analysis, Record, TokenAttention, WindowAttention
from attnviz.views import statistics
from attnviz.views.self_attention import frozen_float32, prefix_token_names, self_attention_records

__all__ = ["HeadStats", "PrefixAttention", "head_statistics", "prefix_attention"]


def _frozen_tuple(arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(frozen_float32(a) for a in arrays)


def _centres(index: np.ndarray, grid: tuple[int, int], stride: tuple[float, float]) -> np.ndarray:
    """``[..., 2]`` (y, x) pixel centres of row-major grid indices (any shape; -1 gives junk)."""
    rows, cols = np.divmod(index, grid[1])
    return np.stack([(rows + 0.5) * stride[0] - 0.5, (cols + 0.5) * stride[1] - 0.5], axis=-1)


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
    names = next((r.prefix_names for r in recs if r.prefix_names), prefix_token_names(recs[0]))
    return PrefixAttention(
        values=frozen_float32(np.stack(values)),
        names=names,
        grid_mass=frozen_float32(np.asarray(grid_mass)),
        layers=tuple(r.layer for r in recs),
        blocks=tuple(r.block for r in recs),
        how="mass of the summary rows (cls/dist, else every grid row) on each prefix token, mean over "
        "heads and rows",
    )
