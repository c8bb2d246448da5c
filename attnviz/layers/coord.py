"""Coordinate Attention for Efficient Mobile Network Design (Hou et al., CVPR 2021),
https://arxiv.org/abs/2103.02907.

Channel attention that keeps position along one axis: the input is average-pooled along W (one
descriptor per row) and along H (one per column), both strips go through a shared 1x1
convolution + batch norm + activation, and two 1x1 convolutions turn them into a row gate and a
column gate per channel.

Exposure:
    * ``gate_h`` output ``[B, C, H, 1]``: gate of channel c at feature-map row i.
    * ``gate_w`` output ``[B, C, 1, W]``: gate of channel c at feature-map column j.

The block returns ``x * gate_h * gate_w``: position (c, i, j) is scaled by
``gate_h[c, i] * gate_w[c, j]``.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.layers.se import reduced_channels

__all__ = ["CoordAttention"]


class CoordAttention(nn.Module):
    """Coordinate attention (CA).

    Args:
        channels: input (and output) channels C.
        rd_ratio: width of the shared bottleneck as a fraction of C (the paper's 1/32).
        min_channels: lower bound of the bottleneck width (the paper's 8).
        act_layer: activation after the shared convolution (the paper's h-swish).
        gate_layer: gate activation of both axes.

    Submodules:
        conv1, bn1, act: shared ``Conv2d(C, mip, 1)`` + ``BatchNorm2d(mip)`` + activation, applied to
            the row and column strips concatenated along H (``[B, C, H + W, 1]``).
        conv_h, conv_w: ``Conv2d(mip, C, 1)`` for rows and columns.
        gate_h: output ``[B, C, H, 1]`` (row gate).
        gate_w: output ``[B, C, 1, W]`` (column gate).

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 32,
        min_channels: int = 8,
        act_layer: type[nn.Module] = nn.Hardswish,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        mip = reduced_channels(channels, rd_ratio, None, min_channels=min_channels)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = act_layer()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.gate_h = gate_layer()
        self.gate_w = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        h, w = x.shape[2:]
        x_h = x.mean(dim=3, keepdim=True)  # [B, C, H, 1]
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # [B, C, W, 1]
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.gate_h(self.conv_h(y_h))  # [B, C, H, 1]
        a_w = self.gate_w(self.conv_w(y_w.transpose(2, 3)))  # [B, C, 1, W]
        return x * a_h * a_w
