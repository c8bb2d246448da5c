"""Vision Transformer with Deformable Attention (Xia et al., CVPR 2022), https://arxiv.org/abs/2201.00520.

Deformable attention (DAT v1): instead of attending to every position, each group of heads
attends to ``Hk x Wk`` keys sampled at learned points. The points start on a regular reference
grid; a small offset network (depthwise conv, LayerNorm, GELU, 1x1 conv) computes one (dy, dx)
shift per reference point from the queries. Keys and values are projected from the features
bilinearly sampled at the shifted points; a relative position bias, read from a learned table at
the query-to-key displacement, is added to the logits.

Parameter names and shapes follow ``DAttentionBaseline`` of the official code
(github.com/LeapLabTHU/DAT, ``models/dat_blocks.py``) so that its checkpoints load:
``conv_offset.{0,1.norm,3}``, ``proj_q``, ``proj_k``, ``proj_v``, ``proj_out`` and
``rpe_table [heads, 2 * Hq - 1, 2 * Wq - 1]``.

Coordinate convention: all points are (y, x) pairs normalised to [-1, 1] as read by
``F.grid_sample(..., align_corners=True)`` on the ``[H, W]`` input: -1 is the centre of the first
row/column and +1 the centre of the last; in pixels, ``y_pix = (p_y + 1) / 2 * (H - 1)`` and
``x_pix = (p_x + 1) / 2 * (W - 1)``.

Exposure (taps, all ``nn.Identity`` except the softmax):
    * ``reference`` output ``[B, G, Hk, Wk, 2]``: the reference grid.
    * ``points`` output ``[B, G, Hk, Wk, 2]``: the sampling points (reference + offset).
    * ``sampled`` output ``[B * G, C / G, Hk, Wk]``: the features sampled at ``points``; group g
      holds channels ``[g * C / G, (g + 1) * C / G)``.
    * ``attn_softmax`` output ``[B, heads, H * W, Hk * Wk]``: row m is query position m
      (row-major over the input grid), column n is key n (row-major over the ``Hk x Wk`` points).
      Rows sum to 1.

Heads and groups: head h belongs to group ``h // (heads / G)``; its query channels drive that
group's offsets and its relative position bias is read at that group's points. As in the official
code, ``proj_k``/``proj_v`` mix all channels, so key n of any head combines the features every
group sampled at its own point n.

With ``grid_mode="aligned"`` (default) the reference grid spans exactly [-1, 1]; the ``"dat_v1"``
and ``"dat_pp"`` modes reproduce the official code's grids (see :class:`DAttention`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.layers.mhsa import LayerNorm2d

__all__ = ["DAttention", "LayerNormProxy"]

GridMode = Literal["aligned", "dat_v1", "dat_pp"]


class LayerNormProxy(nn.Module):
    """LayerNorm over channels of a ``[B, C, H, W]`` map, held as ``.norm`` (the official layout).

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.norm(x)


def _linspace(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``n`` pixel centres normalised with align_corners=True: -1 ... +1 (0 for a single cell)."""
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)


def _axis(n: int, mode: GridMode, query: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised coordinates of ``n`` cells along one axis, for keys or (``query``) queries."""
    centres = torch.arange(n, dtype=dtype, device=device) + 0.5
    if mode == "dat_v1":
        # Official v1: centres normalised as if align_corners=False (queries and keys alike),
        # then read by grid_sample with align_corners=True.
        return centres / n * 2 - 1
    if mode == "dat_pp" and not query:
        # Official 2023 code: key centres divided by (n - 1), half a cell past the pixel centres.
        return centres / max(n - 1, 1) * 2 - 1
    return _linspace(n, dtype, device)


def _grid(
    h: int, w: int, mode: GridMode, query: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``[h, w, 2]`` grid of normalised (y, x) coordinates."""
    ys, xs = torch.meshgrid(
        _axis(h, mode, query, dtype, device), _axis(w, mode, query, dtype, device), indexing="ij"
    )
    return torch.stack((ys, xs), dim=-1)


class DAttention(nn.Module):
    """Deformable multi-head attention (DAT v1) on a feature map.

    Args:
        channels: C, divisible by ``num_heads`` and ``n_groups``.
        num_heads: attention heads; must be divisible by ``n_groups``.
        n_groups: offset groups G; each has its own sampling points.
        offset_range_factor: when >= 0 the offsets are ``tanh(o) * factor / (Hk - 1)`` along y
            and ``/ (Wk - 1)`` along x (``/ Hk``, ``/ Wk`` in ``"dat_v1"`` mode): at most
            ``factor / 2`` key cells in the default mode. When < 0 they are unbounded and the
            points are clamped to [-1, 1] (the official 2023 code's rule).
        stride: stride of the offset network's depthwise conv; keys form its ``Hk x Wk`` output
            grid (``ceil(H / stride) x ceil(W / stride)`` for an odd ``ksize``).
        ksize: kernel of the offset network's depthwise conv.
        use_pe: add the relative position bias from ``rpe_table``.
        q_size: (Hq, Wq) query grid the bias table is built for. Other grids read the same table
            scaled to their extent (the bias depends on the displacement normalised to [-1, 1]).
        grid_mode: where the reference points and the query grid lie.
            ``"aligned"`` (default): both on the pixel centres, ``linspace(-1, 1, n)``, so the
            reference spans exactly [-1, 1]; offset range divided by ``Hk - 1``.
            ``"dat_v1"``: the official v1 code (2022, DAT-T/S/B checkpoints), reproduced exactly:
            both at ``(i + 0.5) / n * 2 - 1``; offset range divided by ``Hk``.
            ``"dat_pp"``: the official 2023 code (DAT++): reference at ``(i + 0.5) / (n - 1) * 2 - 1``
            (half a cell past the pixel centres), queries on ``linspace(-1, 1, n)``; offset range
            divided by ``Hk - 1``.

    Submodules:
        conv_offset: ``Sequential(Conv2d(Cg, Cg, ksize, stride, groups=Cg), LayerNormProxy(Cg),
            GELU(), Conv2d(Cg, 2, 1, bias=False))`` on the grouped queries -> ``[B * G, 2, Hk, Wk]``
            raw (dy, dx).
        proj_q, proj_k, proj_v, proj_out: ``Conv2d(C, C, 1)``.
        reference, points, sampled, attn_softmax: the taps listed in the module docstring.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]`` (attention output, no residual).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        n_groups: int = 2,
        offset_range_factor: float = 2.0,
        stride: int = 1,
        ksize: int = 3,
        use_pe: bool = True,
        q_size: tuple[int, int] = (14, 14),
        grid_mode: GridMode = "aligned",
    ) -> None:
        super().__init__()
        if num_heads < 1 or n_groups < 1 or num_heads % n_groups:
            raise ValueError(f"num_heads ({num_heads}) must be a positive multiple of n_groups ({n_groups})")
        if channels < 1 or channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of num_heads ({num_heads})")
        if stride < 1 or ksize < 1:
            raise ValueError(f"stride and ksize must be positive integers, got {stride} and {ksize}")
        if len(q_size) != 2 or min(q_size) < 1:
            raise ValueError(f"q_size must be a pair of positive integers, got {q_size}")
        if grid_mode not in ("aligned", "dat_v1", "dat_pp"):
            raise ValueError(f"grid_mode must be 'aligned', 'dat_v1' or 'dat_pp', got {grid_mode!r}")
        self.nc = channels
        self.n_heads = num_heads
        self.n_head_channels = channels // num_heads
        self.n_groups = n_groups
        self.n_group_channels = channels // n_groups
        self.n_group_heads = num_heads // n_groups
        self.scale = self.n_head_channels**-0.5
        self.offset_range_factor = offset_range_factor
        self.stride = stride
        self.ksize = ksize
        self.q_h, self.q_w = int(q_size[0]), int(q_size[1])
        self.grid_mode: GridMode = grid_mode

        cg = self.n_group_channels
        pad = ksize // 2 if ksize != stride else 0
        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, ksize, stride, pad, groups=cg),
            LayerNormProxy(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, kernel_size=1, bias=False),
        )
        self.proj_q = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_k = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        if use_pe:
            self.rpe_table: nn.Parameter | None = nn.Parameter(
                torch.zeros(num_heads, 2 * self.q_h - 1, 2 * self.q_w - 1)
            )
            nn.init.trunc_normal_(self.rpe_table, std=0.01)
        else:
            self.register_parameter("rpe_table", None)

        self.reference = nn.Identity()
        self.points = nn.Identity()
        self.sampled = nn.Identity()
        self.attn_softmax = nn.Softmax(dim=-1)

    def _offset_range(self, n: int) -> float:
        return 1.0 / n if self.grid_mode == "dat_v1" else 1.0 / max(n - 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend from every position to the deformed keys.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``[B, C, H, W]``: ``proj_out(attn @ v)``.
        """
        b, c, h, w = x.shape
        g, cg = self.n_groups, self.n_group_channels
        heads, hc = self.n_heads, self.n_head_channels
        if c != self.nc:
            raise ValueError(f"DAttention built for {self.nc} channels got input with {c}")

        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(b * g, cg, h, w))  # [B*G, 2, Hk, Wk], (dy, dx)
        hk, wk = offset.shape[2:]
        if self.offset_range_factor >= 0:
            rng = offset.new_tensor([self._offset_range(hk), self._offset_range(wk)]).view(1, 2, 1, 1)
            offset = offset.tanh() * rng * self.offset_range_factor
        offset = offset.permute(0, 2, 3, 1)  # [B*G, Hk, Wk, 2]
        ref = _grid(hk, wk, self.grid_mode, False, x.dtype, x.device).expand(b * g, hk, wk, 2)
        pos = offset + ref
        if self.offset_range_factor < 0:
            pos = pos.clamp(-1.0, 1.0)
        self.reference(ref.reshape(b, g, hk, wk, 2))  # tap only: hooks read it
        pos = self.points(pos.reshape(b, g, hk, wk, 2)).reshape(b * g, hk, wk, 2)

        grouped = x.reshape(b * g, cg, h, w)
        sampled = F.grid_sample(grouped, pos.flip(-1), mode="bilinear", align_corners=True)  # zero padding
        sampled = self.sampled(sampled)  # [B*G, Cg, Hk, Wk]
        ns = hk * wk
        kv_in = sampled.reshape(b, c, 1, ns)
        k = self.proj_k(kv_in).reshape(b, heads, hc, ns)
        v = self.proj_v(kv_in).reshape(b, heads, hc, ns)
        logits = torch.einsum("bhcm,bhcn->bhmn", q.reshape(b, heads, hc, h * w), k) * self.scale

        if self.rpe_table is not None:
            q_grid = _grid(h, w, self.grid_mode, True, x.dtype, x.device).reshape(1, h * w, 1, 2)
            # Query-minus-key displacement in [-2, 2], halved to address the table's [-1, 1].
            disp = (q_grid - pos.reshape(b * g, 1, ns, 2)) * 0.5  # [B*G, HW, Ns, 2]
            table = self.rpe_table.unsqueeze(0).expand(b, -1, -1, -1)
            table = table.reshape(b * g, self.n_group_heads, *self.rpe_table.shape[1:])
            bias = F.grid_sample(table, disp.flip(-1), mode="bilinear", align_corners=True)
            logits = logits + bias.reshape(b, heads, h * w, ns)

        attn = self.attn_softmax(logits)  # [B, heads, HW, Ns]
        out = torch.einsum("bhmn,bhcn->bhcm", attn, v).reshape(b, c, h, w)
        return self.proj_out(out)
