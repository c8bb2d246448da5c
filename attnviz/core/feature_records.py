"""Records of attention over a CNN block's feature map: channel weights, spatial maps, axis gates,
and the Grad-CAM baseline they are compared with.

Part of :mod:`attnviz.core.records`, which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.core.arrays import frozen_array

__all__ = ["AxisGates", "ChannelWeights", "GradCAM", "SpatialMap"]


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
        object.__setattr__(self, "values", frozen_array(self.values, (1, 2), "ChannelWeights.values"))

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
        object.__setattr__(self, "values", frozen_array(self.values, (2,), "SpatialMap.values"))


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
        object.__setattr__(self, "values", frozen_array(self.values, (2,), "GradCAM.values"))


@dataclass(frozen=True)
class AxisGates:
    """Coordinate attention's two directional gates of one block.

    Attributes:
        layer: qualified module name.
        kind: ``"ca"``.
        h: ``[C, H]`` sigmoid gate per channel and feature-map row.
        w: ``[C, W]`` sigmoid gate per channel and feature-map column; the block multiplies its
            input at (c, i, j) by ``h[c, i] * w[c, j]``.
        stride: input-image pixels per feature cell, (y, x).
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
    """

    layer: str
    kind: str
    h: np.ndarray
    w: np.ndarray
    stride: tuple[float, float]
    block: int
    untrained: bool = False

    def __post_init__(self) -> None:
        h = frozen_array(self.h, (2,), "AxisGates.h")
        w = frozen_array(self.w, (2,), "AxisGates.w")
        if h.shape[0] != w.shape[0]:
            raise ValueError(f"AxisGates.h and .w must have the same channels, got {h.shape} and {w.shape}")
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "w", w)

    @property
    def values(self) -> np.ndarray:
        """``[H, W]``: the channel mean of the gate product ``h[c, i] * w[c, j]``."""
        return np.einsum("ch,cw->hw", self.h, self.w) / self.h.shape[0]
