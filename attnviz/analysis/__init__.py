"""Analysis: one :func:`analyze` that runs a loaded model on images and returns frozen records.

It dispatches to a runner per model kind: :mod:`.classifier` (CNNs, transformers, feature
extractors; one batched forward under capture, top-k, Grad-CAM from :mod:`.gradcam`) and
:mod:`.detector` (Deformable DETR: sampling points and detections). It may import
:mod:`attnviz.backends`, :mod:`attnviz.runtime`, :mod:`attnviz.capture` and :mod:`attnviz.core`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from attnviz.analysis.classifier import analyze_classifier
from attnviz.analysis.detector import analyze_detr
from attnviz.analysis.gradcam import add_gradcam
from attnviz.backends import LoadedModel
from attnviz.backends.transformers_detr import DetrBundle
from attnviz.core.records import Analysis
from attnviz.runtime import AUTOCAST_DTYPES, as_pil

__all__ = ["AUTOCAST_DTYPES", "add_gradcam", "analyze", "analyze_detr"]


def analyze(
    model: LoadedModel,
    images: Sequence[Image.Image | np.ndarray],
    *,
    gradcam: bool = True,
    topk: int | None = None,
    autocast: str | None = None,
) -> list[Analysis]:
    """Run ``images`` through ``model`` in one batched forward and capture every attention block.

    Args:
        model: from :func:`attnviz.load_model`; its lock is held for the whole run.
        images: RGB PIL images (e.g. from :func:`attnviz.load_image`) or ``[H, W, 3]`` uint8 arrays.
        gradcam: also compute the Grad-CAM baseline for the top-1 class (one forward and
            backward more; the native maps need neither).
        topk: how many predictions to keep; None (default): 5, or every class of a model with
            fewer (a playground model may have 2). Models without a classifier (DINO, DINOv2) give no
            predictions and no Grad-CAM, only their attention.
        autocast: ``"bf16"`` or ``"fp16"`` runs the forward under ``torch.autocast`` (faster on a
            GPU; fp16 is for CUDA). Captured values are stored as float32; gates and attention rows
            agree with float32 within about 0.02 absolute (bf16 keeps 8 bits of mantissa), which does
            not change what an overlay shows. None (default): float32.

    Returns:
        One :class:`Analysis` per image, in input order, with every captured record for every
        block (forward order) and, when asked, the Grad-CAM map last.

    When the GPU runs out of memory (in the forward or in Grad-CAM), the cache is freed and the
    images are run again in halved batches, down to one image per forward; the model is never
    moved, since other sessions may share it. Such results carry a note in ``Analysis.notes``.
    (A batch's floating-point sums may round differently from a smaller batch's.)

    Raises:
        ValueError: no images, a malformed image array, or ``topk`` out of range.
        GPUMemoryError: the GPU ran out of memory even for a single image.
    """
    if isinstance(images, Image.Image | np.ndarray):
        images = [images]
    if not images:
        raise ValueError("analyze needs at least one image")
    if model.kind == "detector":  # Deformable DETR: detections instead of classes
        if not isinstance(model.detector, DetrBundle):
            raise TypeError(f"{model.name} is a detector without its DetrBundle")
        return analyze_detr(model.detector, list(images))
    n_classes = len(model.categories)
    if topk is None:
        topk = min(5, n_classes) if n_classes else 5
    if n_classes and not 1 <= topk <= n_classes:
        raise ValueError(f"topk must be in [1, {n_classes}], got {topk}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    pil = [as_pil(img) for img in images]
    return analyze_classifier(model, pil, gradcam=gradcam, topk=topk, autocast=autocast)
