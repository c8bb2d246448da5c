"""Vision Transformer with Deformable Attention (Xia et al., CVPR 2022), https://arxiv.org/abs/2201.00520.

One stage of DAT v1 (github.com/LeapLabTHU/DAT, tag ``CVPR2022``, ``models/dat.py``): pre-norm
residual blocks, each an attention (``L``, ``S`` or ``D``) followed by an MLP. Block ``j`` is
``x += attns[j](layer_norms[2j](x))`` then ``x += mlps[j](layer_norms[2j + 1](x))``. Module and
parameter names follow the official code (see :mod:`attnviz.layers.dat_tiny`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from attnviz.layers.dat import DAttention, LayerNormProxy
from attnviz.layers.dat_window_attention import LocalAttention, ShiftWindowAttention

__all__ = ["TransformerMLP", "TransformerMLPWithConv", "TransformerStage"]

#: Depthwise kernel of the offset network of a ``D`` block, by stage (fixed in the v1 code).
_OFFSET_KSIZES = (9, 7, 5, 3)


class TransformerMLP(nn.Module):
    """Per-position MLP ``Linear -> GELU -> Linear`` held as ``chunk.{linear1, act, drop1, linear2, drop2}``.

    Args:
        channels: C.
        expansion: hidden width ``expansion * C``.
        drop: dropout after each linear layer's block.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, expansion: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.chunk = nn.Sequential()
        self.chunk.add_module("linear1", nn.Linear(channels, hidden))
        self.chunk.add_module("act", nn.GELU())
        self.chunk.add_module("drop1", nn.Dropout(drop))
        self.chunk.add_module("linear2", nn.Linear(hidden, channels))
        self.chunk.add_module("drop2", nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransformerMLPWithConv(nn.Module):
    """MLP of 1x1 convolutions with a 3x3 depthwise convolution after the first.

    ``drop2(linear2(drop1(act(dwc(linear1(x))))))``.

    Args:
        channels: C.
        expansion: hidden width ``expansion * C``.
        drop: dropout rate.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, expansion: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Conv2d(channels, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.linear2 = nn.Conv2d(hidden, channels, 1)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = self.drop1(self.act(self.dwc(self.linear1(x))))
        return self.drop2(self.linear2(x))


class TransformerStage(nn.Module):
    """One DAT stage: an optional 1x1 projection, then pre-norm attention + MLP blocks.

    Args:
        fmap_size: side of the stage's square map (the query grid of ``D`` blocks, the mask of ``S``).
        window_size: window side of ``L``/``S`` blocks.
        dim_in: input channels; a ``Conv2d(dim_in, dim_embed, 1)`` ``proj`` is added when they differ.
        dim_embed: stage channels C.
        depth: number of blocks.
        stage_spec: one letter per block: ``"L"``, ``"S"`` or ``"D"``.
        n_groups: offset groups of ``D`` blocks.
        use_pe: ``D`` blocks add the relative position bias.
        heads: attention heads.
        stride: stride of the ``D`` blocks' offset network.
        offset_range_factor: offset bound of ``D`` blocks (must be > 0; see :class:`DAttention`).
        stage_idx: 0..3; selects the offset kernel (9, 7, 5, 3).
        attn_drop, proj_drop, drop: dropout rates.
        expansion: MLP width factor.
        drop_path_rates: stochastic depth rate per block.
        use_dwc_mlp: use :class:`TransformerMLPWithConv` instead of :class:`TransformerMLP`.

    Submodules (official names): ``proj``, ``layer_norms`` (``2 * depth``), ``attns``, ``mlps``,
    ``drop_path``.

    Shape:
        input ``[B, dim_in, S, S]`` -> output ``[B, C, S, S]``, ``S = fmap_size``.
    """

    def __init__(
        self,
        fmap_size: int,
        window_size: int,
        dim_in: int,
        dim_embed: int,
        depth: int,
        stage_spec: Sequence[str],
        n_groups: int,
        use_pe: bool,
        heads: int,
        stride: int,
        offset_range_factor: float,
        stage_idx: int,
        attn_drop: float,
        proj_drop: float,
        expansion: int,
        drop: float,
        drop_path_rates: Sequence[float],
        use_dwc_mlp: bool,
    ) -> None:
        super().__init__()
        if len(stage_spec) != depth or len(drop_path_rates) != depth:
            raise ValueError(f"stage {stage_idx}: stage_spec {list(stage_spec)} does not have {depth} blocks")
        self.depth = depth
        self.proj = nn.Conv2d(dim_in, dim_embed, 1) if dim_in != dim_embed else nn.Identity()
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim_embed) for _ in range(2 * depth))
        mlp = TransformerMLPWithConv if use_dwc_mlp else TransformerMLP
        self.mlps = nn.ModuleList(mlp(dim_embed, expansion, drop) for _ in range(depth))
        self.attns = nn.ModuleList()
        for letter in stage_spec:
            if letter == "L":
                self.attns.append(LocalAttention(dim_embed, heads, window_size, attn_drop, proj_drop))
            elif letter == "S":
                shift = math.ceil(window_size / 2)
                self.attns.append(
                    ShiftWindowAttention(
                        dim_embed, heads, window_size, attn_drop, proj_drop, shift, (fmap_size, fmap_size)
                    )
                )
            elif letter == "D":
                ksize = _OFFSET_KSIZES[stage_idx]
                if offset_range_factor <= 0:
                    # DAttention's rule for <= 0 differs from the v1 code's (unbounded, tanh of points).
                    raise ValueError(f"stage {stage_idx}: offset_range_factor must be > 0 for 'D' blocks")
                if stride == ksize:
                    # DAttention drops the padding when stride == ksize; v1 always pads ksize // 2.
                    raise ValueError(f"stage {stage_idx}: stride {stride} equal to the offset kernel")
                self.attns.append(
                    DAttention(
                        dim_embed,
                        num_heads=heads,
                        n_groups=n_groups,
                        offset_range_factor=offset_range_factor,
                        stride=stride,
                        ksize=ksize,
                        use_pe=use_pe,
                        q_size=(fmap_size, fmap_size),
                        grid_mode="dat_v1",
                    )
                )
            else:
                raise ValueError(f"stage {stage_idx}: block type {letter!r} is not one of 'L', 'S', 'D'")
        self.drop_path = nn.ModuleList(DropPath(r) if r > 0 else nn.Identity() for r in drop_path_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim_in, S, S]`` -> ``[B, C, S, S]``."""
        x = self.proj(x)
        for d in range(self.depth):
            x = x + self.drop_path[d](self.attns[d](self.layer_norms[2 * d](x)))
            x = x + self.drop_path[d](self.mlps[d](self.layer_norms[2 * d + 1](x)))
        return x
