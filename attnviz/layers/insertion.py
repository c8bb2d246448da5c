"""Three ways to add attention to a backbone.

* Serial (:func:`insert_after`): the attention reweights a stage's output, as SE, ECA, CBAM or
  coordinate attention are placed after a residual branch or a stage.
* Parallel (:class:`ParallelBranch`): the attention runs beside a body on the same input and
  the two are fused (sum, or concatenation + 1x1 convolution), as in two-branch designs.
* Core (:class:`AttentionCore`): attention *is* the computation, a stack of transformer blocks
  over the feature map's positions.

The submodule names (``body``, ``attention``, ``blocks``) keep every attention tap reachable:
a module inserted after ``layer2`` is ``layer2.1`` (``nn.Sequential(stage, attention)``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from attnviz.layers.mhsa import LayerNorm2d, TransformerBlock

__all__ = ["AttentionCore", "ParallelBranch", "insert_after"]


def insert_after(model: nn.Module, stage_name: str, attention: nn.Module) -> nn.Module:
    """Run ``attention`` right after the submodule ``stage_name`` (in place).

    The named child is replaced by ``nn.Sequential(stage, attention)``, so the stage keeps its
    parameters and the attention's qualified name becomes ``f"{stage_name}.1"``.

    Example::

        model = torchvision.models.resnet18(weights=None)
        insert_after(model, "layer3", create_attention("cbam", 256))
        model(torch.randn(1, 3, 224, 224))  # layer3's output now goes through CBAM

    Args:
        model: the model to modify.
        stage_name: qualified name of the child to follow, dots allowed (``"layer3.1"``).
        attention: the module to insert; it must accept the stage's output.

    Returns:
        ``model`` itself, modified.

    Raises:
        TypeError: when ``attention`` is not an ``nn.Module``.
        ValueError: when ``stage_name`` names no submodule of ``model``.
    """
    if not isinstance(attention, nn.Module):
        raise TypeError(f"attention must be an nn.Module, got {type(attention).__name__}")
    names = dict(model.named_modules())
    if not stage_name or stage_name not in names:
        raise ValueError(f"unknown submodule {stage_name!r}; model has no submodule of that name")
    parent_name, _, child = stage_name.rpartition(".")
    parent = names[parent_name]
    setattr(parent, child, nn.Sequential(names[stage_name], attention))
    return model


class ParallelBranch(nn.Module):
    """Run a body and an attention module on the same input and fuse their outputs.

    Example::

        branch = ParallelBranch(nn.Conv2d(64, 64, 3, padding=1), create_attention("nonlocal", 64))
        y = branch(torch.randn(2, 64, 14, 14))  # [2, 64, 14, 14]: conv(x) + nonlocal(x)
        cat = ParallelBranch(body, attention, fuse="concat", out_channels=64)  # 1x1 conv on [body, attn]

    Args:
        body: the main path, ``[B, C, H, W] -> [B, C1, H', W']``.
        attention: the attention path, ``[B, C, H, W] -> [B, C2, H', W']``.
        fuse: ``"sum"`` (C1 == C2) or ``"concat"`` (channel concatenation then 1x1 convolution).
        out_channels: output channels of the 1x1 fusing convolution; required for ``"concat"``,
            optional for ``"sum"`` (None keeps the sum as it is).
        in_channels: input width of the fusing convolution (C1 + C2 for ``"concat"``, C1 for
            ``"sum"``); None infers it at the first forward pass (``nn.LazyConv2d``).

    Submodules:
        body, attention, fuse_conv (None when no projection).

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, out_channels or C1, H', W']``.
    """

    def __init__(
        self,
        body: nn.Module,
        attention: nn.Module,
        fuse: Literal["sum", "concat"] = "sum",
        out_channels: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if fuse not in ("sum", "concat"):
            raise ValueError(f"fuse must be 'sum' or 'concat', got {fuse!r}")
        if fuse == "concat" and out_channels is None:
            raise ValueError("fuse='concat' needs out_channels for its 1x1 fusing convolution")
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be a positive integer, got {out_channels}")
        self.fuse = fuse
        self.body = body
        self.attention = attention
        self.fuse_conv: nn.Module | None = None
        if out_channels is not None:
            self.fuse_conv = (
                nn.LazyConv2d(out_channels, kernel_size=1)
                if in_channels is None
                else nn.Conv2d(in_channels, out_channels, kernel_size=1)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> fused ``[B, C_out, H', W']``."""
        a, b = self.body(x), self.attention(x)
        if self.fuse == "sum":
            if a.shape != b.shape:
                raise ValueError(
                    f"fuse='sum' needs equal shapes, got body {tuple(a.shape)}, attention {tuple(b.shape)}"
                )
            y = a + b
        else:
            y = torch.cat([a, b], dim=1)
        return y if self.fuse_conv is None else self.fuse_conv(y)


class AttentionCore(nn.Module):
    """Attention as the model's core: ``depth`` transformer blocks over a feature map, then a norm.

    Example::

        stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=4, padding=3), nn.BatchNorm2d(64), nn.ReLU())
        model = nn.Sequential(stem, AttentionCore(64, depth=4, num_heads=4), nn.AdaptiveAvgPool2d(1))
        model(torch.randn(2, 3, 64, 64))  # [2, 64, 1, 1]

    Args:
        channels: C.
        depth: number of :class:`~attnviz.layers.mhsa.TransformerBlock` s.
        num_heads: heads per block.
        mlp_ratio: MLP width as a multiple of C.
        qkv_bias: bias in the qkv projections.
        pos_embed: each block learns its own positional embedding.
        max_tokens: largest ``H * W`` accepted.

    Submodules:
        blocks: ``Sequential`` of blocks; ``blocks.{i}.attn.attn_softmax`` -> ``[B, heads, N, N]``.
        norm: final LayerNorm over channels.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        pos_embed: bool = True,
        max_tokens: int = 1024,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth}")
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(channels, num_heads, mlp_ratio, qkv_bias, pos_embed, max_tokens)
                for _ in range(depth)
            )
        )
        self.norm = LayerNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.norm(self.blocks(x))
