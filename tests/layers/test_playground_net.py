"""The playground network: every module x pattern x stage builds, learns and shows its attention, and
each pattern computes what it says (checked against the parts it is made of)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnviz.capture import find_taps
from attnviz.layers import AttentionCore, ParallelBranch
from attnviz.layers.playground_net import (
    PATTERNS,
    STAGES,
    Placement,
    PlaygroundNet,
    attention_kinds,
)
from attnviz.layers.zoo_net import Residual, ZooNet

CHOICES = [
    (kind, pattern, fuse)
    for kind in attention_kinds()
    for pattern in PATTERNS
    for fuse in (("sum", "concat") if pattern == "parallel" else ("sum",))
    if not (kind == "none" and pattern != "serial")
]


@pytest.mark.parametrize(("kind", "pattern", "fuse"), CHOICES)
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_choice_builds_learns_and_has_its_attention_tapped(kind, pattern, fuse, stage) -> None:
    torch.manual_seed(0)
    model = PlaygroundNet(Placement(kind, pattern, stage, fuse), num_classes=4)
    x = torch.randn(2, 3, 96, 96)
    logits = model(x)
    assert logits.shape == (2, 4)
    logits.sum().backward()
    # every parameter is in the graph (zero-initialised output projections, as non-local's, get a
    # zero gradient into their inputs at first, but a gradient all the same)
    assert all(p.grad is not None for p in model.parameters())
    assert model.fc.weight.grad.abs().sum() > 0 and model.stem[0].weight.grad.abs().sum() > 0
    taps = find_taps(model)
    if kind == "none":
        assert taps == []
        return
    assert taps, "no attention tap found"
    where = f"stage{stage}.1" if pattern == "core" else f"attn{stage}"
    assert all(t.layer.startswith(where) for t in taps), [t.layer for t in taps]
    assert not any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules())


def test_serial_reweights_the_stage_output() -> None:
    torch.manual_seed(0)
    model = PlaygroundNet(Placement("se", "serial", 2)).eval()
    x = torch.randn(2, 3, 96, 96)
    h = model.stage2(model.stage1(model.stem(x)))
    gate = model.attn2.gate  # SE's gate [B, C, 1, 1] reweights the stage's output
    with torch.no_grad():
        expected = h * torch.sigmoid(
            model.attn2.fc2(torch.relu(model.attn2.fc1(h.mean((2, 3), keepdim=True))))
        )
        torch.testing.assert_close(model.attn2(h), expected)
        torch.testing.assert_close(
            model(x), model.fc(model.pool(model.attn3(model.stage3(expected))).flatten(1))
        )
    assert isinstance(gate, nn.Module) and isinstance(model.attn3, nn.Identity)


@pytest.mark.parametrize("fuse", ["sum", "concat"])
def test_parallel_fuses_a_conv_block_and_the_module(fuse) -> None:
    torch.manual_seed(0)
    model = PlaygroundNet(Placement("cbam", "parallel", 3, fuse)).eval()
    branch = model.attn3
    assert isinstance(branch, ParallelBranch)
    h = torch.randn(2, STAGES[3][0], 6, 6)
    with torch.no_grad():
        a, b = branch.body(h), branch.attention(h)
        expected = a + b if fuse == "sum" else branch.fuse_conv(torch.cat([a, b], dim=1))
        torch.testing.assert_close(branch(h), expected)


def test_core_replaces_the_stage_convolution_by_transformer_blocks() -> None:
    model = PlaygroundNet(Placement("nonlocal", "core", 2, depth=3, heads=8))
    core = model.stage2[1]
    assert isinstance(core, AttentionCore) and len(core.blocks) == 3
    assert core.blocks[0].attn.num_heads == 8
    assert Placement("nonlocal", "core").attention_kind == "mhsa"
    assert Placement("cbam", "parallel", fuse="concat").text == "cbam, parallel (concat) at stage 3"


def test_the_serial_zoo_placements_match_the_zoo_network() -> None:
    """Serial placements put the same modules where the zoo does (a residual branch for SK, deformable
    convolution and DAT), with the same parameter shapes."""
    for kind in ("se", "cbam", "sk", "dat", "deform"):
        model = PlaygroundNet(Placement(kind, "serial", 3))
        zoo = ZooNet(kind)
        assert isinstance(model.attn3, Residual) == isinstance(zoo.attn3, Residual)
        ours = {k: v.shape for k, v in model.attn3.state_dict().items()}
        assert ours == {k: v.shape for k, v in zoo.attn3.state_dict().items()}


def test_a_concat_model_saves_and_loads_its_weights() -> None:
    torch.manual_seed(0)
    a = PlaygroundNet(Placement("eca", "parallel", 2, "concat"))
    torch.manual_seed(1)
    b = PlaygroundNet(Placement("eca", "parallel", 2, "concat"))
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "magic"}, "kind must be one of"),
        ({"pattern": "diagonal"}, "pattern must be one of"),
        ({"stage": 1}, "stage must be one of"),
        ({"stage": True}, "stage must be one of"),
        ({"stage": 3.0}, "stage must be one of"),
        ({"heads": 4.0}, "heads must be 1, 2, 4 or 8"),
        ({"fuse": "max"}, "fuse must be one of"),
        ({"depth": 0}, "depth must be an integer from 1 to 4"),
        ({"depth": 9}, "depth must be an integer from 1 to 4"),
        ({"heads": 3}, "heads must be 1, 2, 4 or 8"),
    ],
)
def test_bad_placements_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Placement(**kwargs)


def test_bad_networks_are_refused() -> None:
    with pytest.raises(TypeError, match="placement must be a Placement"):
        PlaygroundNet("cbam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an integer from 2 to 10"):
        PlaygroundNet(Placement(), num_classes=11)
    with pytest.raises(ValueError, match="input_size must be a multiple of 16"):
        PlaygroundNet(Placement(), input_size=100)
