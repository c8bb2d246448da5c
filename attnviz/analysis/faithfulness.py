"""Is the attention the explanation? Faithfulness of a map: does the decision depend on what it shows?

For one result and its maps (the modules' own spatial maps, token attention and rollout, deformable
point densities, Grad-CAM), each brought to the input's pixels, the model is run again on perturbed
copies of the crop it saw and the probability of one target class is followed:

- **Deletion** (Petsiuk et al., "RISE", BMVC 2018, https://arxiv.org/abs/1806.07421): the most
  relevant pixels first are replaced by the dataset's mean colour (0 after normalisation), in
  ``steps`` equal steps from none to all; the area under the probability curve is small when the
  map found what the decision rests on (lower is better).
- **Insertion** (same paper): starting from a blurred copy, the most relevant pixels first are put
  back; a large area means the decision comes back quickly (higher is better).
- **ROAD** (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
  ICML 2022, https://arxiv.org/abs/2202.00449) through ``pytorch_grad_cam.metrics``: at each
  percentile ``p`` the pixels above (most relevant first, MoRF) or below (least relevant first,
  LeRF) the map's ``p``-th percentile are removed and filled in by noisy linear imputation, so that
  the removal itself leaves no shape for the model to react to; each value is the change of the
  target's probability. ``combined`` is ``ROADCombined``: the mean over percentiles of
  ``(LeRF - MoRF) / 2`` (higher is better).

A **random map** (smooth: uniform noise on a 7 x 7 grid, resized) is scored the same way on the same
image, so that the numbers have a floor. Pixels of equal value are taken in a seeded random order.
The masks are nested: step ``k`` removes exactly ``round(k / steps * H * W)`` pixels, every pixel
removed at step ``k`` stays removed after it.

All perturbations of one image run in as few forwards as ``batch_size`` allows, under the model's
lock, with the library's GPU out-of-memory fallback (halved batches). Detectors and models without a
classifier have no class probability to follow: their maps are listed in
:attr:`Faithfulness.unscored` with the reason, as is a constant map (it orders no pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attnviz.backends import LoadedModel
from attnviz.core.faithfulness_records import RANDOM_NAME, Curve, Faithfulness, InputMap, MapScore, Road
from attnviz.core.records import Analysis
from attnviz.runtime import run_in_batches

__all__ = ["DEFAULT_STEPS", "ROAD_PERCENTILES", "measure", "perturbation_masks", "random_map"]

DEFAULT_STEPS = 20
"""Deletion and insertion steps (21 points from 0 to 100% of the pixels)."""

ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""The percentiles of ``pytorch_grad_cam.metrics.ROADCombined`` (its defaults)."""

RANDOM_GRID = 7
"""Cells per side of the random baseline map (about an attention grid's)."""

DEFAULT_BATCH = 64


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The smooth random baseline: uniform noise on a :data:`RANDOM_GRID` grid resized to ``shape``
    (bilinear, pixel centres aligned, as :func:`attnviz.views.localisation.upsample_map`)."""
    grid = torch.from_numpy(np.random.default_rng(seed).random((RANDOM_GRID, RANDOM_GRID)))
    return F.interpolate(grid[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def perturbation_masks(values: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """``[steps + 1, H, W]`` bool: at step ``k`` the ``round(k / steps * H * W)`` most relevant
    pixels (largest values; ties in a seeded random order). Nested by construction."""
    flat = np.asarray(values, np.float64).ravel()
    tie = np.random.default_rng(seed).permutation(flat.size)
    order = np.lexsort((tie, -flat))  # by value, descending; ties by the permutation
    rank = np.empty(flat.size, np.int64)
    rank[order] = np.arange(flat.size)
    counts = np.round(np.arange(steps + 1) / steps * flat.size).astype(np.int64)
    return (rank[None, :] < counts[:, None]).reshape(steps + 1, *np.shape(values))


def _blurred(x: torch.Tensor) -> torch.Tensor:
    """The insertion's start: a Gaussian blur of ``x`` [3, H, W] (sigma a twentieth of the side)."""
    sigma = max(1.0, max(x.shape[-2:]) / 20.0)
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    padded = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return out[0]


def _input_tensor(model: LoadedModel, analysis: Analysis) -> torch.Tensor:
    """The crop the model saw, normalised again: ``[3, H, W]`` on the model's device."""
    pixels = torch.from_numpy(np.array(analysis.input_image)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    return ((pixels - mean) / std).to(model.device)


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


@dataclass
class _Probs:
    size: int
    probs: torch.Tensor


def _probabilities(model: LoadedModel, images: torch.Tensor, target: int) -> torch.Tensor:
    logits = model.module(images.contiguous(memory_format=model.memory_format))
    return torch.softmax(logits.float(), dim=-1)[:, target].cpu()


def _curves(
    model: LoadedModel,
    x: torch.Tensor,
    masks: list[np.ndarray],
    target: int,
    batch_size: int,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Deletion and insertion probabilities of every map's masks, in batches of ``batch_size``."""
    blurred = _blurred(x)
    jobs = [(m, k, kind) for m in range(len(masks)) for kind in (0, 1) for k in range(len(masks[m]))]
    torch_masks = [torch.from_numpy(m).to(x.device) for m in masks]

    def forward(chunk: list[tuple[int, int, int]]) -> _Probs:
        images = []
        for m, k, kind in chunk:
            mask = torch_masks[m][k]
            if kind == 0:  # deletion: the most relevant pixels become the mean colour (0)
                images.append(torch.where(mask, torch.zeros_like(x), x))
            else:  # insertion: the most relevant pixels come back onto the blurred copy
                images.append(torch.where(mask, x, blurred))
        with torch.inference_mode():
            return _Probs(len(chunk), _probabilities(model, torch.stack(images), target))

    probs: list[torch.Tensor] = []
    for start in range(0, len(jobs), batch_size):
        done, _note = run_in_batches(model, jobs[start : start + batch_size], forward)
        probs += [b.probs for b in done]
    flat = torch.cat(probs).numpy().astype(np.float64)
    deletion, insertion, i = [], [], 0
    for m in masks:
        n = len(m)
        deletion.append(flat[i : i + n])
        insertion.append(flat[i + n : i + 2 * n])
        i += 2 * n
    return deletion, insertion, len(jobs)


def _road(
    model: LoadedModel,
    x: torch.Tensor,
    maps: list[np.ndarray],
    target: int,
    percentiles: Sequence[int],
    seed: int,
) -> tuple[list[Road], int]:
    """ROAD of every map through ``pytorch_grad_cam.metrics``, the maps as one batch; the noise of
    the imputation is seeded (LeRF first, then MoRF, as ``ROADCombined`` draws it)."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    batch = x[None].expand(len(maps), -1, -1, -1).contiguous()
    cams = np.stack([np.asarray(m, np.float32) for m in maps])
    targets = [ClassifierOutputSoftmaxTarget(target) for _ in maps]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lerf = [ROADLeastRelevantFirst(p)(batch, cams, targets, model.module) for p in percentiles]
        morf = [ROADMostRelevantFirst(p)(batch, cams, targets, model.module) for p in percentiles]
    least = np.asarray(lerf, np.float64).T  # [maps, P]
    most = np.asarray(morf, np.float64).T
    # as ROADCombined: each averager's float32 mean over the percentiles, then (LeRF - MoRF) / 2
    combined = (
        np.mean(np.asarray(lerf, np.float32), axis=0) - np.mean(np.asarray(morf, np.float32), axis=0)
    ) / 2
    roads = [
        Road(np.asarray(percentiles, np.float64), most[i], least[i], float(combined[i]))
        for i in range(len(maps))
    ]
    return roads, 4 * len(percentiles) * len(maps)


def measure(
    model: LoadedModel,
    analysis: Analysis,
    maps: Sequence[InputMap],
    *,
    target: int | None = None,
    steps: int = DEFAULT_STEPS,
    road: bool = True,
    road_percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
) -> Faithfulness:
    """Deletion, insertion and ROAD of ``maps`` (typically
    :func:`attnviz.views.faithfulness.input_maps` of ``analysis``) and of the random baseline.

    Args:
        model: the model that made ``analysis`` (its lock is held while it runs).
        analysis: the result (compact or not).
        maps: the maps to score, at the input's pixels (:class:`InputMap`).
        target: the class to follow; None: the Grad-CAM's target when there is one, else the top-1.
        steps: deletion and insertion steps.
        road: also ROAD (an imputation per map and percentile: the slow part on the CPU).
        road_percentiles: ROAD's percentiles.
        seed: ties, the random baseline and ROAD's noise.
        batch_size: images per forward.

    Raises:
        ValueError: ``analysis`` is another model's, a bad target, ``steps`` below 1, a map of
            another size than the input, or no map to score.
    """
    if analysis.model != model.name:
        raise ValueError(f"a result of {analysis.model} cannot be measured with {model.name}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chosen = list(maps)
    hw = analysis.input_image.shape[:2]
    for m in chosen:
        if m.values.shape != hw:
            raise ValueError(f"{m.name}: a map of {m.values.shape}, the input is {hw}")
    if model.kind != "classifier" or not model.categories:
        why = (
            "a detector has no single class probability to follow"
            if model.kind == "detector"
            else ("the model has no classifier: there is no class probability to follow")
        )
        return Faithfulness(model.name, -1, "", float("nan"), (), tuple((m.name, why) for m in chosen))
    if target is None:
        cam = analysis.gradcam
        target = cam.target if cam is not None else analysis.top5[0].index
    if (
        isinstance(target, bool)
        or not isinstance(target, int | np.integer)
        or not 0 <= target < len(model.categories)
    ):
        raise ValueError(f"target must be a class index in [0, {len(model.categories)}), got {target!r}")
    target = int(target)
    unscored = [(m.name, "a constant map orders no pixel") for m in chosen if np.ptp(m.values) <= 0]
    scored = [m for m in chosen if np.ptp(m.values) > 0]
    scored.append(InputMap(RANDOM_NAME, "random", "random", random_map(hw, seed)))
    masks = [perturbation_masks(m.values, steps, seed) for m in scored]
    with model.lock:
        x = _input_tensor(model, analysis)
        with torch.inference_mode():
            base = float(_probabilities(model, x[None], target)[0])
        deletion, insertion, forwards = _curves(model, x, masks, target, batch_size)
        roads: list[Road | None] = [None] * len(scored)
        if road:
            found, more = _road(model, x, [m.values for m in scored], target, road_percentiles, seed)
            roads, forwards = list(found), forwards + more
    fractions = np.arange(steps + 1) / steps
    scores = tuple(
        MapScore(
            m.name,
            m.layer,
            m.kind,
            Curve(fractions, d, float(np.trapezoid(d, fractions))),
            Curve(fractions, i, float(np.trapezoid(i, fractions))),
            r,
        )
        for m, d, i, r in zip(scored, deletion, insertion, roads, strict=True)
    )
    return Faithfulness(
        model.name, target, model.categories[target], base, scores, tuple(unscored), forwards + 1
    )
