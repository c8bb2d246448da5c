"""Deformable Convolutional Networks (Dai et al., ICCV 2017), https://arxiv.org/abs/1703.06211, and
Deformable ConvNets v2: More Deformable, Better Results (Zhu et al., CVPR 2019),
https://arxiv.org/abs/1811.11168.

A convolution whose kernel points move: a side convolution predicts, for every output position,
a (dy, dx) shift of each of the ``kh * kw`` kernel points (per offset group), and the input is
sampled bilinearly at the shifted points. The modulated variant (v2) also predicts a weight in
(0, 1) per point. The computation is ``torchvision.ops.deform_conv2d``.

Exposure:
    * ``offsets`` (``nn.Identity``) output ``[B, 2 * offset_groups * kh * kw, Ho, Wo]``: torchvision's
      layout, channel ``2 * (g * kh * kw + i * kw + j) + {0: dy, 1: dx}`` for group g and kernel
      point (i, j) (row-major over the kernel), in input pixels. Kernel point (i, j) of output
      (ho, wo) samples the input at ``y = ho * stride - padding + i * dilation + dy`` and
      ``x = wo * stride - padding + j * dilation + dx`` (pixel centres at integers; samples
      outside the input read zeros).
    * ``mask_gate`` (``nn.Sigmoid``, when ``modulated``) output ``[B, offset_groups * kh * kw, Ho, Wo]``,
      channel ``g * kh * kw + i * kw + j``.

The offset and mask convolutions start at zero, so a fresh block is a regular convolution (times
0.5 when modulated, the v2 initialisation).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv"]


class DeformConv(nn.Module):
    """Deformable convolution (v1, or v2 when ``modulated``).

    Args:
        channels: input channels.
        out_channels: output channels (defaults to ``channels``).
        kernel_size: kernel (kh, kw) or one int.
        stride: stride of the convolution.
        padding: zero padding of the convolution.
        dilation: spacing of the regular kernel points.
        offset_groups: channel groups with their own offsets; must divide ``channels``.
        modulated: predict a sigmoid weight per kernel point (DCNv2).

    Parameters and submodules:
        weight: ``[out_channels, channels, kh, kw]``; bias: ``[out_channels]``.
        offset_conv: ``Conv2d(channels, 2 * offset_groups * kh * kw, kernel_size)`` with the
            same stride, padding and dilation as the main convolution, zero-initialised.
        offsets: tap, ``[B, 2 * offset_groups * kh * kw, Ho, Wo]`` (dy, dx) pixels.
        mask_conv: ``Conv2d(channels, offset_groups * kh * kw, kernel_size)``, zero-initialised
            (None unless ``modulated``).
        mask_gate: ``nn.Sigmoid`` -> ``[B, offset_groups * kh * kw, Ho, Wo]`` (None unless ``modulated``).

    Shape:
        input ``[B, channels, H, W]`` -> output ``[B, out_channels, Ho, Wo]`` with
        ``Ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1`` (likewise Wo).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        offset_groups: int = 1,
        modulated: bool = True,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {channels} -> {out_channels}")
        if offset_groups < 1 or channels % offset_groups:
            raise ValueError(f"offset_groups ({offset_groups}) must divide channels ({channels})")
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        if min(*self.kernel_size, *self.stride, *self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"invalid geometry: kernel_size={kernel_size}, stride={stride}, "
                f"padding={padding}, dilation={dilation}"
            )
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        points = offset_groups * kh * kw

        self.weight = nn.Parameter(torch.empty(out_channels, channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels))
        geometry = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}
        self.offset_conv = nn.Conv2d(channels, 2 * points, self.kernel_size, **geometry)
        self.offsets = nn.Identity()
        if modulated:
            self.mask_conv: nn.Conv2d | None = nn.Conv2d(channels, points, self.kernel_size, **geometry)
            self.mask_gate: nn.Sigmoid | None = nn.Sigmoid()
        else:
            self.mask_conv = None
            self.mask_gate = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform main weights (as ``nn.Conv2d``); zero offset and mask convolutions."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)
        convs = [self.offset_conv] if self.mask_conv is None else [self.offset_conv, self.mask_conv]
        for conv in convs:
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @property
    def modulated(self) -> bool:
        """True when a mask weights the kernel points (DCNv2)."""
        return self.mask_conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, channels, H, W]`` -> ``[B, out_channels, Ho, Wo]``."""
        offset = self.offsets(self.offset_conv(x))
        mask = None
        if self.mask_conv is not None and self.mask_gate is not None:
            mask = self.mask_gate(self.mask_conv(x))
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
