"""Self-Attention Generative Adversarial Networks (Zhang et al., ICML 2019),
https://arxiv.org/abs/1805.08318 — the SAGAN form of "Non-local Neural Networks"
(Wang et al., CVPR 2018), https://arxiv.org/abs/1711.07971.

Every position attends to every other: ``A = softmax(q^T k)`` over key positions, the values are
aggregated with ``A`` and added back, scaled by a learned ``gamma`` that starts at 0 (so a fresh
block is the identity).

Exposure: ``softmax`` (``nn.Softmax(dim=-1)``) outputs ``[B, N, N]``, ``N = H * W``; row i is the
query position i, column j the key position j, both row-major over (H, W); rows sum to 1.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.layers.se import reduced_channels

__all__ = ["NonLocal"]


class NonLocal(nn.Module):
    """SAGAN self-attention block.

    Args:
        channels: input (and output) channels C.
        rd_ratio: query/key width as a fraction of C (SAGAN's C/8).
        rd_channels: explicit query/key width.

    Submodules:
        query, key: ``Conv2d(C, C', 1)``.
        value: ``Conv2d(C, C, 1)``.
        softmax: output ``[B, N, N]``, the attention.
        gamma: parameter ``[1]``, initialised to 0.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``:
        ``gamma * (V A^T)`` folded to ``[B, C, H, W]``, plus ``x``.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None) -> None:
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.query = nn.Conv2d(channels, rd, kernel_size=1)
        self.key = nn.Conv2d(channels, rd, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.softmax = nn.Softmax(dim=-1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)  # [B, C', N]
        k = self.key(x).flatten(2)  # [B, C', N]
        v = self.value(x).flatten(2)  # [B, C, N]
        attn = self.softmax(q.transpose(1, 2) @ k)  # [B, N(query), N(key)]
        out = (v @ attn.transpose(1, 2)).view(b, c, h, w)
        return self.gamma * out + x
