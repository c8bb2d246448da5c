"""Taps on Deformable DETR (transformers): where each multi-scale deformable attention samples.

Each ``DeformableDetrMultiscaleDeformableAttention`` returns its attention weights but not where it
sampled: the sampling locations are positional argument 4 of its inner ``.attn``, and the
reference points reach the module as the keyword argument ``reference_points``; the taps read
those call arguments (see :mod:`attnviz.analysis.detector` for the pixel convention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnviz.capture.hooks import Tap

__all__ = ["detr_taps"]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def detr_taps(model: nn.Module) -> list[Tap]:
    """Taps on every multi-scale deformable attention of a ``DeformableDetrForObjectDetection``.

    Per module (``layer`` = its qualified name): ``"points"`` (``.attn`` positional input 4,
    ``[B, Q, heads, levels, points, 2]``), ``"attn"`` (the module's output 1, ``[B, Q, heads,
    levels, points]``), ``"reference"`` (keyword input ``reference_points``, ``[B, Q, levels, 2 or
    4]``), ``"levels"`` (keyword input ``spatial_shapes``, ``[levels, 2]``). And the encoder's
    ``valid_ratios`` ``[B, levels, 2]`` (w, h) under the layer ``"model.encoder"``.
    """
    from transformers.models.deformable_detr.modeling_deformable_detr import (
        DeformableDetrMultiscaleDeformableAttention,
    )

    detr: Any = model.model  # DeformableDetrModel: its encoder and decoder stacks
    taps: list[Tap] = [
        Tap("model.encoder", detr.encoder, "detr_valid_ratios", "sampling", _same, part="valid_ratios",
            read_input="valid_ratios"),
    ]  # fmt: skip
    for stack, kind in (("encoder", "detr_encoder"), ("decoder", "detr_decoder")):
        for name, module in getattr(detr, stack).named_modules(prefix=f"model.{stack}"):
            if not isinstance(module, DeformableDetrMultiscaleDeformableAttention):
                continue
            taps += [
                Tap(name, module.attn, kind, "sampling", _same, part="points", read_input=4),
                Tap(name, module, kind, "sampling", _same, part="attn", output_index=1),
                Tap(name, module, kind, "sampling", _same, part="reference", read_input="reference_points"),
                Tap(name, module, kind, "sampling", _same, part="levels", read_input="spatial_shapes"),
            ]
    return taps
