"""Compact storage: :func:`attnviz.compact` keeps attention probabilities as float16, and every view
of a compact result matches the full result's within float16 rounding; broadcast arrays are held
(and counted) once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_image, randomize_norms

import attnviz
from attnviz import render
from attnviz.core.records import COMPACT_DTYPE, array_nbytes
from attnviz.views import deformable, transformer
from attnviz.views.maps import attention_maps

# float16 keeps 11 significant bits: a value in [0, 1] is off by at most half an ulp.
RTOL, ATOL = 2.0**-11, 2.0**-25


def analysed(name: str, seed: int = 0) -> attnviz.Analysis:
    model = attnviz.load_model(name, weights="random", device="cpu")
    randomize_norms(model.module, seed)
    [analysis] = attnviz.analyze(model, [make_image(seed)], gradcam=False)
    return analysis


@pytest.fixture(scope="module")
def deit() -> attnviz.Analysis:
    return analysed("deit_tiny_distilled_patch16_224")


@pytest.fixture(scope="module")
def swin() -> attnviz.Analysis:
    return analysed("swin_tiny_patch4_window7_224", seed=1)


def close(a: np.ndarray, b: np.ndarray, atol: float = 2e-3) -> None:
    """Views of a compact result: within float16 rounding of the full result's, summed over rows."""
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-3, atol=atol)


def pixels_close(a, b) -> None:
    """Rendered pictures differ by at most one step of the colour map here and there (one of jet's
    256 steps moves a channel by up to 4 levels; the overlay blends it at alpha 0.5)."""
    x, y = np.asarray(a, np.int16), np.asarray(b, np.int16)
    assert np.abs(x - y).max() <= 3 and (x != y).mean() < 0.02, ((x != y).mean(), np.abs(x - y).max())


def test_compact_rounds_attention_to_float16_and_halves_the_bytes(deit: attnviz.Analysis) -> None:
    small = attnviz.compact(deit)
    assert [type(r) for r in small.records] == [type(r) for r in deit.records]
    for full, half in zip(deit.token_attention, small.token_attention, strict=True):
        assert half.values.dtype == COMPACT_DTYPE and not half.values.flags.writeable
        np.testing.assert_allclose(half.values.astype(np.float32), full.values, rtol=RTOL, atol=ATOL)
        # exactly numpy's float16 rounding of the float32 values
        np.testing.assert_array_equal(half.values, full.values.astype(np.float16))
        assert dataclasses.replace(half, values=full.values) == dataclasses.replace(full, values=full.values)
        close(half.values.astype(np.float32).sum(-1), 1.0)
    attention = sum(r.values.nbytes for r in deit.token_attention)
    assert deit.nbytes - small.nbytes == attention // 2
    assert attnviz.compact(small) is small  # idempotent


def test_views_of_a_compact_vit_match_the_full_result(deit: attnviz.Analysis) -> None:
    small = attnviz.compact(deit)
    for a, b in zip(attention_maps(small), attention_maps(deit), strict=True):
        assert (a.layer, a.kind, a.block) == (b.layer, b.kind, b.block)
        assert a.values.dtype == np.float32
        close(a.values, b.values)
    layers, full_layers = transformer.self_attention_records(small), transformer.self_attention_records(deit)
    for fusion in ("mean", "max"):
        close(
            transformer.rollout(layers, head_fusion=fusion).values,
            transformer.rollout(full_layers, head_fusion=fusion).values,
        )
    q, fq = (
        transformer.query_map(layers[-1], (100.0, 60.0)),
        transformer.query_map(full_layers[-1], (100.0, 60.0)),
    )
    close(q.values, fq.values)
    close(q.prefix_mass, fq.prefix_mass)
    s, fs = transformer.head_statistics(layers), transformer.head_statistics(full_layers)
    close(s.distance, fs.distance, atol=0.05)  # pixels
    close(s.entropy, fs.entropy)
    grid, full_grid = transformer.head_grid(small), transformer.head_grid(deit)
    for a, b in zip(grid.maps, full_grid.maps, strict=True):
        close(a, b)
    picture = deit.input_image
    pixels_close(render.overlay(picture, grid.maps[-1][0]), render.overlay(picture, full_grid.maps[-1][0]))


def test_views_of_compact_windows_match_the_full_result(swin: attnviz.Analysis) -> None:
    small = attnviz.compact(swin)
    assert small.window_attention and all(r.values.dtype == COMPACT_DTYPE for r in small.window_attention)
    assert small.nbytes < 0.55 * swin.nbytes
    for half, full in zip(small.window_attention, swin.window_attention, strict=True):
        assert half.received().dtype == np.float32
        close(half.received(), full.received(), atol=1e-5)
        close(half.query(7), full.query(7))
        close(half.padding_mass(), full.padding_mass())
    first_half, first_full = small.window_attention[0], swin.window_attention[0]
    close(first_half.dense(), first_full.dense())
    for a, b in zip(attention_maps(small), attention_maps(swin), strict=True):
        close(a.values, b.values, atol=1e-5)


def test_received_adds_every_window_column_to_its_key(swin: attnviz.Analysis) -> None:
    """The vectorised ``received`` against the definition: each query's row, scattered on the key
    grid through the key index, averaged over the valid queries."""
    rec = swin.window_attention[1]  # a shifted block
    want = np.zeros((rec.heads, rec.num_keys))
    for win in range(rec.values.shape[0]):
        for pos, q in enumerate(rec.query_index[win]):
            if q < 0:
                continue
            for k_pos, k in enumerate(rec.key_index[win]):
                if k >= 0:
                    want[:, k] += rec.values[win, :, pos, k_pos]
    want /= (rec.query_index >= 0).sum()
    np.testing.assert_allclose(rec.received(), want, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_compact_sampling_weights_keep_positions() -> None:
    dat = analysed("dat_tiny")
    small = attnviz.compact(dat)
    for half, full in zip(small.sampling_points, dat.sampling_points, strict=True):
        assert half.points is full.points and half.reference is full.reference  # positions as they were
        if full.weights is not None:
            assert half.weights.dtype == COMPACT_DTYPE
            np.testing.assert_allclose(half.weights.astype(np.float32), full.weights, rtol=RTOL, atol=ATOL)
        a, b = (
            deformable.query_samples(half, 0, dat.input_image.shape[:2]),
            deformable.query_samples(full, 0, dat.input_image.shape[:2]),
        )
        np.testing.assert_array_equal(a.points, b.points)


def test_other_records_are_kept_as_they_are() -> None:
    model = attnviz.load_model("zoo_cbam", weights="pretrained", device="cpu")
    [analysis] = attnviz.analyze(model, [make_image(4, (96, 96))])
    assert attnviz.compact(analysis) is analysis  # gates, spatial maps and Grad-CAM: nothing to do


def test_broadcast_arrays_stay_views_and_count_once() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 1, 4, 1)
    wide = np.broadcast_to(base, (3, 8, 4, 2))
    assert array_nbytes(wide) == base.nbytes and wide.nbytes == 16 * base.nbytes
    rec = attnviz.SamplingPoints("m", "x", np.zeros((3, 8, 4, 2), np.float32), wide, None, None, 0)
    assert rec.reference.base is not None and 0 in rec.reference.strides  # not copied
    assert not rec.reference.flags.writeable
    np.testing.assert_array_equal(rec.reference, wide)
    dense = np.ones((4, 5), np.float32)
    assert array_nbytes(dense) == dense.nbytes
