"""``analyze``: one batched forward with capture, top-5, and the Grad-CAM baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .capture import Capture
from .models import LoadedModel
from .records import Analysis, ChannelWeights, GradCAM, Prediction, Record, SpatialMap

__all__ = ["analyze"]

log = logging.getLogger(__name__)


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images must be PIL images or [H, W, 3] uint8 arrays, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr, "RGB")


def _display_images(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation: [B, 3, H, W] -> [B, H, W, 3] uint8, what the model saw."""
    m = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    pixels = (batch.float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _records(model: LoadedModel, values, input_hw: tuple[int, int], index: int) -> list[Record]:
    """Records of image ``index`` from the capture's values, blocks numbered in forward order."""
    blocks: dict[str, int] = {}
    out: list[Record] = []
    for tap, value in values:
        block = blocks.setdefault(tap.layer, len(blocks))
        v = value[index].numpy()
        if tap.record == "channel":
            out.append(ChannelWeights(tap.layer, tap.kind, v, block, model.untrained, tap.path_labels))
        else:
            stride = (input_hw[0] / v.shape[0], input_hw[1] / v.shape[1])
            out.append(SpatialMap(tap.layer, tap.kind, v, stride, block, model.untrained))
    return out


def _gradcam(model: LoadedModel, batch: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM maps [B, H, W] for ``targets`` from pytorch-grad-cam, hooks released in finally."""
    from pytorch_grad_cam import GradCAM as _GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.module.get_submodule(model.spec.gradcam_layer)
    # Parameters stay frozen; the gradient flows from an input that requires it.
    x = batch.detach().clone().requires_grad_(True)
    with Capture(model.module, []), torch.enable_grad():
        cam = _GradCAM(model=model.module, target_layers=[layer])
        try:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        finally:
            cam.activations_and_grads.release()


def analyze(
    model: LoadedModel,
    images: Sequence[Image.Image | np.ndarray],
    *,
    gradcam: bool = True,
    topk: int = 5,
) -> list[Analysis]:
    """Run ``images`` through ``model`` in one batched forward and capture every attention block.

    Args:
        model: from :func:`attnviz.load_model`; its lock is held for the whole run.
        images: RGB PIL images (e.g. from :func:`attnviz.load_image`) or ``[H, W, 3]`` uint8 arrays.
        gradcam: also compute the Grad-CAM baseline for the top-1 class (one forward and
            backward more; the native maps need neither).
        topk: how many predictions to keep.

    Returns:
        One :class:`Analysis` per image, in input order, with every captured record for every
        block (forward order) and, when asked, the Grad-CAM map last.
    """
    if isinstance(images, Image.Image | np.ndarray):
        images = [images]
    if not images:
        raise ValueError("analyze needs at least one image")
    if not 1 <= topk <= len(model.categories):
        raise ValueError(f"topk must be in [1, {len(model.categories)}], got {topk}")
    pil = [_as_pil(img) for img in images]
    with model.lock:
        batch = model.preprocess(pil)
        with Capture(model.module, model.taps) as cap, torch.inference_mode():
            logits = model.module(batch)
        values = cap.results()
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        top_p, top_i = probs.topk(topk, dim=-1)
        cams = _gradcam(model, batch, top_i[:, 0].tolist()) if gradcam else None
    shown = _display_images(batch, model.mean, model.std)
    input_hw = (batch.shape[-2], batch.shape[-1])

    results = []
    for i in range(len(pil)):
        top = tuple(
            Prediction(int(c), model.categories[int(c)], float(p))
            for p, c in zip(top_p[i], top_i[i], strict=True)
        )
        records = _records(model, values, input_hw, i)
        if cams is not None:
            target = top[0]
            records.append(
                GradCAM(
                    model.spec.gradcam_layer,
                    cams[i].astype(np.float32),
                    target.index,
                    target.label,
                    model.untrained,
                )
            )
        results.append(Analysis(model.name, model.weights, model.untrained, shown[i], top, tuple(records)))
    return results
