"""The Grad-CAM baseline (pytorch-grad-cam) for classifiers, in ``analyze`` or added later.

Grad-CAM explains the top-1 class, or any class a caller names; token layouts (ViTs) and
channels-last layouts (Swin) are reshaped to ``[B, C, H, W]`` first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from attnviz.backends import LoadedModel
from attnviz.capture import Capture
from attnviz.core.records import Analysis, GradCAM, Prediction, TokenAttention
from attnviz.runtime import as_pil, run_in_batches

__all__ = ["add_gradcam", "gradcam_maps", "gradcam_record"]


def _reshape_for(layout: str, grid: tuple[int, int] | None):
    """pytorch-grad-cam's reshape step: the target layer's output -> ``[B, C, H, W]``."""
    if layout == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    if layout == "tokens":
        if grid is None:
            raise RuntimeError("Grad-CAM on tokens needs the patch grid, which was not captured")
        gh, gw = grid

        def tokens(t: torch.Tensor) -> torch.Tensor:
            # the grid tokens are the last gh*gw; the prefix tokens (class, registers) go
            return t[:, -gh * gw :].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)

        return tokens
    return None


def gradcam_maps(
    model: LoadedModel, batch: torch.Tensor, targets: list[int], grid: tuple[int, int] | None = None
) -> np.ndarray:
    """Grad-CAM maps [B, H, W] for ``targets`` from pytorch-grad-cam, hooks released in finally."""
    from pytorch_grad_cam import GradCAM as _GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.module.get_submodule(model.spec.gradcam_layer)
    reshape = _reshape_for(model.spec.gradcam_layout, grid)
    # Parameters stay frozen; the gradient flows from an input that requires it.
    x = batch.detach().clone().requires_grad_(True)
    with Capture(model.module, []), torch.enable_grad():
        cam = _GradCAM(model=model.module, target_layers=[layer], reshape_transform=reshape)
        try:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        finally:
            cam.activations_and_grads.release()


@dataclass
class _Cams:
    """Grad-CAM maps of a batch of images."""

    size: int
    cams: np.ndarray


def gradcam_record(model: LoadedModel, cam: np.ndarray, target: Prediction) -> GradCAM:
    return GradCAM(
        model.spec.gradcam_layer, cam.astype(np.float32), target.index, target.label, model.untrained
    )


def _target(model: LoadedModel, analysis: Analysis, target: int | None) -> Prediction:
    """The class Grad-CAM explains: ``target`` (checked), or the analysis's top-1 prediction."""
    if target is None:
        return analysis.top5[0]
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise TypeError(f"a Grad-CAM target must be a class index (int) or None, got {type(target).__name__}")
    n = len(model.categories)
    if not 0 <= int(target) < n:
        raise ValueError(f"Grad-CAM target {target} is not a class of {model.name}: use 0 to {n - 1}")
    known = {p.index: p for p in analysis.top5}
    return known.get(int(target)) or Prediction(int(target), model.categories[int(target)], math.nan)


def add_gradcam(
    model: LoadedModel,
    analyses: Sequence[Analysis],
    images: Sequence[Image.Image | np.ndarray],
    targets: Sequence[int | None] | None = None,
) -> list[Analysis]:
    """The Grad-CAM baseline for results made with ``analyze(..., gradcam=False)``, added later.

    Native maps need one forward; Grad-CAM needs a forward and a backward more. The app shows the
    native maps first and adds Grad-CAM with this function; the result is the same as
    ``analyze(model, images)`` would have given (same target: each analysis's top-1 class).
    With ``targets`` it explains other classes instead (a teacher's "why not the cat?").

    Args:
        model: the model that made ``analyses`` (its lock is held while Grad-CAM runs).
        analyses: results of ``analyze(model, images, gradcam=False)`` (or with Grad-CAM).
        images: the same images, in the same order.
        targets: per analysis, the class index to explain, or None for its top-1 class. An
            analysis whose Grad-CAM already explains its target is returned unchanged; one whose
            Grad-CAM explains another class gets the new map in its place.

    Returns:
        The analyses with the Grad-CAM record for their target last; an analysis whose model has
        no classifier (DINO, detectors) is returned unchanged.

    Raises:
        ValueError: ``analyses``, ``images`` and ``targets`` differ in length, an analysis is
            another model's, or a target is not one of the model's classes.
        TypeError: a target that is not an int or None.
        GPUMemoryError: the GPU ran out of memory even for one image (batches are halved first).
    """
    if isinstance(images, Image.Image | np.ndarray):
        images = [images]
    if len(analyses) != len(images):
        raise ValueError(f"add_gradcam needs one image per analysis, got {len(images)} for {len(analyses)}")
    if targets is None:
        targets = [None] * len(analyses)
    if len(targets) != len(analyses):
        raise ValueError(f"add_gradcam needs one target per analysis, got {len(targets)} for {len(analyses)}")
    for a in analyses:
        if a.model != model.name:
            raise ValueError(f"an analysis of {a.model} cannot get Grad-CAM from {model.name}")
    classifier = bool(model.categories) and model.kind == "classifier"
    todo = []
    for i, (a, img, t) in enumerate(zip(analyses, images, targets, strict=True)):
        if not (classifier and a.top5):
            continue
        target = _target(model, a, t)
        if a.gradcam is None or a.gradcam.target != target.index:
            todo.append((i, as_pil(img), target))
    out = list(analyses)
    if not todo:
        return out

    # A token layout needs the patch grid: the first block's, as ``analyze`` passes it.
    first = next((r for r in analyses[todo[0][0]].records if isinstance(r, TokenAttention)), None)
    grid = first.grid if first is not None else None

    def run(chunk: list[tuple[int, Image.Image, Prediction]]) -> _Cams:
        batch = model.preprocess([img for _, img, _ in chunk])
        return _Cams(len(chunk), gradcam_maps(model, batch, [t.index for _, _, t in chunk], grid))

    with model.lock:
        batches, note = run_in_batches(model, todo, run)
    cams = np.concatenate([b.cams for b in batches])
    for (i, _, target), cam in zip(todo, cams, strict=True):
        a = out[i]
        notes = a.notes + ((note,) if note and note not in a.notes else ())
        kept = tuple(r for r in a.records if not isinstance(r, GradCAM))
        out[i] = dataclasses.replace(a, records=(*kept, gradcam_record(model, cam, target)), notes=notes)
    return out
