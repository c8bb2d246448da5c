"""Which records are self-attention among the image's tokens, and what the transformer views share.

Self-attention here means a :class:`~attnviz.core.records.TokenAttention` whose keys are the query
tokens (``key_grid is None``: ViT, BoTNet, non-local, multi-head blocks) or a
:class:`~attnviz.core.records.WindowAttention` (Swin, HaloNet). Deformable attention attends to
sampled keys, not to the image's tokens: :func:`self_attention_records` skips it and
:func:`check_self_attention` refuses it. Part of :mod:`attnviz.views.transformer`, which
re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

import numpy as np

from attnviz.core.records import Analysis, Record, TokenAttention, WindowAttention

__all__ = [
    "SelfAttention",
    "check_self_attention",
    "frozen_float32",
    "is_self_attention",
    "prefix_token_names",
    "self_attention_records",
]

SelfAttention = TokenAttention | WindowAttention


def frozen_float32(values: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous float32 copy (or view) of ``values``: what every view returns."""
    arr: np.ndarray = np.ascontiguousarray(values, dtype=np.float32)
    arr.setflags(write=False)
    return arr


def is_self_attention(record: object) -> TypeGuard[SelfAttention]:
    """True for self-attention among the image's tokens: token attention whose keys are the query
    tokens, or window attention (not deformable attention's sampled keys, not other records)."""
    if isinstance(record, TokenAttention):
        return record.key_grid is None
    return isinstance(record, WindowAttention)


def check_self_attention(record: object, what: str) -> None:
    """Refuse anything but self-attention among the image's tokens.

    Args:
        record: the record a view was given.
        what: the view's name, for the message.

    Raises:
        ValueError: for deformable attention (``key_grid`` set) or another record kind.
    """
    if isinstance(record, TokenAttention) and record.key_grid is not None:
        raise ValueError(
            f"{what} needs self-attention among the image's tokens; {record.layer!r} is deformable "
            f"attention whose keys are sampled points on a {record.key_grid} grid, not the query tokens"
        )
    if not isinstance(record, TokenAttention | WindowAttention):
        kind = type(record).__name__
        raise ValueError(f"{what} needs a TokenAttention or WindowAttention record, got {kind}")


def prefix_token_names(record: TokenAttention) -> tuple[str, ...]:
    """The record's prefix names, or ``prefix0``... when the model did not say."""
    if record.prefix_names:
        return record.prefix_names
    return tuple(f"prefix{i}" for i in range(record.prefix_tokens))


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
