"""What an attention module costs: its parameters and FLOPs on one feature map.

FLOP convention: **FLOPs = 2 x multiply-adds** of the convolutions and matrix products (what
``FlopCounterMode`` counts: ``aten.convolution``, ``mm``, ``addmm``, ``bmm``, ...). Element-wise
work (activations, gates' products, pooling, softmax, normalisation, bias) is not counted. Two
operations that ``FlopCounterMode`` does not know are counted here with an analytic formula, in
the same convention, when the installed torch has no formula of its own for them:

* ``aten.grid_sampler_2d`` (DAT's key sampling and its relative-position bias lookup): every output
  value is a weighted sum of 4 input values (bilinear), ``2 * 4 * N * C * Ho * Wo``; 16 values for
  bicubic, and 0 for nearest (a copy).
* ``torchvision.deform_conv2d`` (deformable convolution): the convolution itself,
  ``2 * N * C_out * (C_in / weight_groups) * kh * kw * Ho * Wo``, plus the bilinear sampling of
  every input column, ``2 * 4 * N * C_in * kh * kw * Ho * Wo``, plus, when modulated, one multiply
  by the mask per sampled value, ``N * C_in * kh * kw * Ho * Wo``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision.deform_conv2d)
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from attnviz.layers import ATTENTION_REGISTRY, create_attention

__all__ = ["analytic_flop_ops", "deform_conv2d_flops", "flops_text", "grid_sample_flops", "module_cost"]


def grid_sample_flops(
    input_shape: Sequence[int],
    grid_shape: Sequence[int],
    interpolation_mode: int = 0,
    *args: object,
    out_shape: Sequence[int] | None = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``aten.grid_sampler_2d`` (2 x multiply-adds).

    Args:
        input_shape: ``[N, C, H_in, W_in]``.
        grid_shape: ``[N, H_out, W_out, 2]``.
        interpolation_mode: 0 bilinear (4 input values per output value), 1 nearest (a copy: 0),
            2 bicubic (16).

    Returns:
        ``2 * taps * N * C * H_out * W_out``.
    """
    taps = {0: 4, 1: 0, 2: 16}.get(int(interpolation_mode), 4)
    n, c = input_shape[0], input_shape[1]
    return 2 * taps * n * c * grid_shape[1] * grid_shape[2]


def deform_conv2d_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    offset_shape: Sequence[int],
    mask_shape: Sequence[int] | None,
    bias_shape: Sequence[int] | None,
    *args: object,
    out_shape: Sequence[int] | None = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``torchvision.deform_conv2d`` (2 x multiply-adds; see the module docstring).

    Args:
        input_shape: ``[N, C_in, H, W]``.
        weight_shape: ``[C_out, C_in / weight_groups, kh, kw]``.
        offset_shape: ``[N, 2 * offset_groups * kh * kw, Ho, Wo]``.
        mask_shape: ``[N, offset_groups * kh * kw, Ho, Wo]`` (ignored unless ``use_mask``, the
            last positional argument of the op).
        bias_shape: ``[C_out]`` (bias additions are not counted).

    Returns:
        Convolution ``2 * N * C_out * C_in/g * kh * kw * Ho * Wo`` plus bilinear sampling
        ``8 * N * C_in * kh * kw * Ho * Wo`` plus, when modulated, ``N * C_in * kh * kw * Ho * Wo``.
    """
    n, c_in = input_shape[0], input_shape[1]
    c_out, c_per_group, kh, kw = weight_shape
    ho, wo = offset_shape[2], offset_shape[3]
    use_mask = bool(args[-1]) if args else mask_shape is not None
    columns = n * c_in * kh * kw * ho * wo  # sampled input values
    conv = 2 * n * c_out * c_per_group * kh * kw * ho * wo
    return conv + 2 * 4 * columns + (columns if use_mask and mask_shape is not None else 0)


def analytic_flop_ops() -> dict[object, Callable[..., int]]:
    """The ops that :func:`module_cost` counts analytically: those the installed torch does not know.

    Returns:
        ``{op: formula}`` for ``FlopCounterMode(custom_mapping=...)``; empty once torch counts both.
    """
    extra: dict[object, Callable[..., int]] = {
        torch.ops.aten.grid_sampler_2d: grid_sample_flops,
        torch.ops.torchvision.deform_conv2d: deform_conv2d_flops,
    }
    return {op: fn for op, fn in extra.items() if op not in flop_registry}


def module_cost(kind: str, channels: int, size: tuple[int, int]) -> tuple[int, int]:
    """Parameters and FLOPs of ``create_attention(kind, channels)`` on a ``[1, channels, H, W]`` input.

    FLOPs are 2 x multiply-adds of convolutions and matrix products, counted by
    ``FlopCounterMode`` during one forward pass in eval mode on the CPU; grid sampling and
    deformable convolution are added analytically when torch has no formula for them (see the
    module docstring). Element-wise work is not counted.

    Args:
        kind: a key of :data:`attnviz.layers.ATTENTION_REGISTRY`.
        channels: C (some kinds need a multiple of their heads or groups: mhsa and dat of 4).
        size: (H, W) of the feature map (mhsa accepts at most 1024 positions at its defaults).

    Returns:
        ``(parameters, flops)``: ``sum(p.numel())`` of the module's parameters, and the FLOPs.

    Raises:
        ValueError: unknown kind, non-positive channels or size, or a combination the module
            refuses (its own message).
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    if kind not in ATTENTION_REGISTRY:
        raise ValueError(f"unknown attention kind {kind!r}; known kinds: {', '.join(ATTENTION_REGISTRY)}")
    module = create_attention(kind, channels).eval()
    params = sum(p.numel() for p in module.parameters())
    x = torch.zeros(1, channels, *size)
    counter = FlopCounterMode(display=False, custom_mapping=analytic_flop_ops())
    with torch.no_grad(), counter:
        module(x)
    return int(params), int(counter.get_total_flops())


def flops_text(flops: int) -> str:
    """``1234567`` -> ``"1.23 MFLOPs"`` (k, M, G)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}FLOPs"
    return f"{flops} FLOPs"
