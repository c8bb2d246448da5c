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

The blocks live next to this file: the window attention of ``L`` and ``S`` blocks in
:mod:`attnviz.layers.dat_window_attention`, the stages and their MLPs in
:mod:`attnviz.layers.dat_stage`; this module assembles the network and re-exports them.

DAT-T stage maps at 224 px: 56x56 (L, S), 28x28 (L, S), 14x14 (L, D, L, D, L, D), 7x7 (L, D).

Exposure: every ``D`` block is an :class:`attnviz.layers.DAttention`, so
:func:`attnviz.capture.taps.find_taps` reads its sampling points, reference grid and attention. The
window blocks expose their softmax as ``attn_softmax``: ``[B * nW, heads, ws * ws, ws * ws]``,
windows row-major over the (shifted, for ``S``) map, tokens row-major inside each window.

Eval preprocessing of the official release (``data/build.py``): resize to 256x256 (bicubic, not
aspect-preserving), centre crop 224, ImageNet mean/std; see :data:`DAT_TINY_PREPROCESS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attnviz.layers.dat import LayerNormProxy
from attnviz.layers.dat_stage import TransformerMLP, TransformerMLPWithConv, TransformerStage
from attnviz.layers.dat_window_attention import LocalAttention, ShiftWindowAttention

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
