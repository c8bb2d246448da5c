"""What attnviz captures: frozen dataclasses of numpy arrays.

Every record names the layer it came from (the qualified module name inside the model) and the
coordinate convention of its values, so that the UI and the CLI never guess. Records are
immutable and carry numpy arrays only: no tensors travel past ``attnviz.analyze``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Analysis",
    "ChannelWeights",
    "GradCAM",
    "Prediction",
    "Record",
    "SpatialMap",
]


def _frozen_array(values: np.ndarray, ndim: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dimensions, got {arr.shape}")
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ChannelWeights:
    """Per-channel attention weights of one block.

    Attributes:
        layer: qualified name of the attention module (e.g. ``"layer1.0.se"``).
        kind: attention family: ``"se"``, ``"eca"``, ``"sk"``, ``"split"``, ``"gc_add"``,
            ``"gc_scale"``.
        values: ``[C]`` gate values for gating modules, or ``[paths, C]`` softmax weights over
            the kernel paths (SK) or radix splits (split attention); each column sums to 1.
        block: position of this record among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
        path_labels: names of the paths for ``[paths, C]`` records (e.g. ``("3x3", "5x5")``).
    """

    layer: str
    kind: str
    values: np.ndarray
    block: int
    untrained: bool = False
    path_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _frozen_array(self.values, (1, 2), "ChannelWeights.values"))

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return int(self.values.shape[-1])

    @property
    def multipath(self) -> bool:
        """True for ``[paths, C]`` softmax weights (SK, split attention)."""
        return self.values.ndim == 2


@dataclass(frozen=True)
class SpatialMap:
    """An attention map over the positions of one block's feature map.

    Attributes:
        layer: qualified module name.
        kind: ``"gc_context"`` (softmax over positions, sums to 1), ``"spatial_gate"`` (sigmoid).
        values: ``[H, W]`` in feature-map coordinates: cell (i, j) covers input pixels
            ``[i*stride[0], (i+1)*stride[0]) x [j*stride[1], (j+1)*stride[1])`` of the model input.
        stride: input-image pixels per feature cell, (y, x).
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
    """

    layer: str
    kind: str
    values: np.ndarray
    stride: tuple[float, float]
    block: int
    untrained: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _frozen_array(self.values, (2,), "SpatialMap.values"))


@dataclass(frozen=True)
class GradCAM:
    """Grad-CAM baseline (pytorch-grad-cam) for one target class.

    Attributes:
        layer: the target layer whose activations and gradients were used.
        values: ``[H, W]`` in model-input pixels, scaled to [0, 1].
        target: ImageNet class index explained (the top-1 prediction).
        target_label: its name.
        untrained: True when the model's weights are random.
    """

    layer: str
    values: np.ndarray
    target: int
    target_label: str
    untrained: bool = False
    kind: str = "gradcam"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _frozen_array(self.values, (2,), "GradCAM.values"))


Record = ChannelWeights | SpatialMap | GradCAM


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
    """

    model: str
    weights: str
    untrained: bool
    input_image: np.ndarray
    top5: tuple[Prediction, ...]
    records: tuple[Record, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        img = _frozen_array(self.input_image, (3,), "Analysis.input_image")
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
    def gradcam(self) -> GradCAM | None:
        """The Grad-CAM baseline, or None when it was not computed."""
        return next((r for r in self.records if isinstance(r, GradCAM)), None)

    @property
    def blocks(self) -> tuple[int, ...]:
        """Sorted block indices that have native attention records."""
        return tuple(sorted({r.block for r in self.records if not isinstance(r, GradCAM)}))
