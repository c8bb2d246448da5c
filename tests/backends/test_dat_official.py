"""DAT-T in the registry: official checkpoint loading, offline message, and its captured attention."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

import attnviz
from attnviz.layers.dat_tiny import LocalAttention, ShiftWindowAttention

close = torch.testing.assert_close


@pytest.fixture(scope="module")
def dat() -> attnviz.LoadedModel:
    torch.manual_seed(0)
    return attnviz.load_model("dat_tiny", weights="random", device="cpu")


def test_pretrained_offline_names_the_official_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(attnviz.WeightsUnavailableError) as info:
        attnviz.load_model("dat_tiny", weights="pretrained", device="cpu")
    message = str(info.value)
    assert "dat_tiny_in1k_224.pth" in message and "LeapLabTHU/DAT" in message
    assert str(tmp_path / "hub" / "checkpoints" / "dat_tiny_in1k_224.pth") in message
    assert info.value.weights_file == "dat_tiny_in1k_224.pth"


def test_official_layout_checkpoint_loads_by_path_and_from_the_cache(dat, monkeypatch, tmp_path) -> None:
    """A checkpoint saved like the official release ({"model": state_dict}) loads with weights=<path>
    and, put where the hub cache expects it, as weights="pretrained"."""
    state = {k: v.clone() + 0.01 for k, v in dat.module.state_dict().items() if v.is_floating_point()}
    state |= {k: v for k, v in dat.module.state_dict().items() if not v.is_floating_point()}
    path = tmp_path / "dat_tiny_in1k_224.pth"
    torch.save({"model": state, "epoch": 300}, path)
    by_path = attnviz.load_model("dat_tiny", weights=str(path), device="cpu")
    assert not by_path.untrained and by_path.weights == "dat_tiny_in1k_224.pth"
    close(by_path.module.state_dict()["cls_head.weight"], state["cls_head.weight"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "hub" / "checkpoints" / path.name)
    assert attnviz.get_spec("dat_tiny").pretrained_available
    cached = attnviz.load_model("dat_tiny", weights="pretrained", device="cpu")
    close(cached.module.state_dict()["cls_head.weight"], state["cls_head.weight"])
    bad = {k: v for k, v in state.items() if not k.startswith("cls_head")}
    torch.save({"model": bad}, tmp_path / "partial.pth")
    with pytest.raises(attnviz.CheckpointError, match=r"2 missing \(cls_head.weight, cls_head.bias\)"):
        attnviz.load_model("dat_tiny", weights=str(tmp_path / "partial.pth"), device="cpu")


def test_dat_tiny_records_and_window_attention_reproduce_the_blocks(dat) -> None:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda _m, a, o, n=n: seen.__setitem__(n, (a[0].clone(), o.clone())))
        for n, m in dat.module.named_modules()
        if isinstance(m, LocalAttention)
    ]
    try:
        [result] = attnviz.analyze(dat, [make_image(3)], gradcam=True)
    finally:
        for h in handles:
            h.remove()
    assert len(result.top5) == 5 and result.gradcam is not None
    assert [r.layer for r in result.sampling_points] == [
        "stages.2.attns.1",
        "stages.2.attns.3",
        "stages.2.attns.5",
        "stages.3.attns.1",
    ]
    windows = result.window_attention
    assert len(windows) == len(seen) == 8  # L and S blocks of stages 1-4
    for rec in windows:
        m = dat.module.get_submodule(rec.layer)
        shift = m.shift_size if isinstance(m, ShiftWindowAttention) else 0
        assert rec.kind == "dat_window" and rec.shift == (shift, shift) and rec.window == (7, 7)
        if rec.grid[0] > 28:
            continue  # the 56x56 stage: dense would be 3136^2 per head; stages 2-4 cover both kinds
        x, y = seen[rec.layer]
        c = x.shape[1]
        tokens = x[0].flatten(1).T  # [HW, C], row-major
        v = m.proj_qkv(tokens).reshape(-1, 3, m.heads, c // m.heads)[:, 2].transpose(0, 1)  # [heads, HW, d]
        dense = torch.tensor(rec.dense())
        close(dense.sum(-1), torch.ones(dense.shape[:2]), atol=1e-5, rtol=0)
        out = m.proj_out((dense @ v).transpose(0, 1).reshape(-1, c))  # [HW, C]
        close(out.T.reshape(y[0].shape), y[0], atol=1e-4, rtol=1e-4)
    shifted = [r for r in windows if r.shift != (0, 0) and r.grid[0] <= 28]
    assert shifted, "no shifted block checked"
