"""Captured attention equals an independent recomputation from each module's own parameters.

For each family, the test runs its own forward hooks (not attnviz's) to get the attention
module's input and output, recomputes the attention with plain tensor ops from the module's
weights, and compares with what ``attnviz.analyze`` returned. Where the module's output is a
function of the attention (gate times input, softmax-weighted sum of paths), that is checked
too, so the captured numbers are proven to be the ones the network used.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_norms
from timm.layers.eca import EcaModule
from timm.layers.global_context import GlobalContext
from timm.layers.selective_kernel import SelectiveKernel
from timm.layers.split_attn import SplitAttn
from timm.layers.squeeze_excite import SEModule
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

import attnviz
from attnviz.capture.hooks import Capture, Tap

close = torch.testing.assert_close


def close_scaled(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """assert_close with tolerances relative to the tensor's magnitude (activations are large)."""
    scale = expected.abs().max().item()
    close(actual, expected, atol=1e-5 * scale, rtol=1e-3)


def _t(values) -> torch.Tensor:
    """A tensor copy of a record's (read-only) numpy values."""
    return torch.tensor(values)


def _model(name: str) -> attnviz.LoadedModel:
    model = attnviz.load_model(name, weights="random", device="cpu")
    randomize_norms(model.module)
    return model


def _module_io(
    model: attnviz.LoadedModel, images, kind: type
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input and output of every ``kind`` module for ``images``, through the test's own hooks.

    Cloned: residual blocks add the shortcut into the output in place after the hook ran.
    """
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, m in model.module.named_modules():
        if isinstance(m, kind):
            handles.append(
                m.register_forward_hook(
                    lambda _m, a, o, n=name: seen.__setitem__(n, (a[0].clone(), o.clone()))
                )
            )
    try:
        with torch.no_grad():
            model.module(model.preprocess(images))
    finally:
        for h in handles:
            h.remove()
    return seen


def _records(result: attnviz.Analysis, kind: str) -> dict[str, attnviz.ChannelWeights]:
    return {r.layer: r for r in result.records if r.kind == kind}


def _conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution on [B, C] vectors as a matrix product."""
    w = conv.weight.flatten(1)
    out = x @ w.T
    return out + conv.bias if conv.bias is not None else out


@pytest.mark.parametrize(
    "name", [s.name for s in attnviz.list_models() if s.source == "torchvision" and "se" in s.attention]
)
def test_torchvision_se_gate(name, images):
    model = _model(name)
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, SqueezeExcitation)
    assert len(io) == len(model.taps) > 0
    for layer, (x, y) in io.items():
        se = model.module.get_submodule(layer)
        squeezed = x.mean((2, 3))
        hidden = se.activation(_conv1x1(squeezed, se.fc1))
        logits = _conv1x1(hidden, se.fc2)
        gate = (
            F.hardsigmoid(logits)
            if isinstance(se.scale_activation, nn.Hardsigmoid)
            else torch.sigmoid(logits)
        )
        close_scaled(y, x * gate[:, :, None, None])  # the recomputed gate is the one the block applied
        for i, result in enumerate(results):
            rec = _records(result, "se")[layer]
            close(_t(rec.values), gate[i], atol=1e-4, rtol=1e-3)
    # every image in the batch got its own gates (random weights: differences are small but real)
    diffs = [
        (_t(a.values) - _t(b.values)).abs().max().item()
        for a, b in zip(results[0].channel_weights, results[1].channel_weights, strict=True)
    ]
    assert max(diffs) > 1e-3


def test_timm_se_gate(images):
    model = _model("seresnet50")
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, SEModule)
    assert len(io) == 16
    for layer, (x, y) in io.items():
        se = model.module.get_submodule(layer)
        gate = torch.sigmoid(_conv1x1(torch.relu(_conv1x1(x.mean((2, 3)), se.fc1)), se.fc2))
        close_scaled(y, x * gate[:, :, None, None])
        for i, result in enumerate(results):
            close(_t(_records(result, "se")[layer].values), gate[i], atol=1e-4, rtol=1e-3)


def test_eca_gate(images):
    model = _model("ecaresnet26t")
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, EcaModule)
    assert len(io) == 8
    for layer, (x, y) in io.items():
        eca = model.module.get_submodule(layer)
        k = eca.conv.weight.shape[-1]
        # 1-D convolution across the channel axis, zero padded, no bias
        gate = torch.sigmoid(F.conv1d(x.mean((2, 3))[:, None], eca.conv.weight, padding=(k - 1) // 2)[:, 0])
        close_scaled(y, x * gate[:, :, None, None])
        for i, result in enumerate(results):
            close(_t(_records(result, "eca")[layer].values), gate[i], atol=1e-4, rtol=1e-3)


def test_selective_kernel_weights(images):
    model = _model("skresnet18")
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, SelectiveKernel)
    assert len(io) == 8
    for layer, (x, y) in io.items():
        sk = model.module.get_submodule(layer)
        splits = torch.split(x, sk.in_channels // sk.num_paths, 1) if sk.split_input else [x] * sk.num_paths
        paths = torch.stack([op(s) for op, s in zip(sk.paths, splits, strict=True)], 1)  # [B, P, C, H, W]
        z = sk.attn.act(sk.attn.bn(sk.attn.fc_reduce(paths.sum(1).mean((2, 3), keepdim=True))))
        logits = sk.attn.fc_select(z).flatten(1).view(x.shape[0], sk.num_paths, -1)
        weights = torch.softmax(logits, dim=1)
        for i, result in enumerate(results):
            rec = _records(result, "sk")[f"{layer}.attn"]
            assert rec.values.shape == (2, paths.shape[2])
            assert rec.path_labels == ("3x3", "3x3 dil 2")
            captured = _t(rec.values)
            close(captured, weights[i], atol=1e-4, rtol=1e-3)
            close(captured.sum(0), torch.ones(captured.shape[1]))
            # the block's output is the captured-weight mix of its paths
            close_scaled((captured[:, :, None, None] * paths[i]).sum(0), y[i])


def test_split_attention_weights(images):
    model = _model("resnest14d")
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, SplitAttn)
    assert len(io) == 4
    for layer, (x, y) in io.items():
        sa = model.module.get_submodule(layer)
        feats = sa.act0(sa.bn0(sa.conv(x)))
        b, rc, h, w = feats.shape
        splits = feats.view(b, sa.radix, rc // sa.radix, h, w)
        gap = splits.sum(1).mean((2, 3), keepdim=True)
        logits = sa.fc2(sa.act1(sa.bn1(sa.fc1(gap)))).flatten(1)
        card = sa.rsoftmax.cardinality
        # logits are grouped [cardinality, radix, C/card]: softmax over radix within each group
        weights = (
            torch.softmax(logits.view(b, card, sa.radix, -1), dim=2).transpose(1, 2).reshape(b, sa.radix, -1)
        )
        for i, result in enumerate(results):
            captured = _t(_records(result, "split")[layer].values)
            close(captured, weights[i], atol=1e-4, rtol=1e-3)
            close(captured.sum(0), torch.ones(captured.shape[1]))
            close_scaled((captured[:, :, None, None] * splits[i]).sum(0), y[i])


def test_global_context_map_and_add_term(images):
    model = _model("gcresnext26ts")
    results = attnviz.analyze(model, images, gradcam=False)
    io = _module_io(model, images, GlobalContext)
    assert len(io) == 8
    for layer, (x, y) in io.items():
        gc = model.module.get_submodule(layer)
        b, c, h, w = x.shape
        logits = torch.einsum("bchw,c->bhw", x, gc.conv_attn.weight[0, :, 0, 0]) + gc.conv_attn.bias[0]
        context_map = torch.softmax(logits.flatten(1), dim=1).view(b, h, w)
        for i, result in enumerate(results):
            smap = next(r for r in result.spatial_maps if r.layer == layer)
            captured = _t(smap.values)
            close(captured, context_map[i], atol=1e-6, rtol=1e-4)
            close(captured.sum(), torch.tensor(1.0))
            assert smap.stride == (result.input_image.shape[0] / h, result.input_image.shape[1] / w)
            # the add term is the MLP of the captured-map-weighted context, added everywhere
            context = torch.einsum("chw,hw->c", x[i], captured)
            add = gc.mlp_add(context.view(1, c, 1, 1)).flatten()
            close_scaled(_t(_records(result, "gc_add")[layer].values), add)
            close_scaled(y[i], x[i] + add[:, None, None])


def test_blocks_numbered_in_forward_order(images):
    model = _model("gcresnext26ts")
    [result] = attnviz.analyze(model, images[:1], gradcam=False)
    gc_layers = [n for n, m in model.module.named_modules() if isinstance(m, GlobalContext)]
    assert [r.layer for r in result.spatial_maps] == gc_layers
    assert [r.block for r in result.spatial_maps] == list(range(len(gc_layers)))
    # the add term of a block shares the block index of its context map
    assert {r.layer: r.block for r in result.channel_weights} == {
        r.layer: r.block for r in result.spatial_maps
    }


def test_batch_equals_single_images(images):
    model = _model("skresnet18")
    batched = attnviz.analyze(model, images)
    for image, together in zip(images, batched, strict=True):
        [alone] = attnviz.analyze(model, [image])
        assert [p.index for p in alone.top5] == [p.index for p in together.top5]
        for a, b in zip(alone.records, together.records, strict=True):
            assert (a.layer, a.kind) == (b.layer, b.kind)
            close(_t(a.values), _t(b.values), atol=1e-4, rtol=1e-4)


def test_untrained_flag_on_every_record(images):
    model = _model("resnest14d")
    [result] = attnviz.analyze(model, images[:1])
    assert result.untrained and result.weights == "random"
    assert result.records and all(r.untrained for r in result.records)


def _hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in module.modules()
    )


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_no_hook_survives_and_training_flags_restored(images):
    model = _model("gcresnext26ts")
    model.module.train()
    model.module.stages[0].eval()  # a mixed state must come back exactly
    before = {n: m.training for n, m in model.module.named_modules()}
    attnviz.analyze(model, images)
    assert _hooks(model.module) == 0
    assert {n: m.training for n, m in model.module.named_modules()} == before
    assert all(p.grad is None for p in model.module.parameters())


@pytest.mark.parametrize("gradcam", [False, True])
def test_no_hook_survives_a_failing_forward(images, gradcam):
    model = _model("skresnet18")
    model.module.train()
    model.module.fc = _Boom()
    before = {n: m.training for n, m in model.module.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        attnviz.analyze(model, images, gradcam=gradcam)
    assert _hooks(model.module) == 0
    assert {n: m.training for n, m in model.module.named_modules()} == before


def test_gradcam_failure_releases_its_hooks(images, monkeypatch):
    model = _model("resnet50")
    import pytorch_grad_cam

    def fail(self, *args, **kwargs):
        raise RuntimeError("cam failed")

    monkeypatch.setattr(pytorch_grad_cam.GradCAM, "forward", fail)
    with pytest.raises(RuntimeError, match="cam failed"):
        attnviz.analyze(model, images)
    assert _hooks(model.module) == 0


def test_capture_restores_attributes_and_is_not_reentrant():
    layer = nn.Linear(2, 2)
    tap = Tap("layer", layer, "se", "channel", lambda out: out)
    cap = Capture(layer, [tap])
    with pytest.raises(RuntimeError, match="only allowed inside"):
        cap.set_attr(layer, "flag", True)
    with pytest.raises(ValueError, match="inside"), cap:
        cap.set_attr(layer, "in_features", 7)
        cap.set_attr(layer, "new_attr", 1)
        assert layer.in_features == 7
        with pytest.raises(RuntimeError, match="re-entrant"), cap:
            pass
        raise ValueError("inside")
    assert layer.in_features == 2 and not hasattr(layer, "new_attr")
    assert _hooks(layer) == 0


def _manual_gradcam(model: attnviz.LoadedModel, images, targets: list[int]) -> torch.Tensor:
    """ReLU(sum_k mean(dy_t/dA_k) * A_k) at layer4 for class ``targets[i]`` of image i: [B, 1, h, w]."""
    batch = model.preprocess(images)
    feats = {}
    handle = model.module.layer4.register_forward_hook(lambda m, a, o: feats.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model.module(batch.requires_grad_(True))
            acts = feats["a"]
            grads = torch.autograd.grad(logits[torch.arange(len(targets)), targets].sum(), acts)[0]
    finally:
        handle.remove()
    return torch.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True)).detach()


def _assert_cam(got_values, cam: torch.Tensor, size: tuple[int, int]) -> None:
    up = F.interpolate(cam[None], size=size, mode="bilinear")[0, 0]
    up = (up - up.min()) / (up.max() - up.min() + 1e-7)
    got = _t(got_values)
    # pytorch-grad-cam resizes with OpenCV (its own bilinear): compare the maps' agreement
    assert torch.corrcoef(torch.stack([got.flatten(), up.flatten()]))[0, 1] > 0.99
    close(got.max(), torch.tensor(1.0), atol=1e-3, rtol=0)


def test_gradcam_matches_a_manual_recomputation(images):
    """Grad-CAM = ReLU(sum_k mean(dy/dA_k) * A_k), upsampled and min-max scaled per image."""
    model = _model("resnet50")
    results = attnviz.analyze(model, images)
    targets = [r.top5[0].index for r in results]
    cam = _manual_gradcam(model, images, targets)
    for i, result in enumerate(results):
        assert result.gradcam.target == targets[i]
        _assert_cam(result.gradcam.values, cam[i], result.input_image.shape[:2])


def test_gradcam_of_a_chosen_class_matches_a_manual_recomputation(images):
    """add_gradcam(targets=...) explains the chosen classes, replacing a map of another class."""
    model = _model("resnet50")
    results = attnviz.analyze(model, images)
    targets = [7, 999][: len(results)]
    assert all(r.gradcam.target != t for r, t in zip(results, targets, strict=False))
    chosen = attnviz.add_gradcam(model, results, images, targets=targets)
    cam = _manual_gradcam(model, images, targets)
    for i, result in enumerate(chosen):
        assert (result.gradcam.target, result.gradcam.target_label) == (
            targets[i],
            model.categories[targets[i]],
        )
        assert sum(isinstance(r, attnviz.GradCAM) for r in result.records) == 1  # replaced, not added
        _assert_cam(result.gradcam.values, cam[i], result.input_image.shape[:2])
    # asking again for the same classes computes nothing; None goes back to the top-1 class
    again = attnviz.add_gradcam(model, chosen, images, targets=targets)
    assert all(a is b for a, b in zip(again, chosen, strict=True))
    back = attnviz.add_gradcam(model, chosen, images)
    assert [r.gradcam.target for r in back] == [r.top5[0].index for r in results]
    with pytest.raises(ValueError, match="Grad-CAM target 1000 is not a class of resnet50: use 0 to 999"):
        attnviz.add_gradcam(model, results, images, targets=[1000] * len(results))
    with pytest.raises(TypeError, match="must be a class index"):
        attnviz.add_gradcam(model, results, images, targets=["cat"] * len(results))
    with pytest.raises(ValueError, match="one target per analysis"):
        attnviz.add_gradcam(model, results, images, targets=[1, 2, 3][: len(results) + 1])
