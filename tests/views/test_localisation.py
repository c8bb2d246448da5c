"""Pointing game and energy in box against hand-built maps."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnviz.views.localisation import (
    CLASSIC_TOLERANCE_FRACTION,
    box_area_share,
    energy_in_box,
    pointing_game,
    score_maps,
    upsample_map,
)

SIZE = (96, 96)
BOX = (30, 40, 54, 70)  # 24 x 30 pixels


def test_indicator_map_scores_perfectly():
    heat = np.zeros(SIZE)
    heat[30:54, 40:70] = 1
    assert pointing_game(heat, BOX, SIZE)
    assert energy_in_box(heat, BOX, SIZE) == pytest.approx(1.0)


def test_uniform_map_scores_the_area_share():
    for grid in [(6, 6), (7, 7), (12, 12), SIZE]:
        heat = np.full(grid, 0.3)
        assert energy_in_box(heat, BOX, SIZE) == pytest.approx(24 * 30 / 96**2, abs=1e-12)
    assert box_area_share(BOX, SIZE) == 24 * 30 / 96**2


def test_peak_outside_misses_and_tolerance_reaches_it():
    heat = np.zeros(SIZE)
    heat[60, 40] = 1  # 7 rows below the box's last row (53)
    assert not pointing_game(heat, BOX, SIZE)
    assert not pointing_game(heat, BOX, SIZE, tolerance=6.9)
    assert pointing_game(heat, BOX, SIZE, tolerance=7)


def test_feature_map_upsampled_like_torch():
    rng = np.random.default_rng(0)
    heat = rng.random((7, 7))
    want = F.interpolate(torch.tensor(heat)[None, None], size=SIZE, mode="bilinear", align_corners=False)[
        0, 0
    ]
    np.testing.assert_allclose(upsample_map(heat, SIZE), want.numpy())
    # a 6x6 map whose hot cell covers the box's centre points into the box
    coarse = np.zeros((6, 6))
    coarse[42 // 16, 55 // 16] = 1
    assert pointing_game(coarse, BOX, SIZE)


def test_negative_values_are_clipped():
    heat = np.zeros(SIZE)
    heat[30:54, 40:70] = 1
    heat[0:10, 0:10] = -5
    assert energy_in_box(heat, BOX, SIZE) == pytest.approx(1.0)
    assert energy_in_box(np.zeros(SIZE), BOX, SIZE) == 0.0


def test_score_maps_aggregates():
    rng = np.random.default_rng(1)
    maps = [rng.random((12, 12)) for _ in range(5)]
    boxes = [(10 * i, 5, 10 * i + 20, 40) for i in range(5)]
    score = score_maps(maps, boxes, SIZE, "m")
    energies = [energy_in_box(m, b, SIZE) for m, b in zip(maps, boxes, strict=True)]
    hits = [pointing_game(m, b, SIZE) for m, b in zip(maps, boxes, strict=True)]
    shares = [box_area_share(b, SIZE) for b in boxes]
    assert score.n == 5 and score.name == "m"
    assert score.pointing == pytest.approx(np.mean(hits))
    assert score.energy == pytest.approx(np.mean(energies))
    assert score.energy_ratio == pytest.approx(np.mean(energies) / np.mean(shares))


@pytest.mark.parametrize(
    ("heat", "box", "pattern"),
    [
        (np.zeros(5), BOX, "2-D"),
        (np.full((4, 4), np.nan), BOX, "finite"),
        (np.zeros((4, 4)), (10, 10, 10, 20), "empty or outside"),
        (np.zeros((4, 4)), (0, 0, 97, 20), "empty or outside"),
        (np.zeros((4, 4)), (0, 0, 5), r"\(y0, x0, y1, x1\)"),
    ],
)
def test_bad_input(heat, box, pattern):
    with pytest.raises(ValueError, match=pattern):
        energy_in_box(heat, box, SIZE)


def test_score_maps_needs_matching_lengths():
    with pytest.raises(ValueError, match="one box per map"):
        score_maps([np.zeros((3, 3))], [], SIZE, "x")


def test_upsampling_matches_torch_on_odd_and_non_square_grids():
    rng = np.random.default_rng(2)
    for grid, size in [((7, 7), (128, 128)), ((5, 9), (128, 100)), ((3, 4), (17, 31)), ((12, 12), (6, 6))]:
        heat = rng.standard_normal(grid)
        want = F.interpolate(torch.tensor(heat)[None, None], size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(torch.from_numpy(upsample_map(heat, size)), want[0, 0])
    assert upsample_map(np.ones((7, 7)), 128).shape == (128, 128)  # one int: a square image


def test_uniform_7x7_map_on_128_scores_exactly_the_area_share():
    box = (13, 70, 41, 99)
    share = box_area_share(box, 128)
    assert share == 28 * 29 / 128**2
    assert energy_in_box(np.full((7, 7), 2.5), box, 128) == pytest.approx(share, rel=1e-12)
    score = score_maps([np.full((7, 7), 1.0)], [box], (128, 128), "uniform")
    assert score.energy_ratio == pytest.approx(1.0, rel=1e-12)


def test_ties_go_to_the_first_pixel():
    # a constant map points at the top-left pixel: a hit only for a box that holds it
    assert pointing_game(np.ones((7, 7)), (0, 0, 5, 5), SIZE)
    assert not pointing_game(np.ones((7, 7)), BOX, SIZE)


def test_tolerance_on_a_diagonal_is_euclidean():
    heat = np.zeros(SIZE)
    heat[26, 36] = 1  # 4 rows above and 4 columns left of the box's corner (30, 40)
    assert not pointing_game(heat, BOX, SIZE, tolerance=5.6)
    assert pointing_game(heat, BOX, SIZE, tolerance=5.7)  # sqrt(32) = 5.66
    assert pytest.approx(15) == CLASSIC_TOLERANCE_FRACTION * 224
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(heat, BOX, SIZE, tolerance=-1)


def test_energy_clips_after_upsampling():
    rng = np.random.default_rng(3)
    heat = rng.standard_normal((6, 6))
    up = F.interpolate(torch.tensor(heat)[None, None], size=SIZE, mode="bilinear", align_corners=False)
    positive = up[0, 0].clamp(min=0).numpy()
    want = positive[30:54, 40:70].sum() / positive.sum()
    assert energy_in_box(heat, BOX, SIZE) == pytest.approx(want, rel=1e-12)
    assert energy_in_box(-np.abs(heat), BOX, SIZE) == 0.0  # no positive mass: no energy


def test_score_maps_recomputed_with_numpy():
    rng = np.random.default_rng(4)
    maps = rng.random((8, 7, 7))  # an [n, h, w] array works as well as a list
    boxes = np.array([(4 * i, 3 * i, 4 * i + 30, 3 * i + 25) for i in range(8)])
    maps[0, 1, 1] = 5.0  # a peak in box 0
    maps[1, 6, 6] = 5.0  # a peak far from box 1
    score = score_maps(maps, boxes, 96, "m", tolerance=0)
    ups = [F.interpolate(torch.tensor(m)[None, None], size=SIZE, mode="bilinear")[0, 0].numpy() for m in maps]
    hits, energies, shares = [], [], []
    for up, (y0, x0, y1, x1) in zip(ups, boxes, strict=True):
        py, px = np.unravel_index(np.argmax(up), up.shape)
        hits.append(y0 <= py < y1 and x0 <= px < x1)
        energies.append(up[y0:y1, x0:x1].sum() / up.sum())
        shares.append((y1 - y0) * (x1 - x0) / 96**2)
    assert hits[0] and not hits[1]
    assert score.n == 8
    assert score.pointing == pytest.approx(np.mean(hits))
    assert score.energy == pytest.approx(np.mean(energies), rel=1e-12)
    assert score.area_share == pytest.approx(np.mean(shares), rel=1e-12)
    assert score.energy_ratio == pytest.approx(np.mean(energies) / np.mean(shares), rel=1e-12)
    assert json.loads(json.dumps(asdict(score)))["name"] == "m"  # zoo cards store it as JSON


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: score_maps([], [], SIZE, "x"), "at least one map"),
        (lambda: score_maps([np.zeros((3, 3)), np.zeros(3)], [BOX, BOX], SIZE, "x"), r"map 1: .*2-D"),
        (lambda: score_maps([np.zeros((3, 3))], [(0, 0, 200, 5)], SIZE, "x"), "map 0: .*outside"),
        (lambda: energy_in_box(np.zeros((3, 3)), (0.5, 0, 5, 5), SIZE), "integer"),
        (lambda: energy_in_box(np.zeros((3, 3)), BOX, (0, 96)), "positive"),
        (lambda: energy_in_box(np.zeros((3, 3)), BOX, (96, 96, 3)), "image_size"),
        (lambda: upsample_map(np.zeros((2, 3, 4)), SIZE), "2-D"),
    ],
)
def test_more_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_score_maps_name_must_be_a_string():
    with pytest.raises(TypeError, match="name"):
        score_maps([np.zeros((3, 3))], [BOX], SIZE, 3)  # type: ignore[arg-type]
