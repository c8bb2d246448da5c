"""Typed facts a tap carries for the record builders (:mod:`attnviz.capture.readout`).

Each attention family that needs more than its captured tensor to become a record says so with one
of these frozen dataclasses in :attr:`attnviz.capture.hooks.Tap.meta`; the builders dispatch on the
type, never on string keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ConvGeometry", "DatSampling", "HaloWindows", "SwinWindows", "TapMeta", "TokenPrefix"]


@dataclass(frozen=True)
class ConvGeometry:
    """A deformable convolution's geometry: offsets ``[2*G*K, Ho, Wo]`` become sampling points.

    Attributes:
        kernel_size, stride, padding, dilation: (rows, columns) of the convolution.
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


@dataclass(frozen=True)
class DatSampling:
    """DAT's sampling convention: points and references are normalised (y, x) in [-1, 1] of the key
    grid (``align_corners=True``), ``[G, Hk, Wk, 2]``; the attention ``[heads, Nq, Ns]`` weights them."""


@dataclass(frozen=True)
class SwinWindows:
    """Shifted-window attention ``[B*windows, heads, ws^2, ws^2]``.

    Attributes:
        scheme: ``"timm_swin"`` (rolled by ``-shift``, then padded: timm and DAT-T) or ``"tv_swin"``
            (padded, then rolled; no shift along an axis that fits in one window: torchvision).
        window: window size (rows, columns).
        shift: shift the block asks for (rows, columns).
    """

    scheme: Literal["timm_swin", "tv_swin"]
    window: tuple[int, int]
    shift: tuple[int, int]


@dataclass(frozen=True)
class HaloWindows:
    """HaloNet's blocked attention: blocks of ``block_size`` attend to their block plus ``halo_size``
    on each side (``win_size`` = block + 2 halo), queries subsampled by ``block_stride``."""

    block_size: int
    halo_size: int
    block_stride: int
    win_size: int


@dataclass(frozen=True)
class TokenPrefix:
    """Token attention whose first tokens are not patches (class, distillation, register tokens).

    Attributes:
        prefix_names: one name per prefix token, in token order.
    """

    prefix_names: tuple[str, ...]


#: What :attr:`attnviz.capture.hooks.Tap.meta` may hold.
TapMeta = ConvGeometry | DatSampling | SwinWindows | HaloWindows | TokenPrefix | None
