"""What attnviz captures: frozen dataclasses of numpy arrays.

Every record names the layer it came from (the qualified module name inside the model) and the
coordinate convention of its values, so that the UI and the CLI never guess. Records are
immutable and carry numpy arrays only: no tensors travel past ``attnviz.analyze``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

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


def _frozen_array(values: np.ndarray, ndim: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dimensions, got {arr.shape}")
    if 0 not in arr.strides:  # a broadcast view (zero strides) stays one: it is compact and read-only
        arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def array_nbytes(arr: np.ndarray) -> int:
    """Bytes an array holds: a broadcast view counts its data once, not once per repeat."""
    return arr.itemsize * math.prod(n for n, step in zip(arr.shape, arr.strides, strict=True) if step != 0)


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
        h = _frozen_array(self.h, (2,), "AxisGates.h")
        w = _frozen_array(self.w, (2,), "AxisGates.w")
        if h.shape[0] != w.shape[0]:
            raise ValueError(f"AxisGates.h and .w must have the same channels, got {h.shape} and {w.shape}")
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "w", w)

    @property
    def values(self) -> np.ndarray:
        """``[H, W]``: the channel mean of the gate product ``h[c, i] * w[c, j]``."""
        return np.einsum("ch,cw->hw", self.h, self.w) / self.h.shape[0]


@dataclass(frozen=True)
class TokenAttention:
    """Softmax attention between tokens of one block (non-local, multi-head, deformable).

    Attributes:
        layer: qualified module name.
        kind: ``"nonlocal"``, ``"mhsa"``, ``"dat"``, ...
        values: ``[heads, Nq, Nk]``; each row (a query) sums to 1 over the keys.
        grid: (H, W) of the query tokens after the ``prefix_tokens`` (row-major).
        stride: input-image pixels per query token, (y, x).
        prefix_tokens: tokens before the grid (class, distillation, register tokens).
        key_grid: (Hk, Wk) of the keys when they form a grid of their own (deformable
            attention's sampled keys); None when the keys are the queries' tokens.
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
        prefix_names: what each prefix token is, read from the model: ``"cls"``, ``"dist"``
            (distillation), ``"reg1"``... (registers); empty or of length ``prefix_tokens``.

    Token order is the model's: the prefix tokens, then the grid row by row. Queries and keys
    are the same tokens unless ``key_grid`` is set.
    """

    layer: str
    kind: str
    values: np.ndarray
    grid: tuple[int, int]
    stride: tuple[float, float]
    block: int
    prefix_tokens: int = 0
    key_grid: tuple[int, int] | None = None
    untrained: bool = False
    prefix_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = _frozen_array(self.values, (3,), "TokenAttention.values")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "grid", (int(self.grid[0]), int(self.grid[1])))
        object.__setattr__(self, "prefix_names", tuple(self.prefix_names))
        if self.prefix_names and len(self.prefix_names) != self.prefix_tokens:
            raise ValueError(
                f"TokenAttention has {self.prefix_tokens} prefix tokens but {len(self.prefix_names)} names"
            )
        if self.key_grid is None and values.shape[1] != self.prefix_tokens + self.grid[0] * self.grid[1]:
            raise ValueError(
                f"TokenAttention.values {values.shape} do not match {self.prefix_tokens} prefix tokens "
                f"and a {self.grid[0]}x{self.grid[1]} grid"
            )

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.values.shape[0])

    @property
    def summary_rows(self) -> tuple[int, ...]:
        """The query rows that speak for the whole image: the class token (and the distillation
        token, averaged with it), or every grid row for models without one (mean-query)."""
        rows = tuple(i for i, name in enumerate(self.prefix_names) if name in ("cls", "dist"))
        if rows:
            return rows
        return tuple(range(self.prefix_tokens, self.values.shape[1]))


@dataclass(frozen=True)
class WindowAttention:
    """Local self-attention kept per window: Swin's (shifted) windows, HaloNet's haloed blocks.

    Storing the windows instead of a dense ``[heads, N, N]`` matrix keeps a 56x56 Swin stage small;
    :meth:`dense`, :meth:`query` and :meth:`received` put it back into image coordinates.

    Attributes:
        layer: qualified module name.
        kind: ``"swin"`` or ``"halo"``.
        values: ``[W, heads, Lq, Lk]``: W windows, Lq queries and Lk keys per window; each row is
            the module's softmax over the window's keys and sums to 1 (padding keys included).
        query_index: ``[W, Lq]`` int: position of each query in the query grid (row-major), or -1
            for a padding query (Swin's padding to a multiple of the window).
        key_index: ``[W, Lk]`` int: position of each key in the key grid, or -1 for a padding key
            (zero padding outside the feature map; its attention is reported by
            :meth:`padding_mass`, not placed on the image).
        grid: (H, W) of the queries; ``stride`` their input pixels per cell, (y, x).
        key_grid: (Hk, Wk) of the keys; ``key_stride`` their input pixels per cell, (y, x).
        window: (wy, wx) window (Swin) or block (Halo) size in query cells.
        shift: (sy, sx) cyclic shift of the Swin block actually applied (0 when none).
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
    """

    layer: str
    kind: str
    values: np.ndarray
    query_index: np.ndarray
    key_index: np.ndarray
    grid: tuple[int, int]
    stride: tuple[float, float]
    key_grid: tuple[int, int]
    key_stride: tuple[float, float]
    window: tuple[int, int]
    shift: tuple[int, int]
    block: int
    untrained: bool = False

    def __post_init__(self) -> None:
        values = _frozen_array(self.values, (4,), "WindowAttention.values")
        qi = _frozen_array(np.asarray(self.query_index, dtype=np.int64), (2,), "WindowAttention.query_index")
        ki = _frozen_array(np.asarray(self.key_index, dtype=np.int64), (2,), "WindowAttention.key_index")
        n_win, _, lq, lk = values.shape
        if qi.shape != (n_win, lq) or ki.shape != (n_win, lk):
            raise ValueError(
                f"WindowAttention indices must be [{n_win}, {lq}] and [{n_win}, {lk}], "
                f"got {qi.shape}, {ki.shape}"
            )
        for name, index, grid in (("query", qi, self.grid), ("key", ki, self.key_grid)):
            if index.size and (index.min() < -1 or index.max() >= grid[0] * grid[1]):
                raise ValueError(f"WindowAttention {name}_index points outside its {grid} grid")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "query_index", qi)
        object.__setattr__(self, "key_index", ki)
        for name in ("grid", "key_grid", "window", "shift"):
            v = getattr(self, name)
            object.__setattr__(self, name, (int(v[0]), int(v[1])))

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.values.shape[1])

    @property
    def num_queries(self) -> int:
        """Queries on the grid, H*W."""
        return self.grid[0] * self.grid[1]

    @property
    def num_keys(self) -> int:
        """Keys on the key grid, Hk*Wk."""
        return self.key_grid[0] * self.key_grid[1]

    def _locate(self, query: int) -> tuple[int, int]:
        if not 0 <= query < self.num_queries:
            raise ValueError(f"query must be in [0, {self.num_queries}), got {query}")
        hits = np.argwhere(self.query_index == query)
        if not len(hits):
            raise ValueError(f"query {query} is in no window")
        return int(hits[0, 0]), int(hits[0, 1])

    def query(self, query: int) -> np.ndarray:
        """``[heads, Hk*Wk]``: where query ``query`` (row-major grid index) attends, on the key grid.

        Keys that appear twice in a window (never in Swin or Halo) would add up.
        """
        win, row = self._locate(query)
        keys = self.key_index[win]
        out = np.zeros((self.heads, self.num_keys), dtype=np.float32)
        valid = keys >= 0
        np.add.at(out, (slice(None), keys[valid]), self.values[win, :, row][:, valid].astype(np.float32))
        return out

    def dense(self) -> np.ndarray:
        """``[heads, H*W, Hk*Wk]``: every query's row on the key grid (zeros outside its window).

        Rows sum to 1 minus :meth:`padding_mass`. Large for early Swin stages (3136^2 per head):
        prefer :meth:`query` and :meth:`received` for display.
        """
        out = np.zeros((self.heads, self.num_queries, self.num_keys), dtype=np.float32)
        for win in range(self.values.shape[0]):
            qs, ks = self.query_index[win], self.key_index[win]
            qv, kv = np.flatnonzero(qs >= 0), np.flatnonzero(ks >= 0)
            block = self.values[win][:, qv][:, :, kv].astype(np.float32)
            out[:, qs[qv][:, None], ks[kv][None, :]] += block
        return out

    def received(self) -> np.ndarray:
        """``[heads, Hk*Wk]``: attention each key receives, averaged over the valid queries."""
        # every window's column sums over its valid queries, then one bincount per head
        valid_q = (self.query_index >= 0)[:, None, :, None]  # [W, 1, Lq, 1]
        sums = np.where(valid_q, self.values, 0).sum(axis=2, dtype=np.float64)  # [W, heads, Lk]
        keys = self.key_index  # [W, Lk]
        kv = keys >= 0
        flat_keys = keys[kv]  # the valid (window, key) pairs
        per_head = sums.transpose(1, 0, 2)[:, kv]  # [heads, pairs]
        out = np.stack([np.bincount(flat_keys, weights=h, minlength=self.num_keys) for h in per_head])
        count = max(int((self.query_index >= 0).sum()), 1)
        return (out / count).astype(np.float32)

    def padding_mass(self) -> np.ndarray:
        """``[heads, H*W]``: the share of each query's attention that went to padding keys."""
        out = np.zeros((self.heads, self.num_queries), dtype=np.float32)
        for win in range(self.values.shape[0]):
            qs, ks = self.query_index[win], self.key_index[win]
            qv = qs >= 0
            out[:, qs[qv]] = self.values[win][:, qv][:, :, ks < 0].sum(axis=-1, dtype=np.float32)
        return out


@dataclass(frozen=True)
class SamplingPoints:
    """Where a deformable module samples, in input-image pixels, (y, x) order.

    Layout ``[Q, G, P, 2]``: Q queries (output positions), G groups or heads, P points per query
    and group. The sampled position of point p is ``points[q, g, p]``; the same point without
    its learned offset is ``reference[q, g, p]`` (the regular kernel grid for deformable
    convolution, the reference grid for DAT). When every query shares the points (DAT), Q = 1.

    Attributes:
        layer: qualified module name.
        kind: ``"deform_conv"``, ``"dat"``, ``"detr_encoder"``, ``"detr_decoder"``, ...
        points: ``[Q, G, P, 2]`` float, (y, x) pixels of the model input.
        reference: ``[Q, G, P, 2]`` float, (y, x) pixels of the model input.
        weights: ``[Q, G, P]`` modulation or attention weight of each point, or None.
        query_grid: (H, W) of the queries when they form one grid (row-major), else None.
        block: position among the model's captured blocks (forward order).
        untrained: True when the model's weights are random.
        levels: for multi-scale modules (Deformable DETR), the (H, W) feature shape of each level;
            the P points are then level-major: point p belongs to level ``p // (P // L)``. Empty
            for single-scale modules.
        query_points: ``[Q, 2]`` (y, x) input pixel of each query (the output position of a
            deformable conv, an encoder query's own pixel, a decoder query's reference point),
            or None when the queries have no position.
        group_name: what G counts: ``"group"`` (offset groups) or ``"head"``.
    """

    layer: str
    kind: str
    points: np.ndarray
    reference: np.ndarray
    weights: np.ndarray | None
    query_grid: tuple[int, int] | None
    block: int
    untrained: bool = False
    levels: tuple[tuple[int, int], ...] = ()
    query_points: np.ndarray | None = None
    group_name: str = "group"

    def __post_init__(self) -> None:
        pts = _frozen_array(self.points, (4,), "SamplingPoints.points")
        ref = _frozen_array(self.reference, (4,), "SamplingPoints.reference")
        if pts.shape != ref.shape or pts.shape[-1] != 2:
            raise ValueError(
                f"SamplingPoints points and reference must both be [Q, G, P, 2], got {pts.shape}, {ref.shape}"
            )
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "reference", ref)
        if self.weights is not None:
            wts = _frozen_array(self.weights, (3,), "SamplingPoints.weights")
            if wts.shape != pts.shape[:3]:
                raise ValueError(f"SamplingPoints.weights must be {pts.shape[:3]}, got {wts.shape}")
            object.__setattr__(self, "weights", wts)
        levels = tuple((int(h), int(w)) for h, w in self.levels)
        if levels and pts.shape[2] % len(levels):
            raise ValueError(f"SamplingPoints: {pts.shape[2]} points do not split into {len(levels)} levels")
        object.__setattr__(self, "levels", levels)
        if self.query_points is not None:
            qp = _frozen_array(self.query_points, (2,), "SamplingPoints.query_points")
            if qp.shape != (pts.shape[0], 2):
                raise ValueError(f"SamplingPoints.query_points must be [{pts.shape[0]}, 2], got {qp.shape}")
            object.__setattr__(self, "query_points", qp)

    @property
    def points_per_level(self) -> int:
        """Points per level (all P points for a single-scale module)."""
        return self.points.shape[2] // max(len(self.levels), 1)

    def level_of_points(self) -> np.ndarray:
        """``[P]`` int: the level of each point (zeros for a single-scale module)."""
        return np.arange(self.points.shape[2]) // self.points_per_level

    @property
    def offsets(self) -> np.ndarray:
        """``[Q, G, P, 2]`` learned displacement of each point, (dy, dx) pixels."""
        return self.points - self.reference


@dataclass(frozen=True)
class Detections:
    """Objects a detector found, in model-input pixels.

    Attributes:
        layer: the head that produced them (e.g. ``"class_embed"``).
        boxes: ``[K, 4]`` float (x0, y0, x1, y1) in model-input pixels.
        scores: ``[K]`` confidence in [0, 1], highest first.
        classes: ``[K]`` int class ids of the detector's label set.
        labels: K class names.
        query_index: ``[K]`` int: the decoder query each object came from (to show its sampling
            points).
        untrained: True when the model's weights are random.
    """

    layer: str
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: tuple[str, ...]
    query_index: np.ndarray
    untrained: bool = False
    kind: str = "detections"
    block: int = -1

    def __post_init__(self) -> None:
        boxes = _frozen_array(
            np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4), (2,), "Detections.boxes"
        )
        k = boxes.shape[0]
        for name in ("scores", "classes", "query_index"):
            arr = _frozen_array(getattr(self, name), (1,), f"Detections.{name}")
            if arr.shape != (k,):
                raise ValueError(f"Detections.{name} must have {k} entries, got {arr.shape}")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) != k:
            raise ValueError(f"Detections.labels must have {k} entries, got {len(self.labels)}")


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
