"""Transformer views (attnviz.views.transformer) against hand-computed numbers and independent
recomputations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from numpy.testing import assert_allclose

from attnviz.core.records import Analysis, ChannelWeights, GradCAM, TokenAttention, WindowAttention
from attnviz.views.transformer import (
    fuse_heads,
    head_grid,
    head_statistics,
    prefix_attention,
    query_map,
    rollout,
    rollout_supported,
    self_attention_records,
    summary_map,
)

# ---------------------------------------------------------------------------------------------
# builders


def softmax_rows(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
    logits = rng.normal(0, scale, shape)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def token_record(
    values: np.ndarray,
    grid: tuple[int, int],
    prefix_names: tuple[str, ...] = (),
    *,
    stride: tuple[float, float] = (16.0, 16.0),
    layer: str = "blocks.0.attn",
    block: int = 0,
) -> TokenAttention:
    return TokenAttention(
        layer=layer,
        kind="mhsa",
        values=np.asarray(values, dtype=np.float32),
        grid=grid,
        stride=stride,
        block=block,
        prefix_tokens=len(prefix_names),
        prefix_names=prefix_names,
    )


def random_token_record(
    seed: int, grid: tuple[int, int], prefix_names: tuple[str, ...] = (), heads: int = 3, **kw: object
) -> TokenAttention:
    n = len(prefix_names) + grid[0] * grid[1]
    return token_record(softmax_rows(np.random.default_rng(seed), (heads, n, n)), grid, prefix_names, **kw)


def dat_record() -> TokenAttention:
    rng = np.random.default_rng(5)
    return TokenAttention(
        layer="stages.2.blocks.1.attn",
        kind="dat",
        values=softmax_rows(rng, (2, 16, 4)),
        grid=(4, 4),
        stride=(16.0, 16.0),
        block=3,
        key_grid=(2, 2),
    )


def swin_record(
    seed: int, shift: int, *, grid: int = 4, window: int = 2, heads: int = 2, values: np.ndarray | None = None
) -> WindowAttention:
    """Swin-like windows: the grid rolled by ``-shift``, cut into windows; keys are the queries."""
    n_side = grid // window
    index = []
    for wy in range(n_side):
        for wx in range(n_side):
            cells = []
            for a in range(window):
                for b in range(window):
                    r, c = wy * window + a, wx * window + b  # position in the rolled grid
                    cells.append(((r + shift) % grid) * grid + (c + shift) % grid)
            index.append(cells)
    idx = np.array(index)
    n_win, length = idx.shape
    if values is None:
        values = softmax_rows(np.random.default_rng(seed), (n_win, heads, length, length))
    return WindowAttention(
        layer=f"layers.0.blocks.{int(bool(shift))}.attn",
        kind="swin",
        values=values,
        query_index=idx,
        key_index=idx,
        grid=(grid, grid),
        stride=(4.0, 4.0),
        key_grid=(grid, grid),
        key_stride=(4.0, 4.0),
        window=(window, window),
        shift=(shift, shift),
        block=int(bool(shift)),
    )


def halo_record(values: np.ndarray | None = None, heads: int = 2) -> WindowAttention:
    """Halo-like: 2x2 query grid (stride 16), 4x4 key grid (stride 8), each query's block is 2x2
    keys plus a halo of 1 key, 16 keys per window, padding (-1) outside the key grid."""
    query_index, key_index = [], []
    for i in range(2):
        for j in range(2):
            query_index.append([i * 2 + j])
            keys = []
            for r in range(2 * i - 1, 2 * i + 3):
                for c in range(2 * j - 1, 2 * j + 3):
                    keys.append(r * 4 + c if 0 <= r < 4 and 0 <= c < 4 else -1)
            key_index.append(keys)
    if values is None:
        values = softmax_rows(np.random.default_rng(11), (4, heads, 1, 16))
    return WindowAttention(
        layer="stages.3.0.self_attn",
        kind="halo",
        values=values,
        query_index=np.array(query_index),
        key_index=np.array(key_index),
        grid=(2, 2),
        stride=(16.0, 16.0),
        key_grid=(4, 4),
        key_stride=(8.0, 8.0),
        window=(1, 1),
        shift=(0, 0),
        block=7,
    )


# ---------------------------------------------------------------------------------------------
# rollout

# Two layers of a cls model with a 1x2 grid (N = 3). Layer 1 has two heads whose mean is
# [[.4, .3, .3], [.3, .4, .3], [.2, .3, .5]]; layer 2 has one head.
L1 = np.array(
    [
        [[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]],
        [[0.3, 0.3, 0.4], [0.4, 0.2, 0.4], [0.3, 0.5, 0.2]],
    ]
)
L2 = np.array([[[0.2, 0.2, 0.6], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]])


def test_rollout_cls_two_layers_by_hand() -> None:
    records = [
        token_record(L1, (1, 2), ("cls",), layer="blocks.0.attn"),
        token_record(L2, (1, 2), ("cls",), layer="blocks.1.attn", block=1),
    ]
    out = rollout(records)
    # A1 = .5 mean + .5 I = [[.7, .15, .15], [.15, .7, .15], [.1, .15, .75]]
    # A2 = [[.6, .1, .3], [0, 1, 0], [.25, .25, .5]];  R = A2 @ A1 worked out by hand:
    expected = np.array([[0.465, 0.205, 0.33], [0.15, 0.7, 0.15], [0.2625, 0.2875, 0.45]])
    assert_allclose(out.matrix, expected, atol=1e-6)
    assert out.rows == (0,)
    assert_allclose(out.values, [[0.205, 0.33]], atol=1e-6)
    assert_allclose(out.prefix_mass, [0.465], atol=1e-6)
    assert out.prefix_names == ("cls",)
    assert out.layers == ("blocks.0.attn", "blocks.1.attn")
    assert out.values.shape == (1, 2) and not out.values.flags.writeable
    assert "mean" in out.how


def test_rollout_max_fusion_renormalises_rows() -> None:
    records = [token_record(L1, (1, 2), ("cls",)), token_record(L2, (1, 2), ("cls",), block=1)]
    out = rollout(records, head_fusion="max")
    a1 = np.array([[0.5, 0.3, 0.4], [0.4, 0.6, 0.4], [0.3, 0.5, 0.8]])  # element-wise max of L1's heads
    a1 = 0.5 * a1 + 0.5 * np.eye(3)
    a1 = a1 / np.array([[1.1], [1.2], [1.3]])  # row sums of the mixed matrix, by hand
    a2 = 0.5 * L2[0] + 0.5 * np.eye(3)
    assert_allclose(out.matrix, a2 @ a1, atol=1e-6)
    assert_allclose(out.matrix.sum(axis=1), np.ones(3), atol=1e-6)
    out_min = rollout(records, head_fusion="min")
    assert_allclose(out_min.matrix.sum(axis=1), np.ones(3), atol=1e-6)
    assert not np.allclose(out_min.matrix, out.matrix)


def reference_rollout(records: list[TokenAttention], fusion: str = "mean") -> np.ndarray:
    """Loop-by-loop rollout for comparison."""
    n = records[0].values.shape[1]
    result = np.eye(n)
    for rec in records:
        heads = rec.values.astype(np.float64)
        a = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                column = heads[:, i, j]
                a[i, j] = {"mean": column.mean(), "max": column.max(), "min": column.min()}[fusion]
        a = 0.5 * a + 0.5 * np.eye(n)
        for i in range(n):
            a[i] = a[i] / a[i].sum()
        result = a @ result
    return result


def test_rollout_distilled_reads_mean_of_cls_and_dist_rows() -> None:
    names = ("cls", "dist")
    records = [random_token_record(s, (2, 3), names, layer=f"blocks.{s}.attn") for s in range(3)]
    out = rollout(records)
    ref = reference_rollout(records)
    assert out.rows == (0, 1)
    assert_allclose(out.matrix, ref, rtol=1e-5, atol=1e-7)
    assert_allclose(out.values, ((ref[0, 2:] + ref[1, 2:]) / 2).reshape(2, 3), rtol=1e-5)
    assert_allclose(out.prefix_mass, (ref[0, :2] + ref[1, :2]) / 2, rtol=1e-5)
    assert not np.allclose(out.values, ref[0, 2:].reshape(2, 3))


def test_rollout_registers_read_cls_row_without_register_columns() -> None:
    names = ("cls", "reg1", "reg2", "reg3", "reg4")
    records = [random_token_record(10 + s, (2, 2), names, heads=2) for s in range(2)]
    out = rollout(records, head_fusion="max")
    ref = reference_rollout(records, "max")
    assert out.rows == (0,)
    assert out.values.shape == (2, 2)
    assert_allclose(out.values, ref[0, 5:].reshape(2, 2), rtol=1e-5)
    # every prefix column of the cls row, the four registers included, is reported apart
    assert out.prefix_mass.shape == (5,)
    assert_allclose(out.prefix_mass, ref[0, :5], rtol=1e-5)
    assert out.prefix_names == names
    assert_allclose(out.values.sum() + out.prefix_mass.sum(), 1.0, rtol=1e-5)


def test_rollout_pooled_without_prefix_uses_mean_over_rows() -> None:
    records = [random_token_record(20 + s, (2, 2), heads=4) for s in range(3)]
    out = rollout(records)
    ref = reference_rollout(records)
    assert out.rows == (0, 1, 2, 3)
    assert out.prefix_mass.shape == (0,)
    assert_allclose(out.values, ref.mean(axis=0).reshape(2, 2), rtol=1e-5)
    assert_allclose(out.matrix.sum(axis=1), np.ones(4), atol=1e-6)


def test_rollout_discard_keeps_prefix_columns() -> None:
    # one layer, cls + a 1x3 grid; the cls column holds the smallest value of row 0
    a = np.array(
        [
            [0.01, 0.5, 0.29, 0.2],
            [0.01, 0.02, 0.47, 0.5],
            [0.02, 0.3, 0.3, 0.38],
            [0.05, 0.15, 0.4, 0.4],
        ]
    )
    out = rollout([token_record(a[None], (1, 3), ("cls",))], discard_ratio=0.34)  # floor(.34 * 3) = 1
    # row 0: drop grid column 3 (0.2): [.01, .5, .29, 0] -> .5A + .5I = [.505, .25, .145, 0], sum .9
    assert_allclose(out.matrix[0], [0.505 / 0.9, 0.25 / 0.9, 0.145 / 0.9, 0.0], atol=1e-6)
    assert_allclose(out.prefix_mass, [0.505 / 0.9], atol=1e-6)
    assert_allclose(out.values, [[0.25 / 0.9, 0.145 / 0.9, 0.0]], atol=1e-6)
    # row 1: drop grid column 1 (0.02), the diagonal refills it: [.005, .5, .235, .25], sum .99
    assert_allclose(out.matrix[1], np.array([0.005, 0.5, 0.235, 0.25]) / 0.99, atol=1e-6)
    assert np.all(out.matrix[:, 0] > 0)
    assert_allclose(out.matrix.sum(axis=1), np.ones(4), atol=1e-6)
    assert "discarded" in out.how


def test_rollout_discard_half_of_grid_columns() -> None:
    rec = random_token_record(3, (2, 2), ("cls",), heads=2)
    out = rollout([rec], discard_ratio=0.5)
    a = rec.values.astype(np.float64).mean(axis=0)
    for row in a:
        grid = row[1:]
        grid[np.argsort(grid)[:2]] = 0.0
    a = 0.5 * a + 0.5 * np.eye(5)
    a = a / a.sum(axis=1, keepdims=True)
    assert_allclose(out.matrix, a, rtol=1e-5, atol=1e-7)
    # each non-diagonal row keeps the cls column and two of the four grid columns
    assert np.all(np.count_nonzero(out.matrix[1:, 1:], axis=1) <= 3)


def test_rollout_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        rollout([])
    small = random_token_record(0, (2, 2), ("cls",))
    big = random_token_record(1, (3, 3), ("cls",))
    with pytest.raises(ValueError, match=r"same tokens.*10 tokens"):
        rollout([small, big])
    with pytest.raises(ValueError, match=r"same tokens.*deformable"):
        rollout([small, dat_record()])
    with pytest.raises(ValueError, match=r"same tokens.*WindowAttention"):
        rollout([swin_record(0, 0)])
    # same token count, different split between prefix and grid
    other = random_token_record(2, (1, 4), ())
    with pytest.raises(ValueError, match="prefix tokens"):
        rollout([random_token_record(3, (1, 3), ("cls",)), other])
    with pytest.raises(ValueError, match="discard_ratio"):
        rollout([small], discard_ratio=1.0)
    with pytest.raises(ValueError, match="discard_ratio"):
        rollout([small], discard_ratio=-0.1)
    with pytest.raises(ValueError, match="head_fusion"):
        rollout([small], head_fusion="median")
    assert rollout_supported([small, random_token_record(4, (2, 2), ("cls",))])
    assert not rollout_supported([small, big])
    assert not rollout_supported([small, dat_record()])
    assert not rollout_supported([swin_record(0, 0)])
    assert not rollout_supported([])


# ---------------------------------------------------------------------------------------------
# records, summary maps, head grid


def make_analysis(records: tuple) -> Analysis:
    return Analysis("vit", "random", True, np.zeros((64, 64, 3), np.uint8), (), records)


def test_self_attention_records_keeps_forward_order_and_drops_others() -> None:
    vit = random_token_record(0, (2, 2), ("cls",))
    swin = swin_record(0, 1)
    channel = ChannelWeights("layer1.0.se", "se", np.ones(4), block=0)
    cam = GradCAM("layer4", np.zeros((4, 4)), 1, "goldfish")
    analysis = make_analysis((channel, vit, dat_record(), swin, cam))
    assert self_attention_records(analysis) == (vit, swin)
    assert self_attention_records(list(analysis.records)) == (vit, swin)
    # an analysis whose records change resolution is not rolled out
    assert not rollout_supported(analysis)
    assert rollout_supported(make_analysis((channel, vit, cam)))
    assert_allclose(rollout(make_analysis((vit, cam))).matrix, reference_rollout([vit]), rtol=1e-5)


def test_summary_map_cls_dist_and_mean_query() -> None:
    cls = random_token_record(0, (2, 3), ("cls",))
    assert_allclose(summary_map(cls), cls.values[:, 0, 1:].reshape(3, 2, 3), rtol=1e-6)
    # not renormalised: the grid part of the cls row sums to less than 1
    assert np.all(summary_map(cls).sum(axis=(1, 2)) < 1)

    dist = random_token_record(1, (2, 3), ("cls", "dist"))
    expected = (dist.values[:, 0, 2:] + dist.values[:, 1, 2:]) / 2
    assert_allclose(summary_map(dist), expected.reshape(3, 2, 3), rtol=1e-6)

    regs = random_token_record(2, (2, 2), ("cls", "reg1", "reg2"))
    assert_allclose(summary_map(regs), regs.values[:, 0, 3:].reshape(3, 2, 2), rtol=1e-6)

    pooled = random_token_record(3, (2, 3))
    expected = np.array([[pooled.values[h, :, k].mean() for k in range(6)] for h in range(3)])
    assert_allclose(summary_map(pooled), expected.reshape(3, 2, 3), rtol=1e-6)
    assert not summary_map(pooled).flags.writeable


def test_summary_map_windows_is_attention_received() -> None:
    for shift in (0, 1):
        rec = swin_record(7, shift)
        dense = rec.dense()  # no padding queries: every query is valid
        assert_allclose(summary_map(rec), dense.mean(axis=1).reshape(2, 4, 4), rtol=1e-5)
    halo = halo_record()
    expected = halo.dense().mean(axis=1).reshape(2, 4, 4)
    assert_allclose(summary_map(halo), expected, rtol=1e-5)


def test_summary_map_refuses_deformable_and_other_records() -> None:
    with pytest.raises(ValueError, match="deformable"):
        summary_map(dat_record())
    with pytest.raises(ValueError, match="TokenAttention or WindowAttention"):
        summary_map(ChannelWeights("se", "se", np.ones(3), block=0))  # type: ignore[arg-type]


def test_fuse_heads() -> None:
    maps = np.array([[[1.0, 4.0]], [[3.0, 2.0]]])
    assert_allclose(fuse_heads(maps, "mean"), [[2.0, 3.0]])
    assert_allclose(fuse_heads(maps, "max"), [[3.0, 4.0]])
    with pytest.raises(ValueError, match="how must be"):
        fuse_heads(maps, "min")
    with pytest.raises(ValueError, match=r"\[heads, H, W\]"):
        fuse_heads(maps[0], "mean")


def test_head_grid_per_layer_with_varying_heads_and_grids() -> None:
    vit = random_token_record(0, (2, 2), ("cls",), heads=3, layer="a")
    swin = swin_record(1, 1, heads=2)
    grid = head_grid((vit, dat_record(), swin))
    assert grid.layers == ("a", swin.layer)
    assert grid.blocks == (0, 1)
    assert [m.shape for m in grid.maps] == [(3, 2, 2), (2, 4, 4)]
    assert_allclose(grid.maps[0], summary_map(vit))
    assert_allclose(grid.maps[1], summary_map(swin))
    assert "cls" in grid.how and "windows" in grid.how
    empty = head_grid(())
    assert empty.layers == () and empty.maps == ()


# ---------------------------------------------------------------------------------------------
# query maps


def test_query_map_token_row_for_pixel() -> None:
    rec = random_token_record(0, (14, 14), ("cls",), heads=2)
    q = query_map(rec, (40.0, 70.0))
    assert q.query == (2, 4) and q.query_index == 32
    assert_allclose(q.values, rec.values[:, 1 + 32, 1:].reshape(2, 14, 14))
    assert_allclose(q.prefix_mass, rec.values[:, 33, :1])
    assert_allclose(q.padding_mass, [0.0, 0.0])
    assert q.stride == (16.0, 16.0)
    assert q.layer == rec.layer and q.block == rec.block
    # the bottom-right pixel belongs to the last token; pixel 16 starts the second
    assert query_map(rec, (223.9, 223.9)).query == (13, 13)
    assert query_map(rec, (16.0, 15.99)).query == (1, 0)


def test_query_map_without_prefix_and_non_integer_stride() -> None:
    rec = random_token_record(1, (3, 3), stride=(10 / 3, 10 / 3))
    q = query_map(rec, (9.9999, 0.0))
    assert q.query == (2, 0)
    assert q.prefix_mass.shape == (3, 0)
    assert_allclose(q.values, rec.values[:, 6].reshape(3, 3, 3))


def test_query_map_rejects_points_outside_the_image() -> None:
    rec = random_token_record(0, (14, 14), ("cls",))
    for point in ((224.0, 10.0), (10.0, 224.0), (-0.5, 3.0), (3.0, -1.0)):
        with pytest.raises(ValueError, match="outside the image"):
            query_map(rec, point)
    with pytest.raises(ValueError, match="deformable"):
        query_map(dat_record(), (3.0, 3.0))


@pytest.mark.parametrize("shift", [0, 1])
def test_query_map_swin_matches_dense_row(shift: int) -> None:
    rec = swin_record(3, shift)
    dense = rec.dense()
    for row in range(4):
        for col in range(4):
            q = query_map(rec, (row * 4 + 1.5, col * 4 + 2.5))
            assert q.query == (row, col)
            assert_allclose(q.values, dense[:, row * 4 + col].reshape(2, 4, 4))
            assert_allclose(q.padding_mass, [0.0, 0.0])
            assert q.stride == (4.0, 4.0)


def test_query_map_swin_shift_window_support() -> None:
    # with shift 1 the top-left query shares its window with the other three corners
    q = query_map(swin_record(3, 1), (0.0, 0.0))
    support = {tuple(map(int, p)) for p in np.argwhere(q.values[0] > 0)}
    assert support == {(0, 0), (0, 3), (3, 0), (3, 3)}
    unshifted = query_map(swin_record(3, 0), (0.0, 0.0))
    support = {tuple(map(int, p)) for p in np.argwhere(unshifted.values[0] > 0)}
    assert support == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_query_map_halo_finer_key_grid_and_padding() -> None:
    rec = halo_record()
    # pixel (20, 5): query row 1 (stride 16), col 0 -> query index 2, window 2
    q = query_map(rec, (20.0, 5.0))
    assert q.query == (1, 0) and q.query_index == 2
    assert q.values.shape == (2, 4, 4)
    assert q.stride == (8.0, 8.0)
    expected = np.zeros((2, 4, 4))
    padding = np.zeros(2)
    for k, r in enumerate(range(1, 5)):
        for m, c in enumerate(range(-1, 3)):
            value = rec.values[2, :, 0, k * 4 + m]
            if 0 <= r < 4 and 0 <= c < 4:
                expected[:, r, c] = value
            else:
                padding += value
    assert_allclose(q.values, expected, rtol=1e-6)
    assert_allclose(q.padding_mass, padding, rtol=1e-5)
    assert np.all(q.padding_mass > 0)
    assert_allclose(q.values.sum(axis=(1, 2)) + q.padding_mass, np.ones(2), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# head statistics


def test_head_statistics_self_uniform_and_right_neighbour() -> None:
    grid = (2, 3)
    n = 6
    self_only = np.eye(n)
    right = np.zeros((n, n))
    for i in range(2):
        for j in range(3):
            # one token to the right; the last column looks one token to the left (same distance)
            right[i * 3 + j, i * 3 + (j + 1 if j < 2 else j - 1)] = 1.0
    uniform = np.full((n, n), 1.0 / n)
    rec = token_record(np.stack([self_only, right, uniform]), grid, stride=(16.0, 8.0))
    stats = head_statistics([rec])
    assert stats.layers == (rec.layer,) and stats.blocks == (0,)
    assert_allclose(stats.distance[0][:2], [0.0, 8.0], atol=1e-9)
    assert_allclose(stats.entropy[0], [0.0, 0.0, np.log(6)], atol=1e-6)
    assert_allclose(stats.max_entropy, [np.log(6)])
    # uniform: mean over all token pairs of the centre distance
    ys, xs = np.divmod(np.arange(n), 3)
    d = np.hypot(16.0 * (ys[:, None] - ys[None]), 8.0 * (xs[:, None] - xs[None]))
    assert_allclose(stats.distance[0][2], d.mean(), rtol=1e-6)
    assert not stats.distance[0].flags.writeable


def test_head_statistics_prefix_counts_in_entropy_not_in_distance() -> None:
    # cls + 2x2 grid; head 0 uniform over all 5 tokens, head 1 puts half on cls and half on itself
    n = 5
    uniform = np.full((n, n), 0.2)
    half = 0.5 * np.eye(n)
    half[:, 0] += 0.5
    half[0] = [1.0, 0, 0, 0, 0]
    rec = token_record(np.stack([uniform, half]), (2, 2), ("cls",))
    stats = head_statistics([rec])
    assert_allclose(stats.entropy[0], [np.log(5), np.log(2)], atol=1e-6)
    assert_allclose(stats.max_entropy, [np.log(5)])
    # head 0: grid keys renormalised to uniform over 4; distances 0, 16, 16, 16*sqrt(2)
    assert_allclose(stats.distance[0], [(32 + 16 * np.sqrt(2)) / 4, 0.0], atol=1e-5)


def reference_stats(rec: TokenAttention | WindowAttention) -> tuple[np.ndarray, np.ndarray]:
    """Query-by-query loops over ``dense()``-free definitions."""
    if isinstance(rec, TokenAttention):
        p = rec.prefix_tokens
        rows = [(p + q, q) for q in range(rec.grid[0] * rec.grid[1])]
        dist, ent = np.zeros(rec.heads), np.zeros(rec.heads)
        for h in range(rec.heads):
            for row, q in rows:
                full = rec.values[h, row].astype(np.float64)
                ent[h] += -sum(v * np.log(v) for v in full if v > 0)
                g = full[p:] / full[p:].sum()
                qy, qx = divmod(q, rec.grid[1])
                for k, v in enumerate(g):
                    ky, kx = divmod(k, rec.grid[1])
                    dist[h] += v * np.hypot((qy - ky) * rec.stride[0], (qx - kx) * rec.stride[1])
        return dist / len(rows), ent / len(rows)
    dist, ent = np.zeros(rec.heads), np.zeros(rec.heads)
    count = 0
    for w in range(rec.values.shape[0]):
        for lq, q in enumerate(rec.query_index[w]):
            if q < 0:
                continue
            count += 1
            qy, qx = divmod(int(q), rec.grid[1])
            cq = ((qy + 0.5) * rec.stride[0] - 0.5, (qx + 0.5) * rec.stride[1] - 0.5)
            for h in range(rec.heads):
                row = rec.values[w, h, lq].astype(np.float64)
                ent[h] += -sum(v * np.log(v) for v in row if v > 0)
                valid = rec.key_index[w] >= 0
                total = row[valid].sum()
                for lk, k in enumerate(rec.key_index[w]):
                    if k < 0:
                        continue
                    ky, kx = divmod(int(k), rec.key_grid[1])
                    ck = ((ky + 0.5) * rec.key_stride[0] - 0.5, (kx + 0.5) * rec.key_stride[1] - 0.5)
                    dist[h] += row[lk] / total * np.hypot(cq[0] - ck[0], cq[1] - ck[1])
    return dist / count, ent / count


def test_head_statistics_matches_loops() -> None:
    records = [
        random_token_record(0, (3, 4), ("cls", "reg1"), stride=(8.0, 12.0)),
        random_token_record(1, (2, 3)),
        swin_record(2, 1),
        halo_record(),
    ]
    stats = head_statistics([*records, dat_record()])
    assert len(stats.layers) == 4
    for i, rec in enumerate(records):
        dist, ent = reference_stats(rec)
        assert_allclose(stats.distance[i], dist, rtol=1e-5)
        assert_allclose(stats.entropy[i], ent, rtol=1e-5)
    assert_allclose(stats.max_entropy, [np.log(14), np.log(6), np.log(4), np.log(16)])


def test_head_statistics_windows_by_hand() -> None:
    # Swin, uniform over each 2x2 window, stride 4: distances 0, 4, 4, 4*sqrt(2) for every query
    uniform = np.full((4, 1, 4, 4), 0.25, dtype=np.float32)
    stats = head_statistics([swin_record(0, 0, values=uniform)])
    assert_allclose(stats.distance[0], [(8 + 4 * np.sqrt(2)) / 4], rtol=1e-6)
    assert_allclose(stats.entropy[0], [np.log(4)], rtol=1e-6)
    # Halo: every query attends only to the top-left key of its own 2x2 block (key stride 8);
    # query centre (16i + 7.5, 16j + 7.5), key centre (16i + 3.5, 16j + 3.5): 4*sqrt(2) apart
    values = np.zeros((4, 1, 1, 16), dtype=np.float32)
    values[:, :, :, 5] = 1.0  # window keys are rows 2i-1..2i+2: (1, 1) of the 4x4 window is (2i, 2j)
    stats = head_statistics([halo_record(values=values)])
    assert_allclose(stats.distance[0], [4 * np.sqrt(2)], rtol=1e-6)
    assert_allclose(stats.entropy[0], [0.0], atol=1e-9)


def test_head_statistics_is_fast_on_vit_and_swin_sizes() -> None:
    vit = random_token_record(0, (14, 14), ("cls",), heads=12)
    swin = swin_record(1, 3, grid=56, window=7, heads=3)
    assert swin.values.shape == (64, 3, 49, 49)
    head_statistics([vit, swin])  # warm-up
    start = time.perf_counter()
    head_statistics([vit, swin])
    # about 20 ms on a laptop core; the bound only catches per-query Python loops
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------
# prefix attention


def test_prefix_attention_registers() -> None:
    names = ("cls", "reg1", "reg2", "reg3", "reg4")
    records = [random_token_record(s, (2, 2), names, layer=f"blocks.{s}.attn", block=s) for s in range(3)]
    out = prefix_attention((*records, swin_record(0, 0), dat_record()))
    assert out is not None
    assert out.names == names
    assert out.layers == ("blocks.0.attn", "blocks.1.attn", "blocks.2.attn")
    assert out.blocks == (0, 1, 2)
    assert out.values.shape == (3, 5)
    expected = np.stack([r.values[:, 0, :5].astype(np.float64).mean(axis=0) for r in records])
    assert_allclose(out.values, expected, rtol=1e-5)
    assert_allclose(out.values.sum(axis=1) + out.grid_mass, np.ones(3), rtol=1e-5)


def test_prefix_attention_distilled_and_none() -> None:
    rec = random_token_record(4, (2, 2), ("cls", "dist"))
    out = prefix_attention([rec])
    assert out is not None
    expected = rec.values[:, :2, :2].astype(np.float64).mean(axis=(0, 1))
    assert_allclose(out.values[0], expected, rtol=1e-5)
    assert_allclose(out.values.sum(axis=1) + out.grid_mass, [1.0], rtol=1e-5)
    assert prefix_attention([random_token_record(0, (2, 2)), swin_record(0, 1)]) is None
    with pytest.raises(ValueError, match="same prefix tokens"):
        prefix_attention([rec, random_token_record(5, (2, 2), ("cls",))])
