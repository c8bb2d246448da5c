"""Deformable sampling from ``torchvision.ops.DeformConv2d`` inside any model, and the sampling views.

The recorded points are checked through their convention: converting the model-input pixels
back to the layer's input coordinates, sampling there bilinearly (zeros outside) and weighting
by the mask must reproduce what ``deform_conv2d`` computed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import transforms as T
from torchvision.ops import DeformConv2d

import attnviz
from attnviz.adapters import find_taps

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
    spec = attnviz.ModelSpec(
        name="tiny_deform",
        source="test",
        attention=("deform_conv",),
        input_size=(SIZE, SIZE),
        pretrained_available=False,
        weights_file="",
        weights_path="",
        description="test",
        gradcam_layer="",
    )
    transform = T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.ToTensor(), T.Normalize(MEAN, STD)])
    return attnviz.LoadedModel(
        spec, module.eval(), transform, MEAN, STD, (), "random", True, torch.device("cpu"), find_taps(module)
    )


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


def _bilinear(x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """x [C, H, W] sampled at float (y, xq) [N], zeros outside (deform_conv2d's rule) -> [C, N]."""
    c, h, w = x.shape
    y0, x0 = torch.floor(y), torch.floor(xq)
    out = torch.zeros(c, y.shape[0], dtype=x.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = (y0 + dy).long(), (x0 + dx).long()
            wgt = (1 - (y - yy).abs()) * (1 - (xq - xx).abs())
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = torch.zeros(c, y.shape[0], dtype=x.dtype)
            vals[:, ok] = x[:, yy[ok], xx[ok]]
            out += vals * wgt
    return out


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
            got = _bilinear(chans, fy, fx).view(per_group, ho * wo, k)
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
