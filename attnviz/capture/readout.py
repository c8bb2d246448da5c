"""Records from taps: what a :class:`~attnviz.capture.hooks.Capture` read, as frozen records.

Every coordinate ends in model-input pixels, (y, x), pixel centres at integers; each attention
module's tapped parts become its records (channel weights, spatial maps, axis gates, token and
window attention, sampling points), blocks numbered in forward order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from attnviz.capture.hooks import Tap
from attnviz.capture.meta import ConvGeometry, DatSampling, HaloWindows, SwinWindows, TokenPrefix
from attnviz.core.records import (
    AxisGates,
    ChannelWeights,
    Record,
    SamplingPoints,
    SpatialMap,
    TokenAttention,
    WindowAttention,
)

__all__ = ["records_from_taps"]


def _to_image_pixels(coord: np.ndarray, grid: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """(y, x) feature-map pixel coordinates (pixel centres at integers) -> model-input pixels."""
    stride = np.array([input_hw[0] / grid[0], input_hw[1] / grid[1]], dtype=np.float32)
    return (coord + 0.5) * stride - 0.5


def _dat_points(
    parts: dict, grid: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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
    parts: dict, meta: ConvGeometry, grid: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Deformable conv offsets [2*G*K, Ho, Wo], (dy, dx) per kernel point -> pixels [Q, G, K, 2]."""
    offsets = parts[("sampling", "offsets")][1]
    kh, kw = meta.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = meta.stride, meta.padding, meta.dilation
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


def _swin_indices(meta: SwinWindows, grid: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Grid index of every (window, position) of a Swin block, -1 for padding; and the shift applied.

    timm rolls the map by ``-shift`` and then pads it to a multiple of the window; torchvision pads
    first, rolls the padded map, and uses no shift along an axis whose padded size fits in one
    window (even when the module says otherwise). Windows are taken row-major over the shifted
    frame, positions row-major inside each window.
    """
    h, w = grid
    wy, wx = meta.window
    hp, wp = -(-h // wy) * wy, -(-w // wx) * wx
    sy, sx = meta.shift
    if meta.scheme == "tv_swin":
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


def _halo_indices(meta: HaloWindows, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """HaloNet: (query index [blocks, bs^2] on the query grid, key index [blocks, win^2] on the input
    grid with -1 for the zero padding, query grid). Blocks row-major; queries subsampled by the stride."""
    h, w = grid
    bs, halo, stride, win = meta.block_size, meta.halo_size, meta.block_stride, meta.win_size
    bq = bs // stride
    nh, nw = h // bs, w // bs
    hq, wq = h // stride, w // stride
    rows, cols = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    by, bx = rows.reshape(-1, 1, 1), cols.reshape(-1, 1, 1)
    ly, lx = np.meshgrid(np.arange(bq), np.arange(bq), indexing="ij")
    query = ((by * bq + ly) * wq + (bx * bq + lx)).reshape(nh * nw, -1)
    ky, kx = np.meshgrid(np.arange(win), np.arange(win), indexing="ij")
    y, x = by * bs - halo + ky, bx * bs - halo + kx
    key = np.where((y >= 0) & (y < h) & (x >= 0) & (x < w), y * w + x, -1).reshape(nh * nw, -1)
    return query, key, (hq, wq)


def _window_record(
    layer: str, tap: Tap, values: np.ndarray, block: int, grid, input_hw, untrained: bool
) -> WindowAttention:
    """A :class:`WindowAttention` from windows ``[W, heads, Lq, Lk]`` and the block's input grid."""
    meta = tap.meta
    if isinstance(meta, HaloWindows):
        query, key, qgrid = _halo_indices(meta, grid)
        window, shift, kgrid = (meta.block_size // meta.block_stride,) * 2, (0, 0), grid
    elif isinstance(meta, SwinWindows):
        query, shift = _swin_indices(meta, grid)
        key, qgrid, kgrid, window = query, grid, grid, meta.window
    else:
        raise RuntimeError(f"{layer}: a window tap needs SwinWindows or HaloWindows, got {meta!r}")
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
        if isinstance(tap.meta, DatSampling):
            points, reference, weights = _dat_points(parts, grid, input_hw)
            key_grid = tuple(parts[("sampling", "points")][1].shape[1:3])
            query_grid = None
        elif isinstance(tap.meta, ConvGeometry):
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
            names = tap.meta.prefix_names if isinstance(tap.meta, TokenPrefix) else ()
            out.append(
                TokenAttention(
                    layer, tap.kind, values, grid, stride, block, len(names), key_grid, untrained, names
                )
            )
        elif record == "window":
            out.append(_window_record(layer, tap, v, block, grid, input_hw, untrained))
    return out


def records_from_taps(
    values: Sequence[tuple[Tap, torch.Tensor]],
    grids: Mapping[str, tuple[int, int]],
    input_hw: tuple[int, int],
    index: int,
    batch: int,
    untrained: bool,
) -> list[Record]:
    """The records of image ``index`` of a batch from what a :class:`Capture` read.

    Args:
        values: ``Capture.results()``: (tap, batched CPU tensor) pairs in forward order.
        grids: ``Capture.grids()``: each layer's feature grid (H, W).
        input_hw: the model input's (H, W), to put every coordinate in input pixels.
        index: the image in the batch.
        batch: the batch size (window taps are ``[B*windows, ...]``, batch-major).
        untrained: mark every record as made with random weights.

    Returns:
        One group of records per attention module, blocks numbered in forward order.
    """
    groups: dict[str, dict[tuple[str, str], tuple]] = {}
    for tap, value in values:
        if tap.record == "window":  # [B*windows, ...], batch-major
            value = value.reshape(batch, -1, *value.shape[1:])
        # a module that runs twice in one forward keeps its last call
        groups.setdefault(tap.layer, {})[(tap.record, tap.part)] = (tap, value[index].numpy())
    out: list[Record] = []
    for block, (layer, parts) in enumerate(groups.items()):
        out.extend(_build(layer, parts, block, grids.get(layer), input_hw, untrained))
    return out
