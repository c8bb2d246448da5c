"""channels_last: weights and batches kept NHWC give the same captured values as the default layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_image

import attnviz

# Every model with attention and a channels-first layout, from the registry: the zoo's (small,
# trained) run in the quick loop, the ImageNet ones (random weights) are slow.
_NCHW = [
    s for s in attnviz.list_models() if s.attention and s.gradcam_layout == "nchw" and s.group != "detector"
]
FAST = [s.name for s in _NCHW if s.group == "zoo"]
SLOW = [s.name for s in _NCHW if s.group != "zoo"]


def pair(name: str) -> tuple[attnviz.LoadedModel, attnviz.LoadedModel]:
    weights = "pretrained" if name.startswith("zoo_") else "random"
    models = []
    for channels_last in (False, True):
        torch.manual_seed(0)  # the same random weights in both (re-drawn norms saturate attention here)
        models.append(attnviz.load_model(name, weights=weights, device="cpu", channels_last=channels_last))
    return models[0], models[1]


def assert_records_close(got: attnviz.Analysis, want: attnviz.Analysis) -> None:
    # random weights give near-ties below the top-1: compare the probabilities by class
    assert got.top5[0].index == want.top5[0].index
    theirs = {p.index: p.probability for p in want.top5}
    for p in got.top5:
        assert p.index not in theirs or abs(p.probability - theirs[p.index]) < 1e-4
    assert [(type(r), r.layer) for r in got.records] == [(type(r), r.layer) for r in want.records]
    for mine, theirs in zip(got.records, want.records, strict=True):
        for f in dataclasses.fields(mine):
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if isinstance(a, np.ndarray):
                # another summation order: float rounding only (Grad-CAM is rescaled to [0, 1])
                atol = 1e-3 if isinstance(mine, attnviz.GradCAM) else 1e-5
                np.testing.assert_allclose(a, b, rtol=1e-3, atol=atol, err_msg=f"{mine.layer}.{f.name}")
            else:
                assert a == b, f"{mine.layer}.{f.name}"


@pytest.mark.parametrize("name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)])
def test_channels_last_captures_the_same_values(name: str) -> None:
    plain, nhwc = pair(name)
    assert plain.memory_format == torch.contiguous_format and nhwc.memory_format == torch.channels_last
    weights4d = [p for p in nhwc.module.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert weights4d and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights4d)
    images = [make_image(1), make_image(2, (200, 260))]
    batch = nhwc.preprocess(images)
    assert batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()
    for got, want in zip(attnviz.analyze(nhwc, images), attnviz.analyze(plain, images), strict=True):
        assert_records_close(got, want)


def test_channels_last_is_off_on_the_cpu_by_default() -> None:
    model = attnviz.load_model("zoo_cbam", weights="pretrained", device="cpu")
    assert model.memory_format == torch.contiguous_format
    assert model.preprocess([make_image(3)]).is_contiguous()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_channels_last_is_on_for_cnns_on_cuda() -> None:
    cnn = attnviz.load_model("mobilenet_v3_large", weights="random", device="cuda")
    vit = attnviz.load_model("deit_tiny_patch16_224", weights="random", device="cuda")
    assert cnn.memory_format == torch.channels_last and vit.memory_format == torch.contiguous_format
