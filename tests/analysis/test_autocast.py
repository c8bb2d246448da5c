"""Reduced-precision forwards (``analyze(autocast=...)``) against float32, within the stated tolerance.

bf16 runs on the CPU here; fp16 needs CUDA (a GPU-marked test, skipped without one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image

import attnviz
from attnviz.views.maps import attention_maps

TOLERANCE = 0.02  # absolute, on gates in [0, 1] and on attention rows (see analyze's docstring)


def _compare(reference: attnviz.Analysis, low: attnviz.Analysis) -> float:
    """The largest absolute difference over every captured array; the records must line up."""
    assert [(r.layer, r.kind) for r in reference.records] == [(r.layer, r.kind) for r in low.records]
    worst = 0.0
    for a, b in zip(reference.records, low.records, strict=True):
        if isinstance(a, attnviz.GradCAM):
            continue  # Grad-CAM always runs in float32
        for name, value in vars(a).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                other = getattr(b, name)
                assert other.dtype == np.float32  # stored as float32 whatever the forward ran in
                worst = max(worst, float(np.abs(value - other).max()))
    return worst


@pytest.mark.parametrize("name", ["zoo_cbam", "zoo_mhsa", "zoo_gc"])
def test_bf16_on_cpu_matches_fp32_within_tolerance(name: str) -> None:
    model = attnviz.load_model(name, weights="pretrained", device="cpu")
    images = [make_image(i, size=(96, 96)) for i in range(2)]
    ref = attnviz.analyze(model, images, gradcam=False)
    low = attnviz.analyze(model, images, gradcam=False, autocast="bf16")
    worst = [_compare(a, b) for a, b in zip(ref, low, strict=True)]
    assert 0 < max(worst) <= TOLERANCE  # bf16 really ran (values differ), within the tolerance
    for a, b in zip(ref, low, strict=True):
        assert a.top5[0].index == b.top5[0].index  # the trained zoo is confident: same class
        for ma, mb in zip(attention_maps(a), attention_maps(b), strict=True):
            # what an overlay shows: the map min-max scaled
            na = (ma.values - ma.values.min()) / max(float(np.ptp(ma.values)), 1e-12)
            nb = (mb.values - mb.values.min()) / max(float(np.ptp(mb.values)), 1e-12)
            assert float(np.abs(na - nb).max()) <= 0.1, ma.label


def test_bad_autocast_is_refused() -> None:
    model = attnviz.load_model("zoo_se", weights="pretrained", device="cpu")
    with pytest.raises(ValueError, match=r"autocast must be None, 'bf16' or 'fp16', got 'fp8'"):
        attnviz.analyze(model, [make_image(0)], autocast="fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_on_cuda_matches_fp32(precision: str) -> None:
    model = attnviz.load_model("mobilenet_v3_large", weights="random", device="cuda")
    images = [make_image(i) for i in range(4)]
    ref = attnviz.analyze(model, images, gradcam=False)
    low = attnviz.analyze(model, images, gradcam=False, autocast=precision)
    for a, b in zip(ref, low, strict=True):
        assert _compare(a, b) <= TOLERANCE
