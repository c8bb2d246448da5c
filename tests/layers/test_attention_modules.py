"""attnviz.layers: shapes, gradients, and exposed attention against independent recomputation.

Each test hooks the named submodule itself (plain ``register_forward_hook``), recomputes the
attention from the module's parameters with plain tensor ops (einsum, an explicit bilinear
gather), and checks both the exposed map and the module output that depends on it. Modules run
in float64 for the recomputations so the tolerances stay tight.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from attnviz.layers import (
    ATTENTION_REGISTRY,
    CBAM,
    AttentionCore,
    CoordAttention,
    DAttention,
    DeformConv,
    EfficientChannelAttention,
    GlobalContext,
    MultiHeadSelfAttention,
    NonLocal,
    ParallelBranch,
    SelectiveKernel,
    SqueezeExcite,
    TransformerBlock,
    create_attention,
    eca_kernel_size,
    insert_after,
)

close = torch.testing.assert_close
SIZES = [(7, 9), (8, 8)]
C = 32


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@contextmanager
def hooked(module: nn.Module, *names: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the forward output of each named submodule (last call wins)."""
    got: dict[str, torch.Tensor] = {}
    handles = [
        module.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o))
        for n in names
    ]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def randomize(module: nn.Module, std: float = 0.3) -> nn.Module:
    """Re-draw every parameter and running statistic (zero inits included), in place."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * std)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    return module


def conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution written as an einsum over channels (x: ``[B, C, ...]``)."""
    w = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])
    out = torch.einsum("oc,bc...->bo...", w, x)
    if conv.bias is not None:
        out = out + conv.bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    return out


def bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear sample with zeros outside; pixel centres at integer coordinates.

    Args:
        img: ``[N, C, H, W]``.
        y, x: ``[N, *S]`` pixel coordinates.

    Returns:
        ``[N, C, *S]``.
    """
    n, c, h, w = img.shape
    y0, x0 = y.floor(), x.floor()
    wy, wx = y - y0, x - x0
    flat = img.reshape(n, c, h * w)
    out = torch.zeros(n, c, *y.shape[1:], dtype=img.dtype)
    for dy, dx, wgt in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        yy, xx = y0 + dy, x0 + dx
        valid = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
        vals = flat.gather(2, idx).reshape(n, c, *y.shape[1:])
        out = out + vals * (wgt * valid).unsqueeze(1)
    return out


# --------------------------------------------------------------------------- all kinds


DEFAULT_KWARGS: dict[str, dict] = {"dat": {"q_size": (8, 8)}}


@pytest.mark.parametrize("kind", sorted(ATTENTION_REGISTRY))
@pytest.mark.parametrize("size", SIZES)
def test_output_shape(kind: str, size: tuple[int, int]) -> None:
    m = create_attention(kind, C, **DEFAULT_KWARGS.get(kind, {}))
    x = torch.randn(2, C, *size)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("kind", sorted(ATTENTION_REGISTRY))
def test_gradients_reach_every_parameter(kind: str) -> None:
    m = create_attention(kind, C, **DEFAULT_KWARGS.get(kind, {}))
    if isinstance(m, NonLocal):
        with torch.no_grad():
            m.gamma.fill_(0.5)
    x = torch.randn(2, C, 7, 9)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{kind}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{kind}: zero gradient for {name}"


def test_zero_initialised_deformable_parts_still_learn() -> None:
    m = DeformConv(C)
    assert (m.offset_conv.weight == 0).all() and (m.mask_conv.weight == 0).all()
    y = m(torch.randn(2, C, 6, 7))
    (y * torch.randn_like(y)).sum().backward()
    assert m.offset_conv.weight.grad.abs().sum() > 0
    assert m.mask_conv.weight.grad.abs().sum() > 0


def test_registry_and_factory() -> None:
    assert set(ATTENTION_REGISTRY) == {
        "se",
        "eca",
        "cbam",
        "ca",
        "gc",
        "sk",
        "nonlocal",
        "mhsa",
        "dat",
        "deform",
    }
    for kind, cls in ATTENTION_REGISTRY.items():
        assert type(create_attention(kind, C, **DEFAULT_KWARGS.get(kind, {}))) is cls
    assert create_attention("SE", 64, rd_ratio=1 / 8).fc1.out_channels == 8
    with pytest.raises(ValueError, match=r"unknown attention kind 'bam'.*known kinds: .*cbam"):
        create_attention("bam", 64)


# --------------------------------------------------------------------------- channel gates


def test_squeeze_excite_gate() -> None:
    m = SqueezeExcite(C, rd_ratio=1 / 4).double()
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    with hooked(m, "gate") as got:
        y = m(x)
    s = x.mean(dim=(2, 3))
    z = torch.relu(conv1x1(m.fc1, s))
    g = torch.sigmoid(conv1x1(m.fc2, z))
    assert got["gate"].shape == (2, C, 1, 1)
    close(got["gate"], g[..., None, None])
    close(y, x * g[..., None, None])


def test_eca_kernel_size_formula() -> None:
    # t = int(|(log2 C + 1) / 2|), rounded up to odd: 3.5 -> 3, 4 -> 5, 4.5 -> 4 -> 5, 5 -> 5.
    assert {c: eca_kernel_size(c) for c in (64, 128, 256, 512)} == {64: 3, 128: 5, 256: 5, 512: 5}
    assert eca_kernel_size(2048) == 7  # (11 + 1) / 2 = 6 -> 7
    assert eca_kernel_size(1, gamma=2, beta=0) == 1
    with pytest.raises(ValueError, match="channels"):
        eca_kernel_size(0)
    with pytest.raises(ValueError, match="odd"):
        EfficientChannelAttention(64, kernel_size=4)


def test_eca_gate() -> None:
    m = EfficientChannelAttention(64).double()
    assert m.conv.kernel_size == (3,)
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    with hooked(m, "gate") as got:
        y = m(x)
    s = F.pad(x.mean(dim=(2, 3)), (1, 1))  # zero padding at both channel ends
    w = m.conv.weight.reshape(3)
    g = torch.sigmoid(w[0] * s[:, :-2] + w[1] * s[:, 1:-1] + w[2] * s[:, 2:])
    assert got["gate"].shape == (2, 1, 64)
    close(got["gate"], g[:, None])
    close(y, x * g[..., None, None])


def test_cbam_gates() -> None:
    m = CBAM(C, rd_ratio=1 / 4, spatial_kernel=5).double()
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    with hooked(m, "channel.gate", "spatial.gate") as got:
        y = m(x)

    def mlp(s: torch.Tensor) -> torch.Tensor:
        return conv1x1(m.channel.fc2, torch.relu(conv1x1(m.channel.fc1, s)))

    cg = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[..., None, None]
    xc = x * cg
    maps = torch.stack([xc.mean(dim=1), xc.amax(dim=1)], dim=1)
    sg = torch.sigmoid(F.conv2d(maps, m.spatial.conv.weight, m.spatial.conv.bias, padding=2))
    assert got["channel.gate"].shape == (2, C, 1, 1)
    assert got["spatial.gate"].shape == (2, 1, 7, 9)
    close(got["channel.gate"], cg)
    close(got["spatial.gate"], sg)
    close(y, x * cg * sg)


def test_coord_attention_gates() -> None:
    m = randomize(CoordAttention(C)).double().eval()
    h, w = 6, 9
    x = torch.randn(2, C, h, w, dtype=torch.float64)
    with hooked(m, "gate_h", "gate_w") as got:
        y = m(x)
    strips = torch.cat([x.mean(dim=3), x.mean(dim=2)], dim=2)  # [B, C, H + W]
    z = conv1x1(m.conv1, strips)
    bn = m.bn1
    z = (z - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    z = z * bn.weight[:, None] + bn.bias[:, None]
    z = z * torch.clamp(z + 3, 0, 6) / 6  # hard-swish
    a_h = torch.sigmoid(conv1x1(m.conv_h, z[..., :h]))  # [B, C, H]
    a_w = torch.sigmoid(conv1x1(m.conv_w, z[..., h:]))  # [B, C, W]
    assert got["gate_h"].shape == (2, C, h, 1)
    assert got["gate_w"].shape == (2, C, 1, w)
    close(got["gate_h"], a_h[..., None])
    close(got["gate_w"], a_w[:, :, None])
    close(y, x * a_h[..., None] * a_w[:, :, None])


@pytest.mark.parametrize("fuse_scale", [False, True])
def test_global_context(fuse_scale: bool) -> None:
    m = GlobalContext(C, fuse_add=True, fuse_scale=fuse_scale).double()
    randomize(m)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    names = ["context_softmax", "mlp_add"] + (["gate"] if fuse_scale else [])
    with hooked(m, *names) as got:
        y = m(x)
    logits = conv1x1(m.conv_attn, x)[:, 0].reshape(2, -1)
    attn = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    attn = (attn / attn.sum(dim=1, keepdim=True)).reshape(2, 5, 7)
    context = torch.einsum("bchw,bhw->bc", x, attn)

    def mlp(mod: nn.Module, s: torch.Tensor) -> torch.Tensor:
        z = conv1x1(mod.fc1, s)
        z = (z - z.mean(dim=1, keepdim=True)) / torch.sqrt(z.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
        z = torch.relu(z * mod.norm.weight + mod.norm.bias)
        return conv1x1(mod.fc2, z)

    assert got["context_softmax"].shape == (2, 1, 5, 7)
    close(got["context_softmax"].sum(dim=(2, 3)), torch.ones(2, 1, dtype=torch.float64))
    close(got["context_softmax"][:, 0], attn)
    add = mlp(m.mlp_add, context)[..., None, None]
    close(got["mlp_add"], add)
    expected = x
    if fuse_scale:
        gate = torch.sigmoid(mlp(m.mlp_scale, context))[..., None, None]
        close(got["gate"], gate)
        expected = x * gate
    close(y, expected + add)


def test_global_context_needs_a_fusion() -> None:
    with pytest.raises(ValueError, match="fuse_add or fuse_scale"):
        GlobalContext(C, fuse_add=False, fuse_scale=False)


def test_selective_kernel() -> None:
    m = randomize(SelectiveKernel(C, kernel_sizes=(3, 5, 7))).double().eval()
    assert m.path_labels == ("3x3", "5x5", "7x7")
    assert m.paths[1][0].kernel_size == (3, 3) and m.paths[1][0].dilation == (2, 2)
    assert m.paths[2][0].dilation == (3, 3)
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    with hooked(m, "select", "paths.0", "paths.1", "paths.2") as got:
        y = m(x)
    weights = got["select"]
    assert weights.shape == (2, 3, C)
    close(weights.sum(dim=1), torch.ones(2, C, dtype=torch.float64))
    feats = torch.stack([got[f"paths.{p}"] for p in range(3)], dim=1)
    close(y, (weights[..., None, None] * feats).sum(dim=1))
    # The weights themselves, from the fused descriptor.
    s = feats.sum(dim=1).mean(dim=(2, 3))
    z = conv1x1(m.fc_reduce, s)
    z = (z - m.bn.running_mean) / torch.sqrt(m.bn.running_var + m.bn.eps) * m.bn.weight + m.bn.bias
    logits = conv1x1(m.fc_select, torch.relu(z)).reshape(2, 3, C)
    close(weights, torch.softmax(logits, dim=1))


def test_selective_kernel_stride_and_channels() -> None:
    m = SelectiveKernel(16, out_channels=24, stride=2)
    assert m(torch.randn(2, 16, 9, 12)).shape == (2, 24, 5, 6)
    with pytest.raises(ValueError, match="at least two"):
        SelectiveKernel(16, kernel_sizes=(3,))


# --------------------------------------------------------------------------- token attention


def test_non_local() -> None:
    m = NonLocal(C).double()
    with torch.no_grad():
        m.gamma.fill_(0.7)
    x = torch.randn(2, C, 5, 6, dtype=torch.float64)
    with hooked(m, "softmax") as got:
        y = m(x)
    q = conv1x1(m.query, x.flatten(2))
    k = conv1x1(m.key, x.flatten(2))
    v = conv1x1(m.value, x.flatten(2))
    attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)
    assert got["softmax"].shape == (2, 30, 30)
    close(got["softmax"], attn)
    close(got["softmax"].sum(-1), torch.ones(2, 30, dtype=torch.float64))
    close(y, 0.7 * torch.einsum("bcj,bij->bci", v, attn).reshape(2, C, 5, 6) + x)


def test_non_local_starts_as_identity() -> None:
    x = torch.randn(2, C, 4, 5)
    close(NonLocal(C)(x), x)


@pytest.mark.parametrize("size", SIZES)
def test_mhsa(size: tuple[int, int]) -> None:
    heads = 4
    m = MultiHeadSelfAttention(C, num_heads=heads, max_tokens=256).double()
    h, w = size
    n, hd = h * w, C // heads
    x = torch.randn(2, C, h, w, dtype=torch.float64)
    with hooked(m, "attn_softmax") as got:
        y = m(x)
    pos = F.interpolate(m.pos_embed, size=(h, w), mode="bilinear", align_corners=False)
    tokens = (x + pos).flatten(2).transpose(1, 2)  # [B, N, C]
    qkv = (tokens @ m.qkv.weight.T + m.qkv.bias).reshape(2, n, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, heads, N, hd]
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    assert got["attn_softmax"].shape == (2, heads, n, n)
    close(got["attn_softmax"], attn)
    close(attn.sum(-1), torch.ones(2, heads, n, dtype=torch.float64))
    out = (got["attn_softmax"] @ v).transpose(1, 2).reshape(2, n, C) @ m.proj.weight.T + m.proj.bias
    close(y, out.transpose(1, 2).reshape(2, C, h, w))


def test_mhsa_limits() -> None:
    with pytest.raises(ValueError, match="max_tokens=16"):
        MultiHeadSelfAttention(C, max_tokens=16)(torch.randn(1, C, 5, 5))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadSelfAttention(30, num_heads=4)
    assert MultiHeadSelfAttention(C, pos_embed=False).pos_embed is None


def test_transformer_block_is_pre_norm_residual() -> None:
    block = TransformerBlock(C, num_heads=4, mlp_ratio=2.0).double()
    x = torch.randn(2, C, 5, 6, dtype=torch.float64)
    mid = x + block.attn(block.norm1(x))
    close(block(x), mid + block.mlp(block.norm2(mid)))
    # LayerNorm over channels at every position.
    z = block.norm1(x)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (C,), block.norm1.weight, block.norm1.bias, 1e-6)
    close(z, ref.permute(0, 3, 1, 2))


# --------------------------------------------------------------------------- DAT


def dat_forward(m: DAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with hooked(m, "points", "reference", "sampled", "attn_softmax") as got:
        got["out"] = m(x)
    return got


def pixels(p: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (y, x) with align_corners=True -> pixel coordinates."""
    return (p[..., 0] + 1) / 2 * (h - 1), (p[..., 1] + 1) / 2 * (w - 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_dat_recomputed(stride: int) -> None:
    b, heads, groups, h, w = 2, 4, 2, 6, 8
    m = DAttention(C, num_heads=heads, n_groups=groups, stride=stride, q_size=(h, w)).double()
    with torch.no_grad():
        m.conv_offset[-1].weight.mul_(20)  # visible, fractional offsets
    x = torch.randn(b, C, h, w, dtype=torch.float64)
    got = dat_forward(m, x)
    hk, wk = -(-h // stride), -(-w // stride)
    ns, cg, hc = hk * wk, C // groups, C // heads
    pts, ref = got["points"], got["reference"]
    assert pts.shape == ref.shape == (b, groups, hk, wk, 2)
    assert (pts - ref).abs().max() > 0.05

    # Reference: regular grid covering [-1, 1] in (y, x) order.
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, hk), torch.linspace(-1, 1, wk), indexing="ij")
    close(ref, torch.stack([ys, xs], -1).double().expand_as(ref))

    # Sampled features: bilinear gather at the exposed points, group g from its channel block.
    py, px = pixels(pts.reshape(b * groups, hk, wk, 2), h, w)
    sampled = bilinear(x.reshape(b * groups, cg, h, w), py, px)
    assert got["sampled"].shape == (b * groups, cg, hk, wk)
    close(got["sampled"], sampled)
    close(
        got["sampled"],
        F.grid_sample(
            x.reshape(b * groups, cg, h, w),
            pts.reshape(b * groups, hk, wk, 2)[..., [1, 0]],
            align_corners=True,
        ),
    )

    # Attention: q.k * scale + bias read from rpe_table at the halved query-minus-key displacement.
    kv = sampled.reshape(b, C, ns)
    q = conv1x1(m.proj_q, x).reshape(b, heads, hc, h * w)
    k = conv1x1(m.proj_k, kv).reshape(b, heads, hc, ns)
    v = conv1x1(m.proj_v, kv).reshape(b, heads, hc, ns)
    qy, qx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    q_grid = torch.stack([qy, qx], -1).double().reshape(1, 1, h * w, 1, 2)
    key_pts = pts.reshape(b, groups, 1, ns, 2)
    disp = (q_grid - key_pts) * 0.5  # [B, G, HW, Ns, 2]
    th, tw = m.rpe_table.shape[1:]
    dy, dx = pixels(disp, th, tw)
    group_of_head = torch.arange(heads) // (heads // groups)
    table = m.rpe_table.reshape(1, heads, th, tw).expand(b, -1, -1, -1)
    bias = torch.stack(
        [
            bilinear(table[:, hd : hd + 1], dy[:, g], dx[:, g])[:, 0]
            for hd, g in enumerate(group_of_head.tolist())
        ],
        dim=1,
    )  # [B, heads, HW, Ns]
    logits = torch.einsum("bhcm,bhcn->bhmn", q, k) / math.sqrt(hc) + bias
    attn = torch.softmax(logits, dim=-1)
    assert got["attn_softmax"].shape == (b, heads, h * w, ns)
    close(got["attn_softmax"], attn)
    close(attn.sum(-1), torch.ones(b, heads, h * w, dtype=torch.float64))
    out = conv1x1(m.proj_out, torch.einsum("bhmn,bhcn->bhcm", got["attn_softmax"], v).reshape(b, C, h * w))
    close(got["out"], out.reshape(b, C, h, w))


def test_dat_zero_offsets_sample_the_reference() -> None:
    m = DAttention(C, num_heads=4, n_groups=2, q_size=(5, 7))
    with torch.no_grad():
        m.conv_offset[-1].weight.zero_()
    x = torch.randn(2, C, 5, 7)
    got = dat_forward(m, x)
    close(got["points"], got["reference"])
    assert got["reference"][..., 0].min() == -1 and got["reference"][..., 0].max() == 1
    assert got["reference"][..., 1].min() == -1 and got["reference"][..., 1].max() == 1
    # At stride 1 with zero offsets the keys are exactly the input pixels.
    close(got["sampled"], x.reshape(4, C // 2, 5, 7))


def test_dat_constant_offset_lands_where_expected() -> None:
    h, w = 6, 9
    m = DAttention(C, num_heads=4, n_groups=2, offset_range_factor=2.0, q_size=(h, w))
    cg = C // 2
    norm = m.conv_offset[1].norm
    with torch.no_grad():
        # LayerNorm weight 0, bias 1: every channel is GELU(1) whatever the input.
        norm.weight.zero_()
        norm.bias.fill_(1.0)
        # Raw offsets atanh(0.5) along y and atanh(-0.25) along x: tanh(raw) * 2 / (n - 1) is
        # +0.5 pixel in y and -0.25 pixel in x at stride 1.
        gelu1 = F.gelu(torch.tensor(1.0))
        raw = torch.tensor([math.atanh(0.5), math.atanh(-0.25)])
        m.conv_offset[-1].weight.copy_((raw / (cg * gelu1)).reshape(2, 1, 1, 1).expand(2, cg, 1, 1))
    got = dat_forward(m, torch.randn(2, C, h, w))
    py, px = pixels(got["points"], h, w)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    close(py, (ii + 0.5).float().expand_as(py))
    close(px, (jj - 0.25).float().expand_as(px))


def test_dat_official_grid_modes() -> None:
    n = 7
    centres = (torch.arange(n) + 0.5).double()
    for mode, expected in (("dat_v1", centres / n * 2 - 1), ("dat_pp", centres / (n - 1) * 2 - 1)):
        m = DAttention(C, num_heads=4, n_groups=2, q_size=(n, n), grid_mode=mode).double()
        with torch.no_grad():
            m.conv_offset[-1].weight.zero_()
        ref = dat_forward(m, torch.randn(1, C, n, n, dtype=torch.float64))["reference"]
        close(ref[0, 0, :, 0, 0], expected)
        close(ref[0, 1, 0, :, 1], expected)


def test_dat_parameter_layout_matches_official() -> None:
    m = DAttention(96, num_heads=6, n_groups=3, ksize=5, q_size=(14, 14))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "conv_offset.0.weight": (32, 1, 5, 5),
        "conv_offset.0.bias": (32,),
        "conv_offset.1.norm.weight": (32,),
        "conv_offset.1.norm.bias": (32,),
        "conv_offset.3.weight": (2, 32, 1, 1),
        **{
            f"proj_{p}.{t}": (96, 96, 1, 1) if t == "weight" else (96,)
            for p in "qkv"
            for t in ("weight", "bias")
        },
        "proj_out.weight": (96, 96, 1, 1),
        "proj_out.bias": (96,),
        "rpe_table": (6, 27, 27),
    }


def test_dat_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of n_groups"):
        DAttention(C, num_heads=4, n_groups=3)
    with pytest.raises(ValueError, match="grid_mode"):
        DAttention(C, grid_mode="corners")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- deformable conv


def deform_reference(
    m: DeformConv, x: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Deformable convolution from the exposed offsets/mask by explicit bilinear sampling."""
    b, cin = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
    groups, ho, wo = m.offset_groups, offsets.shape[2], offsets.shape[3]
    cg, npts = cin // groups, kh * kw
    base_y = (torch.arange(ho) * sh - ph).double().reshape(1, ho, 1)
    base_x = (torch.arange(wo) * sw - pw).double().reshape(1, 1, wo)
    out = m.bias.reshape(1, -1, 1, 1).expand(b, -1, ho, wo).clone()
    for g in range(groups):
        xg = x[:, g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                kidx = g * npts + i * kw + j
                y = base_y + i * dh + offsets[:, 2 * kidx]
                xx = base_x + j * dw + offsets[:, 2 * kidx + 1]
                vals = bilinear(xg, y, xx)  # [B, Cg, Ho, Wo]
                if mask is not None:
                    vals = vals * mask[:, kidx : kidx + 1]
                out = out + torch.einsum("oc,bchw->bohw", m.weight[:, g * cg : (g + 1) * cg, i, j], vals)
    return out


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1, "offset_groups": 2}, (7, 9)),
        (
            {"kernel_size": (3, 5), "stride": 2, "padding": (2, 3), "dilation": (2, 1), "offset_groups": 1},
            (9, 8),
        ),
    ],
)
@pytest.mark.parametrize("modulated", [True, False])
def test_deform_conv_recomputed(kwargs: dict, size: tuple[int, int], modulated: bool) -> None:
    m = DeformConv(8, out_channels=6, modulated=modulated, **kwargs).double()
    with torch.no_grad():
        m.offset_conv.weight.normal_(0, 0.3)
        m.offset_conv.bias.normal_(0, 1.0)
        if m.mask_conv is not None:
            m.mask_conv.weight.normal_(0, 0.3)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    names = ["offsets", "mask_gate"] if modulated else ["offsets"]
    with hooked(m, *names) as got:
        y = m(x)
    kh, kw = m.kernel_size
    ho, wo = y.shape[2:]
    assert got["offsets"].shape == (2, 2 * m.offset_groups * kh * kw, ho, wo)
    mask = got.get("mask_gate")
    if modulated:
        assert mask.shape == (2, m.offset_groups * kh * kw, ho, wo)
    ours = deform_reference(m, x, got["offsets"], mask)
    close(y, ours)
    tv = deform_conv2d(x, got["offsets"], m.weight, m.bias, m.stride, m.padding, m.dilation, mask)
    close(tv, ours)


def test_deform_conv_constant_offset_is_a_shifted_conv() -> None:
    m = DeformConv(8, out_channels=5, modulated=False).double()
    k = 9
    with torch.no_grad():
        m.offset_conv.bias.copy_(torch.tensor([1.0, 0.0] * k))  # (dy, dx) = (1, 0) for every point
    h, w = 8, 7
    x = torch.randn(2, 8, h, w, dtype=torch.float64)
    with hooked(m, "offsets") as got:
        y = m(x)
    close(got["offsets"][:, 0::2], torch.ones(2, k, h, w, dtype=torch.float64))
    shifted = torch.roll(x, shifts=-1, dims=2)  # row r holds input row r + 1
    regular = F.conv2d(shifted, m.weight, m.bias, padding=1)
    # Away from the borders (output rows 1 .. H-3 read shifted rows 0 .. H-2 only).
    close(y[:, :, 1 : h - 2], regular[:, :, 1 : h - 2])


def test_deform_conv_starts_as_regular_conv() -> None:
    x = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    plain = DeformConv(8, out_channels=4, modulated=False).double()
    close(plain(x), F.conv2d(x, plain.weight, plain.bias, padding=1))
    mod = DeformConv(8, out_channels=4).double()  # DCNv2: masks start at 0.5
    close(mod(x), 0.5 * F.conv2d(x, mod.weight, padding=1) + mod.bias[:, None, None])


def test_deform_conv_invalid_groups() -> None:
    with pytest.raises(ValueError, match="offset_groups"):
        DeformConv(8, offset_groups=3)


# --------------------------------------------------------------------------- insertion


def tiny_backbone() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, C, 3, padding=1),
            layer1=nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1)),
            head=nn.AdaptiveAvgPool2d(1),
        )
    )


def test_insert_after_top_level_and_dotted() -> None:
    model = tiny_backbone()
    x = torch.randn(2, 3, 8, 10)
    se = SqueezeExcite(C)
    assert insert_after(model, "layer1", se) is model
    assert model.get_submodule("layer1.1") is se
    close(model(x), model.head(se(model.layer1[0](model.stem(x)))))

    cbam = CBAM(C)
    insert_after(model, "layer1.0.2", cbam)  # dotted: the last conv inside layer1
    assert model.get_submodule("layer1.0.2.1") is cbam
    with hooked(model, "layer1.0.2.1.spatial.gate", "layer1.1.gate") as got:
        assert model(x).shape == (2, C, 1, 1)
    assert got["layer1.0.2.1.spatial.gate"].shape == (2, 1, 8, 10)
    assert got["layer1.1.gate"].shape == (2, C, 1, 1)


def test_insert_after_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown submodule 'layer9'"):
        insert_after(tiny_backbone(), "layer9", SqueezeExcite(C))
    with pytest.raises(ValueError, match="unknown submodule"):
        insert_after(tiny_backbone(), "", SqueezeExcite(C))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        insert_after(tiny_backbone(), "stem", lambda t: t)  # type: ignore[arg-type]


def test_parallel_branch() -> None:
    body = nn.Conv2d(C, C, 3, padding=1)
    attn = NonLocal(C)
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    x = torch.randn(2, C, 5, 7)
    summed = ParallelBranch(body, attn)
    close(summed(x), body(x) + attn(x))
    cat = ParallelBranch(body, attn, fuse="concat", out_channels=16)
    y = cat(x)
    assert y.shape == (2, 16, 5, 7)
    assert cat.fuse_conv.weight.shape == (16, 2 * C, 1, 1)
    close(y, cat.fuse_conv(torch.cat([body(x), attn(x)], dim=1)))
    # a known width: a plain convolution, its weights there before any forward
    sized = ParallelBranch(body, attn, fuse="concat", out_channels=16, in_channels=2 * C)
    assert type(sized.fuse_conv) is nn.Conv2d and sized.fuse_conv.weight.shape == (16, 2 * C, 1, 1)
    close(sized(x), sized.fuse_conv(torch.cat([body(x), attn(x)], dim=1)))
    y.sum().backward()
    assert attn.gamma.grad is not None
    with pytest.raises(ValueError, match="needs out_channels"):
        ParallelBranch(body, attn, fuse="concat")
    with pytest.raises(ValueError, match="fuse must be"):
        ParallelBranch(body, attn, fuse="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal shapes"):
        ParallelBranch(nn.Conv2d(C, 8, 1), attn)(x)


def test_attention_core() -> None:
    core = AttentionCore(C, depth=2, num_heads=4)
    x = torch.randn(2, C, 6, 5)
    with hooked(core, "blocks.0.attn.attn_softmax", "blocks.1.attn.attn_softmax") as got:
        y = core(x)
    assert y.shape == x.shape
    assert got["blocks.1.attn.attn_softmax"].shape == (2, 4, 30, 30)
    with pytest.raises(ValueError, match="depth"):
        AttentionCore(C, depth=0, num_heads=4)
