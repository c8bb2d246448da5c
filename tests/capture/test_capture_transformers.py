"""Transformer attention (ViT, Swin, BoTNet, HaloNet): captured maps against the modules' own weights.

The test's own forward hooks record each attention module's input and output on the same forward
that attnviz captures. From the input and the module's value projection the test rebuilds the
values ``v``; the captured attention times ``v`` (through the module's output projection) must give
the module's output. Window records are checked through :meth:`WindowAttention.dense`, so the
index bookkeeping (shift, padding, halo, stride) is proven together with the numbers.

Models are random (``weights="random"`` or built directly); norms and projections are re-drawn so
that attention is far from uniform.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image, randomize_norms, wrap_module
from PIL import Image
from timm.layers.attention import Attention as TimmAttention
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.halo_attn import HaloAttn
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.swin_transformer import SwinTransformerBlock as TimmSwinBlock
from torch import nn
from torchvision import transforms as T
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.models.vision_transformer import VisionTransformer as TvViT

import attnviz
from attnviz.capture.hooks import Capture
from attnviz.capture.taps import find_taps
from attnviz.core.records import TokenAttention, WindowAttention

close = torch.testing.assert_close

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# name -> (prefix token names, token grid of a ViT or None, classifier)
REGISTRY: dict[str, tuple[tuple[str, ...], tuple[int, int] | None, bool]] = {
    "deit_tiny_patch16_224": (("cls",), (14, 14), True),
    "deit_small_patch16_224": (("cls",), (14, 14), True),
    "deit_tiny_distilled_patch16_224": (("cls", "dist"), (14, 14), True),
    "vit_small_patch16_224.dino": (("cls",), (14, 14), False),
    "vit_small_patch14_reg4_dinov2": (("cls", "reg1", "reg2", "reg3", "reg4"), (16, 16), False),
    "vit_b_16": (("cls",), (14, 14), True),
    "swin_tiny_patch4_window7_224": ((), None, True),
    "swin_t": ((), None, True),
    "botnet26t_256": ((), None, True),
    "halonet26t": ((), None, True),
}

# Modules whose input and output the test records itself (timm Swin: the whole block, whose
# attention branch ``_attn(norm1(x))`` is the reference).
_ATTENTION_MODULES = (
    TimmAttention,
    nn.MultiheadAttention,
    TimmSwinBlock,
    ShiftedWindowAttention,
    BottleneckAttn,
    HaloAttn,
)


@dataclasses.dataclass
class Run:
    """One ``analyze`` call and, from the same forward, each attention module's (input, output)."""

    model: attnviz.LoadedModel
    results: list[attnviz.Analysis]
    io: dict[str, tuple[torch.Tensor, torch.Tensor]]


def close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """assert_close with an absolute tolerance relative to the tensor's magnitude."""
    scale = max(expected.abs().max().item(), 1.0)
    close(actual, expected, atol=rel * scale, rtol=1e-4)


def _t(values) -> torch.Tensor:
    """A tensor copy of a record's (read-only) numpy values."""
    return torch.tensor(values)


def _transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def _temper(module: nn.Module, seed: int = 0) -> None:
    """Attention neither uniform nor one-hot after ``randomize_norms``.

    ``nn.MultiheadAttention`` keeps its small Xavier ``in_proj_weight`` (not a Linear): re-drawn
    with fan-in scale. BoT/Halo queries are shrunk: with re-drawn norms their softmax is one-hot.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.MultiheadAttention):
                w = m.in_proj_weight
                w.copy_(torch.randn(w.shape, generator=g) * 1.5 * w.shape[1] ** -0.5)
            elif isinstance(m, BottleneckAttn):
                m.qkv.weight[: m.dim_out_qk].mul_(0.05)
            elif isinstance(m, HaloAttn):
                m.q.weight.mul_(0.01)


def _registry_model(name: str) -> attnviz.LoadedModel:
    torch.manual_seed(0)
    model = attnviz.load_model(name, weights="random", device="cpu")
    randomize_norms(model.module)
    _temper(model.module)
    return model


def _run(model: attnviz.LoadedModel, images: list[Image.Image], *, gradcam: bool = True) -> Run:
    """``analyze`` with the test's own hooks; each module's first call (the captured forward) is kept."""
    io: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, args: tuple, out) -> None:
            if name not in io:
                y = out[0] if isinstance(out, tuple) else out
                io[name] = (args[0].detach().clone(), y.detach().clone())

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.module.named_modules()
        if isinstance(m, _ATTENTION_MODULES)
    ]
    try:
        results = attnviz.analyze(model, images, gradcam=gradcam)
    finally:
        for h in handles:
            h.remove()
    return Run(model, results, io)


@pytest.fixture(scope="module")
def runs() -> Iterator[Callable[[str], Run]]:
    """Each registry model analysed once (one image, with Grad-CAM), shared by the tests below."""
    cache: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in cache:
            cache[name] = _run(_registry_model(name), [make_image(1)])
        return cache[name]

    yield get
    cache.clear()


def _attention(result: attnviz.Analysis) -> list[TokenAttention | WindowAttention]:
    return [r for r in result.records if isinstance(r, TokenAttention | WindowAttention)]


def _record(result: attnviz.Analysis, layer: str):
    [rec] = [r for r in _attention(result) if r.layer == layer]
    return rec


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., N, heads * d]`` -> ``[..., heads, N, d]``."""
    return t.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """``[..., heads, N, d]`` -> ``[..., N, heads * d]``."""
    return t.transpose(-3, -2).flatten(-2)


def _assert_no_leftovers(module: nn.Module) -> None:
    """No hook on any submodule, every forward the class's own, no torch function mode active."""
    for name, m in module.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, hooks), f"{name}.{hooks}"
        assert m.forward.__func__ is type(m).forward, name
    assert torch._C._len_torch_function_stack() == 0
    assert not torch.overrides._get_current_function_mode_stack()
    for hooks in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        assert not getattr(nn.modules.module, hooks), hooks


# --- 1. every registry model: rows, prefixes, grids, predictions ---------------------------------


def _expected_grid(module: nn.Module, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """(query grid, key grid) from a module's own feature-map input."""
    if isinstance(module, TimmSwinBlock | ShiftedWindowAttention):
        hw = (x.shape[1], x.shape[2])  # [B, H, W, C]
        return hw, hw
    hw = (x.shape[2], x.shape[3])  # [B, C, H, W]
    if isinstance(module, HaloAttn):
        s = module.block_stride
        return (hw[0] // s, hw[1] // s), hw
    return hw, hw


def _record_layer(model: nn.Module, name: str) -> str:
    """The record's layer for a hooked module (timm Swin: the block's ``.attn``)."""
    return f"{name}.attn" if isinstance(model.get_submodule(name), TimmSwinBlock) else name


def test_the_expectations_cover_every_token_transformer_in_the_registry():
    """A transformer added to the registry must get its row above (DAT-T has its own tests)."""
    transformers = {
        s.name for s in attnviz.list_models() if s.group == "transformer" and s.source != "official"
    }
    assert set(REGISTRY) == transformers


@pytest.mark.parametrize("name", list(REGISTRY))
def test_registry_model_rows_prefixes_grids_and_predictions(name, runs):
    run = runs(name)
    [result] = run.results
    prefix, vit_grid, classifier = REGISTRY[name]
    records = _attention(result)
    # one record per attention module, in forward order
    assert [r.layer for r in records] == [_record_layer(run.model.module, n) for n in run.io]
    assert records
    for rec, (module_name, (x, _)) in zip(records, run.io.items(), strict=True):
        values = _t(rec.values)
        # every query's row sums to 1 over its keys (window records: padding keys included)
        close(values.sum(-1), torch.ones(values.shape[:-1]), atol=1e-5, rtol=0)
        assert values.max(-1).values.mean() > 2 / values.shape[-1], f"{rec.layer}: attention is uniform"
        if isinstance(rec, TokenAttention):
            assert rec.prefix_names == prefix
            assert rec.prefix_tokens == len(prefix)
            if vit_grid is not None:
                assert rec.grid == vit_grid
                assert rec.stride == (224 / vit_grid[0], 224 / vit_grid[1])
            assert rec.values.shape[1:] == (len(prefix) + rec.grid[0] * rec.grid[1],) * 2
        if vit_grid is None:  # grids from the module's own input
            q_grid, k_grid = _expected_grid(run.model.module.get_submodule(module_name), x)
            assert rec.grid == q_grid
            assert (rec.key_grid or rec.grid) == k_grid
    if classifier:
        assert len(result.top5) == 5
        probs = [p.probability for p in result.top5]
        assert probs == sorted(probs, reverse=True)
        assert result.gradcam is not None
        assert result.gradcam.values.shape == result.input_image.shape[:2] == run.model.spec.input_size
    else:
        assert result.top5 == ()
        assert result.gradcam is None


# --- 2. timm ViT: proj(A @ v) is the attention module's output ------------------------------------


@pytest.mark.parametrize(
    "name", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2"]
)
def test_timm_vit_attention_times_values_reproduces_module_output(name, runs):
    run = runs(name)
    [result] = run.results
    attention = {n: m for n, m in run.model.module.named_modules() if isinstance(m, TimmAttention)}
    assert len(attention) == 12
    for layer, attn in attention.items():
        x, out = run.io[layer]  # [B, N, C], this forward's input and output of the module
        b, n, _ = x.shape
        with torch.no_grad():
            q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            captured = _t(_record(result, layer).values)  # [heads, N, N]
            expected_attn = torch.softmax(
                attn.q_norm(q[0]) * attn.scale @ attn.k_norm(k[0]).transpose(-2, -1), -1
            )
            close(captured, expected_attn, atol=1e-6, rtol=1e-4)
            mixed = attn.proj(attn.norm(_merge_heads(captured @ v[0])))
        close_scaled(mixed, out[0])


# --- 3. torchvision ViT: out_proj(A @ v) is nn.MultiheadAttention's output ------------------------


def _tiny_tv_vit() -> TvViT:
    torch.manual_seed(0)
    net = TvViT(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128).eval()
    randomize_norms(net)
    _temper(net)
    return net


def _record_mha_calls(net: nn.Module) -> tuple[dict[str, list], list]:
    """The test's own hooks on every MultiheadAttention: calls[name] = [(kwargs as called, kwargs as
    run, query input, output[0], output[1])]; returns (calls, handles)."""
    calls: dict[str, list] = {}
    handles = []
    for name, m in net.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            calls[name] = []

            def pre(_m, args, kwargs, name=name):
                calls[name].append([dict(kwargs)])

            def post(_m, args, kwargs, out, name=name):
                calls[name][-1] += [dict(kwargs), args[0].clone(), out[0].clone(), out[1]]

            # registered before any Capture: the pre-hook sees torchvision's own keyword arguments
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    return calls, handles


def test_torchvision_vit_weights_reproduce_multihead_output():
    net = _tiny_tv_vit()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    calls, handles = _record_mha_calls(net)
    try:
        with torch.no_grad():
            plain = net(x)
            taps = find_taps(net)
            with Capture(net, taps) as cap:
                captured_logits = net(x)
            after = net(x)
    finally:
        for h in handles:
            h.remove()
    assert [t.layer for t in taps] == list(calls)
    assert cap.grids() == dict.fromkeys(calls, (4, 4))
    values = {tap.layer: value for tap, value in cap.results()}
    close(captured_logits, plain)
    close(after, plain, atol=0, rtol=0)
    for layer, (normal, during, later) in calls.items():
        mha = net.get_submodule(layer)
        # torchvision asks for no weights; the capture asked for per-head weights only while active
        assert normal[0]["need_weights"] is normal[1]["need_weights"] is False and normal[4] is None
        assert during[0]["need_weights"] is False
        assert during[1]["need_weights"] is True and during[1]["average_attn_weights"] is False
        assert later[1]["need_weights"] is False and later[4] is None
        heads, e = mha.num_heads, mha.embed_dim
        query = during[2]  # [B, N, E] (batch_first)
        q, k, v = (
            _split_heads(t, heads) for t in F.linear(query, mha.in_proj_weight, mha.in_proj_bias).split(e, -1)
        )
        attn = values[layer]  # [B, heads, N, N]
        assert attn.shape == (2, heads, 17, 17)
        close(attn, torch.softmax(q @ k.transpose(-2, -1) / (e // heads) ** 0.5, -1), atol=1e-6, rtol=1e-4)
        with torch.no_grad():
            mixed = mha.out_proj(_merge_heads(attn @ v))
        close_scaled(mixed, normal[3])  # the output of the ordinary need_weights=False call
        close_scaled(during[3], normal[3])


# --- 4. Swin: dense attention @ v reproduces the window attention, shifted or not ----------------


def _window_mix(
    rec: WindowAttention, xn: torch.Tensor, qkv_weight, qkv_bias, proj: nn.Module
) -> torch.Tensor:
    """``proj(dense @ v + padding_mass * v_pad)`` for one image's normed tokens ``xn`` ``[H*W, C]``.

    Both timm and torchvision pad the normed map with zeros before the qkv linear, so a padding
    key's value is the qkv bias.
    """
    c = qkv_weight.shape[1]
    dim = qkv_weight.shape[0] // 3
    w_v = qkv_weight[2 * dim :]
    b_v = qkv_bias[2 * dim :] if qkv_bias is not None else torch.zeros(dim)
    v = _split_heads(F.linear(xn, w_v, b_v), rec.heads)  # [heads, HW, d]
    v_pad = b_v.view(rec.heads, 1, -1)
    mixed = _t(rec.dense()) @ v + _t(rec.padding_mass())[..., None] * v_pad
    assert c == xn.shape[-1]
    return proj(_merge_heads(mixed))


@pytest.mark.parametrize("img_size", [64, 56])  # 56: 14x14 and 7x7 maps, padded to windows of 4
def test_timm_swin_dense_attention_reproduces_attention_branch(img_size):
    torch.manual_seed(0)
    net = TimmSwin(
        img_size=img_size,
        patch_size=4,
        window_size=4,
        embed_dim=32,
        depths=(2, 2),
        num_heads=(2, 4),
        num_classes=10,
    )
    randomize_norms(net)
    run = _run(wrap_module(net, img_size), [make_image(3), make_image(4, (200, 180))], gradcam=False)
    blocks = {n: m for n, m in net.named_modules() if isinstance(m, TimmSwinBlock)}
    assert list(run.io) == list(blocks)
    for name, block in blocks.items():
        x = run.io[name][0]  # block input [B, H, W, C]
        b, h, w, c = x.shape
        block.attn.fused_attn = True  # the reference goes through scaled_dot_product_attention
        with torch.no_grad():
            branch = block._attn(block.norm1(x)).reshape(b, h * w, c)
            xn = block.norm1(x).reshape(b, h * w, c)
            for i, result in enumerate(run.results):
                rec = _record(result, f"{name}.attn")
                assert rec.shift == tuple(block.shift_size) and rec.window == tuple(block.window_size)
                assert rec.grid == (h, w)
                assert bool((rec.key_index < 0).any()) == (h % 4 != 0)
                close_scaled(
                    _window_mix(rec, xn[i], block.attn.qkv.weight, block.attn.qkv.bias, block.attn.proj),
                    branch[i],
                )
    shifts = [_record(run.results[0], f"{n}.attn").shift for n in blocks]
    assert shifts == [(0, 0), (2, 2), (0, 0), (2, 2)]


_TV_SWIN_BLOCKS = [f"features.{s}.{i}.attn" for s, n in ((3, 2), (5, 6), (7, 2)) for i in range(n)]


def _check_tv_swin(run: Run, layers: list[str]) -> None:
    for layer in layers:
        attn = run.model.module.get_submodule(layer)
        x, out = run.io[layer]  # normed input and output, [B, H, W, C]
        _, h, w, c = x.shape
        for i, result in enumerate(run.results):
            rec = _record(result, layer)
            with torch.no_grad():
                mixed = _window_mix(rec, x[i].reshape(h * w, c), attn.qkv.weight, attn.qkv.bias, attn.proj)
            close_scaled(mixed, out[i].reshape(h * w, c))


def test_torchvision_swin_dense_attention_reproduces_module_output(runs):
    run = runs("swin_t")
    [result] = run.results
    _check_tv_swin(run, _TV_SWIN_BLOCKS)
    shifts = {layer: _record(result, layer).shift for layer in _TV_SWIN_BLOCKS}
    assert shifts["features.3.0.attn"] == (0, 0)
    assert shifts["features.3.1.attn"] == shifts["features.5.5.attn"] == (3, 3)
    # the 7x7 last stage fits one window: torchvision drops the shift the module still declares
    assert run.model.module.get_submodule("features.7.1.attn").shift_size == [3, 3]
    assert shifts["features.7.1.attn"] == (0, 0)
    assert not any((r.key_index < 0).any() for r in result.window_attention)  # 224: no padding


def test_torchvision_swin_padded_maps_reproduce_module_output(runs):
    model = dataclasses.replace(runs("swin_t").model, transform=_transform(256))
    run = _run(model, [make_image(5), make_image(6, (256, 300))], gradcam=False)
    records = run.results[0].window_attention
    assert [r.grid for r in records] == [(64, 64)] * 2 + [(32, 32)] * 2 + [(16, 16)] * 6 + [(8, 8)] * 2
    _check_tv_swin(run, _TV_SWIN_BLOCKS)
    for rec in records:
        assert (rec.key_index < 0).any()  # 64, 32, 16, 8 are no multiples of 7
        assert rec.padding_mass().max() > 1e-3
    # padded to 14x14 the last stage is two windows wide: the shift is applied there
    assert _record(run.results[0], "features.7.1.attn").shift == (3, 3)


# --- 5. BoTNet ---------------------------------------------------------------------------------


def test_botnet_attention_times_values_reproduces_module_output(runs):
    run = runs("botnet26t_256")
    [result] = run.results
    bots = {n: m for n, m in run.model.module.named_modules() if isinstance(m, BottleneckAttn)}
    assert len(bots) == 3 and any(isinstance(m.pool, nn.AvgPool2d) for m in bots.values())
    for layer, m in bots.items():
        x, out = run.io[layer]
        b, _, h, w = x.shape
        rec = _record(result, layer)
        assert rec.grid == (h, w) and rec.values.shape == (m.num_heads, h * w, h * w)
        with torch.no_grad():
            _, _, v = m.qkv(x).split([m.dim_out_qk, m.dim_out_qk, m.dim_out_v], dim=1)
            v = v.reshape(b, m.num_heads, m.dim_head_v, h * w).transpose(-1, -2)  # [B, heads, HW, dv]
            mixed = (_t(rec.values) @ v[0]).transpose(-1, -2).reshape(1, m.dim_out_v, h, w)
            close_scaled(m.pool(mixed)[0], out[0])


# --- 6. HaloNet --------------------------------------------------------------------------------


def _halo_padded(m: HaloAttn, q_grid: tuple[int, int], k_grid: tuple[int, int]) -> torch.Tensor:
    """[Hq*Wq] bool: does the window of each query's block reach outside the key grid?"""
    bq = m.block_size_ds
    by = torch.arange(q_grid[0]) // bq
    bx = torch.arange(q_grid[1]) // bq
    top, left = by * m.block_size - m.halo_size, bx * m.block_size - m.halo_size
    out_y = (top < 0) | (top + m.win_size > k_grid[0])
    out_x = (left < 0) | (left + m.win_size > k_grid[1])
    return (out_y[:, None] | out_x[None, :]).flatten()


def test_halonet_dense_attention_reproduces_module_output():
    # 512 px: 32x32 maps have blocks whose haloed window lies inside the map. Activations grow
    # with the input: queries shrunk further so that attention on the zero padding stays visible.
    model = _registry_model("halonet26t")
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, HaloAttn):
                m.q.weight.mul_(0.1)
    model = dataclasses.replace(model, transform=_transform(512))
    run = _run(model, [make_image(7), make_image(8, (300, 300))], gradcam=False)
    halos = {n: m for n, m in model.module.named_modules() if isinstance(m, HaloAttn)}
    assert [m.block_stride for m in halos.values()] == [1, 2, 1]
    inside_seen = False
    for layer, m in halos.items():
        x, out = run.io[layer]
        b, _, h, w = x.shape
        s = m.block_stride
        with torch.no_grad():
            kv = m.kv(x).reshape(b, m.num_heads, m.dim_head_qk + m.dim_head_v, h * w)
            v = kv[:, :, m.dim_head_qk :].transpose(-1, -2)  # [B, heads, HW, dv] on the input grid
        for i, result in enumerate(run.results):
            rec = _record(result, layer)
            assert (rec.grid, rec.key_grid) == ((h // s, w // s), (h, w))
            dense = _t(rec.dense())  # [heads, HqWq, HW]
            pad = _t(rec.padding_mass())
            # timm pads k and v with zeros: the rows miss exactly the padding mass
            close(dense.sum(-1), 1 - pad, atol=1e-5, rtol=0)
            with torch.no_grad():
                mixed = (dense @ v[i]).transpose(-1, -2).reshape(1, m.dim_out_v, h // s, w // s)
                close_scaled(m.pool(mixed)[0], out[i])
            padded = _halo_padded(m, rec.grid, rec.key_grid)
            assert (pad[:, padded].amax(0) > 1e-3).all()
            assert (pad[:, ~padded] == 0).all()
            inside_seen |= bool((~padded).any())
    assert inside_seen


# --- 7. the capture leaves nothing behind ---------------------------------------------------------


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_capture_restores_fused_attention_flags(name, runs):
    model = runs(name).model
    modules = [m for m in model.module.modules() if hasattr(m, "fused_attn")]
    assert len(modules) == 12
    original = [m.fused_attn for m in modules]  # timm: True for ViT, False (experimental) for Swin
    mixed = [i % 3 == 0 for i in range(len(modules))]  # each flag must come back to its own value
    x = model.preprocess([make_image(9)])
    try:
        for m, flag in zip(modules, mixed, strict=True):
            m.fused_attn = flag
        with torch.no_grad():
            plain = model.module(x)
        [result] = attnviz.analyze(model, [make_image(9)], gradcam=False)
        assert [m.fused_attn for m in modules] == mixed
        assert len(_attention(result)) == 12
        with Capture(model.module, model.taps), torch.no_grad():
            captured = model.module(x)
        assert [m.fused_attn for m in modules] == mixed
        close(captured, plain)  # unfused for the capture: the same logits up to rounding
        _assert_no_leftovers(model.module)
    finally:
        for m, flag in zip(modules, original, strict=True):
            m.fused_attn = flag


def test_capture_without_reading_applies_the_settings_only(runs):
    """``read=False`` (the benchmark's bare forward): the unfused path, no hook, nothing stored."""
    model = runs("deit_tiny_patch16_224").model
    modules = [m for m in model.module.modules() if hasattr(m, "fused_attn")]
    assert all(m.fused_attn for m in modules)
    x = model.preprocess([make_image(9)])
    with Capture(model.module, model.taps, read=False) as cap, torch.no_grad():
        assert not any(m.fused_attn for m in modules)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())
        bare = model.module(x)
    assert cap.results() == [] and cap.grids() == {}
    assert all(m.fused_attn for m in modules)
    with Capture(model.module, model.taps) as cap, torch.no_grad():
        captured = model.module(x)
    close(captured, bare, atol=0, rtol=0)  # the same path, read or not
    assert len(cap.results()) == 12
    _assert_no_leftovers(model.module)


@pytest.mark.parametrize("name", ["swin_t", "botnet26t_256", "halonet26t"])
def test_intercepting_capture_leaves_no_hooks_or_modes(name, runs):
    model = runs(name).model
    _assert_no_leftovers(model.module)  # after analyze with Grad-CAM (the fixture's run)
    x = model.preprocess([make_image(10)])
    with torch.no_grad():
        plain = model.module(x)
    model.module.train()
    try:
        with Capture(model.module, model.taps) as cap, torch.no_grad():
            assert torch._C._len_torch_function_stack() == 0  # a mode only inside the attention forwards
            captured = model.module(x)
        assert all(m.training for m in model.module.modules())
    finally:
        model.module.eval()
    assert len(cap.results()) == len(model.taps)  # one softmax per module
    close(captured, plain, atol=0, rtol=0)  # recording the softmax changes nothing
    _assert_no_leftovers(model.module)
    with torch.no_grad():
        close(model.module(x), plain, atol=0, rtol=0)


@contextlib.contextmanager
def _raise_in_swin_attention(model: attnviz.LoadedModel) -> Iterator[torch.Tensor]:
    """Inside the intercepted forward of a middle block, after earlier blocks were recorded."""
    attn = model.module.get_submodule("features.5.0.attn")

    def boom() -> torch.Tensor:
        raise RuntimeError("boom")

    attn.get_relative_position_bias = boom
    try:
        yield model.preprocess([make_image(11)])
    finally:
        del attn.get_relative_position_bias


_RAISING: dict[str, tuple[type[BaseException], Callable]] = {
    "swin_t": (RuntimeError, _raise_in_swin_attention),
    # BoT's relative position table is fixed at 16x16: 224 px fails inside its forward
    "botnet26t_256": (AssertionError, lambda _model: contextlib.nullcontext(torch.randn(1, 3, 224, 224))),
    # 200 px: 13x13 maps are no multiples of Halo's block of 8
    "halonet26t": (AssertionError, lambda _model: contextlib.nullcontext(torch.randn(1, 3, 200, 200))),
}


@pytest.mark.parametrize("name", list(_RAISING))
def test_intercepting_capture_restores_after_a_raise(name, runs):
    model = runs(name).model
    error, raising = _RAISING[name]
    with (
        raising(model) as x,
        pytest.raises(error) as excinfo,
        Capture(model.module, model.taps) as cap,
        torch.no_grad(),
    ):
        model.module(x)
    # raised inside an intercepted forward (capture.py's wrapper), with the softmax recorder active
    assert any(e.path.name == "hooks.py" and e.name == "forward" for e in excinfo.traceback)
    assert torch._C._len_torch_function_stack() == 0
    if name == "swin_t":
        assert 0 < len(cap.results()) < len(model.taps)
    _assert_no_leftovers(model.module)
    x = model.preprocess([make_image(12)])
    with Capture(model.module, model.taps) as cap, torch.no_grad():
        captured = model.module(x)
    with torch.no_grad():
        close(model.module(x), captured, atol=0, rtol=0)
    assert len(cap.results()) == len(model.taps)
    _assert_no_leftovers(model.module)


def test_timm_vit_capture_restores_flags_after_a_raise(runs):
    model = runs("deit_tiny_patch16_224").model
    modules = [m for m in model.module.modules() if isinstance(m, TimmAttention)]

    def boom(_m, _args):
        raise RuntimeError("boom")

    handle = model.module.get_submodule("blocks.5.attn.proj").register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"), Capture(model.module, model.taps), torch.no_grad():
            assert not any(m.fused_attn for m in modules)
            model.module(model.preprocess([make_image(13)]))
    finally:
        handle.remove()
    assert all(m.fused_attn for m in modules)
    _assert_no_leftovers(model.module)


def test_torchvision_vit_need_weights_is_reset_after_a_raise():
    net = _tiny_tv_vit()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))

    def boom(_m, _args):
        raise RuntimeError("boom")

    calls, handles = _record_mha_calls(net)
    handles.append(net.get_submodule("encoder.layers.encoder_layer_1.mlp").register_forward_pre_hook(boom))
    try:
        with pytest.raises(RuntimeError, match="boom"), Capture(net, find_taps(net)), torch.no_grad():
            net(x)
        handles.pop().remove()
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    for layer_calls in calls.values():
        during, after = layer_calls
        assert during[1]["need_weights"] is True  # both layers ran in the capture before the raise
        assert after[0]["need_weights"] is after[1]["need_weights"] is False and after[4] is None
    _assert_no_leftovers(net)


def test_intercepted_forward_is_removed_from_the_instance(runs):
    for name in ("swin_t", "botnet26t_256", "halonet26t"):
        module = runs(name).model.module
        left = [n for n, m in module.named_modules() if "forward" in vars(m)]
        assert not left, f"{name}: 'forward' left in the __dict__ of {left}"
