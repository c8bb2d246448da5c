"""Tests of attnviz.render: overlay values against matplotlib, gate statistics, plotly builders."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from attnviz.core.records import ChannelWeights, Prediction
from attnviz.render import (
    EMPTY_CHANNEL_MESSAGE,
    PLOTLYJS_FILENAME,
    block_channel_heatmap,
    channel_bar,
    figure_to_html,
    gate_stats,
    gate_stats_figure,
    heat_to_rgb,
    overlay,
    to_png_bytes,
    top5_bar,
    write_plotlyjs,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _cmap_rgb(name: str, v: float) -> np.ndarray:
    """Colour of value v straight from matplotlib, as uint8 like the renderer."""
    return np.rint(np.asarray(matplotlib.colormaps[name](v))[:3] * 255.0).astype(np.uint8)


def _blend(image: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * colour.astype(np.float64)
    return np.rint(out).astype(np.uint8)


def _bilinear_reference(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Independent bilinear resize with pixel-centre alignment (torch align_corners=False)."""
    h, w = arr.shape

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    top = arr[y0][:, x0] * (1 - fx) + arr[y0][:, x1] * fx
    bottom = arr[y1][:, x0] * (1 - fx) + arr[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


# ---------------------------------------------------------------------------------------------- overlay


@pytest.mark.parametrize("cmap", ["jet", "viridis", "magma"])
@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_overlay_single_hot_cell_gets_top_colour_there_and_bottom_colour_elsewhere(
    cmap: str, alpha: float, rng: np.random.Generator
) -> None:
    # 33 pixels per cell (odd), so the centre pixel of each cell samples that cell exactly.
    heat = np.zeros((7, 7))
    heat[3, 3] = 5.0
    image = rng.integers(0, 256, size=(231, 231, 3), dtype=np.uint8)
    out = np.asarray(overlay(image, heat, cmap=cmap, alpha=alpha))
    hot, cold = 3 * 33 + 16, 16
    np.testing.assert_array_equal(out[hot, hot], _blend(image[hot, hot], _cmap_rgb(cmap, 1.0), alpha))
    np.testing.assert_array_equal(out[cold, cold], _blend(image[cold, cold], _cmap_rgb(cmap, 0.0), alpha))
    # Far from the hot cell (beyond one cell of interpolation) everything is the bottom colour.
    expected_cold = _blend(image[:60, :60], np.broadcast_to(_cmap_rgb(cmap, 0.0), (60, 60, 3)), alpha)
    np.testing.assert_array_equal(out[:60, :60], expected_cold)


def test_overlay_alpha_zero_returns_the_image_unchanged(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    out = overlay(image, rng.random((4, 4)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), image)


def test_overlay_alpha_one_returns_the_pure_colormap_image(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    heat = rng.random((32, 32))
    out = np.asarray(overlay(image, heat, cmap="viridis", alpha=1.0))
    norm = (heat - heat.min()) / (heat.max() - heat.min())
    expected = np.rint(matplotlib.colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, heat_to_rgb(heat, cmap="viridis"))


def test_overlay_upsampling_is_bilinear_with_aligned_pixel_centres(rng: np.random.Generator) -> None:
    heat = rng.random((5, 6))
    image = np.zeros((37, 53, 3), dtype=np.uint8)
    out = np.asarray(overlay(image, heat, cmap="gray", alpha=1.0, normalize=False)).astype(int)
    ref = _bilinear_reference(heat, 37, 53)
    expected = np.rint(matplotlib.colormaps["gray"](ref)[..., :3] * 255).astype(int)
    # float32 resampling may move a value across one of the colormap's 256 bins: at most 1 level.
    assert np.abs(out - expected).max() <= 1
    assert np.mean(out == expected) > 0.95


@pytest.mark.parametrize(("heat_shape", "image_hw"), [((7, 7), (224, 224)), ((5, 3), (120, 200))])
def test_overlay_is_rgb_and_image_sized_for_any_heat_size(
    heat_shape: tuple[int, int], image_hw: tuple[int, int], rng: np.random.Generator
) -> None:
    h, w = image_hw
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    out = overlay(image, rng.random(heat_shape))
    assert isinstance(out, Image.Image)
    assert out.mode == "RGB"
    assert out.size == (w, h)


def test_overlay_hot_region_lands_on_the_hot_cell_for_non_integer_scale() -> None:
    heat = np.zeros((7, 7))
    heat[2, 5] = 1.0
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    out = np.asarray(overlay(image, heat, cmap="gray", alpha=1.0))[..., 0]
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert 2 * 32 <= y < 3 * 32
    assert 5 * 32 <= x < 6 * 32


def test_overlay_accepts_pil_images_of_any_mode(rng: np.random.Generator) -> None:
    grey = Image.fromarray(rng.integers(0, 256, size=(40, 30), dtype=np.uint8), mode="L")
    out = overlay(grey, rng.random((3, 3)), alpha=0.0)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(grey.convert("RGB")))


def test_overlay_constant_heat_gives_bottom_colour_and_no_nan() -> None:
    image = np.full((20, 20, 3), 128, dtype=np.uint8)
    out = np.asarray(overlay(image, np.full((4, 4), 3.0), cmap="jet", alpha=1.0))
    np.testing.assert_array_equal(out, np.broadcast_to(_cmap_rgb("jet", 0.0), out.shape))
    rgb = heat_to_rgb(np.full((4, 4), 3.0), cmap="jet")
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.broadcast_to(_cmap_rgb("jet", 0.0), rgb.shape))


def test_overlay_nan_heat_is_treated_as_zero_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    heat = np.array([[np.nan, 1.0], [0.5, 0.0]])
    with caplog.at_level(logging.WARNING, logger="attnviz.render"):
        out = np.asarray(overlay(image, heat, alpha=1.0))
    assert "non-finite" in caplog.text
    expected = np.asarray(overlay(image, np.nan_to_num(heat, nan=0.0), alpha=1.0))
    np.testing.assert_array_equal(out, expected)


def test_overlay_normalize_false_clips_to_unit_interval() -> None:
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    out = np.asarray(
        overlay(image, np.array([[-3.0, 0.0], [1.0, 9.0]]), cmap="viridis", alpha=1.0, normalize=False)
    )
    np.testing.assert_array_equal(out[0, 0], _cmap_rgb("viridis", 0.0))
    np.testing.assert_array_equal(out[1, 1], _cmap_rgb("viridis", 1.0))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_overlay_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros((2, 2)), alpha=alpha)


def test_overlay_rejects_non_numeric_alpha() -> None:
    with pytest.raises(TypeError, match="alpha must be a number"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros((2, 2)), alpha="0.5")  # type: ignore[arg-type]


def test_overlay_rejects_unknown_colormap_by_name() -> None:
    with pytest.raises(ValueError, match="unknown colormap 'not_a_cmap'"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros((2, 2)), cmap="not_a_cmap")


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), ()])
def test_overlay_rejects_heat_that_is_not_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="heat must be a 2-D array"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros(shape))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (4, 4, 1)])
def test_overlay_rejects_image_that_is_not_3_channel(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"image must be an RGB array \[H, W, 3\]"):
        overlay(np.zeros(shape, dtype=np.uint8), np.zeros((2, 2)))


def test_overlay_rejects_non_uint8_or_non_image_input() -> None:
    with pytest.raises(TypeError, match="image array must be uint8"):
        overlay(np.zeros((4, 4, 3), dtype=np.float32), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="image must be a PIL image or a numpy array"):
        overlay([[0, 0, 0]], np.zeros((2, 2)))  # type: ignore[arg-type]


def test_to_png_bytes_round_trips(rng: np.random.Generator) -> None:
    img = Image.fromarray(rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8), mode="RGB")
    data = to_png_bytes(img)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(img))
    with pytest.raises(TypeError, match="PIL image"):
        to_png_bytes(np.zeros((2, 2, 3), dtype=np.uint8))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- gate_stats


def _cw(values: np.ndarray, block: int = 0, layer: str = "layer1.0.se", **kw: object) -> ChannelWeights:
    kind = kw.pop("kind", "sk" if np.ndim(values) == 2 else "se")
    return ChannelWeights(layer=layer, kind=kind, values=np.asarray(values), block=block, **kw)  # type: ignore[arg-type]


def test_gate_stats_uniform_gates_have_entropy_one() -> None:
    stats = gate_stats(_cw(np.full(64, 0.7)))
    assert stats["entropy"] == pytest.approx(1.0)
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(0.0)


def test_gate_stats_one_hot_gates_have_entropy_near_zero() -> None:
    v = np.full(64, 1e-9)
    v[7] = 1.0
    assert gate_stats(_cw(v))["entropy"] < 0.01
    exact = np.zeros(64)
    exact[3] = 1.0
    assert gate_stats(_cw(exact))["entropy"] == pytest.approx(0.0, abs=1e-12)


def test_gate_stats_multipath_uniform_is_one_and_one_path_is_zero() -> None:
    assert gate_stats(_cw(np.full((3, 16), 1 / 3)))["entropy"] == pytest.approx(1.0)
    picked = np.zeros((2, 16))
    picked[0, ::2] = 1.0
    picked[1, 1::2] = 1.0
    assert gate_stats(_cw(picked))["entropy"] == pytest.approx(0.0, abs=1e-12)


def test_gate_stats_match_numpy_recomputation(rng: np.random.Generator) -> None:
    v = rng.random(48)
    stats = gate_stats(_cw(v))
    p = v / v.sum()
    assert stats["entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(48))
    assert stats["mean"] == pytest.approx(v.mean())
    assert stats["std"] == pytest.approx(v.std())
    assert stats["min"] == pytest.approx(v.min())
    assert stats["max"] == pytest.approx(v.max())
    assert set(stats) == {"mean", "std", "min", "max", "entropy"}
    assert all(isinstance(x, float) for x in stats.values())

    logits = rng.normal(size=(3, 20))
    w = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    per_channel = -(w * np.log(w)).sum(axis=0) / np.log(3)
    assert gate_stats(_cw(w))["entropy"] == pytest.approx(per_channel.mean())
    assert 0.0 <= gate_stats(_cw(w))["entropy"] <= 1.0


def test_gate_stats_entropy_is_nan_for_negative_values() -> None:
    assert math.isnan(gate_stats(_cw(np.array([-0.5, 0.2, 0.3]), kind="gc_add"))["entropy"])


def test_gate_stats_rejects_other_records() -> None:
    with pytest.raises(TypeError, match="ChannelWeights"):
        gate_stats(np.ones(3))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- builders


def _annotation_texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_block_channel_heatmap_pads_with_nan_and_keeps_values(rng: np.random.Generator) -> None:
    a = rng.random(4)
    b = rng.random(8)
    sk = rng.random((2, 6))
    sk = sk / sk.sum(axis=0)
    recs = [
        _cw(a, block=0, layer="layer1.0.se"),
        _cw(b, block=1, layer="layer2.0.se"),
        _cw(sk, block=2, layer="layer3.0.sk", path_labels=("3x3", "5x5")),
    ]
    fig = block_channel_heatmap(recs)
    (trace,) = fig.data
    z = np.asarray(trace.z, dtype=float)
    assert z.shape == (3, 8)
    np.testing.assert_allclose(z[0, :4], a)
    assert np.isnan(z[0, 4:]).all()
    np.testing.assert_allclose(z[1], b)
    np.testing.assert_allclose(z[2, :6], sk[0])
    assert np.isnan(z[2, 6:]).all()
    # short row labels (the narrow column keeps its width for the cells); the layer is in the hover
    assert list(trace.y) == ["block 0", "block 1", "block 2"]
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    assert "path-0" in trace.colorbar.title.text
    assert trace.customdata[2][0][0] == "weight of 3x3" and trace.customdata[2][0][1] == "2: layer3.0.sk"
    assert trace.customdata[0][0][0] == "gate" and trace.customdata[0][0][1] == "0: layer1.0.se"


def test_channel_bar_sorted_is_descending_and_keeps_real_indices() -> None:
    v = np.array([0.2, 0.9, 0.1, 0.5, 0.7])
    fig = channel_bar(_cw(v, kind="eca", layer="layer2.1.eca"), sort=True)
    (trace,) = fig.data
    assert list(trace.x) == ["1", "4", "3", "0", "2"]
    np.testing.assert_allclose(trace.y, [0.9, 0.7, 0.5, 0.2, 0.1])
    assert fig.layout.xaxis.type == "category"
    assert list(fig.layout.xaxis.categoryarray) == ["1", "4", "3", "0", "2"]
    assert "layer2.1.eca" in fig.layout.title.text
    assert "(eca)" in fig.layout.title.text
    assert tuple(fig.layout.yaxis.range) == (0.0, 1.0)


def test_channel_bar_unsorted_and_top_k() -> None:
    v = np.array([0.2, 0.9, 0.1, 0.5, 0.7])
    fig = channel_bar(_cw(v))
    assert list(fig.data[0].x) == ["0", "1", "2", "3", "4"]
    np.testing.assert_allclose(fig.data[0].y, v)
    top = channel_bar(_cw(v), top=3)
    assert list(top.data[0].x) == ["1", "3", "4"]
    top_sorted = channel_bar(_cw(v), sort=True, top=2)
    assert list(top_sorted.data[0].x) == ["1", "4"]
    with pytest.raises(ValueError, match="top must be >= 1"):
        channel_bar(_cw(v), top=0)


def test_channel_bar_out_of_unit_range_has_free_y_axis() -> None:
    fig = channel_bar(_cw(np.array([-1.0, 2.0]), kind="gc_add"))
    assert fig.layout.yaxis.range is None


def test_channel_bar_multipath_is_stacked_per_path() -> None:
    w = np.array([[0.8, 0.3, 0.6], [0.2, 0.7, 0.4]])
    fig = channel_bar(_cw(w, path_labels=("3x3", "5x5")), sort=True)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["3x3", "5x5"]
    assert list(fig.data[0].x) == ["0", "2", "1"]
    np.testing.assert_allclose(fig.data[1].y, [0.2, 0.4, 0.7])
    unlabeled = channel_bar(_cw(w))
    assert [t.name for t in unlabeled.data] == ["path 0", "path 1"]


def test_gate_stats_figure_has_mean_std_entropy_per_block(rng: np.random.Generator) -> None:
    recs = [_cw(rng.random(8), block=i, layer=f"layer{i}.se") for i in range(3)]
    fig = gate_stats_figure(recs)
    assert [t.name for t in fig.data] == ["mean", "std", "normalised entropy"]
    assert all(t.mode == "lines+markers" for t in fig.data)
    assert list(fig.data[0].x) == ["0: layer0.se", "1: layer1.se", "2: layer2.se"]
    assert list(fig.layout.xaxis.ticktext) == ["0", "1", "2"]  # short ticks, the layer in the hover
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # under the plot, not over it
    np.testing.assert_allclose(fig.data[0].y, [r.values.mean() for r in recs])
    np.testing.assert_allclose(fig.data[2].y, [gate_stats(r)["entropy"] for r in recs])


def test_top5_bar_puts_most_probable_on_top() -> None:
    preds = [
        Prediction(517, "crane", 0.1),
        Prediction(1, "goldfish", 0.6),
        Prediction(134, "crane", 0.2),
        Prediction(2, "shark", 0.05),
        Prediction(3, "ray", 0.05),
    ]
    fig = top5_bar(preds, title="Top-5 (resnet)")
    (trace,) = fig.data
    assert trace.orientation == "h"
    np.testing.assert_allclose(trace.x, [0.6, 0.2, 0.1, 0.05, 0.05])
    assert list(fig.layout.yaxis.ticktext) == ["goldfish", "crane", "crane", "shark", "ray"]
    assert fig.layout.yaxis.autorange == "reversed"  # rank 0 drawn at the top
    assert list(trace.text) == ["60.0%", "20.0%", "10.0%", "5.0%", "5.0%"]
    assert fig.layout.title.text == "Top-5 (resnet)"


def test_top5_bar_cuts_long_labels_and_keeps_them_in_the_hover() -> None:
    preds = [Prediction(0, "Chesapeake Bay retriever", 0.7), Prediction(1, "tench", 0.3)]
    fig = top5_bar(preds, label_chars=12)
    assert list(fig.layout.yaxis.ticktext) == ["Chesapeake…", "tench"]
    assert [c[0] for c in fig.data[0].customdata] == ["Chesapeake Bay retriever", "tench"]


@pytest.mark.parametrize("builder", [block_channel_heatmap, gate_stats_figure])
def test_empty_input_gives_annotation_not_exception(builder: object) -> None:
    fig = builder([])  # type: ignore[operator]
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert EMPTY_CHANNEL_MESSAGE in _annotation_texts(fig)
    assert _annotation_texts(top5_bar([])) == ["no predictions"]


def test_builders_reject_wrong_record_types() -> None:
    with pytest.raises(TypeError, match=r"records\[0\] must be a ChannelWeights"):
        block_channel_heatmap([np.ones(3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single record"):
        gate_stats_figure(_cw(np.ones(3)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- export


def test_figure_to_html_contains_plot_div_and_js_source() -> None:
    fig = channel_bar(_cw(np.array([0.1, 0.2])))
    html = figure_to_html(fig)
    assert html.lstrip().lower().startswith("<html")
    assert 'class="plotly-graph-div"' in html
    assert "cdn.plot.ly" in html
    local = figure_to_html(fig, plotlyjs=PLOTLYJS_FILENAME)
    assert f'src="{PLOTLYJS_FILENAME}"' in local
    assert "cdn.plot.ly" not in local
    inline = figure_to_html(fig, plotlyjs="inline")
    assert len(inline) > 1_000_000
    assert 'class="plotly-graph-div"' in inline


@pytest.mark.parametrize("bad", ["local", "/abs/plotly.min.js", "https://x/plotly.js"])
def test_figure_to_html_rejects_bad_plotlyjs(bad: str) -> None:
    with pytest.raises(ValueError, match="plotlyjs must be 'cdn', 'inline' or a relative path"):
        figure_to_html(go.Figure(), plotlyjs=bad)


def test_write_plotlyjs_writes_bundle_once(tmp_path: Path) -> None:
    dest = tmp_path / "export"
    path = write_plotlyjs(dest)
    assert path == dest / PLOTLYJS_FILENAME
    assert path.stat().st_size > 100_000
    mtime = path.stat().st_mtime_ns
    assert write_plotlyjs(dest) == path
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in dest.iterdir()] == [PLOTLYJS_FILENAME]
