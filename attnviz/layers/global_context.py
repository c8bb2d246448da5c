"""GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond (Cao et al., ICCVW 2019),
https://arxiv.org/abs/1904.11492.

A simplified non-local block: one query-independent attention map (a 1x1 convolution to one
channel, softmax over all positions) pools the features into a global context vector, which a
bottleneck MLP (1x1 conv, LayerNorm, ReLU, 1x1 conv) transforms and adds to every position
(``fuse_add``) and/or turns into a channel gate (``fuse_scale``).

Exposure:
    * ``context_softmax`` output ``[B, 1, H, W]``: the context map, summing to 1 over H*W.
    * ``mlp_add`` output ``[B, C, 1, 1]``: the term added to every position (when ``fuse_add``).
    * ``gate`` output ``[B, C, 1, 1]``: the channel gate (when ``fuse_scale``).

The block returns ``x * gate + mlp_add(context)`` (each term only when enabled).
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.layers.mhsa import LayerNorm2d
from attnviz.layers.se import reduced_channels

__all__ = ["ContextMlp", "GlobalContext", "SpatialSoftmax"]


class SpatialSoftmax(nn.Module):
    """Softmax over all positions of each map.

    Shape:
        input ``[B, K, H, W]`` logits -> output ``[B, K, H, W]``; each map sums to 1 over H*W.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each ``[H, W]`` map."""
        return x.flatten(2).softmax(dim=-1).view_as(x)


class ContextMlp(nn.Module):
    """GCNet's transform: ``fc2(act(norm(fc1(x))))`` with LayerNorm over channels.

    Args:
        channels: input and output channels C.
        rd_channels: bottleneck width.

    Shape:
        input ``[B, C, 1, 1]`` -> output ``[B, C, 1, 1]``.
    """

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.norm = LayerNorm2d(rd_channels, eps=1e-5)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, 1, 1]`` -> ``[B, C, 1, 1]``."""
        return self.fc2(self.act(self.norm(self.fc1(x))))


class GlobalContext(nn.Module):
    """Global context block.

    Args:
        channels: input (and output) channels C.
        rd_ratio: bottleneck width as a fraction of C (used when ``rd_channels`` is None).
        rd_channels: explicit bottleneck width.
        fuse_add: add the transformed context to every position (the paper's default).
        fuse_scale: multiply the input by a gate computed from the context.
        gate_layer: gate activation for ``fuse_scale``.

    Submodules:
        conv_attn: ``Conv2d(C, 1, 1)`` with bias -> ``[B, 1, H, W]`` logits.
        context_softmax: :class:`SpatialSoftmax` -> ``[B, 1, H, W]``, sums to 1 over H*W.
        mlp_add: :class:`ContextMlp` -> ``[B, C, 1, 1]`` (None unless ``fuse_add``).
        mlp_scale: :class:`ContextMlp` (None unless ``fuse_scale``).
        gate: ``gate_layer()`` -> ``[B, C, 1, 1]`` (None unless ``fuse_scale``).

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        fuse_add: bool = True,
        fuse_scale: bool = False,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        if not (fuse_add or fuse_scale):
            raise ValueError("GlobalContext needs fuse_add or fuse_scale (or both) to be True")
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1, bias=True)
        self.context_softmax = SpatialSoftmax()
        self.mlp_add = ContextMlp(channels, rd) if fuse_add else None
        self.mlp_scale = ContextMlp(channels, rd) if fuse_scale else None
        self.gate = gate_layer() if fuse_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        attn = self.context_softmax(self.conv_attn(x))  # [B, 1, H, W]
        context = torch.einsum("bchw,bhw->bc", x, attn[:, 0])[..., None, None]  # [B, C, 1, 1]
        out = x
        if self.mlp_scale is not None and self.gate is not None:
            out = out * self.gate(self.mlp_scale(context))
        if self.mlp_add is not None:
            out = out + self.mlp_add(context)
        return out
