"""ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks (Wang et al., CVPR 2020),
https://arxiv.org/abs/1910.03151.

Like squeeze-and-excitation without the bottleneck: the pooled channel descriptor is treated as
a 1-D signal over channels and filtered by one small 1-D convolution, so each gate sees only its
``k`` neighbouring channels. The kernel size follows the paper's adaptive rule
``k = odd(|log2(C) / gamma + beta / gamma|)``.

Exposure: the gate is the output of the submodule ``gate`` (``nn.Sigmoid``), shape ``[B, 1, C]``
(channels along the last axis); the block returns ``x * gate`` reshaped to ``[B, C, 1, 1]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size.

    ``t = int(|(log2(C) + beta) / gamma|)``; the kernel is ``t`` when odd, else ``t + 1``
    (so at least 1). With ``gamma=2, beta=1``: C=64 -> 3, 128 -> 5, 256 -> 5, 512 -> 5.

    Args:
        channels: number of channels C (positive).
        gamma: slope of the log mapping (positive).
        beta: offset of the log mapping.

    Returns:
        An odd kernel size >= 1.

    Raises:
        ValueError: for non-positive ``channels`` or ``gamma``.
    """
    if channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels}")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """Efficient channel attention (ECA).

    Args:
        channels: input (and output) channels C.
        gamma: slope of the adaptive kernel-size rule.
        beta: offset of the adaptive kernel-size rule.
        kernel_size: explicit odd kernel size; None picks :func:`eca_kernel_size`.

    Submodules:
        conv: ``Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)`` across channels.
        gate: ``nn.Sigmoid``; output ``[B, 1, C]``, the per-channel gate.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self, channels: int, gamma: float = 2, beta: float = 1, kernel_size: int | None = None
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels}")
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        elif kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the channels of ``x``.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``[B, C, H, W]``.
        """
        b, c = x.shape[:2]
        s = x.mean(dim=(2, 3)).view(b, 1, c)
        g = self.gate(self.conv(s))
        return x * g.view(b, c, 1, 1)
