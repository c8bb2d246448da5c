"""Attention rollout through the blocks of a ViT-like model.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (https://arxiv.org/abs/2005.00928):
``R = A_L ... A_1`` with each ``A = norm(0.5 * A_heads + 0.5 * I)``. It needs every block to keep
the same tokens, so it applies to ViT and DeiT, not to models that change resolution between
stages (Swin, BoTNet, HaloNet). Part of :mod:`attnviz.views.transformer`, which re-exports the
public names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from attnviz.core.records import Analysis, Record, TokenAttention
from attnviz.views.self_attention import frozen_float32, prefix_token_names, self_attention_records

__all__ = ["Rollout", "rollout", "rollout_supported"]

#: How the heads of one block are fused: ``[heads, N, N]`` -> ``[N, N]`` along ``axis=0``.
_FUSE: dict[str, Callable[..., np.ndarray]] = {"mean": np.mean, "max": np.max, "min": np.min}


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


def _rollout_records(records: Analysis | Sequence[Record]) -> Sequence[object]:
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
    names = prefix_token_names(first)
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
        values=frozen_float32(read[p:].reshape(first.grid)),
        matrix=frozen_float32(result),
        rows=tuple(int(i) for i in rows),
        prefix_mass=frozen_float32(read[:p]),
        prefix_names=names,
        layers=tuple(r.layer for r in token_recs),
        how=how,
    )
