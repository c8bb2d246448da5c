"""Transformer outputs: the renderers of attnviz.render's "Transformer views", record_map for token and
window attention, the export bundle's transformer files and summary entry, and the CLI end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import make_image
from numpy.testing import assert_allclose
from PIL import Image

import attnviz
from attnviz.cli import main
from attnviz.core.records import Analysis, TokenAttention, WindowAttention
from attnviz.io.export import export_files
from attnviz.render import (
    head_grid_image,
    head_grid_margins,
    head_stats_figure,
    mark_point,
    overlay,
    prefix_attention_figure,
    query_figure,
)
from attnviz.views import transformer
from attnviz.views.maps import record_map

# --------------------------------------------------------------------------------------------------
# helpers


def _rgb(seed: int, size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _softmax_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(0, 2.0, shape)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    return img


def _strict_json(data: bytes) -> dict:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(data, parse_constant=refuse)


def _tile(grid: np.ndarray, row: int, col: int, tile: int, gap: int) -> np.ndarray:
    step = tile + gap
    return grid[row * step : row * step + tile, col * step : col * step + tile]


# --------------------------------------------------------------------------------------------------
# render: head_grid_image


RAGGED_TILE, RAGGED_GAP = 20, 3


@pytest.fixture(scope="module")
def ragged() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """A Swin-like pair of layers: 3 heads on a 4x4 grid, then 6 heads on a 2x2 grid."""
    rng = np.random.default_rng(0)
    image = _rgb(1, (40, 50))
    maps = [rng.random((3, 4, 4)).astype(np.float32), rng.random((6, 2, 2)).astype(np.float32)]
    out = np.asarray(head_grid_image(image, maps, tile=RAGGED_TILE, gap=RAGGED_GAP))
    return image, maps, out


def test_head_grid_image_size_is_layers_by_max_heads(ragged) -> None:
    _, _, out = ragged
    step = RAGGED_TILE + RAGGED_GAP
    # rows = layers, columns = the widest layer's heads
    assert out.shape == (2 * step - RAGGED_GAP, 6 * step - RAGGED_GAP, 3)
    assert out.dtype == np.uint8


def test_head_grid_image_default_tile_and_gap() -> None:
    maps = [np.ones((2, 3, 3)), np.ones((5, 3, 3)), np.ones((1, 3, 3))]
    img = head_grid_image(_rgb(2, (30, 30)), maps)
    assert img.mode == "RGB"
    assert img.size == (5 * 74 - 2, 3 * 74 - 2)  # PIL size is (width, height)


def test_head_grid_image_leaves_missing_heads_and_gaps_white(ragged) -> None:
    _, _, out = ragged
    for col in range(3, 6):  # layer 0 has only 3 heads
        assert (_tile(out, 0, col, RAGGED_TILE, RAGGED_GAP) == 255).all()
    for col in range(6):  # layer 1 has all 6: none of them is blank
        assert not (_tile(out, 1, col, RAGGED_TILE, RAGGED_GAP) == 255).all()
    step = RAGGED_TILE + RAGGED_GAP
    assert (out[RAGGED_TILE:step] == 255).all()  # the gap between the two rows
    for col in range(5):
        assert (out[:, col * step + RAGGED_TILE : (col + 1) * step] == 255).all()


@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 2), (1, 4)])
def test_head_grid_image_tile_is_the_overlay_of_the_thumbnail(ragged, row: int, col: int) -> None:
    image, maps, out = ragged
    thumb = Image.fromarray(image).resize((RAGGED_TILE, RAGGED_TILE), Image.Resampling.BILINEAR)
    expected = np.asarray(overlay(thumb, maps[row][col]))
    np.testing.assert_array_equal(_tile(out, row, col, RAGGED_TILE, RAGGED_GAP), expected)


def test_head_grid_image_passes_cmap_and_alpha() -> None:
    image = _rgb(3, (24, 24))
    heat = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    out = np.asarray(head_grid_image(image, [heat], cmap="viridis", alpha=1.0, tile=16, gap=0))
    thumb = Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(out, np.asarray(overlay(thumb, heat[0], cmap="viridis", alpha=1.0)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 15}, "tile must be an int in"),
        ({"tile": 513}, "tile must be an int in"),
        ({"tile": 32.0}, "tile must be an int in"),
        ({"gap": -1}, "gap must be an int in"),
        ({"gap": 17}, "gap must be an int in"),
        ({"maps": []}, "at least one layer"),
        ({"maps": [np.ones((4, 4))]}, r"maps\[0\] must be \[heads, h, w\]"),
        ({"maps": [np.ones((2, 3, 3)), np.ones((0, 3, 3))]}, r"maps\[1\] must be \[heads, h, w\]"),
    ],
    ids=["tile-small", "tile-big", "tile-float", "gap-negative", "gap-big", "no-layers", "2d", "no-heads"],
)
def test_head_grid_image_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"maps": [np.ones((2, 3, 3))], **kwargs}
    maps = args.pop("maps")
    with pytest.raises(ValueError, match=match):
        head_grid_image(_rgb(0, (16, 16)), maps, **args)


# --------------------------------------------------------------------------------------------------
# render: mark_point


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.argwhere((before != after).any(axis=-1))


def test_mark_point_draws_a_ring_around_the_point_only() -> None:
    image = np.full((40, 50, 3), 128, dtype=np.uint8)
    before = image.copy()
    marked = mark_point(image, (20.0, 30.0), radius=6)
    out = np.asarray(marked)
    assert isinstance(marked, Image.Image) and marked.mode == "RGB" and marked.size == (50, 40)
    np.testing.assert_array_equal(image, before)  # the input is not drawn on
    changed = _changed(image, out)
    assert len(changed)
    dist = np.hypot(changed[:, 0] - 20.0, changed[:, 1] - 30.0)
    assert dist.max() <= 6 + 2.0  # the black outline sits just outside the white ring
    assert dist.min() >= 6 - 2.5  # a ring, not a disk
    assert (out[20, 30] == 128).all()  # the point itself stays visible
    colours = {tuple(int(c) for c in out[y, x]) for y, x in changed}
    assert {(255, 255, 255), (0, 0, 0)} <= colours
    assert (out[:10] == 128).all() and (out[:, :20] == 128).all()  # far away untouched


def test_mark_point_default_radius_and_pil_input_unchanged() -> None:
    image = Image.fromarray(np.full((200, 300, 3), 90, dtype=np.uint8))
    before = np.asarray(image).copy()
    out = np.asarray(mark_point(image, (100, 150)))
    np.testing.assert_array_equal(np.asarray(image), before)
    changed = _changed(before, out)
    dist = np.hypot(changed[:, 0] - 100.0, changed[:, 1] - 150.0)
    radius = 0.03 * 200  # 3 % of the shorter side
    assert radius - 2.5 <= dist.min() and dist.max() <= radius + 2.0
    # a tiny image still gets the minimum radius of 3 px
    small = np.full((20, 20, 3), 90, dtype=np.uint8)
    dist_small = np.hypot(*(_changed(small, np.asarray(mark_point(small, (10, 10)))) - 10.0).T)
    assert dist_small.min() >= 3 - 2.5 and dist_small.max() <= 3 + 2.0


# --------------------------------------------------------------------------------------------------
# render: query_figure


def test_query_figure_markers_sit_on_token_centres() -> None:
    image = _rgb(4, (30, 48))
    fig = query_figure(image, (3, 4), (10.0, 12.0), title="pick a query")
    assert isinstance(fig, go.Figure)
    assert [type(t).__name__ for t in fig.data] == ["Image", "Scatter"]
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), image)
    tokens = fig.data[1]
    custom = np.asarray(tokens.customdata, dtype=np.float64)
    assert custom.shape == (12, 4)
    expected = [[i, j, (i + 0.5) * 10.0 - 0.5, (j + 0.5) * 12.0 - 0.5] for i in range(3) for j in range(4)]
    assert_allclose(custom, expected)
    assert_allclose(np.asarray(tokens.y), custom[:, 2])
    assert_allclose(np.asarray(tokens.x), custom[:, 3])
    assert fig.layout.title.text == "pick a query"
    # the axes cover the whole image, y pointing down
    assert tuple(fig.layout.xaxis.range) == (-0.5, 47.5)
    assert tuple(fig.layout.yaxis.range) == (29.5, -0.5)


def test_query_figure_ring_only_with_a_point() -> None:
    image = _rgb(5, (32, 32))
    fig = query_figure(image, (2, 2), (16, 16), (5.0, 27.0))
    assert len(fig.data) == 3
    ring = fig.data[2]
    assert ring.name == "query"
    assert list(ring.x) == [27.0] and list(ring.y) == [5.0]
    assert [t.name for t in query_figure(image, (2, 2), (16, 16)).data[1:]] == ["tokens"]


def test_query_figure_rejects_an_empty_grid() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        query_figure(_rgb(0, (8, 8)), (0, 3), (4, 4))


# --------------------------------------------------------------------------------------------------
# render: head_stats_figure and prefix_attention_figure


def test_head_stats_figure_one_dot_per_head() -> None:
    distance = [np.array([1.0, 2.0, 6.0]), np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])]
    entropy = [np.array([0.5, 1.0, 1.5]), np.array([2.0, 2.0, 3.0, 3.0, 4.0, 4.0])]
    fig = head_stats_figure(["stage0", "stage1"], distance, entropy)
    assert len(fig.data) == 4  # per panel: the heads' dots, the line through their means
    for k, series in enumerate((distance, entropy)):
        dots, means = fig.data[2 * k], fig.data[2 * k + 1]
        assert dots.mode == "markers" and means.mode == "lines"
        assert list(dots.x) == [0, 0, 0, 1, 1, 1, 1, 1, 1]
        assert_allclose(dots.y, np.concatenate(series))
        assert list(dots.customdata) == [0, 1, 2, 0, 1, 2, 3, 4, 5]
        assert_allclose(means.y, [np.mean(series[0]), np.mean(series[1])])
    assert fig.data[0].yaxis == "y" and fig.data[2].yaxis == "y2"  # distance on top, entropy below
    assert list(fig.layout.xaxis2.ticktext) == ["stage0", "stage1"]
    assert list(fig.layout.xaxis2.tickvals) == [0, 1]


def test_head_stats_figure_empty_and_mismatch() -> None:
    fig = head_stats_figure([], [], [])
    assert len(fig.data) == 0
    assert [a.text for a in fig.layout.annotations] == ["no self-attention layers"]
    with pytest.raises(ValueError, match="one entry per layer"):
        head_stats_figure(["a", "b"], [np.ones(3)], [np.ones(3), np.ones(3)])


def test_prefix_attention_figure_stacks_prefix_and_patches() -> None:
    values = np.array([[0.1, 0.2], [0.3, 0.05], [0.0, 0.5]])
    grid_mass = 1.0 - values.sum(axis=1)
    fig = prefix_attention_figure(("cls", "dist"), ["0", "1", "2"], values, grid_mass)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["cls", "dist", "patches"]
    assert all(isinstance(t, go.Bar) for t in fig.data)
    assert_allclose(fig.data[0].y, values[:, 0])
    assert_allclose(fig.data[1].y, values[:, 1])
    assert_allclose(fig.data[2].y, grid_mass)
    assert all(list(t.x) == ["0", "1", "2"] for t in fig.data)
    assert tuple(fig.layout.yaxis.range) == (0, 1)


@pytest.mark.parametrize(
    ("values", "grid_mass"),
    [
        (np.zeros((3, 1)), np.zeros(3)),  # one column for two names
        (np.zeros((2, 2)), np.zeros(3)),  # two rows for three layers
        (np.zeros((3, 2)), np.zeros(2)),  # grid mass of the wrong length
        (np.zeros(6), np.zeros(3)),  # not 2-D
    ],
)
def test_prefix_attention_figure_rejects_shape_mismatch(values: np.ndarray, grid_mass: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"values must be \[layers, prefix\] = \[3, 2\]"):
        prefix_attention_figure(("cls", "dist"), ["0", "1", "2"], values, grid_mass)


# --------------------------------------------------------------------------------------------------
# maps.record_map for self-attention


def _token(prefix: tuple[str, ...], grid: tuple[int, int] = (2, 3), heads: int = 3) -> TokenAttention:
    n = len(prefix) + grid[0] * grid[1]
    values = _softmax_rows(np.random.default_rng(len(prefix) + 7), (heads, n, n))
    return TokenAttention(
        "blocks.4.attn", "vit", values, grid, (16.0, 16.0), 4, len(prefix), None, True, prefix
    )


def test_record_map_distilled_is_mean_of_cls_and_dist_rows() -> None:
    rec = _token(("cls", "dist"))
    v = rec.values.astype(np.float64)
    expected = np.zeros((2, 3))
    for h in range(3):
        for k in range(6):
            expected[k // 3, k % 3] += (v[h, 0, 2 + k] + v[h, 1, 2 + k]) / 2 / 3
    amap = record_map(rec, (32, 48))
    assert amap is not None
    assert amap.values.shape == (2, 3)
    assert_allclose(amap.values, expected, rtol=1e-6)
    assert (amap.layer, amap.kind, amap.block) == ("blocks.4.attn", "vit", 4)
    assert amap.how.startswith("class-token attention to the patches (mean with the distillation token)")
    assert amap.how.endswith("mean over heads")


def test_record_map_cls_only_and_registers_read_row_zero_on_grid_columns() -> None:
    for prefix in (("cls",), ("cls", "reg1", "reg2")):
        rec = _token(prefix)
        p = len(prefix)
        v = rec.values.astype(np.float64)
        expected = np.mean([v[h, 0, p:] for h in range(3)], axis=0).reshape(2, 3)
        amap = record_map(rec, (32, 48))
        assert_allclose(amap.values, expected, rtol=1e-6)
        assert "distillation" not in amap.how and amap.how.startswith("class-token attention")
        # register columns are dropped, not renormalised away
        assert amap.values.sum() < 1.0 or p == 1


def test_record_map_without_prefix_is_the_column_mean() -> None:
    rec = _token(())
    v = rec.values.astype(np.float64)
    expected = np.zeros(6)
    for h in range(3):
        for q in range(6):
            expected += v[h, q] / (3 * 6)
    amap = record_map(rec, (32, 48))
    assert_allclose(amap.values, expected.reshape(2, 3), rtol=1e-6)
    assert_allclose(amap.values.sum(), 1.0, rtol=1e-5)  # rows sum to 1, so the column mean does too
    assert amap.how == "attention received per position, mean over queries, mean over heads"


def _windows() -> WindowAttention:
    """A 2x3 grid cut into 2x2 windows: the right window's last column is padding (-1)."""
    query_index = np.array([[0, 1, 3, 4], [2, -1, 5, -1]])
    values = _softmax_rows(np.random.default_rng(3), (2, 2, 4, 4))
    return WindowAttention(
        layer="layers.0.blocks.0.attn",
        kind="swin",
        values=values,
        query_index=query_index,
        key_index=query_index,
        grid=(2, 3),
        stride=(4.0, 4.0),
        key_grid=(2, 3),
        key_stride=(4.0, 4.0),
        window=(2, 2),
        shift=(0, 0),
        block=0,
        untrained=True,
    )


def test_record_map_windows_is_the_head_mean_of_attention_received() -> None:
    rec = _windows()
    # independent: each key's attention from every valid query, over the 6 valid queries
    received = np.zeros((2, 6))
    for w in range(2):
        for qpos, q in enumerate(rec.query_index[w]):
            if q < 0:
                continue
            for kpos, k in enumerate(rec.key_index[w]):
                if k >= 0:
                    received[:, k] += rec.values[w, :, qpos, kpos]
    received /= 6
    amap = record_map(rec, (8, 12))
    assert amap.values.shape == (2, 3)
    assert_allclose(amap.values, received.mean(axis=0).reshape(2, 3), rtol=1e-5)
    assert_allclose(amap.values, rec.received().mean(axis=0).reshape(2, 3), rtol=1e-6)
    assert amap.how == "attention received per position, mean over queries, mean over heads"


def test_record_map_skips_deformable_token_attention() -> None:
    values = _softmax_rows(np.random.default_rng(0), (2, 16, 4))
    rec = TokenAttention("stages.2.attn", "dat", values, (4, 4), (16.0, 16.0), 3, key_grid=(2, 2))
    assert record_map(rec, (64, 64)) is None


# --------------------------------------------------------------------------------------------------
# export: real random-weight models, one bundle (slow)

IMAGE = "img.png"
DISTILLED = "deit_tiny_distilled_patch16_224"
SWIN = "swin_t"
CNN = "mobilenet_v3_large"
DINO = "vit_small_patch16_224.dino"
DEFAULT_TILE, DEFAULT_GAP = 72, 2  # head_grid_image's defaults, used by _transformer_views


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    image = make_image(7, (64, 80))
    out = {}
    for name in (DISTILLED, SWIN, CNN, DINO):
        model = attnviz.load_model(name, weights="random", device="cpu")
        out[name] = attnviz.analyze(model, [image])[0]
    return out


@pytest.fixture(scope="module")
def bundle(analyses: dict[str, Analysis]) -> dict[str, bytes]:
    return export_files([(IMAGE, a) for a in analyses.values()])


@pytest.fixture(scope="module")
def results(bundle: dict[str, bytes]) -> dict[str, dict]:
    summary = _strict_json(bundle["summary.json"])
    return {r["model"]: r for r in summary["results"]}


def _folder(model: str) -> str:
    return f"img/{model}"


@pytest.mark.slow
def test_export_distilled_files(analyses: dict[str, Analysis], bundle: dict[str, bytes], results) -> None:
    folder = _folder(DISTILLED)
    files = results[DISTILLED]["files"]
    for key, name in (
        ("head_grid", "head_grid.png"),
        ("head_stats", "head_stats.html"),
        ("rollout", "rollout.png"),
        ("prefix_attention", "prefix_attention.html"),
    ):
        assert files[key] == f"{folder}/{name}"
        assert files[key] in bundle
    for key in ("head_stats", "prefix_attention"):
        html = bundle[files[key]].decode("utf-8")
        assert 'src="../../plotly.min.js"' in html
    with _png(bundle[files["head_grid"]]) as img:
        step = DEFAULT_TILE + DEFAULT_GAP
        # the grid, then its colour bar strip underneath
        assert img.width == 3 * step - DEFAULT_GAP and img.height > 12 * step - DEFAULT_GAP + 20
    picture = analyses[DISTILLED].input_image
    roll = transformer.rollout(analyses[DISTILLED]).values
    scale = results[DISTILLED]["transformer"]["rollout"]["scale"]
    assert (scale["min"], scale["max"]) == (0.0, pytest.approx(float(roll.max())))
    with _png(bundle[files["rollout"]]) as img:
        assert img.width == picture.shape[1] == 224 and img.height > 224 + 20
        expected = overlay(picture, roll, value_range=(0.0, scale["max"]))
        np.testing.assert_array_equal(np.asarray(img)[:224], np.asarray(expected))


@pytest.mark.slow
def test_export_head_grid_tile_is_the_class_and_dist_rows(
    analyses: dict[str, Analysis], bundle, results
) -> None:
    analysis = analyses[DISTILLED]
    layer, head = 5, 1
    rec = analysis.token_attention[layer]
    assert rec.prefix_names == ("cls", "dist") and rec.grid == (14, 14)
    v = rec.values.astype(np.float64)
    summary = ((v[head, 0, 2:] + v[head, 1, 2:]) / 2).reshape(14, 14).astype(np.float32)
    thumb = Image.fromarray(analysis.input_image).resize(
        (DEFAULT_TILE, DEFAULT_TILE), Image.Resampling.BILINEAR
    )
    # every tile on one absolute scale: 0 to the largest attention of the whole grid
    top = max(float(((r.values[:, 0, 2:] + r.values[:, 1, 2:]) / 2).max()) for r in analysis.token_attention)
    scale = results[DISTILLED]["transformer"]["head_grid"]["scale"]
    assert scale["min"] == 0.0 and scale["max"] == pytest.approx(top, rel=1e-5)
    expected = np.asarray(overlay(thumb, summary, value_range=(0.0, scale["max"]))).astype(int)
    grid = np.asarray(_png(bundle[f"{_folder(DISTILLED)}/head_grid.png"]).convert("RGB"))
    got = _tile(grid, layer, head, DEFAULT_TILE, DEFAULT_GAP).astype(int)
    assert np.abs(got - expected).max() <= 1  # float rounding of the map at most


@pytest.mark.slow
def test_export_distilled_summary(analyses: dict[str, Analysis], results) -> None:
    analysis = analyses[DISTILLED]
    tokens = analysis.token_attention
    t = results[DISTILLED]["transformer"]
    assert "files" not in t  # the files go to the result's "files"
    assert t["layers"] == [r.layer for r in tokens] and len(t["layers"]) == 12
    assert t["heads"] == [3] * 12
    assert t["head_grid"]["rows"] == "layers" and t["head_grid"]["columns"] == "heads"
    assert "cls and dist" in t["head_grid"]["how"]
    # 2 prefix tokens + 14 x 14 patches: the entropy of a uniform row is log 198
    assert_allclose(t["max_entropy_nats"], [math.log(198)] * 12, rtol=1e-6)
    stats = transformer.head_statistics(analysis)
    for k in range(12):
        assert len(t["head_distance_px"][k]) == len(t["head_entropy_nats"][k]) == 3
        assert_allclose(t["head_distance_px"][k], stats.distance[k], rtol=1e-6)
        assert_allclose(t["head_entropy_nats"][k], stats.entropy[k], rtol=1e-6)
        assert all(0 < e <= math.log(198) + 1e-6 for e in t["head_entropy_nats"][k])
        assert all(0 < d < 224 * math.sqrt(2) for d in t["head_distance_px"][k])
    roll = t["rollout"]
    assert roll["rows"] == [0, 1]
    assert set(roll["prefix_mass"]) == {"cls", "dist"}
    assert all(0 <= m <= 1 for m in roll["prefix_mass"].values())
    assert "mean of rows 0 (cls), 1 (dist)" in roll["how"]
    prefix = t["prefix_attention"]
    assert prefix["names"] == ["cls", "dist"]
    values, grid_mass = np.array(prefix["values"]), np.array(prefix["grid_mass"])
    assert values.shape == (12, 2) and grid_mass.shape == (12,)
    assert_allclose(values.sum(axis=1) + grid_mass, 1.0, atol=1e-5)
    for k in (0, 11):  # independent: rows 0 and 1, mean over heads and rows
        v = tokens[k].values.astype(np.float64)[:, :2]
        assert_allclose(values[k], v[:, :, :2].mean(axis=(0, 1)), rtol=1e-5)
        assert_allclose(grid_mass[k], v[:, :, 2:].sum(axis=-1).mean(), rtol=1e-5)


@pytest.mark.slow
def test_export_token_records_have_overlays(analyses: dict[str, Analysis], bundle, results) -> None:
    entries = [e for e in results[DISTILLED]["records"] if e["type"] == "TokenAttention"]
    assert len(entries) == 12
    picture = analyses[DISTILLED].input_image
    for entry, rec in zip(entries, analyses[DISTILLED].token_attention, strict=True):
        assert entry["layer"] == rec.layer
        assert entry["file"].startswith(_folder(DISTILLED) + "/") and entry["file"].endswith(".png")
        assert "mean with the distillation token" in entry["map"]
        with _png(bundle[entry["file"]]) as img:
            assert img.width == 224 and img.height > 224 + 20  # the overlay, then its colour bar
        assert entry["scale"]["quantity"] == "attention probability" and entry["scale"]["min"] == 0.0
    # the first overlay is record_map's map (the class/dist mean, head mean) over the input
    rec = analyses[DISTILLED].token_attention[0]
    amap = record_map(rec, picture.shape[:2])
    v = rec.values.astype(np.float64)
    assert_allclose(amap.values, ((v[:, 0, 2:] + v[:, 1, 2:]) / 2).mean(axis=0).reshape(14, 14), rtol=1e-5)
    got = np.asarray(_png(bundle[entries[0]["file"]]).convert("RGB"))[:224]
    top = float(amap.values.max())
    assert entries[0]["scale"]["max"] == pytest.approx(top) and entries[0]["map_range"][1] == pytest.approx(
        top
    )
    np.testing.assert_array_equal(got, np.asarray(overlay(picture, amap.values, value_range=(0.0, top))))
    assert len({e["file"] for e in entries}) == 12


@pytest.mark.slow
def test_export_swin_has_grid_but_no_rollout_or_prefix(bundle: dict[str, bytes], results) -> None:
    folder = _folder(SWIN)
    result = results[SWIN]
    t = result["transformer"]
    heads = [3, 3, 6, 6, *[12] * 6, 24, 24]
    assert t["heads"] == heads
    assert len(t["layers"]) == 12 and all(
        len(d) == h for d, h in zip(t["head_distance_px"], heads, strict=True)
    )
    assert_allclose(t["max_entropy_nats"], [math.log(49)] * 12, rtol=1e-6)  # 7x7 windows
    assert "rollout" not in t and "prefix_attention" not in t
    assert "rollout" not in result["files"] and "prefix_attention" not in result["files"]
    assert f"{folder}/rollout.png" not in bundle
    assert f"{folder}/prefix_attention.html" not in bundle
    assert result["files"]["head_stats"] == f"{folder}/head_stats.html" in bundle
    grid = np.asarray(_png(bundle[f"{folder}/head_grid.png"]).convert("RGB"))
    step = DEFAULT_TILE + DEFAULT_GAP
    assert grid.shape[1:] == (24 * step - DEFAULT_GAP, 3) and grid.shape[0] > 12 * step  # and the colour bar
    grid = grid[: 12 * step - DEFAULT_GAP]
    for layer, n in enumerate(heads):  # tiles past a layer's heads are white, the others are not
        assert not (_tile(grid, layer, n - 1, DEFAULT_TILE, DEFAULT_GAP) == 255).all()
        if n < 24:
            assert (grid[layer * step : layer * step + DEFAULT_TILE, n * step :] == 255).all()
    windows = [e for e in result["records"] if e["type"] == "WindowAttention"]
    assert len(windows) == 12
    assert all(
        e["map"].startswith("attention received per position") and e["file"] in bundle for e in windows
    )


@pytest.mark.slow
def test_export_cnn_has_no_transformer_views(bundle: dict[str, bytes], results) -> None:
    result = results[CNN]
    assert "transformer" not in result
    assert not {"head_grid", "head_stats", "rollout", "prefix_attention"} & set(result["files"])
    names = {p.rsplit("/", 1)[1] for p in bundle if p.startswith(_folder(CNN) + "/")}
    assert "gradcam.png" in names
    assert not {"head_grid.png", "head_stats.html", "rollout.png", "prefix_attention.html"} & names


@pytest.mark.slow
def test_export_dino_without_classifier(bundle: dict[str, bytes], results) -> None:
    folder = _folder(DINO)
    result = results[DINO]
    assert result["top5"] == []
    assert "gradcam" not in result["files"] and f"{folder}/gradcam.png" not in bundle
    assert all(e["type"] != "GradCAM" for e in result["records"])
    t = result["transformer"]
    assert t["heads"] == [6] * 12
    assert t["rollout"]["rows"] == [0] and list(t["rollout"]["prefix_mass"]) == ["cls"]
    assert t["prefix_attention"]["names"] == ["cls"]
    for key in ("head_grid", "head_stats", "rollout", "prefix_attention"):
        assert result["files"][key] in bundle
    with _png(bundle[f"{folder}/head_grid.png"]) as img:
        assert img.width == 6 * 74 - 2 and img.height > 12 * 74 - 2 + 20  # the grid and its colour bar


# --------------------------------------------------------------------------------------------------
# CLI (slow)


@pytest.mark.slow
def test_cli_analyze_transformers_and_zoo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "in.png"
    make_image(9, (50, 70)).save(png)
    out = tmp_path / "out"
    models = ["deit_tiny_patch16_224", "zoo_cbam", DINO]
    args = ["analyze", str(png), *[a for m in models for a in ("--model", m)]]
    rc = main([*args, "-v", "--weights", "random", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Traceback" not in captured.err

    summary = _strict_json((out / "summary.json").read_bytes())
    by_model = {r["model"]: r for r in summary["results"]}
    assert list(by_model) == models
    deit = out / "in" / "deit_tiny_patch16_224"
    for name in ("head_grid.png", "head_stats.html", "rollout.png", "prefix_attention.html", "gradcam.png"):
        assert (deit / name).is_file(), name
    assert by_model["deit_tiny_patch16_224"]["transformer"]["rollout"]["rows"] == [0]
    zoo = out / "in" / "zoo_cbam"
    assert (zoo / "input.png").is_file() and (zoo / "gradcam.png").is_file()
    assert not (zoo / "head_grid.png").exists() and "transformer" not in by_model["zoo_cbam"]
    dino = out / "in" / DINO
    assert (dino / "head_grid.png").is_file() and not (dino / "gradcam.png").exists()

    lines = captured.out.splitlines()
    assert len(lines) == 2 * len(models) + 1  # a header and one image line per model, then the total
    for k, model in enumerate(models):
        header, line = lines[2 * k], lines[2 * k + 1]
        assert header == f"{model} (random weights, UNTRAINED)"
        records = len(by_model[model]["records"])
        assert line.startswith(f"  {png}: top-1 ")
        assert line.endswith(f", {records} records -> {out / 'in' / model}/")
    dino_line = lines[2 * models.index(DINO) + 1]
    assert f"top-1 no prediction, {len(by_model[DINO]['records'])} records" in dino_line
    assert "no prediction" not in lines[1] and "%)" in lines[1]  # deit has a top-1 with a probability
    written = [p for p in out.rglob("*") if p.is_file()]
    assert lines[-1] == f"Wrote {len(written)} files to {out} (see {out / 'summary.json'})."


def test_head_grid_labels_add_margins_and_keep_the_tiles() -> None:
    img = np.full((32, 32, 3), 128, np.uint8)
    maps = [np.random.default_rng(0).random((2, 4, 4)) for _ in range(3)]
    plain = np.asarray(head_grid_image(img, maps, tile=20, gap=2))
    labelled = np.asarray(head_grid_image(img, maps, tile=20, gap=2, labels=True))
    left, top = head_grid_margins(len(maps))
    assert top >= 13 + 4 and left >= 13  # room for 13 px labels
    assert labelled.shape == (plain.shape[0] + top, plain.shape[1] + left, 3)
    np.testing.assert_array_equal(labelled[top:, left:], plain)  # the tiles are where they were
    assert (labelled[:top] < 255).any() and (labelled[top:, :left] < 255).any()  # text in both margins
