"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018), https://arxiv.org/abs/1807.06521.

Two gates in sequence: a channel gate (a shared MLP applied to the average- and the max-pooled
channel descriptors, summed, then a sigmoid) and a spatial gate (a ``k x k`` convolution over the
channel-wise mean and max maps, then a sigmoid).

Exposure:
    * ``channel.gate`` output ``[B, C, 1, 1]``: the channel gate.
    * ``spatial.gate`` output ``[B, 1, H, W]``: the spatial gate, in feature-map cells.

The block returns ``(x * channel_gate) * spatial_gate``, where the spatial gate is computed from
the channel-gated features. The paper's spatial convolution is followed by batch norm; here it is
a plain convolution with bias (the same function class, simpler to read back).
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.layers.se import reduced_channels

__all__ = ["CBAM", "ChannelGate", "SpatialGate"]


class ChannelGate(nn.Module):
    """CBAM's channel gate: a shared bottleneck MLP on average- and max-pooled descriptors.

    Args:
        channels: channels C.
        rd_ratio: bottleneck width as a fraction of C (used when ``rd_channels`` is None).
        rd_channels: explicit bottleneck width.
        act_layer: activation inside the MLP.
        gate_layer: gate activation.

    Submodules:
        fc1, act, fc2: the shared MLP (1x1 convolutions with bias).
        gate: output ``[B, C, 1, 1]``, ``gate(mlp(avg) + mlp(max))``.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]`` (``x * gate``).
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)
        self.gate = gate_layer()

    def _mlp(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(s)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the channels of ``x``: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return x * self.gate(self._mlp(avg) + self._mlp(mx))


class SpatialGate(nn.Module):
    """CBAM's spatial gate: a ``k x k`` convolution over the channel mean and max maps.

    Args:
        kernel_size: odd kernel size k (the paper uses 7).
        gate_layer: gate activation.

    Submodules:
        conv: ``Conv2d(2, 1, k, padding=k // 2)`` with bias; input channels are (mean, max).
        gate: output ``[B, 1, H, W]``, the spatial gate.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]`` (``x * gate``).
    """

    def __init__(self, kernel_size: int = 7, gate_layer: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel must be a positive odd integer, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=True)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the positions of ``x``: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(s))


class CBAM(nn.Module):
    """Convolutional block attention module: channel gate, then spatial gate.

    Args:
        channels: input (and output) channels C.
        rd_ratio: channel-MLP width as a fraction of C (used when ``rd_channels`` is None).
        rd_channels: explicit channel-MLP width.
        spatial_kernel: odd kernel size of the spatial convolution.
        act_layer: activation inside the channel MLP.
        gate_layer: activation of both gates.

    Submodules:
        channel: :class:`ChannelGate`; ``channel.gate`` -> ``[B, C, 1, 1]``.
        spatial: :class:`SpatialGate`; ``spatial.gate`` -> ``[B, 1, H, W]``.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        spatial_kernel: int = 7,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, rd_ratio, rd_channels, act_layer, gate_layer)
        self.spatial = SpatialGate(spatial_kernel, gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.spatial(self.channel(x))
