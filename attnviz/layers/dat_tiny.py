"""Vision Transformer with Deformable Attention (Xia et al., CVPR 2022), https://arxiv.org/abs/2201.00520.

The DAT network of the v1 release (github.com/LeapLabTHU/DAT, tag ``CVPR2022``, ``models/dat.py``
and ``models/dat_blocks.py``), with DAT-T's configuration (``configs/dat_tiny.yaml``). Module and
parameter names follow the official code, so the official ``dat_tiny_in1k_224.pth`` loads with
``load_state_dict(checkpoint["model"], strict=True)``:

* ``patch_proj``: ``Conv2d(3, dim_stem, 4, stride 4)`` + ``LayerNormProxy`` -> ``[B, 96, 56, 56]``.
* ``stages.{i}``: pre-norm residual blocks on a ``[B, C, H, W]`` map; block ``j`` is
  ``x += attns[j](layer_norms[2j](x))`` then ``x += mlps[j](layer_norms[2j + 1](x))``. Its
  attention is one of ``L`` (:class:`LocalAttention`, 7x7 windows), ``S``
  (:class:`ShiftWindowAttention`, windows shifted by ``ceil(7 / 2) = 4``) or ``D``
  (:class:`attnviz.layers.DAttention` in ``grid_mode="dat_v1"``).
* ``down_projs.{i}``: ``Conv2d(C_i, C_{i+1}, 2, stride 2, no bias)`` + ``LayerNormProxy``.
* ``cls_norm``, global average pooling, ``cls_head``.

DAT-T stage maps at 224 px: 56x56 (L, S), 28x28 (L, S), 14x14 (L, D, L, D, L, D), 7x7 (L, D).

Exposure: every ``D`` block is an :class:`attnviz.layers.DAttention`, so
:func:`attnviz.capture.taps.find_taps` reads its sampling points, reference grid and attention. The
window blocks expose their softmax as ``attn_softmax``: ``[B * nW, heads, ws * ws, ws * ws]``,
windows row-major over the (shifted, for ``S``) map, tokens row-major inside each window.

Eval preprocessing of the official release (``data/build.py``): resize to 256x256 (bicubic, not
aspect-preserving), centre crop 224, ImageNet mean/std; see :data:`DAT_TINY_PREPROCESS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from timm.layers import DropPath
from torch import nn

from attnviz.layers.dat import DAttention, LayerNormProxy

__all__ = [
    "DAT",
    "DAT_TINY_CONFIG",
    "DAT_TINY_PREPROCESS",
    "LocalAttention",
    "ShiftWindowAttention",
    "TransformerMLP",
    "TransformerMLPWithConv",
    "TransformerStage",
    "build_dat_tiny",
]

#: ``configs/dat_tiny.yaml`` of the v1 release plus the ``DAT.__init__`` defaults it leaves out
#: (``ns_per_pts``); ``DAT(**DAT_TINY_CONFIG)`` is DAT-T. ``drop_path_rate`` is the training value;
#: :func:`build_dat_tiny` builds with 0 (drop path is the identity in eval mode anyway).
DAT_TINY_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "img_size": 224,
        "patch_size": 4,
        "num_classes": 1000,
        "expansion": 4,
        "dim_stem": 96,
        "dims": (96, 192, 384, 768),
        "depths": (2, 2, 6, 2),
        "stage_spec": (("L", "S"), ("L", "S"), ("L", "D", "L", "D", "L", "D"), ("L", "D")),
        "heads": (3, 6, 12, 24),
        "window_sizes": (7, 7, 7, 7),
        "groups": (-1, -1, 3, 6),
        "use_pes": (False, False, True, True),
        "dwc_pes": (False, False, False, False),
        "strides": (-1, -1, 1, 1),
        "sr_ratios": (-1, -1, -1, -1),
        "offset_range_factor": (-1, -1, 2, 2),
        "no_offs": (False, False, False, False),
        "fixed_pes": (False, False, False, False),
        "use_dwc_mlps": (False, False, False, False),
        "ns_per_pts": (4, 4, 4, 4),
        "use_conv_patches": False,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "drop_path_rate": 0.2,
    }
)

#: Eval transform of the official release: ``Resize((256, 256), bicubic)``, ``CenterCrop(224)``,
#: ``ToTensor``, ``Normalize(mean, std)``.
DAT_TINY_PREPROCESS: Mapping[str, Any] = MappingProxyType(
    {
        "input_size": 224,
        "resize": 256,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
)

#: Depthwise kernel of the offset network of a ``D`` block, by stage (fixed in the v1 code).
_OFFSET_KSIZES = (9, 7, 5, 3)


def _window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * nW, wh * ww, C]``, windows row-major, tokens row-major inside."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, wh * ww, c)


def _window_merge(t: torch.Tensor, b: int, h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: ``[B * nW, wh * ww, C]`` -> ``[B, C, H, W]``."""
    c = t.shape[-1]
    t = t.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, w)


class LocalAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with a relative position bias.

    Args:
        dim: channels C, divisible by ``heads``.
        heads: attention heads.
        window_size: window side ``ws`` (square windows).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after ``proj_out``.

    Submodules and state (official names):
        proj_qkv: ``Linear(C, 3C)``, output split as (q, k, v), each head-major.
        proj_out: ``Linear(C, C)``.
        relative_position_bias_table: ``[(2 ws - 1)^2, heads]``, row ``(dy + ws - 1) * (2 ws - 1)
            + (dx + ws - 1)`` for the query-minus-key displacement (dy, dx) inside a window.
        relative_position_index: buffer ``[ws^2, ws^2]`` (int64): that row for each token pair.
        attn_softmax: ``nn.Softmax`` whose output ``[B * nW, heads, ws^2, ws^2]`` is the attention.

    Shape:
        input ``[B, C, H, W]`` with H, W multiples of ``ws`` -> output ``[B, C, H, W]``.
    """

    def __init__(
        self, dim: int, heads: int, window_size: int, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if window_size < 1:
            raise ValueError(f"window_size must be a positive integer, got {window_size}")
        self.dim = dim
        self.heads = heads
        self.window_size = (window_size, window_size)
        self.scale = (dim // heads) ** -0.5
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_softmax = nn.Softmax(dim=-1)

        span = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span * span, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + window_size - 1  # query row minus key row, shifted to >= 0
        dx = xs[:, None] - xs[None, :] + window_size - 1
        # Persistent: the official checkpoints carry it.
        self.register_buffer("relative_position_index", dy * span + dx)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: ``[B, C, H, W]``.
            mask: optional additive logits ``[nW, ws^2, ws^2]`` per window (shifted windows).

        Returns:
            ``[B, C, H, W]``: ``proj_out`` of the attended values (no residual).
        """
        b, c, h, w = x.shape
        wh, ww = self.window_size
        if c != self.dim:
            raise ValueError(f"{type(self).__name__} built for {self.dim} channels got input with {c}")
        if h % wh or w % ww:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {wh}x{ww}")
        n = wh * ww
        heads, hc = self.heads, c // self.heads
        tokens = _window_partition(x, wh, ww)  # [B*nW, n, C]
        q, k, v = self.proj_qkv(tokens).reshape(-1, n, 3, heads, hc).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # [B*nW, heads, n, n]
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        logits = logits + bias.reshape(n, n, heads).permute(2, 0, 1)
        if mask is not None:
            n_win = mask.shape[0]
            logits = (logits.reshape(b, n_win, heads, n, n) + mask[None, :, None]).reshape(-1, heads, n, n)
        attn = self.attn_drop(self.attn_softmax(logits))
        out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        out = self.proj_drop(self.proj_out(out))
        return _window_merge(out, b, h, w, wh, ww)


class ShiftWindowAttention(LocalAttention):
    """:class:`LocalAttention` on the map rolled by ``-shift_size``, masked, rolled back.

    Tokens that come from different regions of the unrolled map (split at ``H - ws`` and
    ``H - shift_size`` along each axis) get ``-100`` added to their logits, as in Swin.

    Args:
        dim, heads, window_size, attn_drop, proj_drop: as :class:`LocalAttention`.
        shift_size: roll along y and x, ``0 < shift_size < window_size`` (DAT uses ``ceil(ws / 2)``).
        fmap_size: (H, W) of the map the mask is built for.

    State (besides :class:`LocalAttention`'s): ``attn_mask`` buffer ``[nW, ws^2, ws^2]``, 0 or -100.

    Shape:
        input ``[B, C, H, W]`` (the ``fmap_size`` map) -> output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window_size: int,
        attn_drop: float,
        proj_drop: float,
        shift_size: int,
        fmap_size: tuple[int, int],
    ) -> None:
        super().__init__(dim, heads, window_size, attn_drop, proj_drop)
        if not 0 < shift_size < window_size:
            raise ValueError(f"shift_size must be in (0, {window_size}), got {shift_size}")
        h, w = fmap_size
        if h % window_size or w % window_size:
            raise ValueError(f"fmap_size {h}x{w} is not a multiple of the window {window_size}")
        self.shift_size = shift_size
        self.fmap_size = (h, w)

        def regions(n: int) -> torch.Tensor:
            # 0 before the last window, 1 in it up to the shift, 2 for the wrapped-around strip.
            idx = torch.arange(n)
            return (idx >= n - window_size).long() + (idx >= n - shift_size).long()

        label = (regions(h)[:, None] * 3 + regions(w)[None, :]).float()
        windows = _window_partition(label[None, None], window_size, window_size)[..., 0]  # [nW, n]
        differ = windows[:, :, None] != windows[:, None, :]
        self.register_buffer("attn_mask", torch.zeros(differ.shape).masked_fill(differ, -100.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Shifted-window attention.

        Args:
            x: ``[B, C, H, W]`` with ``(H, W) == fmap_size``.
            mask: must be None (the block uses its own ``attn_mask``).

        Returns:
            ``[B, C, H, W]``.
        """
        if mask is not None:
            raise ValueError("ShiftWindowAttention uses its own attn_mask; pass no mask")
        if tuple(x.shape[-2:]) != self.fmap_size:
            raise ValueError(
                f"ShiftWindowAttention built for a {self.fmap_size} map got {tuple(x.shape[-2:])}"
            )
        s = self.shift_size
        out = super().forward(torch.roll(x, shifts=(-s, -s), dims=(2, 3)), self.attn_mask)
        return torch.roll(out, shifts=(s, s), dims=(2, 3))


class TransformerMLP(nn.Module):
    """Per-position MLP ``Linear -> GELU -> Linear`` held as ``chunk.{linear1, act, drop1, linear2, drop2}``.

    Args:
        channels: C.
        expansion: hidden width ``expansion * C``.
        drop: dropout after each linear layer's block.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, expansion: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.chunk = nn.Sequential()
        self.chunk.add_module("linear1", nn.Linear(channels, hidden))
        self.chunk.add_module("act", nn.GELU())
        self.chunk.add_module("drop1", nn.Dropout(drop))
        self.chunk.add_module("linear2", nn.Linear(hidden, channels))
        self.chunk.add_module("drop2", nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransformerMLPWithConv(nn.Module):
    """MLP of 1x1 convolutions with a 3x3 depthwise convolution after the first.

    ``drop2(linear2(drop1(act(dwc(linear1(x))))))``.

    Args:
        channels: C.
        expansion: hidden width ``expansion * C``.
        drop: dropout rate.

    Shape:
        input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, expansion: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Conv2d(channels, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.linear2 = nn.Conv2d(hidden, channels, 1)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = self.drop1(self.act(self.dwc(self.linear1(x))))
        return self.drop2(self.linear2(x))


class TransformerStage(nn.Module):
    """One DAT stage: an optional 1x1 projection, then pre-norm attention + MLP blocks.

    Args:
        fmap_size: side of the stage's square map (the query grid of ``D`` blocks, the mask of ``S``).
        window_size: window side of ``L``/``S`` blocks.
        dim_in: input channels; a ``Conv2d(dim_in, dim_embed, 1)`` ``proj`` is added when they differ.
        dim_embed: stage channels C.
        depth: number of blocks.
        stage_spec: one letter per block: ``"L"``, ``"S"`` or ``"D"``.
        n_groups: offset groups of ``D`` blocks.
        use_pe: ``D`` blocks add the relative position bias.
        heads: attention heads.
        stride: stride of the ``D`` blocks' offset network.
        offset_range_factor: offset bound of ``D`` blocks (must be > 0; see :class:`DAttention`).
        stage_idx: 0..3; selects the offset kernel (9, 7, 5, 3).
        attn_drop, proj_drop, drop: dropout rates.
        expansion: MLP width factor.
        drop_path_rates: stochastic depth rate per block.
        use_dwc_mlp: use :class:`TransformerMLPWithConv` instead of :class:`TransformerMLP`.

    Submodules (official names): ``proj``, ``layer_norms`` (``2 * depth``), ``attns``, ``mlps``,
    ``drop_path``.

    Shape:
        input ``[B, dim_in, S, S]`` -> output ``[B, C, S, S]``, ``S = fmap_size``.
    """

    def __init__(
        self,
        fmap_size: int,
        window_size: int,
        dim_in: int,
        dim_embed: int,
        depth: int,
        stage_spec: Sequence[str],
        n_groups: int,
        use_pe: bool,
        heads: int,
        stride: int,
        offset_range_factor: float,
        stage_idx: int,
        attn_drop: float,
        proj_drop: float,
        expansion: int,
        drop: float,
        drop_path_rates: Sequence[float],
        use_dwc_mlp: bool,
    ) -> None:
        super().__init__()
        if len(stage_spec) != depth or len(drop_path_rates) != depth:
            raise ValueError(f"stage {stage_idx}: stage_spec {list(stage_spec)} does not have {depth} blocks")
        self.depth = depth
        self.proj = nn.Conv2d(dim_in, dim_embed, 1) if dim_in != dim_embed else nn.Identity()
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim_embed) for _ in range(2 * depth))
        mlp = TransformerMLPWithConv if use_dwc_mlp else TransformerMLP
        self.mlps = nn.ModuleList(mlp(dim_embed, expansion, drop) for _ in range(depth))
        self.attns = nn.ModuleList()
        for letter in stage_spec:
            if letter == "L":
                self.attns.append(LocalAttention(dim_embed, heads, window_size, attn_drop, proj_drop))
            elif letter == "S":
                shift = math.ceil(window_size / 2)
                self.attns.append(
                    ShiftWindowAttention(
                        dim_embed, heads, window_size, attn_drop, proj_drop, shift, (fmap_size, fmap_size)
                    )
                )
            elif letter == "D":
                ksize = _OFFSET_KSIZES[stage_idx]
                if offset_range_factor <= 0:
                    # DAttention's rule for <= 0 differs from the v1 code's (unbounded, tanh of points).
                    raise ValueError(f"stage {stage_idx}: offset_range_factor must be > 0 for 'D' blocks")
                if stride == ksize:
                    # DAttention drops the padding when stride == ksize; v1 always pads ksize // 2.
                    raise ValueError(f"stage {stage_idx}: stride {stride} equal to the offset kernel")
                self.attns.append(
                    DAttention(
                        dim_embed,
                        num_heads=heads,
                        n_groups=n_groups,
                        offset_range_factor=offset_range_factor,
                        stride=stride,
                        ksize=ksize,
                        use_pe=use_pe,
                        q_size=(fmap_size, fmap_size),
                        grid_mode="dat_v1",
                    )
                )
            else:
                raise ValueError(f"stage {stage_idx}: block type {letter!r} is not one of 'L', 'S', 'D'")
        self.drop_path = nn.ModuleList(DropPath(r) if r > 0 else nn.Identity() for r in drop_path_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim_in, S, S]`` -> ``[B, C, S, S]``."""
        x = self.proj(x)
        for d in range(self.depth):
            x = x + self.drop_path[d](self.attns[d](self.layer_norms[2 * d](x)))
            x = x + self.drop_path[d](self.mlps[d](self.layer_norms[2 * d + 1](x)))
        return x


class DAT(nn.Module):
    """Vision Transformer with Deformable Attention, v1 (the arguments of the official ``DAT``).

    Args:
        img_size: input side; the stage maps are ``img_size / 4 / 2^i``.
        patch_size: stem stride.
        num_classes: classifier outputs.
        expansion: MLP width factor.
        dim_stem: stem channels.
        dims: channels per stage.
        depths: blocks per stage.
        heads: attention heads per stage.
        window_sizes: window side per stage (``L``/``S`` blocks).
        drop_rate, attn_drop_rate, drop_path_rate: dropout and stochastic depth (linear in depth).
        strides: offset-network stride per stage (``D`` blocks).
        offset_range_factor: offset bound per stage (``D`` blocks).
        stage_spec: block letters per stage (``"L"``, ``"S"``, ``"D"``).
        groups: offset groups per stage (``D`` blocks).
        use_pes: relative position bias in ``D`` blocks, per stage.
        dwc_pes, fixed_pes, no_offs: v1 options for ``D`` blocks; only False is supported.
        sr_ratios, ns_per_pts: accepted for the official configs; unused by the v1 network.
        use_dwc_mlps: per stage, :class:`TransformerMLPWithConv` instead of :class:`TransformerMLP`.
        use_conv_patches: overlapping convolutions (7x7 stem, 3x3 down-sampling) instead of patches.

    Shape:
        input ``[B, 3, img_size, img_size]`` (ImageNet-normalised) -> logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        num_classes: int = 1000,
        expansion: int = 4,
        dim_stem: int = 96,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (3, 6, 12, 24),
        window_sizes: Sequence[int] = (7, 7, 7, 7),
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        strides: Sequence[int] = (-1, -1, -1, -1),
        offset_range_factor: Sequence[float] = (1, 2, 3, 4),
        stage_spec: Sequence[Sequence[str]] = (
            ("L", "D"),
            ("L", "D"),
            ("L", "D", "L", "D", "L", "D"),
            ("L", "D"),
        ),
        groups: Sequence[int] = (-1, -1, 3, 6),
        use_pes: Sequence[bool] = (False, False, False, False),
        dwc_pes: Sequence[bool] = (False, False, False, False),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        fixed_pes: Sequence[bool] = (False, False, False, False),
        no_offs: Sequence[bool] = (False, False, False, False),
        ns_per_pts: Sequence[int] = (4, 4, 4, 4),
        use_dwc_mlps: Sequence[bool] = (False, False, False, False),
        use_conv_patches: bool = False,
    ) -> None:
        super().__init__()
        per_stage = {
            "dims": dims, "depths": depths, "heads": heads, "window_sizes": window_sizes, "strides": strides,
            "offset_range_factor": offset_range_factor, "stage_spec": stage_spec, "groups": groups,
            "use_pes": use_pes, "dwc_pes": dwc_pes, "fixed_pes": fixed_pes, "no_offs": no_offs,
            "use_dwc_mlps": use_dwc_mlps,
        }  # fmt: skip
        for name, value in per_stage.items():
            if len(value) != 4:
                raise ValueError(f"{name} must have one entry per stage (4), got {len(value)}")
        for i in range(4):
            if "D" in stage_spec[i] and (dwc_pes[i] or fixed_pes[i] or no_offs[i]):
                raise ValueError(f"stage {i}: dwc_pe, fixed_pe and no_off are not supported by DAttention")
        if img_size % (patch_size * 8):
            raise ValueError(f"img_size ({img_size}) must be a multiple of 8 * patch_size ({8 * patch_size})")
        self.num_classes = num_classes
        self.img_size = img_size

        if use_conv_patches:
            stem = nn.Conv2d(3, dim_stem, 7, patch_size, 3)
        else:
            stem = nn.Conv2d(3, dim_stem, patch_size, patch_size)
        self.patch_proj = nn.Sequential(stem, LayerNormProxy(dim_stem))

        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        fmap = img_size // patch_size
        self.stages = nn.ModuleList()
        for i in range(4):
            # v1 gives later stages 2 * dims[i - 1] input channels; the down-sampling delivers
            # dims[i], which is the same number in every released config (dims double).
            dim_in = dim_stem if i == 0 else dims[i]
            start = sum(depths[:i])
            stage = TransformerStage(
                fmap_size=fmap,
                window_size=window_sizes[i],
                dim_in=dim_in,
                dim_embed=dims[i],
                depth=depths[i],
                stage_spec=stage_spec[i],
                n_groups=groups[i],
                use_pe=use_pes[i],
                heads=heads[i],
                stride=strides[i],
                offset_range_factor=offset_range_factor[i],
                stage_idx=i,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
                expansion=expansion,
                drop=drop_rate,
                drop_path_rates=rates[start : start + depths[i]],
                use_dwc_mlp=use_dwc_mlps[i],
            )
            self.stages.append(stage)
            fmap //= 2

        self.down_projs = nn.ModuleList()
        for i in range(3):
            if use_conv_patches:
                conv = nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1, bias=False)
            else:
                conv = nn.Conv2d(dims[i], dims[i + 1], 2, 2, bias=False)
            self.down_projs.append(nn.Sequential(conv, LayerNormProxy(dims[i + 1])))
        self.cls_norm = LayerNormProxy(dims[-1])
        self.cls_head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> normalised last-stage map ``[B, dims[-1], H / 32, W / 32]``."""
        x = self.patch_proj(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.down_projs):
                x = self.down_projs[i](x)
        return self.cls_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify.

        Args:
            x: ``[B, 3, img_size, img_size]``, ImageNet-normalised.

        Returns:
            logits ``[B, num_classes]``.
        """
        return self.cls_head(self.forward_features(x).mean(dim=(2, 3)))


def build_dat_tiny(num_classes: int = 1000, drop_path_rate: float = 0.0) -> DAT:
    """DAT-T (v1) with random weights, in eval mode; the official ``dat_tiny_in1k_224.pth`` loads into it.

    Args:
        num_classes: classifier outputs (1000 for the ImageNet checkpoint).
        drop_path_rate: stochastic depth for training (the official run used 0.2).

    Returns:
        The model: ``[B, 3, 224, 224]`` (see :data:`DAT_TINY_PREPROCESS`) -> logits ``[B, num_classes]``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    config = {**DAT_TINY_CONFIG, "num_classes": num_classes, "drop_path_rate": drop_path_rate}
    return DAT(**config).eval()
