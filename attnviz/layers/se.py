"""Squeeze-and-Excitation Networks (Hu et al., CVPR 2018), https://arxiv.org/abs/1709.01507.

A channel gate: global average pooling squeezes each channel to one number, a two-layer
bottleneck MLP (1x1 convolutions) turns the ``[B, C, 1, 1]`` descriptor into one gate per
channel, and the input is rescaled channel by channel.

Exposure: the gate is the output of the submodule ``gate`` (``nn.Sigmoid`` by default),
shape ``[B, C, 1, 1]``; the block returns ``x * gate``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SqueezeExcite", "reduced_channels"]


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None, min_channels: int = 1) -> int:
    """Width of a bottleneck: ``rd_channels`` when given, else ``round(channels * rd_ratio)``.

    Args:
        channels: input channels C (positive).
        rd_ratio: reduction ratio, used when ``rd_channels`` is None (positive).
        rd_channels: explicit bottleneck width, or None.
        min_channels: lower bound of the computed width.

    Returns:
        The bottleneck width, at least ``min_channels`` when computed from the ratio.

    Raises:
        ValueError: for a non-positive ``channels``, ``rd_ratio`` or ``rd_channels``.
    """
    if channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels}")
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be a positive integer, got {rd_channels}")
        return int(rd_channels)
    if rd_ratio <= 0:
        raise ValueError(f"rd_ratio must be positive, got {rd_ratio}")
    return max(min_channels, round(channels * rd_ratio))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation channel gate.

    Args:
        channels: input (and output) channels C.
        rd_ratio: bottleneck width as a fraction of C (used when ``rd_channels`` is None).
        rd_channels: explicit bottleneck width.
        act_layer: activation between the two 1x1 convolutions.
        gate_layer: gate activation; its output is the attention.

    Submodules:
        fc1: ``Conv2d(C, rd, 1)`` with bias.
        act: ``act_layer()``.
        fc2: ``Conv2d(rd, C, 1)`` with bias.
        gate: ``gate_layer()``; output ``[B, C, 1, 1]``, the per-channel gate.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the channels of ``x``.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``[B, C, H, W]``: ``x * gate(fc2(act(fc1(mean_hw(x)))))``.
        """
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
