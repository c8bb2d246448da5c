"""The detector runner: Deformable DETR's multi-scale deformable attention and its detections.

Paper: "Deformable DETR: Deformable Transformers for End-to-End Object Detection",
Zhu et al., ICLR 2021, https://arxiv.org/abs/2010.04159. Model: transformers'
``DeformableDetrForObjectDetection`` (checkpoint ``SenseTime/deformable-detr``), run with
``attn_implementation="eager"``.

Each ``DeformableDetrMultiscaleDeformableAttention`` (encoder self-attention, decoder cross-attention)
lets every query look at ``points`` sampled positions on each of ``levels`` feature maps, per head.
The module returns its attention weights ``[B, Q, heads, levels, points]`` but not where it
sampled: the sampling locations ``[B, Q, heads, levels, points, 2]`` (normalised (x, y) in [0, 1]
of each level's padded map) are positional argument 4 of its inner ``.attn``
(``MultiScaleDeformableAttention``), and the reference points ``[B, Q, levels, 2]`` reach the
module as the keyword argument ``reference_points``. Taps with ``read_input`` read those call
arguments inside the one :class:`attnviz.capture.hooks.Capture`.

Pixel convention (every record is in model-input pixels, (y, x), pixel centres at integers, the
origin at the top-left of the padded input, which is also the top-left of the valid image):

``grid_sample(align_corners=False)`` reads level ``l`` (``H_l x W_l`` cells) at cell coordinate
``f_x = loc_x * W_l - 0.5`` (cell centres at integers). The model treats the valid cells of each
level as tiling the valid image: decoder reference points are box centres normalised to the valid
image and reach level ``l`` multiplied by its valid ratio ``Wv_l / W_l`` (``Wv_l`` = valid cells),
and encoder queries' reference points are their cell centres normalised the same way. So cell
``j`` of level ``l`` covers input pixels ``[j * s_l, (j + 1) * s_l)`` with the level's effective
stride ``s_l = W_valid / Wv_l`` (``W_valid``: valid input width), whose centre is pixel
``(j + 0.5) * s_l - 0.5``, and::

    x = (f_x + 0.5) * s_l - 0.5 = loc_x * W_l * W_valid / Wv_l - 0.5        (y alike)

For an unpadded image ``Wv_l = W_l`` and ``x = loc_x * W - 0.5`` on every level. With this
convention a decoder query's reference point lands on the same pixel on every level, an encoder
query's reference point on the centre of its own cell, and both match the boxes of
:class:`~attnviz.core.records.Detections` (``box_x = u * W_valid`` for normalised ``u``). The strides
are not the backbone's nominal 8/16/32/64 when the input is not a multiple of them (the feature
maps are ceil-rounded): ``s_l`` is what the model's coordinates imply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnviz.backends.transformers_detr import DetrBundle
from attnviz.capture import Capture
from attnviz.capture.detr_taps import detr_taps
from attnviz.core.records import Analysis, Detections, SamplingPoints
from attnviz.runtime import display_images, run_in_batches

__all__ = ["analyze_detr"]


def _level_scales(
    shapes: np.ndarray, valid_ratios: np.ndarray, valid_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``[L]`` factors (y, x) from normalised level coordinates to input pixels (before the -0.5).

    ``shapes`` ``[L, 2]`` (H_l, W_l); ``valid_ratios`` ``[L, 2]`` (w, h) as the model computed them;
    the factor is ``H_l * H_valid / Hv_l`` with ``Hv_l`` the valid cells (see the module docstring).
    """
    cells_h = np.maximum(np.rint(valid_ratios[:, 1] * shapes[:, 0]), 1)
    cells_w = np.maximum(np.rint(valid_ratios[:, 0] * shapes[:, 1]), 1)
    return shapes[:, 0] * valid_hw[0] / cells_h, shapes[:, 1] * valid_hw[1] / cells_w


def _sampling_record(
    layer: str,
    parts: dict[str, np.ndarray],
    valid_ratios: np.ndarray,
    valid_hw: tuple[int, int],
    block: int,
    untrained: bool,
) -> SamplingPoints:
    """One image's :class:`SamplingPoints` from a module's captured tensors (batch index removed)."""
    kind = "detr_encoder" if layer.startswith("model.encoder") else "detr_decoder"
    loc = parts["points"]  # [Q, G, L, P, 2] (x, y)
    weights = parts["attn"]  # [Q, G, L, P]
    ref = parts["reference"][..., :2]  # [Q, L, 2] (x, y); box references keep their centre
    shapes = parts["levels"].round().astype(np.int64)  # [L, 2] (H_l, W_l)
    q, g, n_levels, n_points, _ = loc.shape
    if shapes.shape != (n_levels, 2) or ref.shape != (q, n_levels, 2) or weights.shape != loc.shape[:-1]:
        raise RuntimeError(
            f"{layer}: captured shapes do not fit together: locations {loc.shape}, weights "
            f"{weights.shape}, reference {parts['reference'].shape}, levels {shapes.shape}"
        )
    sy, sx = _level_scales(shapes.astype(np.float64), valid_ratios.astype(np.float64), valid_hw)
    scale = np.stack([sy, sx], -1)  # [L, 2] (y, x)
    points = loc[..., ::-1] * scale[None, None, :, None] - 0.5  # [Q, G, L, P, 2] (y, x)
    ref_pix = ref[..., ::-1] * scale[None] - 0.5  # [Q, L, 2]
    if kind == "detr_encoder":
        # each query is a cell of its own level: its reference on that level is the cell centre
        own_level = np.repeat(np.arange(n_levels), shapes[:, 0] * shapes[:, 1])
        if own_level.shape[0] != q:
            raise RuntimeError(
                f"{layer}: {q} encoder queries but the levels {shapes.tolist()} hold {len(own_level)}"
            )
        query_points = ref_pix[np.arange(q), own_level]
        dtype: type[np.floating] = (
            np.float16
        )  # ~18k queries at 800 px: half the memory; 0.5 px steps below 1024 px
    else:
        query_points = ref_pix[:, 0]
        dtype = np.float32
    return SamplingPoints(
        layer=layer,
        kind=kind,
        points=points.reshape(q, g, n_levels * n_points, 2).astype(dtype),
        # the same for every head: one copy, broadcast over the heads (read-only, 1/G the memory)
        reference=np.broadcast_to(
            np.repeat(ref_pix[:, None, :, None], n_points, axis=3)
            .reshape(q, 1, n_levels * n_points, 2)
            .astype(dtype),
            (q, g, n_levels * n_points, 2),
        ),
        weights=weights.reshape(q, g, n_levels * n_points).astype(dtype),
        query_grid=None,
        block=block,
        untrained=untrained,
        levels=tuple((int(h), int(w)) for h, w in shapes),
        query_points=query_points.astype(np.float32),
        group_name="head",
    )


def _center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def _detections(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    valid_hw: tuple[int, int],
    labels: Sequence[str],
    threshold: float,
    top: int,
    layer: str,
    untrained: bool,
) -> Detections:
    """transformers' ``post_process_object_detection`` for one image, keeping each query index.

    ``logits`` ``[Q, C]``, ``boxes`` ``[Q, 4]`` (cx, cy, w, h) normalised to the valid image. Scores
    are sigmoids (focal loss: each class on its own); the ``top`` best (query, class) pairs are kept
    when their score exceeds ``threshold``. Boxes are scaled to the valid image and clipped to it.
    """
    prob = logits.float().sigmoid().flatten()
    scores, index = prob.topk(min(top, prob.numel()))
    n_classes = logits.shape[-1]
    query, classes = index // n_classes, index % n_classes
    keep = scores > threshold
    scores, query, classes = scores[keep], query[keep], classes[keep]
    h, w = valid_hw
    xyxy = _center_to_corners(boxes.float()[query]) * torch.tensor([w, h, w, h], dtype=torch.float32)
    xyxy = torch.minimum(xyxy.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
    return Detections(
        layer=layer,
        boxes=xyxy.numpy(),
        scores=scores.numpy().astype(np.float32),
        classes=classes.numpy().astype(np.int64),
        labels=tuple(labels[int(c)] if int(c) < len(labels) else f"class {int(c)}" for c in classes),
        query_index=query.numpy().astype(np.int64),
        untrained=untrained,
    )


def _capture(
    bundle: DetrBundle, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
) -> tuple[Any, dict[str, dict[str, torch.Tensor]]]:
    """One forward under capture: (model outputs, ``{layer: {part: batched CPU float32 tensor}}``)."""
    taps = detr_taps(bundle.module)
    with Capture(bundle.module, taps) as cap, torch.inference_mode():
        outputs = bundle.module(pixel_values=pixel_values, pixel_mask=pixel_mask)
    captured: dict[str, dict[str, torch.Tensor]] = {}
    for tap, value in cap.results():
        captured.setdefault(tap.layer, {})[tap.part] = value  # a module run twice keeps its last call
    return outputs, captured


def analyze_detr(
    bundle: DetrBundle,
    images: Sequence[Image.Image | np.ndarray],
    *,
    threshold: float = 0.5,
    top: int = 100,
) -> list[Analysis]:
    """Run ``images`` through Deformable DETR in one batched forward and capture its deformable attention.

    Args:
        bundle: from :func:`build_deformable_detr`; its lock is held for the whole run.
        images: RGB PIL images or ``[H, W, 3]`` uint8 arrays; a batch of different sizes is padded.
        threshold: keep detections whose score exceeds it, in [0, 1).
        top: the most detections per image (transformers' ``top_k``), at least 1.

    Returns:
        One :class:`~attnviz.core.records.Analysis` per image (``top5`` empty), its records in forward
        order: one :class:`~attnviz.core.records.SamplingPoints` per encoder layer (kind
        ``"detr_encoder"``; Q = every cell of every level, level by level, row-major, so ``levels``
        gives the layout; G = heads; P = levels x points, level-major; points, reference and weights
        stored as float16, which halves ~100 MB per image at 800 px and keeps pixels to 0.5 px below
        1024 and 1 px up to 2048), one per decoder layer (kind ``"detr_decoder"``, Q = the object
        queries, float32), then the :class:`~attnviz.core.records.Detections`, highest score first.
        Points are in model-input pixels (y, x) as derived in the module docstring; ``reference``
        is the query's reference point on each point's level; ``query_points`` is an encoder
        query's cell centre or a decoder query's reference point. ``input_image`` is the valid
        (unpadded) region of the model input, so every coordinate refers to it.

    When the GPU runs out of memory, the cache is freed and the images run again in halved
    batches (as :func:`attnviz.analyze` does); such results carry a note in ``Analysis.notes``.

    Raises:
        GPUMemoryError: the GPU ran out of memory even for one image.
    """
    if not isinstance(bundle, DetrBundle):
        raise TypeError(
            f"bundle must be a DetrBundle from build_deformable_detr, got {type(bundle).__name__}"
        )
    if isinstance(images, Image.Image | np.ndarray):
        images = [images]
    if not images:
        raise ValueError("analyze_detr needs at least one image")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    with bundle.lock:
        batches, note = run_in_batches(
            bundle, list(images), lambda chunk: _Done(_run(bundle, chunk, threshold, top))
        )
    results = [a for b in batches for a in b.results]
    if note:
        results = [dataclasses.replace(a, notes=(*a.notes, note)) for a in results]
    return results


@dataclass
class _Done:
    """The analyses of one batch (what the GPU memory fallback counts)."""

    results: list[Analysis]

    @property
    def size(self) -> int:
        return len(self.results)


def _run(bundle: DetrBundle, images: Sequence, threshold: float, top: int) -> list[Analysis]:
    """One batched forward with capture; the caller holds the bundle's lock."""
    pixel_values, pixel_mask = bundle.preprocess(images)
    outputs, captured = _capture(bundle, pixel_values, pixel_mask)
    mask = pixel_mask.cpu().bool()
    valid = [(int(m[:, 0].sum()), int(m[0, :].sum())) for m in mask]
    shown = display_images(pixel_values, bundle.mean, bundle.std)
    valid_ratios = captured.pop("model.encoder")["valid_ratios"].numpy()  # [B, L, 2] (w, h)
    logits, boxes = outputs.logits.cpu(), outputs.pred_boxes.cpu()
    heads: Any = bundle.module.class_embed  # one classifier per decoder layer; the last one predicts
    head = f"class_embed.{len(heads) - 1}"

    results = []
    for i, (h, w) in enumerate(valid):
        records: list = []
        for block, (layer, parts) in enumerate(captured.items()):
            per_image = {k: (v if k == "levels" else v[i]).numpy() for k, v in parts.items()}
            records.append(
                _sampling_record(layer, per_image, valid_ratios[i], (h, w), block, bundle.untrained)
            )
        records.append(
            _detections(logits[i], boxes[i], (h, w), bundle.labels, threshold, top, head, bundle.untrained)
        )
        results.append(
            Analysis(bundle.name, bundle.weights, bundle.untrained, shown[i, :h, :w], (), tuple(records))
        )
    return results
