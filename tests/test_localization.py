"""Pointing game and energy in box against hand-built maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnviz.localization import (
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
