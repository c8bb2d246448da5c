"""The classifier runner: one batched forward under capture, top-k, and the Grad-CAM baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from attnviz.analysis.gradcam import gradcam_maps, gradcam_record
from attnviz.backends import LoadedModel
from attnviz.capture import Capture, records_from_taps
from attnviz.core.records import Analysis, Prediction
from attnviz.runtime import AUTOCAST_DTYPES, display_images, run_in_batches

__all__ = ["analyze_classifier"]


@dataclass
class _Batch:
    """What one forward (and Grad-CAM) of a batch of images left, on the CPU."""

    size: int
    values: list
    grids: dict[str, tuple[int, int]]
    top_p: torch.Tensor
    top_i: torch.Tensor
    cams: np.ndarray | None
    shown: np.ndarray
    input_hw: tuple[int, int]


def _forward(
    model: LoadedModel, pil: list[Image.Image], gradcam: bool, topk: int, autocast: str | None = None
) -> _Batch:
    """One batched forward with capture, then Grad-CAM; the caller holds ``model.lock``.

    With ``autocast`` the forward (and so every captured quantity) runs in that precision; the
    captured values are stored as float32 and Grad-CAM stays in float32.
    """
    batch = model.preprocess(pil)
    dtype = AUTOCAST_DTYPES.get(autocast or "")
    with (
        Capture(model.module, model.taps) as cap,
        torch.inference_mode(),
        torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None),
    ):
        logits = model.module(batch)
    values, grids = cap.results(), cap.grids()
    cams = None
    if model.categories:
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        top_p, top_i = probs.topk(topk, dim=-1)
        if gradcam:
            token_grid = next(iter(grids.values()), None)
            cams = gradcam_maps(model, batch, top_i[:, 0].tolist(), token_grid)
    else:  # a feature extractor (DINO): attention only
        top_p = top_i = torch.zeros(len(pil), 0)
    shown = display_images(batch, model.mean, model.std)
    return _Batch(len(pil), values, grids, top_p, top_i, cams, shown, (batch.shape[-2], batch.shape[-1]))


def analyze_classifier(
    model: LoadedModel, pil: list[Image.Image], *, gradcam: bool, topk: int, autocast: str | None
) -> list[Analysis]:
    """The classifier runner of :func:`attnviz.analyze` (arguments checked by the caller).

    Feature extractors (DINO) run here too: no classes, so no predictions and no Grad-CAM.
    """
    with model.lock:
        batches, note = run_in_batches(
            model, pil, lambda chunk: _forward(model, chunk, gradcam, topk, autocast)
        )
    notes = (note,) if note else ()
    results = []
    for batch in batches:
        for i in range(batch.size):
            top = tuple(
                Prediction(int(c), model.categories[int(c)], float(p))
                for p, c in zip(batch.top_p[i], batch.top_i[i], strict=True)
            )
            records = records_from_taps(
                batch.values, batch.grids, batch.input_hw, i, batch.size, model.untrained
            )
            if batch.cams is not None:
                records.append(gradcam_record(model, batch.cams[i], top[0]))
            results.append(
                Analysis(
                    model.name, model.weights, model.untrained, batch.shown[i], top, tuple(records), notes
                )
            )
    return results
