"""Deformable sampling from ``torchvision.ops.DeformConv2d`` inside any model, and the sampling views.

The recorded points are checked through their convention: converting the model-input pixels
back to the layer's input coordinates, sampling there bilinearly (zeros outside) and weighting
by the mask must reproduce what ``deform_conv2d`` computed.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import bilinear_zero_pad, wrap_module
from PIL import Image
from torch import nn
from torchvision.ops import DeformConv2d

import attnviz
from attnviz import render
from attnviz.io.export import export_files

close = torch.testing.assert_close
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE = 64


class TinyDeformNet(nn.Module):
    """stem (stride 2) -> offsets/mask convs -> torchvision DeformConv2d (2 offset groups, stride 2)."""

    def __init__(self, modulated: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        k = 3
        self.offset = nn.Conv2d(8, 2 * 2 * k * k, 3, stride=2, padding=1)
        self.mask = nn.Conv2d(8, 2 * k * k, 3, stride=2, padding=1) if modulated else None
        self.dcn = DeformConv2d(8, 6, k, stride=2, padding=1, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        mask = torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return self.dcn(x, self.offset(x), mask=mask).mean(dim=(2, 3))


def _wrap(module: nn.Module) -> attnviz.LoadedModel:
    return wrap_module(module, SIZE, name="tiny_deform", mean=MEAN, std=STD)


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("modulated", [True, False])
def test_torchvision_deform_conv_points_reproduce_the_output(modulated: bool) -> None:
    torch.manual_seed(0)
    net = TinyDeformNet(modulated)
    with torch.no_grad():
        net.offset.weight.normal_(0, 0.1)
        net.offset.bias.normal_(0, 1.5)
    model = _wrap(net)
    seen: dict[str, torch.Tensor] = {}
    handle = net.dcn.register_forward_hook(
        lambda m, a, o: seen.update(x=a[0].clone(), y=o.clone()), with_kwargs=False
    )
    try:
        results = attnviz.analyze(model, _images(2), gradcam=False)
    finally:
        handle.remove()
    assert not net.dcn._forward_pre_hooks and not net.dcn._forward_hooks  # nothing left behind
    x, y = seen["x"], seen["y"]
    _, cin, h, _ = x.shape
    groups, k = 2, 9
    for i, result in enumerate(results):
        [rec] = result.sampling_points
        assert rec.layer == "dcn" and rec.kind == "deform_conv"
        ho, wo = rec.query_grid
        assert (ho, wo) == y.shape[-2:] and rec.points.shape == (ho * wo, groups, k, 2)
        assert (rec.weights is not None) == modulated
        assert np.abs(rec.offsets).max() > 1.0
        # model-input pixels -> the layer's input coordinates (stride 2 between them here)
        stride = SIZE / h
        feat = torch.tensor((rec.points + 0.5) / stride - 0.5, dtype=torch.float64)  # [Q, G, K, 2]
        per_group = cin // groups
        samples = torch.zeros(cin, ho * wo, k, dtype=torch.float64)
        for g in range(groups):
            fy, fx = feat[:, g, :, 0].reshape(-1), feat[:, g, :, 1].reshape(-1)
            chans = x[i, g * per_group : (g + 1) * per_group].double()
            got = bilinear_zero_pad(chans, fy, fx).view(per_group, ho * wo, k)
            if modulated:
                got = got * torch.tensor(rec.weights[:, g], dtype=torch.float64)
            samples[g * per_group : (g + 1) * per_group] = got
        weight = net.dcn.weight.double().view(net.dcn.weight.shape[0], cin, k)
        out = (
            torch.einsum("ock,cqk->oq", weight, samples).view(-1, ho, wo)
            + net.dcn.bias.double()[:, None, None]
        )
        close(out.float(), y[i], rtol=1e-4, atol=1e-4)


def test_torchvision_deform_conv_known_offset_lands_on_known_pixels() -> None:
    """Zero weights and a constant offset bias: every point moves by exactly that many input pixels."""
    net = TinyDeformNet(False)
    with torch.no_grad():
        net.offset.weight.zero_()
        net.offset.bias.copy_(torch.tensor([0.5, -1.0]).repeat(net.offset.bias.numel() // 2))
    [result] = attnviz.analyze(_wrap(net), _images(1), gradcam=False)
    [rec] = result.sampling_points
    stride = 2.0  # one cell of the layer's input (after the stride-2 stem) is 2 input pixels
    np.testing.assert_allclose(rec.offsets[..., 0], 0.5 * stride, rtol=1e-6)
    np.testing.assert_allclose(rec.offsets[..., 1], -1.0 * stride, rtol=1e-6)
    # output (0, 0) with stride 2, padding 1: its top-left kernel point is at layer pixel (-1, -1),
    # the centre point at (0, 0), i.e. input pixels (0.5, 0.5) (cell centre of a 2-pixel cell)
    np.testing.assert_allclose(rec.reference[0, 0, 0], [-1.5, -1.5])
    np.testing.assert_allclose(rec.reference[0, 0, 4], [0.5, 0.5])
    # output (1, 2): centre kernel point at layer pixel (2, 4) -> input pixels (4.5, 8.5)
    q = 1 * rec.query_grid[1] + 2
    np.testing.assert_allclose(rec.reference[q, 1, 4], [4.5, 8.5])
    np.testing.assert_allclose(rec.points[q, 1, 4], [4.5 + 1.0, 8.5 - 2.0])


# --------------------------------------------------------------------------------------------------
# Sampling views (attnviz.views.deformable) and their figures
# --------------------------------------------------------------------------------------------------


def _grid_record() -> attnviz.SamplingPoints:
    """4x4 queries over a 32 px input (stride 8), 2 groups x 3 points, known offsets."""
    rng = np.random.default_rng(1)
    q = 16
    ii, jj = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    centre = np.stack([ii.reshape(-1) * 8 + 3.5, jj.reshape(-1) * 8 + 3.5], axis=1)  # [Q, 2]
    ref = np.repeat(centre[:, None, None], 2, axis=1).repeat(3, axis=2) + rng.normal(0, 1, (q, 2, 3, 2))
    offsets = np.zeros((q, 2, 3, 2))
    offsets[..., 0] = 3.0  # dy = 3, dx = 4: length 5 everywhere
    offsets[..., 1] = 4.0
    return attnviz.SamplingPoints(
        "layer", "deform_conv", ref + offsets, ref, rng.random((q, 2, 3)), (4, 4), 0
    )


def test_nearest_query_and_query_samples_on_a_query_grid() -> None:
    rec = _grid_record()
    assert attnviz.views.deformable.nearest_query(rec, (20.0, 9.0), (32, 32)) == 2 * 4 + 1
    qs = attnviz.views.deformable.query_samples(rec, 9, (32, 32))
    np.testing.assert_allclose(qs.query_point, [19.5, 11.5])
    np.testing.assert_allclose(qs.points, rec.points[9])
    np.testing.assert_allclose(qs.offsets[..., 0], 3.0)
    assert qs.level.tolist() == [0, 0, 0] and qs.group_name == "group"
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        attnviz.views.deformable.nearest_query(rec, (32.0, 0.0), (32, 32))
    with pytest.raises(ValueError, match=r"query must be in \[0, 16\)"):
        attnviz.views.deformable.query_samples(rec, 16, (32, 32))


def test_offset_field_of_a_query_grid_and_of_shared_points() -> None:
    rec = _grid_record()
    field = attnviz.views.deformable.offset_field(rec, (32, 32), max_arrows=4)
    assert field.grid == (4, 4)
    np.testing.assert_allclose(field.magnitude, 5.0, rtol=1e-6)
    # every other query (step 2): 4 queries x 2 groups, from the query pixel to its points' mean
    assert field.starts.shape == (8, 2) and field.group.tolist() == [0, 1] * 4
    np.testing.assert_allclose(field.starts[2], [3.5, 19.5])  # query (0, 2)
    np.testing.assert_allclose(field.ends[2], rec.points[2, 0].mean(axis=0), rtol=1e-6)
    # DAT-like: one query, 2 groups x a 3x2 key grid of points
    ys, xs = np.meshgrid([4.0, 12.0, 20.0], [6.0, 18.0], indexing="ij")
    ref = np.stack([ys.reshape(-1), xs.reshape(-1)], -1)[None, None].repeat(2, axis=1)
    pts = ref + np.array([0.0, 2.0])  # dx = 2 everywhere
    shared = attnviz.SamplingPoints("dat", "dat", pts, ref, None, None, 0)
    field = attnviz.views.deformable.offset_field(shared, (24, 24))
    assert field.grid == (3, 2)
    np.testing.assert_allclose(field.magnitude, 2.0)
    np.testing.assert_allclose(field.ends - field.starts, [[0.0, 2.0]] * 12)
    assert attnviz.views.deformable.query_samples(shared, 0, (24, 24)).query_point is None


def test_sampling_figure_has_a_panel_per_level_and_sizes_by_weight() -> None:
    rng = np.random.default_rng(2)
    q, heads, levels, per = 3, 2, 2, 2
    pts = rng.uniform(0, 30, (q, heads, levels * per, 2))
    wts = rng.random((q, heads, levels * per))
    rec = attnviz.SamplingPoints(
        "enc", "detr_decoder", pts, pts * 0 + 15, wts, None, 0, levels=((8, 8), (4, 4)),
        query_points=np.full((q, 2), 15.0), group_name="head",
    )  # fmt: skip
    qs = attnviz.views.deformable.query_samples(rec, 1, (32, 32))
    assert qs.level.tolist() == [0, 0, 1, 1]
    fig = render.sampling_figure(np.zeros((32, 32, 3), np.uint8), qs)
    markers = [t for t in fig.data if t.type == "scatter" and t.name and t.name.startswith("head")]
    assert len(markers) == heads * levels  # per head and level panel
    first = markers[0]  # head 0, level 0: its two points, the biggest weight the biggest marker
    np.testing.assert_allclose(first.x, pts[1, 0, :2, 1])
    np.testing.assert_allclose(first.marker.size, 4 + 14 * wts[1, 0, :2] / wts[1].max())
    assert [a.text for a in fig.layout.annotations] == ["level 0 (8x8)", "level 1 (4x4)"]
    field = attnviz.views.deformable.offset_field(rec, (32, 32))
    assert field is None  # decoder queries have no grid


def test_export_writes_the_offset_views_of_every_sampling_record() -> None:
    torch.manual_seed(0)
    net = TinyDeformNet(True)
    with torch.no_grad():
        net.offset.bias.normal_(0, 1.0)
    [result] = attnviz.analyze(_wrap(net), _images(1), gradcam=False)
    files = export_files([("img.png", result)])
    folder = "img/tiny_deform"
    assert f"{folder}/block00_deform_conv_points.npz" in files
    assert f"{folder}/block00_deform_conv_offsets.png" in files
    assert f"{folder}/block00_deform_conv_offset_field.html" in files
    [entry] = [
        r for r in json.loads(files["summary.json"])["results"][0]["records"] if r["type"] == "SamplingPoints"
    ]
    assert entry["offset_magnitude_file"].endswith("_offsets.png")
    assert entry["offset_field"].startswith("mean offset length of each query's points")
    png = Image.open(io.BytesIO(files[f"{folder}/block00_deform_conv_offsets.png"]))
    # the 64 px input enlarged 4x (nearest) for a readable colour bar, which sits underneath
    assert png.width == 4 * SIZE and png.height > 4 * SIZE + 20
    field = attnviz.views.deformable.offset_field(result.sampling_points[0], (SIZE, SIZE))
    scale = entry["offset_magnitude_scale"]
    assert (scale["quantity"], scale["unit"], scale["min"]) == ("offset length", "px", 0.0)
    assert scale["max"] == pytest.approx(float(field.magnitude.max()))
