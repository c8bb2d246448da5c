"""What attnviz captures: frozen dataclasses of numpy arrays.

Every record names the layer it came from (the qualified module name inside the model) and the
coordinate convention of its values, so that the UI and the CLI never guess. Records are
immutable and carry numpy arrays only: no tensors travel past ``attnviz.analyze``.

The records live by family and are all importable from here:

* :mod:`attnviz.core.feature_records`: :class:`ChannelWeights`, :class:`SpatialMap`,
  :class:`AxisGates` (CNN attention on a feature map) and :class:`GradCAM` (the baseline).
* :mod:`attnviz.core.attention_records`: :class:`TokenAttention`, :class:`WindowAttention`.
* :mod:`attnviz.core.sampling_records`: :class:`SamplingPoints`, :class:`Detections`.

This module holds what spans them: the :data:`Record` union, :class:`Prediction`,
:class:`Analysis` (one image through one model) and :func:`compact` (float16 storage).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from attnviz.core.arrays import array_nbytes, frozen_array
from attnviz.core.attention_records import TokenAttention, WindowAttention
from attnviz.core.feature_records import AxisGates, ChannelWeights, GradCAM, SpatialMap
from attnviz.core.sampling_records import Detections, SamplingPoints

__all__ = [
    "COMPACT_DTYPE",
    "Analysis",
    "AxisGates",
    "ChannelWeights",
    "Detections",
    "GradCAM",
    "Prediction",
    "Record",
    "SamplingPoints",
    "SpatialMap",
    "TokenAttention",
    "WindowAttention",
    "array_nbytes",
    "compact",
]

COMPACT_DTYPE = np.float16
"""Storage type of attention probabilities in :func:`compact` results (11 significant bits:
values in [0, 1] within 2**-12 relative, far below what a colour map shows)."""


Record = (
    ChannelWeights
    | SpatialMap
    | GradCAM
    | AxisGates
    | TokenAttention
    | WindowAttention
    | SamplingPoints
    | Detections
)


@dataclass(frozen=True)
class Prediction:
    """One class of the top-k: index, label and softmax probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Analysis:
    """Everything captured for one image through one model.

    Attributes:
        model: model name as listed by ``attnviz.list_models``.
        weights: ``"pretrained"``, ``"random"`` or the checkpoint file name.
        untrained: True when results come from random weights.
        input_image: ``[H, W, 3]`` uint8, the preprocessed crop exactly as the model saw it
            (de-normalised); every map's coordinates refer to this image.
        top5: the top-5 predictions, most probable first.
        records: every captured record in forward order, then the Grad-CAM baseline.
        notes: sentences for the user about how the result was obtained (e.g. a GPU memory fallback).
    """

    model: str
    weights: str
    untrained: bool
    input_image: np.ndarray
    top5: tuple[Prediction, ...]
    records: tuple[Record, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        img = frozen_array(self.input_image, (3,), "Analysis.input_image")
        if img.shape[-1] != 3 or img.dtype != np.uint8:
            raise ValueError(f"Analysis.input_image must be [H, W, 3] uint8, got {img.shape} {img.dtype}")
        object.__setattr__(self, "input_image", img)
        object.__setattr__(self, "top5", tuple(self.top5))
        object.__setattr__(self, "records", tuple(self.records))

    @property
    def channel_weights(self) -> tuple[ChannelWeights, ...]:
        """Channel-weight records in forward order."""
        return tuple(r for r in self.records if isinstance(r, ChannelWeights))

    @property
    def spatial_maps(self) -> tuple[SpatialMap, ...]:
        """Spatial-map records in forward order."""
        return tuple(r for r in self.records if isinstance(r, SpatialMap))

    @property
    def axis_gates(self) -> tuple[AxisGates, ...]:
        """Coordinate-attention records in forward order."""
        return tuple(r for r in self.records if isinstance(r, AxisGates))

    @property
    def token_attention(self) -> tuple[TokenAttention, ...]:
        """Token-attention records in forward order."""
        return tuple(r for r in self.records if isinstance(r, TokenAttention))

    @property
    def window_attention(self) -> tuple[WindowAttention, ...]:
        """Window-attention records (Swin, HaloNet) in forward order."""
        return tuple(r for r in self.records if isinstance(r, WindowAttention))

    @property
    def sampling_points(self) -> tuple[SamplingPoints, ...]:
        """Sampling-point records in forward order."""
        return tuple(r for r in self.records if isinstance(r, SamplingPoints))

    @property
    def detections(self) -> Detections | None:
        """The detector's objects, or None for classifiers."""
        return next((r for r in self.records if isinstance(r, Detections)), None)

    @property
    def gradcam(self) -> GradCAM | None:
        """The Grad-CAM baseline, or None when it was not computed."""
        return next((r for r in self.records if isinstance(r, GradCAM)), None)

    @property
    def blocks(self) -> tuple[int, ...]:
        """Sorted block indices that have native attention records."""
        return tuple(sorted({r.block for r in self.records if not isinstance(r, GradCAM | Detections)}))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of this result: the input image and every record's arrays
        (a broadcast array counted once, see :func:`array_nbytes`)."""
        total = array_nbytes(self.input_image)
        for rec in self.records:
            for value in vars(rec).values():
                if isinstance(value, np.ndarray):
                    total += array_nbytes(value)
        return total


def _half(values: np.ndarray) -> np.ndarray:
    """float16 copy of ``values`` (torch's conversion: ~4x numpy's ``astype``, the same numbers)."""
    import torch  # records stay importable without loading torch

    with warnings.catch_warnings():  # torch warns that the (read-only) array is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()


def _compact_record(rec: Record) -> Record:
    if isinstance(rec, TokenAttention | WindowAttention) and rec.values.dtype != COMPACT_DTYPE:
        return dataclasses.replace(rec, values=_half(rec.values))
    if isinstance(rec, SamplingPoints) and rec.weights is not None and rec.weights.dtype != COMPACT_DTYPE:
        return dataclasses.replace(rec, weights=_half(rec.weights))
    return rec


def compact(analysis: Analysis) -> Analysis:
    """``analysis`` with its attention probabilities stored as float16 (:data:`COMPACT_DTYPE`).

    Token and window attention (the bulk of a transformer's result: ~21 MB for ViT-B/16 at 224 px)
    and sampling-point weights halve; gates, maps, sampling positions and Grad-CAM stay as they
    are. Every view (:mod:`attnviz.views.transformer`, :mod:`attnviz.views.maps`, the record methods)
    computes in
    float32 or float64, so a compact result shows the same maps within about 1e-3 of the full one.
    Compact results are what the app keeps per session. Idempotent.
    """
    records = tuple(_compact_record(r) for r in analysis.records)
    if all(a is b for a, b in zip(records, analysis.records, strict=True)):
        return analysis
    return dataclasses.replace(analysis, records=records)
