"""Faithfulness of the zoo's maps on held-out scenes: what ``python -m attnviz zoo eval`` stores
in each card under ``"faithfulness"``.

Every map the localisation scores (each attention block's map and Grad-CAM) is measured by
:func:`attnviz.analysis.faithfulness.measure` on the first :data:`N_FAITHFULNESS` held-out scenes,
following the probability of the scene's true class, next to the random map's floor and the
object's own box used as a map (a reference); ROAD on the first :data:`N_ROAD` of them at
:data:`ROAD_EVAL_PERCENTILES` (its imputation is the slow part on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from attnviz.analysis import analyze
from attnviz.analysis.faithfulness import DEFAULT_STEPS, measure
from attnviz.backends.registry import load_model
from attnviz.core.faithfulness_records import InputMap
from attnviz.layers.zoo_net import zoo_name
from attnviz.views.faithfulness import input_maps

__all__ = [
    "FAITHFULNESS_KEYS",
    "N_FAITHFULNESS",
    "N_ROAD",
    "OBJECT_BOX",
    "ROAD_EVAL_PERCENTILES",
    "evaluate_faithfulness",
    "score_faithfulness",
]


N_FAITHFULNESS = 24
"""Held-out scenes (the first of the card's set) whose maps are scored for deletion and insertion."""

N_ROAD = 6
"""The first of those scenes that are also scored with ROAD: its noisy linear imputation costs about
0.4 s per map, scene and percentile on a CPU (a sparse solve per image), 40 times a forward."""

ROAD_EVAL_PERCENTILES: tuple[int, ...] = (20, 50, 80)
"""ROAD's percentiles in the zoo's evaluation: three of ``ROADCombined``'s nine, so that the whole
zoo is scored in a few minutes."""

OBJECT_BOX = "object box (reference)"
"""The name of the sanity reference: the object's true box used as a map (1 inside, 0 outside)."""

FAITHFULNESS_KEYS = ("deletion_auc", "insertion_auc", "road_combined")
"""The per-map figures of a card's ``"faithfulness"`` (deletion: lower is better; the others: higher)."""


def _box_map(box: Sequence[int], hw: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` 1 inside ``box`` ``(y0, x0, y1, x1)`` (exclusive ends), 0 outside."""
    y0, x0, y1, x1 = (int(v) for v in box)
    values = np.zeros(hw, np.float64)
    values[y0:y1, x0:x1] = 1.0
    return values


def _faithfulness_means(scores: list) -> dict:
    """The mean figures of one map over the scenes where it was scored (ROAD: where it was run)."""
    roads = [s.road.combined for s in scores if s.road is not None]
    means = {
        "n": len(scores),
        "deletion_auc": float(np.mean([s.deletion.auc for s in scores])),
        "insertion_auc": float(np.mean([s.insertion.auc for s in scores])),
    }
    if roads:
        means["n_road"] = len(roads)
        means["road_combined"] = float(np.mean(roads))
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite faithfulness figure(s) {bad}: {means}")
    return means


def score_faithfulness(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    *,
    n: int,
    n_road: int,
    gradcam: bool,
    steps: int,
    road_percentiles: Sequence[int],
) -> dict:
    """Faithfulness figures of a loaded zoo ``model`` on the first ``n`` scenes (ROAD on the first
    ``n_road``): per map (and Grad-CAM when ``gradcam``), the random map and the object box, each
    the mean over the scenes of deletion AUC, insertion AUC and ROAD combined."""
    count = min(int(n), len(images))
    if count < 1:
        raise ValueError(f"faithfulness needs at least one scene, got n={n} of {len(images)}")
    per_map: dict[str, list] = {}
    unscored: dict[str, str] = {}
    results = analyze(model, list(images[:count]), gradcam=gradcam)
    for i, analysis in enumerate(results):
        maps = input_maps(analysis, with_rollout=False)
        hw = analysis.input_image.shape[:2]
        maps.append(InputMap(OBJECT_BOX, "object_box", "object_box", _box_map(boxes[i], hw)))
        # seed i: each scene gets its own random map, ties order and ROAD noise
        found = measure(
            model,
            analysis,
            maps,
            target=int(labels[i]),
            steps=steps,
            road=i < n_road,
            road_percentiles=road_percentiles,
            seed=i,
        )
        for score in found.scores:
            per_map.setdefault(score.name, []).append(score)
        for name, why in found.unscored:
            per_map.setdefault(name, [])
            unscored[name] = why
    random = next(name for name, s in per_map.items() if s and s[0].kind == "random")
    out = {
        "n": count,
        "target": "true class",
        "n_road": min(int(n_road), count),
        "steps": steps,
        "road_percentiles": [int(p) for p in road_percentiles],
        "seed": "scene index",
        "maps": {
            name: _faithfulness_means(scores)
            for name, scores in per_map.items()
            if scores and name not in (random, OBJECT_BOX)
        },
        "random": _faithfulness_means(per_map[random]),
        "object_box": _faithfulness_means(per_map[OBJECT_BOX]),
    }
    if unscored:
        out["unscored"] = unscored
    return out


def evaluate_faithfulness(
    kind: str,
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    *,
    n: int = N_FAITHFULNESS,
    n_road: int = N_ROAD,
    weights: str = "pretrained",
    gradcam: bool = True,
    steps: int = DEFAULT_STEPS,
    road_percentiles: Sequence[int] = ROAD_EVAL_PERCENTILES,
) -> dict:
    """Faithfulness of one zoo model's maps on the first ``n`` held-out scenes.

    Each scene is analysed (:func:`attnviz.analyze`), every map the localisation scores (the modules'
    maps and Grad-CAM, :func:`attnviz.views.faithfulness.input_maps` without the rollout) and the
    object's box used as a map are measured by :func:`attnviz.analysis.faithfulness.measure` with the
    scene's true class as the target, scene ``i`` with seed ``i`` (ROAD on the first ``n_road``
    scenes only); the figures are averaged over the scenes.

    Args:
        kind: a zoo kind.
        images: uint8 ``[N, S, S, 3]`` scenes; labels ``[N]``; boxes ``[N, 4]`` ``(y0, x0, y1, x1)``.
        n: scenes to use (the first ``n``; at most ``N``).
        n_road: the first scenes also scored with ROAD (0: none).
        weights: the weights to load.
        gradcam: also score Grad-CAM.
        steps: deletion and insertion steps.
        road_percentiles: ROAD's percentiles.

    Returns:
        ``{"n", "n_road", "target": "true class", "steps", "road_percentiles", "seed", "maps": {map
        name: {"n", "deletion_auc", "insertion_auc", "n_road", "road_combined"}}, "random": {...},
        "object_box": {...}}`` (plus ``"unscored": {map name: why}`` when a map was constant on
        some scene); every figure finite.

    Raises:
        ValueError: ``n`` below 1 or no scene, or a non-finite figure.
    """
    model = load_model(zoo_name(kind), weights=weights, device="cpu")
    return score_faithfulness(
        model,
        images,
        labels,
        boxes,
        n=n,
        n_road=n_road,
        gradcam=gradcam,
        steps=steps,
        road_percentiles=road_percentiles,
    )
