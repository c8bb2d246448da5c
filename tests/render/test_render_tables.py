"""The renderers' lookup-table colouring and blending against the direct formulas they replace.

Each reference below is the straightforward computation, written out here independently of
attnviz.render: colour a value with ``matplotlib.colormaps[name](v)`` (or a ``Colormap`` object)
as ``round(255 * rgb)``, resize the normalised heat with Pillow's float bilinear, blend in float64
as ``round((1 - alpha) * image + alpha * colour)``. The renderers must match them exactly.
"""

from __future__ import annotations

import io
import logging
import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import Colormap, LinearSegmentedColormap, ListedColormap
from PIL import Image, ImageDraw, ImageFont

from attnviz.render import head_grid_image, heat_to_rgb, overlay, to_png_bytes


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _colormap(cmap: str | Colormap) -> Colormap:
    return matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap


def _scaled(heat: np.ndarray, normalize: bool, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Non-finite -> 0, then (v - lo) / (hi - lo) clipped for a value range, else min-max scaled
    (constant -> zeros) or clipped to [0, 1]."""
    arr = np.asarray(heat).astype(np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    if value_range is not None:
        lo, hi = value_range
        return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    if not normalize:
        return np.clip(arr, 0.0, 1.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo <= 0.0:
        return np.zeros_like(arr)
    with np.errstate(over="ignore", invalid="ignore"):  # a span beyond float64 gives NaN cells
        return (arr - lo) / (hi - lo)


def _reference_colours(values: np.ndarray, cmap: str | Colormap) -> np.ndarray:
    rgba = _colormap(cmap)(np.clip(values, 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def _reference_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    cmap: str | Colormap,
    alpha: float,
    normalize: bool = True,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    arr = _scaled(heat, normalize, value_range)
    height, width = image.shape[:2]
    if arr.shape != (height, width):
        small = Image.fromarray(arr.astype(np.float32))
        arr = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    colour = _reference_colours(arr, cmap).astype(np.float64)
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _reference_head_grid(
    image: np.ndarray,
    maps: list[np.ndarray],
    cmap: str | Colormap,
    alpha: float,
    tile: int,
    gap: int,
    labels: bool,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    thumb = np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR))
    cols = max(m.shape[0] for m in maps)
    step = tile + gap
    fnt = ImageFont.load_default(size=13)
    # margins: the widest row label ("L<last>") plus 8 px on the left, the font size plus 6 on top
    width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(f"L{len(maps) - 1}", font=fnt)
    left, top = (int(np.ceil(width)) + 8, 19) if labels else (0, 0)
    out = Image.new("RGB", (left + cols * step - gap, top + len(maps) * step - gap), (255, 255, 255))
    for row, m in enumerate(maps):
        for col, heat in enumerate(m):
            tile_img = Image.fromarray(_reference_overlay(thumb, heat, cmap, alpha, value_range=value_range))
            out.paste(tile_img, (left + col * step, top + row * step))
    if labels:
        draw = ImageDraw.Draw(out)
        for row in range(len(maps)):
            draw.text(
                (left - 4, top + row * step + tile / 2), f"L{row}", fill=(40, 40, 40), font=fnt, anchor="rm"
            )
        for col in range(cols):
            draw.text(
                (left + col * step + tile / 2, top - 3), f"h{col}", fill=(40, 40, 40), font=fnt, anchor="md"
            )
    return np.asarray(out)


def _odd_listed() -> ListedColormap:
    # 100 colours: not a power of two, so the quantisation v * N cannot be done in float32.
    return ListedColormap(np.random.default_rng(5).random((100, 3)), name="odd100")


def _segmented() -> LinearSegmentedColormap:
    return LinearSegmentedColormap.from_list("three", ["navy", "orange", "white"], N=37)


CMAPS = ["jet", "viridis", "gray", "magma", "tab10", _odd_listed(), _segmented()]
CMAP_IDS = ["jet", "viridis", "gray", "magma", "tab10", "listed100", "segmented37"]


def _edge_values(n: int, dtype: type = np.float64) -> np.ndarray:
    """``[1, m]``: every bin edge k / N of an N-colour map and its neighbours in ``dtype``, and 0 and 1
    exactly, as float64."""
    edges = (np.arange(n + 1) / n).astype(dtype)
    below = np.nextafter(edges, dtype(-np.inf))
    above = np.nextafter(edges, dtype(np.inf))
    values = np.concatenate([[0.0, 1.0], edges, below, above]).astype(np.float64)
    return np.clip(values, 0.0, 1.0)[None, :]


# ------------------------------------------------------------------------------------------- colours


@pytest.mark.parametrize("cmap", CMAPS, ids=CMAP_IDS)
def test_heat_to_rgb_equals_matplotlib_colours_exactly(
    cmap: str | Colormap, rng: np.random.Generator
) -> None:
    heats = [
        rng.random((13, 17)),
        rng.normal(size=(6, 5)) * 1e3,
        np.full((4, 4), 2.5),  # constant: all zeros, the bottom colour
        np.array([[0.0, 1.0], [0.5, 1.0]]),
        rng.random((9, 9)).astype(np.float32),
        rng.integers(-3, 4, (5, 7)),
    ]
    for heat in heats:
        for normalize in (True, False):
            expected = _reference_colours(_scaled(heat, normalize), cmap)
            np.testing.assert_array_equal(heat_to_rgb(heat, cmap=cmap, normalize=normalize), expected)


@pytest.mark.parametrize("cmap", CMAPS, ids=CMAP_IDS)
def test_heat_to_rgb_quantises_bin_edges_like_matplotlib(cmap: str | Colormap) -> None:
    values = _edge_values(_colormap(cmap).N)
    out = heat_to_rgb(values, cmap=cmap, normalize=False)
    np.testing.assert_array_equal(out, _reference_colours(values, cmap))


@pytest.mark.parametrize("cmap", CMAPS, ids=CMAP_IDS)
def test_overlay_quantises_resampled_float32_bin_edges_like_matplotlib(cmap: str | Colormap) -> None:
    # Resampling one row to two copies it (weight 1), so the colours are those of the float32 values.
    values = _edge_values(_colormap(cmap).N, np.float32)
    image = np.zeros((2, values.shape[1], 3), dtype=np.uint8)
    out = np.asarray(overlay(image, values, cmap=cmap, alpha=1.0, normalize=False))
    np.testing.assert_array_equal(out, _reference_overlay(image, values, cmap, 1.0, normalize=False))
    np.testing.assert_array_equal(out, np.repeat(_reference_colours(values, cmap), 2, axis=0))


@pytest.mark.parametrize("cmap", CMAPS, ids=CMAP_IDS)
def test_maps_that_need_no_resampling_are_coloured_in_float64(cmap: str | Colormap) -> None:
    # Just below a bin edge in float64, but the edge itself in float32: a float32 detour would show.
    n = _colormap(cmap).N
    values = np.nextafter(np.arange(1, n) / n, -np.inf)
    heat = np.concatenate([[0.0, 1.0], values])
    side = max(16, int(np.ceil(np.sqrt(heat.size))))  # head grid tiles are at least 16 px
    heat = np.resize(heat, (side, side))  # repeats; holds 0 and 1, so min-max scaling keeps the values
    image = np.zeros((side, side, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        np.asarray(overlay(image, heat, cmap=cmap, alpha=1.0)), _reference_colours(heat, cmap)
    )
    grid = np.asarray(head_grid_image(image, [heat[None]], cmap=cmap, alpha=1.0, tile=side, gap=0))
    np.testing.assert_array_equal(grid, _reference_colours(heat, cmap))


def test_non_finite_heat_is_coloured_as_zero(caplog: pytest.LogCaptureFixture) -> None:
    heat = np.array([[np.nan, 1.0, np.inf], [0.25, -np.inf, 0.75]])
    with caplog.at_level(logging.WARNING, logger="attnviz.render"):
        out = heat_to_rgb(heat, cmap="viridis")
    assert "3 non-finite" in caplog.text
    np.testing.assert_array_equal(out, _reference_colours(_scaled(heat, True), "viridis"))


@pytest.mark.parametrize("cmap", ["jet", "gray", _odd_listed()], ids=["jet", "gray", "listed100"])
def test_span_beyond_float64_gives_the_bad_colour_like_matplotlib(cmap: str | Colormap) -> None:
    # max - min overflows to inf, so min-max scaling gives NaN there, which matplotlib colours "bad".
    heat = np.array([[-1e308, 1e308], [0.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = _reference_colours(_scaled(heat, True), cmap)
        out = heat_to_rgb(heat, cmap=cmap)
        image = np.full((8, 8, 3), 90, dtype=np.uint8)
        blended = np.asarray(overlay(image, heat, cmap=cmap, alpha=0.5))
        reference = _reference_overlay(image, heat, cmap, 0.5)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(blended, reference)


def test_colormap_objects_are_used_as_given_not_looked_up_by_name() -> None:
    heat = np.array([[0.0, 1.0]])
    red_blue = ListedColormap(["red", "blue"], name="viridis")
    green_white = ListedColormap(["lime", "white"], name="viridis")
    np.testing.assert_array_equal(heat_to_rgb(heat, cmap=red_blue), [[[255, 0, 0], [0, 0, 255]]])
    np.testing.assert_array_equal(heat_to_rgb(heat, cmap=green_white), [[[0, 255, 0], [255, 255, 255]]])
    np.testing.assert_array_equal(heat_to_rgb(heat, cmap="viridis"), _reference_colours(heat, "viridis"))
    # The "bad" colour (NaN after an overflowing min-max span) follows the object too.
    overflow = np.array([[-1e308, 1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = heat_to_rgb(overflow, cmap=red_blue)
        marked = heat_to_rgb(overflow, cmap=red_blue.with_extremes(bad="yellow"))
    np.testing.assert_array_equal(plain[0, 1], [0, 0, 0])  # matplotlib's default bad: transparent black
    np.testing.assert_array_equal(marked[0, 1], [255, 255, 0])


def test_named_colormaps_still_reject_unknown_names_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="unknown colormap 'nope'"):
            heat_to_rgb(np.zeros((2, 2)), cmap="nope")
    with pytest.raises(TypeError, match="cmap must be a matplotlib colormap name"):
        heat_to_rgb(np.zeros((2, 2)), cmap=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- overlay


@pytest.mark.parametrize("cmap", CMAPS, ids=CMAP_IDS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_overlay_equals_reference_blend(cmap: str | Colormap, alpha: float, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    heats = [
        rng.random((7, 7)),  # upsampled
        rng.random((37, 53)),  # image-sized: not resampled
        rng.random((80, 20)).astype(np.float32),  # down in one axis, up in the other
        rng.random((1, 1)),
        np.full((3, 3), -4.0),  # constant
        np.array([[0.0, 1.0], [1.0, 0.0]]),
    ]
    for heat in heats:
        for normalize in (True, False):
            out = overlay(image, heat, cmap=cmap, alpha=alpha, normalize=normalize)
            assert out.mode == "RGB"
            expected = _reference_overlay(image, heat, cmap, alpha, normalize)
            np.testing.assert_array_equal(np.asarray(out), expected)


def test_overlay_of_pil_images_and_strided_arrays_equals_reference(rng: np.random.Generator) -> None:
    base = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    heat = rng.random((6, 9))
    for image in (base[::2, ::3], base[:, :, ::-1], np.asfortranarray(base)):
        np.testing.assert_array_equal(
            np.asarray(overlay(image, heat, cmap="magma", alpha=0.4)),
            _reference_overlay(np.ascontiguousarray(image), heat, "magma", 0.4),
        )
    for mode in ("RGB", "L", "RGBA", "P"):
        pil = Image.fromarray(base).convert(mode)
        rgb = np.asarray(pil.convert("RGB"))
        np.testing.assert_array_equal(
            np.asarray(overlay(pil, heat, alpha=0.6)), _reference_overlay(rgb, heat, "jet", 0.6)
        )


def test_overlay_nan_cells_match_reference_with_zero(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    heat = rng.random((4, 6))
    heat[1, 2] = np.nan
    heat[3, 5] = np.inf
    np.testing.assert_array_equal(
        np.asarray(overlay(image, heat, cmap="viridis", alpha=0.5)),
        _reference_overlay(image, heat, "viridis", 0.5),
    )


# ---------------------------------------------------------------------------------------- head grids


@pytest.mark.parametrize(
    ("cmap", "alpha", "tile", "gap", "labels"),
    [
        ("jet", 0.5, 72, 2, False),
        ("viridis", 0.3, 16, 0, True),
        (_segmented(), 0.9, 33, 5, True),
        (_odd_listed(), 1.0, 20, 1, False),
    ],
    ids=["jet", "viridis-labels", "segmented", "listed100"],
)
def test_head_grid_equals_tile_by_tile_reference(
    cmap: str | Colormap, alpha: float, tile: int, gap: int, labels: bool, rng: np.random.Generator
) -> None:
    image = rng.integers(0, 256, size=(50, 64, 3), dtype=np.uint8)
    maps = [
        rng.random((3, 7, 7)),
        rng.random((2, 5, 9)).astype(np.float32),
        rng.random((4, tile, tile)),  # tile-sized maps are not resampled
        rng.random((1, 50, 3)),  # down in one axis, up in the other (for small tiles)
        np.stack([np.full((4, 4), 7.0), rng.random((4, 4))]),  # a constant head
    ]
    out = head_grid_image(image, maps, cmap=cmap, alpha=alpha, tile=tile, gap=gap, labels=labels)
    expected = _reference_head_grid(image, maps, cmap, alpha, tile, gap, labels)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (0.2, 0.6), (-1.0, 3.0)])
def test_head_grid_on_a_shared_value_range_equals_reference(
    value_range: tuple[float, float], rng: np.random.Generator
) -> None:
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    maps = [rng.random((3, 6, 6)), rng.random((2, 4, 4)) * 0.5]
    out = head_grid_image(image, maps, tile=20, gap=1, labels=True, value_range=value_range)
    expected = _reference_head_grid(image, maps, "jet", 0.5, 20, 1, True, value_range)
    np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (0.25, 0.5), (0.997, 1.0)])
@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_overlay_on_a_value_range_equals_reference(
    value_range: tuple[float, float], cmap: str, rng: np.random.Generator
) -> None:
    image = rng.integers(0, 256, size=(30, 44, 3), dtype=np.uint8)
    heat = rng.uniform(-0.2, 1.2, (5, 7))
    out = overlay(image, heat, cmap=cmap, alpha=0.6, value_range=value_range)
    expected = _reference_overlay(image, heat, cmap, 0.6, value_range=value_range)
    np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("value_range", [None, (0.0, 0.5)], ids=["own-range", "shared-range"])
def test_head_grid_with_non_finite_heads_warns_per_head_and_equals_reference(
    value_range: tuple[float, float] | None, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared range's one-pass path falls back to map by map for non-finite heads, like own ranges."""
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    layer = rng.random((4, 5, 5))
    layer[1, 2, 2] = np.nan
    layer[3, 0, :] = np.inf
    with caplog.at_level(logging.WARNING, logger="attnviz.render"):
        out = head_grid_image(image, [layer], tile=24, value_range=value_range)
    assert sum("non-finite" in r.getMessage() for r in caplog.records) == 2
    np.testing.assert_array_equal(
        np.asarray(out), _reference_head_grid(image, [layer], "jet", 0.5, 24, 2, False, value_range)
    )


def test_head_grid_rejects_bad_alpha_and_colormap_like_overlay(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    maps = [rng.random((2, 3, 3))]
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        head_grid_image(image, maps, alpha=1.5)
    with pytest.raises(ValueError, match="unknown colormap"):
        head_grid_image(image, maps, cmap="not_a_cmap")
    with pytest.raises(ValueError, match="heat must not be empty"):
        head_grid_image(image, [np.zeros((2, 0, 3))])


# ------------------------------------------------------------------------------------------------ PNG


def test_png_of_an_overlay_decodes_to_the_same_pixels(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    shown = overlay(image, rng.random((6, 8)), cmap="viridis", alpha=0.4)
    data = to_png_bytes(shown)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(shown))
