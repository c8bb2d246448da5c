"""Multi-head self-attention over the positions of a feature map.

From "Attention Is All You Need" (Vaswani et al., NeurIPS 2017), https://arxiv.org/abs/1706.03762,
applied to image tokens as in "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (Dosovitskiy et al., ICLR 2021), https://arxiv.org/abs/2010.11929: every position of a
``[B, C, H, W]`` map is a token, and a pre-norm transformer block mixes them.

Exposure: ``attn_softmax`` (``nn.Softmax(dim=-1)``) outputs ``[B, heads, N, N]`` with
``N = H * W``; row i is query position i and column j key position j, both row-major over
(H, W); each row sums to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "MultiHeadSelfAttention", "TransformerBlock"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of a ``[B, C, H, W]`` map.

    Args:
        channels: C.
        eps: added to the variance.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over C at every position."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention between the H*W positions of a feature map.

    The positional embedding is learned on a ``g x g`` grid, ``g = isqrt(max_tokens)``, and
    bilinearly resized to ``(H, W)``; it is added to the tokens that form queries, keys and values
    (not to the residual stream, which the caller owns).

    Args:
        channels: token width C; must be divisible by ``num_heads``.
        num_heads: number of heads.
        qkv_bias: bias in the qkv projection.
        pos_embed: learn a 2-D positional embedding.
        max_tokens: largest ``H * W`` accepted (the attention map is quadratic in it).

    Submodules:
        qkv: ``Linear(C, 3C)``; output channels ordered (q|k|v, head, head_dim).
        attn_softmax: output ``[B, heads, N, N]``, the attention.
        proj: ``Linear(C, C)``.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``, the attention output only (no residual).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        qkv_bias: bool = True,
        pos_embed: bool = True,
        max_tokens: int = 1024,
    ) -> None:
        super().__init__()
        if channels < 1 or num_heads < 1 or channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of num_heads ({num_heads})")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.scale = self.head_dim**-0.5
        self.max_tokens = max_tokens
        if pos_embed:
            g = max(1, math.isqrt(max_tokens))
            self.pos_embed: nn.Parameter | None = nn.Parameter(torch.zeros(1, channels, g, g))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.attn_softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(channels, channels)

    def position_embedding(self, height: int, width: int) -> torch.Tensor | None:
        """The positional embedding resized to the grid, ``[1, C, H, W]``, or None when disabled."""
        if self.pos_embed is None:
            return None
        if self.pos_embed.shape[-2:] == (height, width):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(height, width), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend between positions.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``[B, C, H, W]``: ``proj(attn @ v)`` folded back to the grid.

        Raises:
            ValueError: when ``H * W`` exceeds ``max_tokens``.
        """
        b, c, h, w = x.shape
        n = h * w
        if n > self.max_tokens:
            raise ValueError(f"feature map {h}x{w} has {n} tokens, more than max_tokens={self.max_tokens}")
        pos = self.position_embedding(h, w)
        if pos is not None:
            x = x + pos
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        qkv = self.qkv(tokens).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        attn = self.attn_softmax((q * self.scale) @ k.transpose(-2, -1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on a feature map.

    ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``, with LayerNorm over channels and a
    two-layer 1x1-convolution MLP (GELU).

    Args:
        channels: C.
        num_heads: heads of the self-attention.
        mlp_ratio: hidden width of the MLP as a multiple of C.
        qkv_bias: bias in the qkv projection.
        pos_embed: learn a positional embedding in the attention.
        max_tokens: largest ``H * W`` accepted.

    Submodules:
        norm1, attn (:class:`MultiHeadSelfAttention`; ``attn.attn_softmax`` -> ``[B, heads, N, N]``),
        norm2, mlp.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        pos_embed: bool = True,
        max_tokens: int = 1024,
    ) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        hidden = max(1, round(channels * mlp_ratio))
        self.norm1 = LayerNorm2d(channels)
        self.attn = MultiHeadSelfAttention(channels, num_heads, qkv_bias, pos_embed, max_tokens)
        self.norm2 = LayerNorm2d(channels)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1), nn.GELU(), nn.Conv2d(hidden, channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
