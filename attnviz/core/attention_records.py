"""Records of attention between tokens: dense token attention (non-local, multi-head, DAT) and
window attention kept per window (Swin, HaloNet).

Part of :mod:`attnviz.core.records`, which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.arrays import frozen_array

__all__ = ["TokenAttention", "WindowAttention"]


@dataclass(frozen=True)
class TokenAttention:
    """Softmax attention between tokens of one block (non-local, multi-head, deformable).

    Attributes:
        layer: qualified module name.
        kind: ``"nonlocal"``, ``"mhsa"``, ``"dat"``, ...
        values: ``[heads, Nq, Nk]``; each row (a query) sums to 1 over the keys.
        grid: (H, W) of the query tokens after the ``prefix_tokens`` (row-major).
        stride: input-image pixels per query token, (y, x).
        prefix_tokens: tokens before the grid (class, distillation, register tokens).
        key_grid: (Hk, Wk) of the keys when they form a grid of their own (deformable
            attention's sampled keys); None when the keys are the queries' tokens.
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
        prefix_names: what each prefix token is, read from the model: ``"cls"``, ``"dist"``
            (distillation), ``"reg1"``... (registers); empty or of length ``prefix_tokens``.

    Token order is the model's: the prefix tokens, then the grid row by row. Queries and keys
    are the same tokens unless ``key_grid`` is set.
    """

    layer: str
    kind: str
    values: np.ndarray
    grid: tuple[int, int]
    stride: tuple[float, float]
    block: int
    prefix_tokens: int = 0
    key_grid: tuple[int, int] | None = None
    untrained: bool = False
    prefix_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = frozen_array(self.values, (3,), "TokenAttention.values")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "grid", (int(self.grid[0]), int(self.grid[1])))
        object.__setattr__(self, "prefix_names", tuple(self.prefix_names))
        if self.prefix_names and len(self.prefix_names) != self.prefix_tokens:
            raise ValueError(
                f"TokenAttention has {self.prefix_tokens} prefix tokens but {len(self.prefix_names)} names"
            )
        if self.key_grid is None and values.shape[1] != self.prefix_tokens + self.grid[0] * self.grid[1]:
            raise ValueError(
                f"TokenAttention.values {values.shape} do not match {self.prefix_tokens} prefix tokens "
                f"and a {self.grid[0]}x{self.grid[1]} grid"
            )

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.values.shape[0])

    @property
    def summary_rows(self) -> tuple[int, ...]:
        """The query rows that speak for the whole image: the class token (and the distillation
        token, averaged with it), or every grid row for models without one (mean-query)."""
        rows = tuple(i for i, name in enumerate(self.prefix_names) if name in ("cls", "dist"))
        if rows:
            return rows
        return tuple(range(self.prefix_tokens, self.values.shape[1]))


@dataclass(frozen=True)
class WindowAttention:
    """Local self-attention kept per window: Swin's (shifted) windows, HaloNet's haloed blocks.

    Storing the windows instead of a dense ``[heads, N, N]`` matrix keeps a 56x56 Swin stage small;
    :meth:`dense`, :meth:`query` and :meth:`received` put it back into image coordinates.

    Attributes:
        layer: qualified module name.
        kind: ``"swin"`` or ``"halo"``.
        values: ``[W, heads, Lq, Lk]``: W windows, Lq queries and Lk keys per window; each row is
            the module's softmax over the window's keys and sums to 1 (padding keys included).
        query_index: ``[W, Lq]`` int: position of each query in the query grid (row-major), or -1
            for a padding query (Swin's padding to a multiple of the window).
        key_index: ``[W, Lk]`` int: position of each key in the key grid, or -1 for a padding key
            (zero padding outside the feature map; its attention is reported by
            :meth:`padding_mass`, not placed on the image).
        grid: (H, W) of the queries; ``stride`` their input pixels per cell, (y, x).
        key_grid: (Hk, Wk) of the keys; ``key_stride`` their input pixels per cell, (y, x).
        window: (wy, wx) window (Swin) or block (Halo) size in query cells.
        shift: (sy, sx) cyclic shift of the Swin block actually applied (0 when none).
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
    """

    layer: str
    kind: str
    values: np.ndarray
    query_index: np.ndarray
    key_index: np.ndarray
    grid: tuple[int, int]
    stride: tuple[float, float]
    key_grid: tuple[int, int]
    key_stride: tuple[float, float]
    window: tuple[int, int]
    shift: tuple[int, int]
    block: int
    untrained: bool = False

    def __post_init__(self) -> None:
        values = frozen_array(self.values, (4,), "WindowAttention.values")
        qi = frozen_array(np.asarray(self.query_index, dtype=np.int64), (2,), "WindowAttention.query_index")
        ki = frozen_array(np.asarray(self.key_index, dtype=np.int64), (2,), "WindowAttention.key_index")
        n_win, _, lq, lk = values.shape
        if qi.shape != (n_win, lq) or ki.shape != (n_win, lk):
            raise ValueError(
                f"WindowAttention indices must be [{n_win}, {lq}] and [{n_win}, {lk}], "
                f"got {qi.shape}, {ki.shape}"
            )
        for name, index, grid in (("query", qi, self.grid), ("key", ki, self.key_grid)):
            if index.size and (index.min() < -1 or index.max() >= grid[0] * grid[1]):
                raise ValueError(f"WindowAttention {name}_index points outside its {grid} grid")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "query_index", qi)
        object.__setattr__(self, "key_index", ki)
        for name in ("grid", "key_grid", "window", "shift"):
            v = getattr(self, name)
            object.__setattr__(self, name, (int(v[0]), int(v[1])))

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.values.shape[1])

    @property
    def num_queries(self) -> int:
        """Queries on the grid, H*W."""
        return self.grid[0] * self.grid[1]

    @property
    def num_keys(self) -> int:
        """Keys on the key grid, Hk*Wk."""
        return self.key_grid[0] * self.key_grid[1]

    def _locate(self, query: int) -> tuple[int, int]:
        if not 0 <= query < self.num_queries:
            raise ValueError(f"query must be in [0, {self.num_queries}), got {query}")
        hits = np.argwhere(self.query_index == query)
        if not len(hits):
            raise ValueError(f"query {query} is in no window")
        return int(hits[0, 0]), int(hits[0, 1])

    def query(self, query: int) -> np.ndarray:
        """``[heads, Hk*Wk]``: where query ``query`` (row-major grid index) attends, on the key grid.

        Keys that appear twice in a window (never in Swin or Halo) would add up.
        """
        win, row = self._locate(query)
        keys = self.key_index[win]
        out = np.zeros((self.heads, self.num_keys), dtype=np.float32)
        valid = keys >= 0
        # add.at on the transposed view: key positions index its first axis, [keys, heads]
        np.add.at(out.T, keys[valid], self.values[win, :, row][:, valid].T.astype(np.float32))
        return out

    def dense(self) -> np.ndarray:
        """``[heads, H*W, Hk*Wk]``: every query's row on the key grid (zeros outside its window).

        Rows sum to 1 minus :meth:`padding_mass`. Large for early Swin stages (3136^2 per head):
        prefer :meth:`query` and :meth:`received` for display.
        """
        out = np.zeros((self.heads, self.num_queries, self.num_keys), dtype=np.float32)
        for win in range(self.values.shape[0]):
            qs, ks = self.query_index[win], self.key_index[win]
            qv, kv = np.flatnonzero(qs >= 0), np.flatnonzero(ks >= 0)
            block = self.values[win][:, qv][:, :, kv].astype(np.float32)
            out[:, qs[qv][:, None], ks[kv][None, :]] += block
        return out

    def received(self) -> np.ndarray:
        """``[heads, Hk*Wk]``: attention each key receives, averaged over the valid queries."""
        # every window's column sums over its valid queries, then one bincount per head
        valid_q = (self.query_index >= 0)[:, None, :, None]  # [W, 1, Lq, 1]
        sums = np.where(valid_q, self.values, 0).sum(axis=2, dtype=np.float64)  # [W, heads, Lk]
        keys = self.key_index  # [W, Lk]
        kv = keys >= 0
        flat_keys = keys[kv]  # the valid (window, key) pairs
        per_head = sums.transpose(1, 0, 2)[:, kv]  # [heads, pairs]
        out = np.stack([np.bincount(flat_keys, weights=h, minlength=self.num_keys) for h in per_head])
        count = max(int((self.query_index >= 0).sum()), 1)
        return (out / count).astype(np.float32)

    def padding_mass(self) -> np.ndarray:
        """``[heads, H*W]``: the share of each query's attention that went to padding keys."""
        out = np.zeros((self.heads, self.num_queries), dtype=np.float32)
        for win in range(self.values.shape[0]):
            qs, ks = self.query_index[win], self.key_index[win]
            qv = qs >= 0
            out[:, qs[qv]] = self.values[win][:, qv][:, :, ks < 0].sum(axis=-1, dtype=np.float32)
        return out
