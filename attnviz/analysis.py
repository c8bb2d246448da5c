"""``analyze``: one batched forward with capture, top-5, and the Grad-CAM baseline."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from .capture import Capture
from .errors import GPUMemoryError
from .models import LoadedModel
from .records import (
    Analysis,
    AxisGates,
    ChannelWeights,
    GradCAM,
    Prediction,
    Record,
    SamplingPoints,
    SpatialMap,
    TokenAttention,
    WindowAttention,
)

__all__ = ["add_gradcam", "analyze"]

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


def _to_image_pixels(coord: np.ndarray, grid: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """(y, x) feature-map pixel coordinates (pixel centres at integers) -> model-input pixels."""
    stride = np.array([input_hw[0] / grid[0], input_hw[1] / grid[1]], dtype=np.float32)
    return (coord + 0.5) * stride - 0.5


def _dat_points(parts: dict, grid: tuple[int, int], input_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """DAT: normalised (y, x) in [-1, 1] (align_corners=True) [G, Hk, Wk, 2] -> pixels [1, G, P, 2]."""
    scale = np.array([grid[0] - 1, grid[1] - 1], dtype=np.float32)
    out = []
    for part in ("points", "reference"):
        norm = parts[("sampling", part)][1]
        feat = (norm + 1) / 2 * scale
        out.append(_to_image_pixels(feat, grid, input_hw).reshape(1, norm.shape[0], -1, 2))
    weights = None
    if ("token", "value") in parts:
        attn = parts[("token", "value")][1]  # [heads, Nq, Ns]; head h uses group h // (heads / G)
        groups = out[0].shape[1]
        weights = attn.mean(axis=1).reshape(groups, -1, attn.shape[-1]).mean(axis=1)[None]
    return out[0], out[1], weights


def _deform_points(
    parts: dict, meta, grid: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[np.ndarray, ...]:
    """Deformable conv offsets [2*G*K, Ho, Wo], (dy, dx) per kernel point -> pixels [Q, G, K, 2]."""
    offsets = parts[("sampling", "offsets")][1]
    kh, kw = meta["kernel_size"]
    (sh, sw), (ph, pw), (dh, dw) = meta["stride"], meta["padding"], meta["dilation"]
    _, ho, wo = offsets.shape
    k = kh * kw
    groups = offsets.shape[0] // (2 * k)
    delta = offsets.reshape(groups, k, 2, ho, wo).transpose(3, 4, 0, 1, 2).reshape(ho * wo, groups, k, 2)
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    ref_y = (oy.reshape(-1, 1) * sh - ph) + (ky.reshape(1, -1) * dh)  # [Q, K]
    ref_x = (ox.reshape(-1, 1) * sw - pw) + (kx.reshape(1, -1) * dw)
    ref = np.stack([ref_y, ref_x], -1).astype(np.float32)[:, None].repeat(groups, axis=1)  # [Q, G, K, 2]
    weights = None
    if ("sampling", "mask") in parts:
        mask = parts[("sampling", "mask")][1]  # [G*K, Ho, Wo]
        weights = mask.reshape(groups, k, ho * wo).transpose(2, 0, 1)
    return _to_image_pixels(ref + delta, grid, input_hw), _to_image_pixels(ref, grid, input_hw), weights


def _swin_indices(meta, grid: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Grid index of every (window, position) of a Swin block, -1 for padding; and the shift applied.

    timm rolls the map by ``-shift`` and then pads it to a multiple of the window; torchvision pads
    first, rolls the padded map, and uses no shift along an axis whose padded size fits in one
    window (even when the module says otherwise). Windows are taken row-major over the shifted
    frame, positions row-major inside each window.
    """
    h, w = grid
    wy, wx = meta["window"]
    hp, wp = -(-h // wy) * wy, -(-w // wx) * wx
    sy, sx = meta["shift"]
    if meta["scheme"] == "tv_swin":
        sy, sx = (0 if wy >= hp else sy), (0 if wx >= wp else sx)
        frame_h, frame_w = hp, wp  # rolled over the padded frame
    else:
        frame_h, frame_w = h, w  # rolled before padding
    r = np.arange(hp).reshape(hp // wy, wy)  # [window row, local row] -> shifted-frame row
    c = np.arange(wp).reshape(wp // wx, wx)
    rows = np.where(r < frame_h, (r + sy) % frame_h, r)
    cols = np.where(c < frame_w, (c + sx) % frame_w, c)
    rr = rows[:, None, :, None]  # [nWy, 1, wy, 1]
    cc = cols[None, :, None, :]  # [1, nWx, 1, wx]
    inside = (rr < h) & (cc < w)
    index = np.where(inside, rr * w + cc, -1).reshape(-1, wy * wx)
    return index, (int(sy), int(sx))


def _halo_indices(meta, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """HaloNet: (query index [blocks, bs^2] on the query grid, key index [blocks, win^2] on the input
    grid with -1 for the zero padding, query grid). Blocks row-major; queries subsampled by the stride."""
    h, w = grid
    bs, halo, stride, win = meta["block_size"], meta["halo_size"], meta["block_stride"], meta["win_size"]
    bq = bs // stride
    nh, nw = h // bs, w // bs
    hq, wq = h // stride, w // stride
    by, bx = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    by, bx = by.reshape(-1, 1, 1), bx.reshape(-1, 1, 1)
    ly, lx = np.meshgrid(np.arange(bq), np.arange(bq), indexing="ij")
    query = ((by * bq + ly) * wq + (bx * bq + lx)).reshape(nh * nw, -1)
    ky, kx = np.meshgrid(np.arange(win), np.arange(win), indexing="ij")
    y, x = by * bs - halo + ky, bx * bs - halo + kx
    key = np.where((y >= 0) & (y < h) & (x >= 0) & (x < w), y * w + x, -1).reshape(nh * nw, -1)
    return query, key, (hq, wq)


def _window_record(layer: str, tap, values: np.ndarray, block: int, grid, input_hw, untrained: bool):
    """A :class:`WindowAttention` from windows ``[W, heads, Lq, Lk]`` and the block's input grid."""
    meta = tap.meta
    if meta["scheme"] == "halo":
        query, key, qgrid = _halo_indices(meta, grid)
        window, shift, kgrid = (meta["block_size"] // meta["block_stride"],) * 2, (0, 0), grid
    else:
        query, shift = _swin_indices(meta, grid)
        key, qgrid, kgrid, window = query, grid, grid, meta["window"]
    if query.shape != values.shape[::2] or key.shape[-1] != values.shape[-1]:
        raise RuntimeError(
            f"{layer}: captured windows {values.shape} do not match the expected layout "
            f"{query.shape[0]} windows of {query.shape[1]} queries and {key.shape[1]} keys"
        )
    stride = (input_hw[0] / qgrid[0], input_hw[1] / qgrid[1])
    key_stride = (input_hw[0] / kgrid[0], input_hw[1] / kgrid[1])
    return WindowAttention(
        layer, tap.kind, values, query, key, qgrid, stride, kgrid, key_stride, window, shift, block, untrained
    )


def _build(layer: str, parts: dict, block: int, grid, input_hw, untrained: bool) -> list[Record]:
    """The records of one attention module from its tapped parts ``{(record, part): (tap, value)}``."""
    out: list[Record] = []
    sampling = {part: tv for (record, part), tv in parts.items() if record == "sampling"}
    key_grid = None
    if sampling:
        tap = next(iter(sampling.values()))[0]
        if tap.meta.get("convention") == "dat":
            points, reference, weights = _dat_points(parts, grid, input_hw)
            key_grid = tuple(parts[("sampling", "points")][1].shape[1:3])
            query_grid = None
        else:
            points, reference, weights = _deform_points(parts, tap.meta, grid, input_hw)
            ho, wo = parts[("sampling", "offsets")][1].shape[1:]
            query_grid = (ho, wo)
        out.append(SamplingPoints(layer, tap.kind, points, reference, weights, query_grid, block, untrained))
    if ("axis", "h") in parts and ("axis", "w") in parts:
        tap, h = parts[("axis", "h")]
        w = parts[("axis", "w")][1]
        stride = (input_hw[0] / h.shape[1], input_hw[1] / w.shape[1])
        out.append(AxisGates(layer, tap.kind, h, w, stride, block, untrained))
    for (record, _part), (tap, v) in parts.items():
        if record == "channel":
            out.append(ChannelWeights(layer, tap.kind, v, block, untrained, tap.path_labels))
        elif record == "spatial":
            stride = (input_hw[0] / v.shape[0], input_hw[1] / v.shape[1])
            out.append(SpatialMap(layer, tap.kind, v, stride, block, untrained))
        elif record == "token":
            stride = (input_hw[0] / grid[0], input_hw[1] / grid[1])
            values = v if v.ndim == 3 else v[None]
            names = tuple(tap.meta.get("prefix_names", ()))
            out.append(
                TokenAttention(
                    layer, tap.kind, values, grid, stride, block, len(names), key_grid, untrained, names
                )
            )
        elif record == "window":
            out.append(_window_record(layer, tap, v, block, grid, input_hw, untrained))
    return out


def _records(
    model: LoadedModel, values, grids, input_hw: tuple[int, int], index: int, batch: int
) -> list[Record]:
    """Records of image ``index``: one group per attention module, blocks numbered in forward order."""
    groups: dict[str, dict[tuple[str, str], tuple]] = {}
    for tap, value in values:
        if tap.record == "window":  # [B*windows, ...], batch-major
            value = value.reshape(batch, -1, *value.shape[1:])
        # a module that runs twice in one forward keeps its last call
        groups.setdefault(tap.layer, {})[(tap.record, tap.part)] = (tap, value[index].numpy())
    out: list[Record] = []
    for block, (layer, parts) in enumerate(groups.items()):
        out.extend(_build(layer, parts, block, grids.get(layer), input_hw, model.untrained))
    return out


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


def _gradcam(
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


class _HasSize(Protocol):
    size: int


_Item = TypeVar("_Item")
_Sized = TypeVar("_Sized", bound=_HasSize)


@dataclass
class _Cams:
    """Grad-CAM maps of a batch of images."""

    size: int
    cams: np.ndarray


#: ``analyze(autocast=...)`` choices and their dtypes.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
            cams = _gradcam(model, batch, top_i[:, 0].tolist(), token_grid)
    else:  # a feature extractor (DINO): attention only
        top_p = top_i = torch.zeros(len(pil), 0)
    shown = _display_images(batch, model.mean, model.std)
    return _Batch(len(pil), values, grids, top_p, top_i, cams, shown, (batch.shape[-2], batch.shape[-1]))


def _attempt(forward: Callable[[list[_Item]], _Sized], pil: list[_Item]) -> tuple[_Sized | None, str]:
    """``(forward(pil), "")``, or ``(None, message)`` when the GPU ran out of memory.

    Returning from the handler drops the exception and its traceback, whose frames hold the
    failed batch's GPU tensors, before the caller frees the cache.
    """
    try:
        return forward(pil), ""
    except torch.cuda.OutOfMemoryError as exc:  # torch.OutOfMemoryError, defined without CUDA too
        return None, str(exc)


def _free_gpu_memory() -> None:
    """Give the failed run's cached GPU blocks back, so that a smaller batch can use them."""
    gc.collect()  # cycles (e.g. Grad-CAM's hook objects) may still hold tensors of the failed run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _free_mib(device: torch.device) -> int | None:
    """Free memory of a CUDA ``device`` in MiB, or None (another device, or not readable)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return int(free) // 2**20


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fallback_note(total: int, sizes: list[int]) -> str:
    """The note for results of a run whose batch of ``total`` images was split into ``sizes``."""
    distinct = [str(n) for n in sorted(set(sizes), reverse=True)]
    if distinct == ["1"]:
        how = "one at a time"
    else:
        listed = f"{', '.join(distinct[:-1])} and {distinct[-1]}" if len(distinct) > 1 else distinct[0]
        how = f"in batches of {listed}"
    return f"GPU memory ran out for a batch of {_plural(total, 'image')}; they were analysed {how}."


class _Runner(Protocol):
    """What the memory fallback names in its messages: a LoadedModel or a DetrBundle."""

    name: str
    device: torch.device


def _run_in_batches(
    model: _Runner, pil: list[_Item], forward: Callable[[list[_Item]], _Sized]
) -> tuple[list[_Sized], str | None]:
    """Run all of ``pil`` (images, or anything one forward takes per image) through ``forward``,
    halving batches that run out of GPU memory.

    The model stays where it is (it may be shared with other sessions); only the batch shrinks.

    Returns:
        The batches in input order, and the note for the user when the batch had to be split.

    Raises:
        GPUMemoryError: a single image still ran out of memory.
    """
    done: list[_Sized] = []
    too_big: int | None = None  # smallest batch size that ran out of memory
    todo = [pil]  # batches still to run, the next one last
    while todo:
        chunk = todo.pop()
        if too_big is None or len(chunk) < too_big:
            result, message = _attempt(forward, chunk)
            if result is not None:
                done.append(result)
                continue
            too_big = len(chunk)
            _free_gpu_memory()
            log.warning("%s ran out of GPU memory for %d image(s): %s", model.name, len(chunk), message)
        if len(chunk) == 1:
            free = _free_mib(model.device)
            left = f" ({free} MiB free)" if free is not None else ""
            raise GPUMemoryError(
                f"{model.name} ran out of GPU memory even for one image on {model.device}{left}: "
                "choose the CPU device or a smaller model, or try again when the GPU is less busy.",
                device=str(model.device),
                free_mib=free,
            )
        half = (len(chunk) + 1) // 2
        todo += [chunk[half:], chunk[:half]]
    if too_big is None:
        return done, None
    return done, _fallback_note(len(pil), [b.size for b in done])


def analyze(
    model: LoadedModel,
    images: Sequence[Image.Image | np.ndarray],
    *,
    gradcam: bool = True,
    topk: int = 5,
    autocast: str | None = None,
) -> list[Analysis]:
    """Run ``images`` through ``model`` in one batched forward and capture every attention block.

    Args:
        model: from :func:`attnviz.load_model`; its lock is held for the whole run.
        images: RGB PIL images (e.g. from :func:`attnviz.load_image`) or ``[H, W, 3]`` uint8 arrays.
        gradcam: also compute the Grad-CAM baseline for the top-1 class (one forward and
            backward more; the native maps need neither).
        topk: how many predictions to keep. Models without a classifier (DINO, DINOv2) give no
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
    if model.detector is not None:  # Deformable DETR: detections instead of classes
        from .detr import analyze_detr

        return analyze_detr(model.detector, list(images))
    n_classes = len(model.categories)
    if n_classes and not 1 <= topk <= n_classes:
        raise ValueError(f"topk must be in [1, {n_classes}], got {topk}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    pil = [_as_pil(img) for img in images]
    with model.lock:
        batches, note = _run_in_batches(
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
            records = _records(model, batch.values, batch.grids, batch.input_hw, i, batch.size)
            if batch.cams is not None:
                records.append(_gradcam_record(model, batch.cams[i], top[0]))
            results.append(
                Analysis(
                    model.name, model.weights, model.untrained, batch.shown[i], top, tuple(records), notes
                )
            )
    return results


def _gradcam_record(model: LoadedModel, cam: np.ndarray, target: Prediction) -> GradCAM:
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
    classifier = bool(model.categories) and model.detector is None
    todo = []
    for i, (a, img, t) in enumerate(zip(analyses, images, targets, strict=True)):
        if not (classifier and a.top5):
            continue
        target = _target(model, a, t)
        if a.gradcam is None or a.gradcam.target != target.index:
            todo.append((i, _as_pil(img), target))
    out = list(analyses)
    if not todo:
        return out

    # A token layout needs the patch grid: the first block's, as ``analyze`` passes it.
    first = next((r for r in analyses[todo[0][0]].records if isinstance(r, TokenAttention)), None)
    grid = first.grid if first is not None else None

    def run(chunk: list[tuple[int, Image.Image, Prediction]]) -> _Cams:
        batch = model.preprocess([img for _, img, _ in chunk])
        return _Cams(len(chunk), _gradcam(model, batch, [t.index for _, _, t in chunk], grid))

    with model.lock:
        batches, note = _run_in_batches(model, todo, run)
    cams = np.concatenate([b.cams for b in batches])
    for (i, _, target), cam in zip(todo, cams, strict=True):
        a = out[i]
        notes = a.notes + ((note,) if note and note not in a.notes else ())
        kept = tuple(r for r in a.records if not isinstance(r, GradCAM))
        out[i] = dataclasses.replace(a, records=(*kept, _gradcam_record(model, cam, target)), notes=notes)
    return out
