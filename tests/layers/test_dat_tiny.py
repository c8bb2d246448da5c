"""DAT-T (v1) network: the official checkpoint layout, the forward pass and the captured taps.

The expected state dict is written down from the official v1 code (github.com/LeapLabTHU/DAT, tag
``CVPR2022`` = 566a593, ``models/dat.py``, ``models/dat_blocks.py``, ``configs/dat_tiny.yaml``),
not read from our module. Window attention is checked against a per-window recomputation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import bilinear_zero_pad, randomize_norms

from attnviz.backends import load_checkpoint
from attnviz.capture.hooks import Capture
from attnviz.capture.taps import find_taps
from attnviz.layers import DAttention
from attnviz.layers.dat_tiny import (
    DAT,
    DAT_TINY_CONFIG,
    LocalAttention,
    ShiftWindowAttention,
    build_dat_tiny,
)

close = torch.testing.assert_close

# ---- The official DAT-T v1 state dict, from the official code's structure -------------------------
# Per stage (configs/dat_tiny.yaml; map side 224 / 4 / 2^i; offset kernel [9, 7, 5, 3][i]):
# (channels, block letters, heads, map side, offset groups, offset kernel)
_STAGES = (
    (96, "LS", 3, 56, -1, 9),
    (192, "LS", 6, 28, -1, 7),
    (384, "LDLDLD", 12, 14, 3, 5),
    (768, "LD", 24, 7, 6, 3),
)
_WS = 7  # window_sizes; proj is nn.Identity in every stage (dim_in == dim_embed), so no keys


def _ln(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    """LayerNormProxy: an nn.LayerNorm held as ``.norm``."""
    return {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,)}


def _official_keys() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {"patch_proj.0.weight": (96, 3, 4, 4), "patch_proj.0.bias": (96,)}
    keys.update(_ln("patch_proj.1", 96))
    for i, (c, letters, heads, side, groups, k) in enumerate(_STAGES):
        s = f"stages.{i}"
        for j in range(2 * len(letters)):
            keys.update(_ln(f"{s}.layer_norms.{j}", c))
        for j, letter in enumerate(letters):
            keys |= {  # TransformerMLP: chunk = (linear1, act, drop1, linear2, drop2), expansion 4
                f"{s}.mlps.{j}.chunk.linear1.weight": (4 * c, c),
                f"{s}.mlps.{j}.chunk.linear1.bias": (4 * c,),
                f"{s}.mlps.{j}.chunk.linear2.weight": (c, 4 * c),
                f"{s}.mlps.{j}.chunk.linear2.bias": (c,),
            }
            a = f"{s}.attns.{j}"
            if letter in "LS":  # LocalAttention / ShiftWindowAttention
                keys |= {
                    f"{a}.relative_position_bias_table": ((2 * _WS - 1) ** 2, heads),
                    f"{a}.relative_position_index": (_WS**2, _WS**2),  # persistent buffer
                    f"{a}.proj_qkv.weight": (3 * c, c),
                    f"{a}.proj_qkv.bias": (3 * c,),
                    f"{a}.proj_out.weight": (c, c),
                    f"{a}.proj_out.bias": (c,),
                }
                if letter == "S":
                    keys[f"{a}.attn_mask"] = ((side // _WS) ** 2, _WS**2, _WS**2)  # persistent buffer
            else:  # DAttentionBaseline with use_pe, not dwc_pe / fixed_pe
                cg = c // groups
                keys |= {
                    f"{a}.rpe_table": (heads, 2 * side - 1, 2 * side - 1),
                    f"{a}.conv_offset.0.weight": (cg, 1, k, k),
                    f"{a}.conv_offset.0.bias": (cg,),
                    f"{a}.conv_offset.3.weight": (2, cg, 1, 1),
                }
                keys.update(_ln(f"{a}.conv_offset.1", cg))
                for p in ("q", "k", "v", "out"):
                    keys |= {f"{a}.proj_{p}.weight": (c, c, 1, 1), f"{a}.proj_{p}.bias": (c,)}
    for i in range(3):
        c_in, c_out = _STAGES[i][0], _STAGES[i + 1][0]
        keys[f"down_projs.{i}.0.weight"] = (c_out, c_in, 2, 2)  # bias=False
        keys.update(_ln(f"down_projs.{i}.1", c_out))
    keys.update(_ln("cls_norm", 768))
    keys |= {"cls_head.weight": (1000, 768), "cls_head.bias": (1000,)}
    return keys


EXPECTED_KEYS: dict[str, tuple[int, ...]] = _official_keys()
#: Entries of the official DAT-T v1 state dict (counted from an instance of the official code).
N_OFFICIAL_KEYS = 219
D_BLOCKS = ("stages.2.attns.1", "stages.2.attns.3", "stages.2.attns.5", "stages.3.attns.1")


# ---- Fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> DAT:
    torch.manual_seed(0)
    net = build_dat_tiny()
    randomize_norms(net)
    with torch.no_grad():  # offsets of a visible size (default init leaves them near zero)
        for name in D_BLOCKS:
            net.get_submodule(name).conv_offset[3].weight.mul_(20.0)
    return net


@pytest.fixture(scope="module")
def captured(model):
    """One capture of a 224 px image: (input, logits, results, grids, DAttention inputs, sampled)."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    inputs, sampled, handles = {}, {}, []
    for name in D_BLOCKS:
        m = model.get_submodule(name)
        handles.append(m.register_forward_pre_hook(lambda _m, a, n=name: inputs.__setitem__(n, a[0].clone())))
        handles.append(m.sampled.register_forward_hook(lambda _m, a, o, n=name: sampled.__setitem__(n, o)))
    try:
        with Capture(model, find_taps(model)) as cap, torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return x, logits, cap.results(), cap.grids(), inputs, sampled


# ---- Checkpoint layout ---------------------------------------------------------------------------
def test_state_dict_has_the_official_v1_keys_and_shapes(model):
    assert len(EXPECTED_KEYS) == N_OFFICIAL_KEYS
    state = model.state_dict()
    assert set(state) - set(EXPECTED_KEYS) == set()
    assert set(EXPECTED_KEYS) - set(state) == set()
    wrong = {
        k: (tuple(v.shape), EXPECTED_KEYS[k]) for k, v in state.items() if tuple(v.shape) != EXPECTED_KEYS[k]
    }
    assert wrong == {}
    assert state["stages.0.attns.0.relative_position_index"].dtype == torch.int64


def test_official_checkpoint_layout_loads_strictly(model, tmp_path):
    path = tmp_path / "dat_tiny_in1k_224.pth"
    torch.save({"model": model.state_dict(), "epoch": torch.tensor(300)}, path)
    state = load_checkpoint(path)
    torch.manual_seed(123)
    fresh = build_dat_tiny()
    result = fresh.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        close(fresh(x), model(x))


def test_dat_tiny_config_and_validation():
    assert DAT_TINY_CONFIG["stage_spec"][2] == ("L", "D", "L", "D", "L", "D")
    with pytest.raises(ValueError, match="block type 'X'"):
        DAT(**{**DAT_TINY_CONFIG, "stage_spec": (("L", "X"), *DAT_TINY_CONFIG["stage_spec"][1:])})
    with pytest.raises(ValueError, match="dwc_pe"):
        DAT(**{**DAT_TINY_CONFIG, "dwc_pes": (False, False, True, False)})
    with pytest.raises(ValueError, match="multiple of the window"):
        LocalAttention(8, 2, 3)(torch.zeros(1, 8, 4, 6))
    with pytest.raises(ValueError, match="num_classes"):
        build_dat_tiny(num_classes=0)


# ---- Forward and capture -----------------------------------------------------------------------------
def test_forward_returns_logits(captured):
    _, logits, *_ = captured
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


def test_find_taps_covers_every_deformable_block(model):
    taps = [t for t in find_taps(model) if t.kind == "dat"]
    assert {t.layer for t in taps} == set(D_BLOCKS)
    assert all(isinstance(model.get_submodule(t.layer), DAttention) for t in taps)
    assert sorted((t.layer, t.part) for t in taps) == sorted(
        (name, part) for name in D_BLOCKS for part in ("points", "reference", "value")
    )
    n_d = sum(spec.count("D") for spec in DAT_TINY_CONFIG["stage_spec"])
    assert n_d == len(D_BLOCKS)


def test_capture_reads_points_reference_and_attention(model, captured):
    _, _, results, grids, *_ = captured
    got = {(t.layer, t.part): v for t, v in results}
    for name in D_BLOCKS:
        dat = model.get_submodule(name)
        side = 14 if name.startswith("stages.2") else 7
        g, heads = dat.n_groups, dat.n_heads
        assert grids[name] == (side, side)
        ref, pts, attn = got[name, "reference"], got[name, "points"], got[name, "value"]
        assert ref.shape == pts.shape == (1, g, side, side, 2)
        # v1 reference grid: cell centres (i + 0.5) / n * 2 - 1, (y, x) order
        axis = (torch.arange(side) + 0.5) / side * 2 - 1
        close(ref[0, 0, :, 0, 0], axis)
        close(ref[0, 0, 0, :, 1], axis)
        # offsets: tanh(.) * offset_range_factor / side, non-trivial after the fixture's scaling
        offset = (pts - ref).abs()
        assert offset.max() <= 2.0 / side + 1e-6
        assert offset.max() > 0.5 / side
        assert attn.shape == (1, heads, side * side, side * side)
        close(attn.sum(-1), torch.ones(1, heads, side * side))


def test_sampled_keys_are_the_input_at_the_captured_points(model, captured):
    _, _, results, _, inputs, sampled = captured
    points = {t.layer: v for t, v in results if t.part == "points"}
    assert set(inputs) == set(sampled) == set(D_BLOCKS)
    for name in D_BLOCKS:
        x, pts = inputs[name], points[name]  # [1, C, H, W], [1, G, Hk, Wk, 2] (y, x)
        _, c, h, w = x.shape
        g = pts.shape[1]
        xg = x.reshape(g, c // g, h, w)
        resampled = F.grid_sample(xg, pts[0].flip(-1), mode="bilinear", align_corners=True)
        close(resampled, sampled[name], rtol=1e-4, atol=1e-5)
        # the stated pixel convention: y = (p_y + 1) / 2 * (H - 1)
        py = (pts[0, 0, ..., 0].flatten() + 1) / 2 * (h - 1)
        px = (pts[0, 0, ..., 1].flatten() + 1) / 2 * (w - 1)
        close(bilinear_zero_pad(xg[0], py, px), sampled[name][0].flatten(1), rtol=1e-4, atol=1e-5)


# ---- Window attention against a per-window recomputation ---------------------------------------------
def _naive_windows(m: LocalAttention, x: torch.Tensor, shift: int) -> torch.Tensor:
    """Window attention recomputed token by token on the map rolled by ``-shift``.

    Two tokens of a rolled window attend to each other only if they were at most ``ws - 1`` apart
    in the original map (not neighbours through the wrap-around).
    """
    _, c, h, w = x.shape
    ws, heads = m.window_size[0], m.heads
    hc = c // heads
    xr = torch.roll(x, (-shift, -shift), (2, 3))[0]
    out = torch.zeros_like(xr)
    wq, bq = m.proj_qkv.weight, m.proj_qkv.bias
    for r0 in range(0, h, ws):
        for c0 in range(0, w, ws):
            cells = [(r0 + i, c0 + j) for i in range(ws) for j in range(ws)]
            tok = torch.stack([xr[:, r, q] for r, q in cells])  # [n, C]
            q, k, v = (tok @ wq.T + bq).split(c, dim=-1)
            orig = [((r + shift) % h, (q_ + shift) % w) for r, q_ in cells]
            for a, (ra, ca) in enumerate(cells):
                for hd in range(heads):
                    sl = slice(hd * hc, (hd + 1) * hc)
                    logits = []
                    for b_, (rb, cb) in enumerate(cells):
                        row = (ra - rb + ws - 1) * (2 * ws - 1) + (ca - cb + ws - 1)
                        val = (q[a, sl] @ k[b_, sl]) / math.sqrt(hc) + m.relative_position_bias_table[row, hd]
                        near = abs(orig[a][0] - orig[b_][0]) < ws and abs(orig[a][1] - orig[b_][1]) < ws
                        logits.append(val if near else val - 100.0)
                    wgt = torch.softmax(torch.stack(logits), 0)
                    out[sl, ra, ca] = wgt @ v[:, sl]
    out = out.permute(1, 2, 0) @ m.proj_out.weight.T + m.proj_out.bias
    return torch.roll(out.permute(2, 0, 1)[None], (shift, shift), (2, 3))


def _randomised(m: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(4)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m.eval()


def test_local_attention_matches_per_window_recomputation():
    m = _randomised(LocalAttention(8, 2, 3))
    x = torch.randn(1, 8, 6, 9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        close(m(x), _naive_windows(m, x, 0), rtol=1e-4, atol=1e-5)


def test_shift_window_attention_matches_per_window_recomputation():
    m = _randomised(ShiftWindowAttention(8, 2, 3, 0.0, 0.0, math.ceil(3 / 2), (6, 9)))
    assert m.attn_mask.shape == (6, 9, 9)
    x = torch.randn(1, 8, 6, 9, generator=torch.Generator().manual_seed(6))
    seen = []
    handle = m.attn_softmax.register_forward_hook(lambda _m, a, o: seen.append(o))
    with torch.no_grad():
        close(m(x), _naive_windows(m, x, 2), rtol=1e-4, atol=1e-5)
    handle.remove()
    assert seen[0].shape == (6, 2, 9, 9)  # [B * nW, heads, ws^2, ws^2]
    close(seen[0].sum(-1), torch.ones(6, 2, 9))
