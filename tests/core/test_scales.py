"""Colour scales (attnviz.core.scales) and the colour bar: every map shows its values honestly.

A near-constant gate is drawn as the near-constant value it is on the absolute scale; the colour
bar's range is the record's natural range; maps of one quantity compared side by side share one
scale; the stretched scale says so.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

import attnviz
from attnviz import render
from attnviz.core.scales import (
    GATE,
    GRADCAM,
    OFFSET_LENGTH,
    PROBABILITY,
    SAMPLING_SHARE,
    MapScale,
    format_range,
    map_scale,
    shared_scales,
)
from attnviz.views.maps import attention_maps, record_map


def _jet(x: float) -> tuple[int, int, int]:
    return tuple(round(255 * v) for v in matplotlib.colormaps["jet"](x)[:3])


# --------------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------------


def test_absolute_gate_scale_is_the_natural_range_whatever_the_values() -> None:
    gate = np.random.default_rng(0).uniform(0.997, 1.0, (6, 6))
    scale = map_scale(gate, GATE)
    assert (scale.lo, scale.hi, scale.natural, scale.stretched) == (0.0, 1.0, True, False)
    assert scale.caption(gate) == ("gate value · values 0.997–1.000 · scale: absolute, natural range 0.0–1.0")
    stretched = map_scale(gate, GATE, "stretched")
    assert (stretched.lo, stretched.hi) == (gate.min(), gate.max())
    assert "stretched to this map's own range 0.997–1.000" in stretched.caption()


def test_near_constant_gate_is_nearly_uniform_on_the_absolute_scale() -> None:
    """zoo_cbam's last spatial gate on a photo spans 0.997-1.000: absolute shows it as ~1 everywhere."""
    image = np.full((96, 96, 3), 100, np.uint8)
    gate = np.random.default_rng(1).uniform(0.997, 1.0, (6, 6))
    absolute = np.asarray(
        render.overlay(image, gate, alpha=1.0, value_range=map_scale(gate, GATE).value_range)
    )
    colours = absolute.reshape(-1, 3)
    # every pixel is within a step or two of the colormap's top colour (jet(0.997..1) is dark red)
    assert np.abs(colours.astype(int) - np.array(_jet(1.0))).max() <= 4
    assert len(np.unique(colours, axis=0)) <= 2
    stretched = np.asarray(
        render.overlay(image, gate, alpha=1.0, value_range=map_scale(gate, GATE, "stretched").value_range)
    )
    # the stretched scale draws the same map blue to red
    assert len(np.unique(stretched.reshape(-1, 3), axis=0)) > 50
    pixels = stretched.reshape(-1, 3).astype(int)
    assert (pixels[:, 2] - pixels[:, 0] > 150).any() and (pixels[:, 0] - pixels[:, 2] > 150).any()


def test_probabilities_are_drawn_from_zero_to_the_largest_compared_value() -> None:
    rng = np.random.default_rng(2)
    a = rng.dirichlet(np.ones(144)).reshape(12, 12)
    b = rng.dirichlet(np.ones(36) * 0.3).reshape(6, 6)
    scale = map_scale([a, b], PROBABILITY)
    assert scale.lo == 0.0 and scale.hi == pytest.approx(max(a.max(), b.max()))
    assert not scale.natural and scale.shared == 2
    assert "0 to the largest value of the 2 maps shown" in scale.how
    assert map_scale(np.zeros((3, 3)), PROBABILITY).value_range == (0.0, 1.0)  # nothing to show


def test_columns_of_the_same_kind_share_one_scale_and_other_kinds_keep_theirs() -> None:
    rng = np.random.default_rng(3)
    maps = {
        "zoo_gc": (rng.random((12, 12)) * 0.05, PROBABILITY),
        "zoo_nonlocal": (rng.random((6, 6)) * 0.2, PROBABILITY),
        "zoo_cbam": (rng.uniform(0.4, 0.6, (6, 6)), GATE),
        "zoo_dat": (rng.random((12, 12)) * 0.01, SAMPLING_SHARE),
    }
    scales = shared_scales(maps, "absolute")
    assert scales["zoo_gc"] == scales["zoo_nonlocal"]
    assert (
        scales["zoo_gc"].hi == pytest.approx(maps["zoo_nonlocal"][0].max()) and scales["zoo_gc"].shared == 2
    )
    assert scales["zoo_cbam"].value_range == (0.0, 1.0)
    assert scales["zoo_dat"].hi == pytest.approx(maps["zoo_dat"][0].max()) and scales["zoo_dat"].shared == 1
    # the same value gets the same colour in both probability columns
    image = np.zeros((24, 24, 3), np.uint8)
    value = 0.03
    colours = [
        np.asarray(
            render.overlay(image, np.full((4, 4), value), alpha=1.0, value_range=scales[k].value_range)
        )
        for k in ("zoo_gc", "zoo_nonlocal")
    ]
    np.testing.assert_array_equal(colours[0], colours[1])
    stretched = shared_scales(maps, "stretched")
    assert stretched["zoo_gc"] != stretched["zoo_nonlocal"]
    for key, (values, _q) in maps.items():
        assert stretched[key].value_range == (values.min(), values.max())


def test_scale_checks_and_formatting() -> None:
    with pytest.raises(ValueError, match="scale must be one of absolute, stretched"):
        map_scale(np.ones((2, 2)), GATE, "log")
    with pytest.raises(ValueError, match="finite lo <= hi"):
        MapScale(1.0, 0.0, GATE, "absolute")
    with pytest.raises(ValueError, match="at least one map"):
        map_scale([], GATE)
    assert format_range(0.997, 1.0) == ("0.997", "1.000")
    assert format_range(0.0, 0.083) == ("0.000", "0.083")
    assert format_range(0.0, 12.4) == ("0", "12")
    scale = MapScale(0.0, 12.4, OFFSET_LENGTH, "absolute")
    assert scale.ticks() == [(0.0, "0"), (6.2, "6"), (12.4, "12")]
    assert scale.caption(np.array([1.0, 12.4])).startswith("offset length (px) · values 1–12 px")
    np.testing.assert_allclose(scale.normalise(np.array([-1.0, 6.2, 20.0])), [0.0, 0.5, 1.0])
    assert scale.to_dict() == {
        "mode": "absolute",
        "min": 0.0,
        "max": 12.4,
        "quantity": "offset length",
        "unit": "px",
        "natural_range": False,
        "shared_by": 1,
    }


# --------------------------------------------------------------------------------------------------
# The colour bar
# --------------------------------------------------------------------------------------------------


def test_colour_bar_runs_from_the_first_to_the_last_colour_of_its_range() -> None:
    scale = MapScale(0.0, 1.0, GATE, "absolute", natural=True)
    bar = np.asarray(render.colorbar(scale, cmap="jet", width=300))
    assert bar.shape[1] == 300 and 40 <= bar.shape[0] <= 90
    row = bar[8]  # through the gradient
    inside = np.flatnonzero((row != 255).any(axis=1) & (row != 80).any(axis=1))
    left, right = row[inside[0] + 1], row[inside[-1] - 1]
    assert tuple(left) == _jet(0.0) and tuple(right) == _jet(1.0)
    # the colours run monotonically through jet's table: blue first, red last
    assert row[inside[1], 2] > row[inside[1], 0] and row[inside[-2], 0] > row[inside[-2], 2]
    assert render.colorbar_title(scale) == "gate value · absolute (natural range)"
    stretched = MapScale(0.2, 0.4, GATE, "stretched")
    assert render.colorbar_title(stretched) == "gate value · stretched (this map's min-max)"
    shared = MapScale(0.0, 0.2, PROBABILITY, "absolute", shared=3)
    assert render.colorbar_title(shared) == "attention probability · absolute (0 to max, shared by 3 maps)"


def test_with_colorbar_keeps_the_picture_and_adds_the_strip() -> None:
    picture = render.overlay(np.zeros((50, 120, 3), np.uint8), np.random.default_rng(0).random((5, 5)))
    scale = MapScale(0.0, 0.5, PROBABILITY, "absolute", shared=3)
    out = render.with_colorbar(picture, scale)
    assert out.width == 120 and out.height > 50 + 30
    np.testing.assert_array_equal(np.asarray(out)[:50], np.asarray(picture))
    with pytest.raises(ValueError, match="width must be an int >= 64"):
        render.colorbar(scale, width=10)


def test_enlarge_is_a_whole_nearest_neighbour_factor() -> None:
    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    big = np.asarray(render.enlarge(img, 448))
    assert big.shape == (480, 480, 3)
    np.testing.assert_array_equal(big[::5, ::5], img)
    assert render.enlarge(img, 50).size == (96, 96)


# --------------------------------------------------------------------------------------------------
# The quantity of every record's map, on real results
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "quantities"),
    [
        ("zoo_cbam", {"cbam_spatial": GATE, "gradcam": GRADCAM}),
        ("zoo_gc", {"gc_context": PROBABILITY, "gradcam": GRADCAM}),
        ("zoo_dat", {"dat": SAMPLING_SHARE, "gradcam": GRADCAM}),
        ("zoo_deform", {"deform_conv": SAMPLING_SHARE, "gradcam": GRADCAM}),
    ],
)
def test_every_map_of_a_zoo_model_names_its_quantity(model: str, quantities: dict) -> None:
    loaded = attnviz.load_model(model, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    [result] = attnviz.analyze(loaded, [image])
    maps = attention_maps(result)
    assert maps
    for amap in maps:
        assert amap.quantity == quantities[amap.kind]
        scale = map_scale(amap.values, amap.quantity)
        if amap.quantity.natural is not None:  # the colour bar's range is the record's natural range
            assert scale.value_range == amap.quantity.natural == (0.0, 1.0)
            assert float(amap.values.min()) >= 0.0 and float(amap.values.max()) <= 1.0 + 1e-6
        else:
            assert scale.value_range == (0.0, pytest.approx(float(amap.values.max())))
        if amap.quantity == SAMPLING_SHARE:  # shares of the sampling weight add up to at most 1
            assert 0.0 < float(amap.values.sum()) <= 1.0 + 1e-5


def test_sampling_share_is_the_splat_divided_by_the_total_weight() -> None:
    """Points at cell centres land whole on their cell; the map is their weight share."""
    # [Q=1, G=1, P=2, 2] (y, x): the centres of cells (0, 0) and (1, 1) of a 2 x 2 grid of 4 x 6 px cells
    points = np.array([[[[1.5, 2.5], [5.5, 8.5]]]], dtype=np.float32)
    rec = attnviz.SamplingPoints(
        "blk", "dat", points, points, np.array([[[1.0, 3.0]]], dtype=np.float32), None, 0
    )
    amap = record_map(rec, (8, 12))  # the grid of the reference points
    assert amap.quantity == SAMPLING_SHARE
    np.testing.assert_allclose(amap.values, [[0.25, 0.0], [0.0, 0.75]], atol=1e-6)
    assert amap.values.dtype == np.float32
