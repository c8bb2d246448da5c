"""Layers: the attention modules, DAT-T and the zoo network — architectures only.

One file per attention family (paper title and link at the top), timm's constructor contract and
the :func:`create_attention` factory; :mod:`.dat_tiny` is DAT-T for its authors' checkpoint and
:mod:`.zoo_net` the zoo's backbone. It imports torch only (no hooks, no weights, no records).

Every module maps ``[B, C, H, W]`` to ``[B, C, H, W]`` (SK and deformable convolution may change
channels and stride) and exposes its attention as the output of a named submodule, so a forward
hook on that submodule sees it (kind: class -> submodule: output shape):

* ``se``: :class:`SqueezeExcite` -> ``gate``: ``[B, C, 1, 1]``.
* ``eca``: :class:`EfficientChannelAttention` -> ``gate``: ``[B, 1, C]``.
* ``cbam``: :class:`CBAM` -> ``channel.gate``: ``[B, C, 1, 1]``; ``spatial.gate``: ``[B, 1, H, W]``.
* ``ca``: :class:`CoordAttention` -> ``gate_h``: ``[B, C, H, 1]``; ``gate_w``: ``[B, C, 1, W]``.
* ``gc``: :class:`GlobalContext` -> ``context_softmax``: ``[B, 1, H, W]`` (sums to 1 over H*W);
  ``mlp_add``: ``[B, C, 1, 1]`` (added term); ``gate``: ``[B, C, 1, 1]`` (with ``fuse_scale``).
* ``sk``: :class:`SelectiveKernel` -> ``select``: ``[B, paths, C]`` (sums to 1 over paths).
* ``nonlocal``: :class:`NonLocal` -> ``softmax``: ``[B, HW, HW]`` (row = query position).
* ``mhsa``: :class:`MultiHeadSelfAttention` -> ``attn_softmax``: ``[B, heads, HW, HW]``.
* ``dat``: :class:`DAttention` -> ``attn_softmax``: ``[B, heads, HW, Hk*Wk]``; ``points`` and
  ``reference``: ``[B, G, Hk, Wk, 2]`` (y, x); ``sampled``: ``[B*G, C/G, Hk, Wk]``.
* ``deform``: :class:`DeformConv` -> ``offsets``: ``[B, 2*G*kh*kw, Ho, Wo]`` (dy, dx pixels);
  ``mask_gate``: ``[B, G*kh*kw, Ho, Wo]`` (when modulated).

Token maps are row-major over (H, W). DAT points are normalised (y, x) in [-1, 1] with
``align_corners=True`` (-1 and +1 are the centres of the first and last pixels); deformable-conv
offsets are input pixels in torchvision's layout. :mod:`attnviz.layers.insertion` adds any of
them to a backbone (serial, parallel, or as the core).
"""

from __future__ import annotations

from torch import nn

from attnviz.layers.cbam import CBAM, ChannelGate, SpatialGate
from attnviz.layers.coord import CoordAttention
from attnviz.layers.dat import DAttention, LayerNormProxy
from attnviz.layers.deform_conv import DeformConv
from attnviz.layers.eca import EfficientChannelAttention, eca_kernel_size
from attnviz.layers.global_context import ContextMlp, GlobalContext, SpatialSoftmax
from attnviz.layers.insertion import AttentionCore, ParallelBranch, insert_after
from attnviz.layers.mhsa import LayerNorm2d, MultiHeadSelfAttention, TransformerBlock
from attnviz.layers.non_local import NonLocal
from attnviz.layers.se import SqueezeExcite
from attnviz.layers.selective_kernel import SelectiveKernel

__all__ = [
    "ATTENTION_REGISTRY",
    "CBAM",
    "AttentionCore",
    "ChannelGate",
    "ContextMlp",
    "CoordAttention",
    "DAttention",
    "DeformConv",
    "EfficientChannelAttention",
    "GlobalContext",
    "LayerNorm2d",
    "LayerNormProxy",
    "MultiHeadSelfAttention",
    "NonLocal",
    "ParallelBranch",
    "SelectiveKernel",
    "SpatialGate",
    "SpatialSoftmax",
    "SqueezeExcite",
    "TransformerBlock",
    "create_attention",
    "eca_kernel_size",
    "insert_after",
]

#: Attention kind -> class; every class takes ``channels`` first.
ATTENTION_REGISTRY: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
    "ca": CoordAttention,
    "gc": GlobalContext,
    "sk": SelectiveKernel,
    "nonlocal": NonLocal,
    "mhsa": MultiHeadSelfAttention,
    "dat": DAttention,
    "deform": DeformConv,
}


def create_attention(kind: str, channels: int, **kwargs: object) -> nn.Module:
    """Build an attention module by kind.

    Example::

        se = create_attention("se", 64, rd_ratio=1 / 8)
        dat = create_attention("dat", 96, num_heads=3, n_groups=1, q_size=(14, 14))

    Args:
        kind: a key of :data:`ATTENTION_REGISTRY` (case-insensitive).
        channels: input channels C.
        **kwargs: passed to the class's constructor.

    Returns:
        The module, ``[B, C, H, W] -> [B, C, H, W]`` for every kind at its defaults.

    Raises:
        ValueError: for an unknown kind (the message lists the known ones).
    """
    cls = ATTENTION_REGISTRY.get(kind.lower()) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(ATTENTION_REGISTRY))
        raise ValueError(f"unknown attention kind {kind!r}; known kinds: {known}")
    return cls(channels, **kwargs)
