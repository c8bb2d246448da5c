"""Vision Transformer with Deformable Attention (Xia et al., CVPR 2022), https://arxiv.org/abs/2201.00520.

The window attention blocks of DAT v1 (github.com/LeapLabTHU/DAT, tag ``CVPR2022``,
``models/dat_blocks.py``): ``L`` blocks attend inside non-overlapping windows
(:class:`LocalAttention`), ``S`` blocks inside windows shifted as in Swin
(:class:`ShiftWindowAttention`). Parameter and buffer names follow the official code, so the
official checkpoints load into :mod:`attnviz.layers.dat_tiny`'s network.

Exposure: each block's softmax is the output of ``attn_softmax``:
``[B * nW, heads, ws * ws, ws * ws]``, windows row-major over the (shifted, for ``S``) map, tokens
row-major inside each window.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LocalAttention", "ShiftWindowAttention"]


def _window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * nW, wh * ww, C]``, windows row-major, tokens row-major inside."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, wh * ww, c)


def _window_merge(t: torch.Tensor, b: int, h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: ``[B * nW, wh * ww, C]`` -> ``[B, C, H, W]``."""
    c = t.shape[-1]
    t = t.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, w)


class LocalAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with a relative position bias.

    Args:
        dim: channels C, divisible by ``heads``.
        heads: attention heads.
        window_size: window side ``ws`` (square windows).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after ``proj_out``.

    Submodules and state (official names):
        proj_qkv: ``Linear(C, 3C)``, output split as (q, k, v), each head-major.
        proj_out: ``Linear(C, C)``.
        relative_position_bias_table: ``[(2 ws - 1)^2, heads]``, row ``(dy + ws - 1) * (2 ws - 1)
            + (dx + ws - 1)`` for the query-minus-key displacement (dy, dx) inside a window.
        relative_position_index: buffer ``[ws^2, ws^2]`` (int64): that row for each token pair.
        attn_softmax: ``nn.Softmax`` whose output ``[B * nW, heads, ws^2, ws^2]`` is the attention.

    Shape:
        input ``[B, C, H, W]`` with H, W multiples of ``ws`` -> output ``[B, C, H, W]``.
    """

    relative_position_index: torch.Tensor

    def __init__(
        self, dim: int, heads: int, window_size: int, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if window_size < 1:
            raise ValueError(f"window_size must be a positive integer, got {window_size}")
        self.dim = dim
        self.heads = heads
        self.window_size = (window_size, window_size)
        self.scale = (dim // heads) ** -0.5
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_softmax = nn.Softmax(dim=-1)

        span = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span * span, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + window_size - 1  # query row minus key row, shifted to >= 0
        dx = xs[:, None] - xs[None, :] + window_size - 1
        # Persistent: the official checkpoints carry it.
        self.register_buffer("relative_position_index", dy * span + dx)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: ``[B, C, H, W]``.
            mask: optional additive logits ``[nW, ws^2, ws^2]`` per window (shifted windows).

        Returns:
            ``[B, C, H, W]``: ``proj_out`` of the attended values (no residual).
        """
        b, c, h, w = x.shape
        wh, ww = self.window_size
        if c != self.dim:
            raise ValueError(f"{type(self).__name__} built for {self.dim} channels got input with {c}")
        if h % wh or w % ww:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {wh}x{ww}")
        n = wh * ww
        heads, hc = self.heads, c // self.heads
        tokens = _window_partition(x, wh, ww)  # [B*nW, n, C]
        q, k, v = self.proj_qkv(tokens).reshape(-1, n, 3, heads, hc).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # [B*nW, heads, n, n]
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        logits = logits + bias.reshape(n, n, heads).permute(2, 0, 1)
        if mask is not None:
            n_win = mask.shape[0]
            logits = (logits.reshape(b, n_win, heads, n, n) + mask[None, :, None]).reshape(-1, heads, n, n)
        attn = self.attn_drop(self.attn_softmax(logits))
        out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        out = self.proj_drop(self.proj_out(out))
        return _window_merge(out, b, h, w, wh, ww)


class ShiftWindowAttention(LocalAttention):
    """:class:`LocalAttention` on the map rolled by ``-shift_size``, masked, rolled back.

    Tokens that come from different regions of the unrolled map (split at ``H - ws`` and
    ``H - shift_size`` along each axis) get ``-100`` added to their logits, as in Swin.

    Args:
        dim, heads, window_size, attn_drop, proj_drop: as :class:`LocalAttention`.
        shift_size: roll along y and x, ``0 < shift_size < window_size`` (DAT uses ``ceil(ws / 2)``).
        fmap_size: (H, W) of the map the mask is built for.

    State (besides :class:`LocalAttention`'s): ``attn_mask`` buffer ``[nW, ws^2, ws^2]``, 0 or -100.

    Shape:
        input ``[B, C, H, W]`` (the ``fmap_size`` map) -> output ``[B, C, H, W]``.
    """

    attn_mask: torch.Tensor

    def __init__(
        self,
        dim: int,
        heads: int,
        window_size: int,
        attn_drop: float,
        proj_drop: float,
        shift_size: int,
        fmap_size: tuple[int, int],
    ) -> None:
        super().__init__(dim, heads, window_size, attn_drop, proj_drop)
        if not 0 < shift_size < window_size:
            raise ValueError(f"shift_size must be in (0, {window_size}), got {shift_size}")
        h, w = fmap_size
        if h % window_size or w % window_size:
            raise ValueError(f"fmap_size {h}x{w} is not a multiple of the window {window_size}")
        self.shift_size = shift_size
        self.fmap_size = (h, w)

        def regions(n: int) -> torch.Tensor:
            # 0 before the last window, 1 in it up to the shift, 2 for the wrapped-around strip.
            idx = torch.arange(n)
            return (idx >= n - window_size).long() + (idx >= n - shift_size).long()

        label = (regions(h)[:, None] * 3 + regions(w)[None, :]).float()
        windows = _window_partition(label[None, None], window_size, window_size)[..., 0]  # [nW, n]
        differ = windows[:, :, None] != windows[:, None, :]
        self.register_buffer("attn_mask", torch.zeros(differ.shape).masked_fill(differ, -100.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Shifted-window attention.

        Args:
            x: ``[B, C, H, W]`` with ``(H, W) == fmap_size``.
            mask: must be None (the block uses its own ``attn_mask``).

        Returns:
            ``[B, C, H, W]``.
        """
        if mask is not None:
            raise ValueError("ShiftWindowAttention uses its own attn_mask; pass no mask")
        if tuple(x.shape[-2:]) != self.fmap_size:
            raise ValueError(
                f"ShiftWindowAttention built for a {self.fmap_size} map got {tuple(x.shape[-2:])}"
            )
        s = self.shift_size
        out = super().forward(torch.roll(x, shifts=(-s, -s), dims=(2, 3)), self.attn_mask)
        return torch.roll(out, shifts=(s, s), dims=(2, 3))
