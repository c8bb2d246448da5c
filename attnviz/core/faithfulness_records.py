"""Faithfulness results: the maps scored and their deletion, insertion and ROAD figures.

:func:`attnviz.views.faithfulness.input_maps` gives the :class:`InputMap`\\ s of a result;
:func:`attnviz.analysis.faithfulness.measure` runs the model on perturbed copies and returns a
:class:`Faithfulness` (its module docstring says what each metric is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.arrays import frozen_array

__all__ = ["RANDOM_NAME", "Curve", "Faithfulness", "InputMap", "MapScore", "Road"]

RANDOM_NAME = "random map (baseline)"
"""The name of the random baseline's score."""


@dataclass(frozen=True)
class InputMap:
    """A map at the input's pixels, ready to be scored.

    Attributes:
        name: for people (``"block 1 · attn3 (cbam_spatial)"``, ``"Grad-CAM · layer4"``,
            ``"rollout"``).
        layer, kind: where it comes from (``"rollout"``/``"random"`` for derived maps).
        values: ``[H, W]`` float64, the input crop's size.
    """

    name: str
    layer: str
    kind: str
    values: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", frozen_array(np.asarray(self.values, np.float64), (2,), "values"))


@dataclass(frozen=True)
class Curve:
    """Deletion or insertion: the target's probability at each fraction of pixels changed.

    Attributes:
        fractions: ``[steps + 1]`` from 0 to 1.
        probabilities: ``[steps + 1]``.
        auc: the area under the curve (trapezoids over ``fractions``), in [0, 1].
    """

    fractions: np.ndarray
    probabilities: np.ndarray
    auc: float

    def __post_init__(self) -> None:
        for name in ("fractions", "probabilities"):
            object.__setattr__(
                self, name, frozen_array(np.asarray(getattr(self, name), np.float64), (1,), name)
            )


@dataclass(frozen=True)
class Road:
    """ROAD at each percentile (``pytorch_grad_cam.metrics``).

    Attributes:
        percentiles: ``[P]``.
        most_relevant_first: ``[P]`` the probability's change when the pixels above the percentile
            are imputed (MoRF; a faithful map makes it drop: very negative).
        least_relevant_first: ``[P]`` the change when the pixels below it are imputed (LeRF; a
            faithful map keeps it: near 0).
        combined: mean of ``(LeRF - MoRF) / 2`` (``ROADCombined``; higher is better).
    """

    percentiles: np.ndarray
    most_relevant_first: np.ndarray
    least_relevant_first: np.ndarray
    combined: float

    def __post_init__(self) -> None:
        for name in ("percentiles", "most_relevant_first", "least_relevant_first"):
            object.__setattr__(
                self, name, frozen_array(np.asarray(getattr(self, name), np.float64), (1,), name)
            )


@dataclass(frozen=True)
class MapScore:
    """One map's faithfulness: deletion, insertion and (when asked) ROAD."""

    name: str
    layer: str
    kind: str
    deletion: Curve
    insertion: Curve
    road: Road | None


@dataclass(frozen=True)
class Faithfulness:
    """Every scored map of one result, the random baseline last.

    Attributes:
        model: the model.
        target, target_label: the class whose probability is followed.
        probability: its probability on the unperturbed crop.
        scores: one :class:`MapScore` per map, in the order given, then the random baseline's.
        unscored: ``(map name, why)`` for every map that got no score.
        forwards: images run through the model (perturbations, ROAD's own forwards included).
    """

    model: str
    target: int
    target_label: str
    probability: float
    scores: tuple[MapScore, ...]
    unscored: tuple[tuple[str, str], ...] = ()
    forwards: int = 0

    @property
    def baseline(self) -> MapScore | None:
        """The random map's score."""
        return next((s for s in self.scores if s.kind == "random"), None)
