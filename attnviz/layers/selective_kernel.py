"""Selective Kernel Networks (Li et al., CVPR 2019), https://arxiv.org/abs/1903.06586.

Several convolution paths with different receptive fields run on the same input; their sum is
pooled to a channel descriptor, squeezed by a bottleneck, and expanded to one logit per (path,
channel). A softmax over the paths gives, for every channel, how much each kernel size
contributes, and the output is the weighted sum of the paths.

As in the paper, a kernel size ``k > 3`` is realised as a 3x3 convolution with dilation
``(k - 1) // 2`` (same receptive field, fewer weights): the "5x5" path is a 3x3 with dilation 2.

Exposure: ``select`` (``nn.Softmax(dim=1)``) outputs ``[B, paths, C]``; for every channel the
weights sum to 1 over the paths (path order = ``kernel_sizes``, labels in ``path_labels``).
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.layers.se import reduced_channels

__all__ = ["SelectiveKernel"]


class SelectiveKernel(nn.Module):
    """Selective kernel convolution.

    Args:
        channels: input channels.
        out_channels: output channels C (defaults to ``channels``).
        kernel_sizes: odd kernel sizes, one path each (at least two).
        rd_ratio: bottleneck width as a fraction of C.
        min_channels: lower bound of the bottleneck width (the paper's L = 32; 16 here).
        stride: stride of every path.

    Submodules:
        paths: ``ModuleList`` of ``Sequential(conv, BatchNorm2d, ReLU)``; path p has kernel
            ``kernel_sizes[p]`` (3x3 dilated for k > 3).
        fc_reduce, bn, act: ``Conv2d(C, d, 1, bias=False)`` + ``BatchNorm2d(d)`` + ReLU.
        fc_select: ``Conv2d(d, paths * C, 1, bias=False)``.
        select: output ``[B, paths, C]``, the softmax over paths.

    Shape:
        input ``[B, channels, H, W]`` -> output ``[B, C, H / stride, W / stride]``.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        kernel_sizes: tuple[int, ...] = (3, 5),
        rd_ratio: float = 1 / 8,
        min_channels: int = 16,
        stride: int = 1,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        kernel_sizes = tuple(kernel_sizes)
        if len(kernel_sizes) < 2:
            raise ValueError(f"SelectiveKernel needs at least two kernel sizes, got {kernel_sizes}")
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be positive odd integers, got {kernel_sizes}")
        if stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride}")
        self.kernel_sizes = kernel_sizes
        self.out_channels = out_channels
        self.paths = nn.ModuleList(self._path(channels, out_channels, k, stride) for k in kernel_sizes)
        rd = reduced_channels(out_channels, rd_ratio, None, min_channels=min_channels)
        self.fc_reduce = nn.Conv2d(out_channels, rd, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(rd)
        self.act = nn.ReLU()
        self.fc_select = nn.Conv2d(rd, len(kernel_sizes) * out_channels, kernel_size=1, bias=False)
        self.select = nn.Softmax(dim=1)

    @staticmethod
    def _path(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
        dilation = (k - 1) // 2 if k > 3 else 1
        ks = 3 if k > 3 else k
        pad = dilation * (ks - 1) // 2
        conv = nn.Conv2d(cin, cout, ks, stride=stride, padding=pad, dilation=dilation, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

    @property
    def path_labels(self) -> tuple[str, ...]:
        """Receptive field of each path, e.g. ``("3x3", "5x5")``."""
        return tuple(f"{k}x{k}" for k in self.kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, channels, H, W]`` -> ``[B, C, H', W']``: ``sum_p select[:, p] * path_p(x)``."""
        feats = torch.stack([path(x) for path in self.paths], dim=1)  # [B, P, C, H', W']
        s = feats.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
        z = self.act(self.bn(self.fc_reduce(s)))
        logits = self.fc_select(z).view(x.shape[0], len(self.paths), self.out_channels)
        weights = self.select(logits)  # [B, P, C]
        return (feats * weights[..., None, None]).sum(dim=1)
