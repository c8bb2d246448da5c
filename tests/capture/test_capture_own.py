"""Records of attnviz's own modules (the zoo) against recomputations from the module parameters.

Sampling points are checked through their stated convention: converting the recorded
model-input pixels back to feature coordinates and sampling there must reproduce what the
module computed (DAT's sampled keys, the deformable convolution's output).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import bilinear_zero_pad, randomize_norms

import attnviz
from attnviz.layers import CBAM, DAttention, DeformConv, NonLocal
from attnviz.layers.coord import CoordAttention
from attnviz.runtime import as_pil
from attnviz.views.maps import attention_maps
from attnviz.workflows.scenes import SceneParams, make_scene

close = torch.testing.assert_close


@pytest.fixture(scope="module")
def scenes() -> list[np.ndarray]:
    return [make_scene(seed, SceneParams(size=96)).image for seed in (11, 12)]


def _model(kind: str) -> attnviz.LoadedModel:
    model = attnviz.load_model(f"zoo_{kind}", weights="random", device="cpu")
    randomize_norms(model.module)
    return model


def _io(model, images, cls) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    seen = {}
    handles = [
        m.register_forward_hook(lambda _m, a, o, n=n: seen.__setitem__(n, (a[0].clone(), o.clone())))
        for n, m in model.module.named_modules()
        if isinstance(m, cls)
    ]
    try:
        with torch.no_grad():
            model.module(model.preprocess([as_pil(i) for i in images]))
    finally:
        for h in handles:
            h.remove()
    return seen


def _feature_coords(pixels: np.ndarray, grid: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of the records' convention: model-input pixels -> feature-map pixel coordinates."""
    stride = np.array([input_hw[0] / grid[0], input_hw[1] / grid[1]])
    return (pixels + 0.5) / stride - 0.5


def test_cbam_spatial_map(scenes):
    model = _model("cbam")
    results = attnviz.analyze(model, scenes, gradcam=False)
    for layer, (x, y) in _io(model, scenes, CBAM).items():
        cbam = model.module.get_submodule(layer)
        ch = cbam.channel

        def mlp(v: torch.Tensor, ch=ch) -> torch.Tensor:
            return ch.fc2(ch.act(ch.fc1(v)))

        xc = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
        sp = cbam.spatial
        pooled = torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)
        gate = torch.sigmoid(F.conv2d(pooled, sp.conv.weight, sp.conv.bias, padding=sp.conv.padding))
        close(y, xc * gate, rtol=1e-4, atol=1e-5)
        for i, result in enumerate(results):
            smap = next(r for r in result.spatial_maps if r.layer == layer)
            close(torch.tensor(smap.values), gate[i, 0], rtol=1e-4, atol=1e-5)
            assert smap.stride == (96 / gate.shape[2], 96 / gate.shape[3])


def test_coordinate_attention_gates(scenes):
    model = _model("ca")
    results = attnviz.analyze(model, scenes, gradcam=False)
    for layer, (x, y) in _io(model, scenes, CoordAttention).items():
        ca = model.module.get_submodule(layer)
        h = x.shape[2]
        pooled = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)
        z = ca.act(ca.bn1(ca.conv1(pooled)))
        gate_h = torch.sigmoid(ca.conv_h(z[:, :, :h]))[..., 0]  # [B, C, H]
        gate_w = torch.sigmoid(ca.conv_w(z[:, :, h:]))[..., 0]  # [B, C, W]
        close(y, x * gate_h[..., None] * gate_w[:, :, None], rtol=1e-4, atol=1e-5)
        for i, result in enumerate(results):
            rec = next(r for r in result.axis_gates if r.layer == layer)
            close(torch.tensor(rec.h), gate_h[i], rtol=1e-4, atol=1e-5)
            close(torch.tensor(rec.w), gate_w[i], rtol=1e-4, atol=1e-5)
            product = (gate_h[i][:, :, None] * gate_w[i][:, None, :]).mean(0)
            close(torch.tensor(rec.values), product, rtol=1e-4, atol=1e-5)


def test_non_local_attention(scenes):
    model = _model("nonlocal")
    results = attnviz.analyze(model, scenes, gradcam=False)
    for layer, (x, _y) in _io(model, scenes, NonLocal).items():
        nl = model.module.get_submodule(layer)
        _, _, h, w = x.shape
        q = nl.query(x).flatten(2)  # [B, C', HW]
        k = nl.key(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, HW(query), HW(key)]
        for i, result in enumerate(results):
            rec = next(r for r in result.token_attention if r.layer == layer)
            assert rec.grid == (h, w) and rec.values.shape == (1, h * w, h * w)
            close(torch.tensor(rec.values[0]), attn[i], rtol=1e-4, atol=1e-6)
            close(torch.tensor(rec.values.sum(-1)), torch.ones(1, h * w))
            amap = next(m for m in attention_maps(result) if m.layer == layer)
            close(torch.tensor(amap.values), attn[i].mean(0).view(h, w), rtol=1e-4, atol=1e-7)


def test_dat_points_resample_the_keys(scenes):
    model = _model("dat")
    results = attnviz.analyze(model, scenes, gradcam=False)
    sampled, inputs = {}, {}
    handles = []
    for name, m in model.module.named_modules():
        if isinstance(m, DAttention):
            hook_sampled = m.sampled.register_forward_hook(lambda _m, a, o, n=name: sampled.__setitem__(n, o))
            hook_input = m.register_forward_hook(lambda _m, a, o, n=name: inputs.__setitem__(n, a[0]))
            handles += [hook_sampled, hook_input]
    with torch.no_grad():
        model.module(model.preprocess([as_pil(i) for i in scenes]))
    for h in handles:
        h.remove()
    assert set(sampled) == {"attn2.body", "attn3.body"}
    for layer, x in inputs.items():
        dat = model.module.get_submodule(layer)
        _, c, h, w = x.shape
        groups = dat.n_groups
        for i, result in enumerate(results):
            rec = next(r for r in result.sampling_points if r.layer == layer)
            assert rec.points.shape[:2] == (1, groups)
            feat = _feature_coords(rec.points[0], (h, w), (96, 96))  # [G, P, 2] (y, x) feature pixels
            norm = torch.tensor(feat / np.array([h - 1, w - 1]) * 2 - 1, dtype=torch.float32)
            grid = norm.flip(-1).view(groups, 1, -1, 2)  # grid_sample wants (x, y)
            xg = x[i : i + 1].reshape(groups, c // groups, h, w)
            resampled = F.grid_sample(xg, grid, mode="bilinear", align_corners=True)  # [G, C/G, 1, P]
            want = sampled[layer][i * groups : (i + 1) * groups].flatten(2)
            close(resampled[:, :, 0], want, rtol=1e-4, atol=1e-4)
            # weights: attention received per sampled key, mean over the group's heads and queries
            attn = next(r for r in result.token_attention if r.layer == layer).values
            per_group = attn.mean(1).reshape(groups, -1, attn.shape[-1]).mean(1)
            np.testing.assert_allclose(rec.weights[0], per_group, rtol=1e-5, atol=1e-8)


def test_deformable_conv_points_reproduce_the_output(scenes):
    model = _model("deform")
    with torch.no_grad():  # non-zero offsets and masks: the zoo initialises them to zero
        for m in model.module.modules():
            if isinstance(m, DeformConv):
                m.offset_conv.weight.normal_(0, 0.05)
                m.offset_conv.bias.normal_(0, 0.8)
                m.mask_conv.weight.normal_(0, 0.05)
                m.mask_conv.bias.normal_(0, 1.0)
    results = attnviz.analyze(model, scenes, gradcam=False)
    for layer, (x, y) in _io(model, scenes, DeformConv).items():
        dc = model.module.get_submodule(layer)
        _, cin, h, w = x.shape
        kh, kw = dc.kernel_size
        for i, result in enumerate(results):
            rec = next(r for r in result.sampling_points if r.layer == layer)
            ho, wo = rec.query_grid
            assert rec.points.shape == (ho * wo, 1, kh * kw, 2)
            assert np.abs(rec.offsets).max() > 0.1  # the offsets are really there
            feat = torch.tensor(_feature_coords(rec.points[:, 0], (h, w), (96, 96)), dtype=torch.float64)
            samples = bilinear_zero_pad(x[i].double(), feat[..., 0].reshape(-1), feat[..., 1].reshape(-1))
            mask = torch.tensor(rec.weights[:, 0], dtype=torch.float64)
            samples = samples.view(cin, ho * wo, kh * kw) * mask
            weight = dc.weight.double().view(dc.weight.shape[0], cin, kh * kw)
            out = torch.einsum("ock,cqk->oq", weight, samples).view(-1, ho, wo)
            if dc.bias is not None:
                out = out + dc.bias.double()[:, None, None]
            close(out.float(), y[i], rtol=1e-4, atol=1e-4)


def test_deformable_conv_known_offset_lands_on_known_pixels(scenes):
    """A constant offset (dy=+1, dx=-2 feature pixels) moves every point by exactly that in pixels."""
    model = _model("deform")
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, DeformConv):
                m.offset_conv.weight.zero_()
                m.offset_conv.bias.copy_(torch.tensor([1.0, -2.0]).repeat(m.offset_conv.bias.numel() // 2))
    [result] = attnviz.analyze(model, scenes[:1], gradcam=False)
    for rec in result.sampling_points:
        stride = 96 / (rec.query_grid[0])  # stride-1 3x3 conv: output grid = input grid
        np.testing.assert_allclose(rec.offsets[..., 0], stride * 1.0, rtol=1e-5)
        np.testing.assert_allclose(rec.offsets[..., 1], stride * -2.0, rtol=1e-5)
        # the centre kernel point of output (0, 0) sits on the centre of feature cell (0, 0)
        np.testing.assert_allclose(rec.reference[0, 0, 4], [stride / 2 - 0.5, stride / 2 - 0.5])
