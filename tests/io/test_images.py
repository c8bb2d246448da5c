"""Tests of attnviz.io.images: every input is generated here, nothing is downloaded or committed."""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import bilevel_png, encode, noise
from PIL import Image, ImageFile

from attnviz.io import images
from attnviz.io.images import (
    ALLOWED_EXTENSIONS,
    ALLOWED_FORMATS,
    MAX_PIXELS,
    ImageLoadError,
    describe_image,
    load_image,
)

UNSUPPORTED = r"is not a supported image: JPEG, PNG, WebP or GIF expected"
CORRUPT = r"could not be decoded \(truncated or corrupt\)\.$"


# --- generators -------------------------------------------------------------------------------


def pixel(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img)[y, x])


def assert_close_rgb(actual: tuple[int, ...], expected: tuple[int, int, int], tol: int) -> None:
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= tol, (actual, expected)


# --- refusals: not an image ---------------------------------------------------------------------


def test_zero_bytes_is_refused() -> None:
    with pytest.raises(ImageLoadError, match=r"^empty\.png is empty \(0 bytes\)\.$"):
        load_image(b"", name="empty.png")


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg is empty"):
        load_image(path)


def test_text_renamed_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("Shopping list:\n- milk\n- eggs\n", encoding="utf-8")
    with pytest.raises(ImageLoadError, match=rf"^x\.png {UNSUPPORTED} \(the file looks like text\)\.$"):
        load_image(path, name="x.png")


def test_html_with_script_is_refused() -> None:
    html = b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>"
    with pytest.raises(ImageLoadError, match=rf"cat\.jpg {UNSUPPORTED} \(the file looks like HTML\)"):
        load_image(html, name="cat.jpg")


def test_svg_with_script_is_refused() -> None:
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script><rect width='10' height='10'/></svg>"
    )
    with pytest.raises(ImageLoadError, match=rf"{UNSUPPORTED} \(the file looks like an SVG image\)"):
        load_image(svg, name="logo.png")


def test_bmp_is_refused_naming_allowed_formats() -> None:
    data = encode(Image.new("RGB", (8, 8), (255, 0, 0)), "BMP")
    with pytest.raises(ImageLoadError, match=rf"^pic\.png {UNSUPPORTED} \(the file looks like a BMP image\)"):
        load_image(data, name="pic.png")


def test_tiff_is_refused_naming_allowed_formats() -> None:
    data = encode(Image.new("RGB", (8, 8), (0, 255, 0)), "TIFF")
    with pytest.raises(ImageLoadError, match=rf"{UNSUPPORTED} \(the file looks like a TIFF image\)"):
        load_image(data, name="scan.jpg")


def test_heic_header_is_refused() -> None:
    data = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageLoadError, match=rf"{UNSUPPORTED} \(the file looks like a HEIC image\)"):
        load_image(data, name="IMG_0001.HEIC")


def test_unknown_binary_is_refused_without_a_guess() -> None:
    data = bytes(range(256)) * 4
    with pytest.raises(ImageLoadError, match=rf"^The file {UNSUPPORTED}\.$"):
        load_image(data)


def test_content_decides_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.gif"
    path.write_bytes(encode(Image.new("RGB", (4, 4), (10, 200, 30)), "PNG"))
    img = load_image(path)
    assert pixel(img, 2, 2) == (10, 200, 30)


# --- refusals: damaged ------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_refused(keep: float) -> None:
    data = encode(noise(64, 64), "JPEG", quality=90)
    with pytest.raises(ImageLoadError, match=rf"^cut\.jpg {CORRUPT}"):
        load_image(data[: int(len(data) * keep)], name="cut.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png_is_refused(keep: float) -> None:
    data = encode(noise(64, 64), "PNG")
    with pytest.raises(ImageLoadError, match=rf"^cut\.png {CORRUPT}"):
        load_image(data[: int(len(data) * keep)], name="cut.png")


def test_png_signature_only_is_corrupt_not_foreign() -> None:
    with pytest.raises(ImageLoadError, match=CORRUPT):
        load_image(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", name="stub.png")


def test_corrupt_png_checksum_is_refused() -> None:
    data = bytearray(encode(noise(16, 16), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip compressed bits: the CRC no longer matches
    with pytest.raises(ImageLoadError, match=CORRUPT):
        load_image(bytes(data), name="flipped.png")


# --- refusals: limits -------------------------------------------------------------------------


def test_png_decompression_bomb_is_refused() -> None:
    data = bilevel_png(20_000, 20_000, with_pixels=False)
    assert len(data) < 200  # 400 megapixels declared in a few dozen bytes
    with pytest.raises(ImageLoadError, match=r"^bomb\.png is too large in pixels: .*limit is 40,000,000"):
        load_image(data, name="bomb.png")


def test_pillow_warning_band_is_an_error_and_global_limit_untouched() -> None:
    # 100 megapixels: above Pillow's warning threshold, below its error threshold.
    data = bilevel_png(10_000, 10_000, with_pixels=False)
    before_limit = Image.MAX_IMAGE_PIXELS
    before_filters = list(warnings.filters)
    with pytest.raises(ImageLoadError, match=r"too large in pixels: the limit is 200,000,000 pixels\.$"):
        load_image(data, max_pixels=200_000_000)
    assert before_limit == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == before_filters


def test_just_above_pixel_cap_is_refused() -> None:
    data = encode(Image.new("RGB", (101, 100), (1, 2, 3)), "PNG")
    with pytest.raises(
        ImageLoadError, match=r"too large in pixels: 101x100 is 10,100 pixels, the limit is 10,000\.$"
    ):
        load_image(data, max_pixels=10_000)


def test_exactly_at_pixel_cap_is_accepted() -> None:
    data = encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    img = load_image(data, max_pixels=10_000)
    assert img.size == (100, 100)
    assert pixel(img, 99, 99) == (1, 2, 3)


def test_just_above_real_pixel_cap_is_refused() -> None:
    # A valid 1-bit PNG of 8000x5001 = 40,008,000 pixels in a few kilobytes.
    data = bilevel_png(8000, 5001)
    assert len(data) < 50_000
    assert MAX_PIXELS < 8000 * 5001 < Image.MAX_IMAGE_PIXELS  # ours refuses it, not Pillow's
    with pytest.raises(ImageLoadError, match=r"8000x5001 is 40,008,000 pixels, the limit is 40,000,000\.$"):
        load_image(data)


def test_gif_frame_larger_than_its_screen_is_refused() -> None:
    # A 10x10 logical screen whose first frame claims 10000x4001: Pillow grows the image to it.
    data = (
        b"GIF89a"
        + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 10_000, 4001, 0x80)
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x02\x02\x44\x01\x00\x3b"
    )
    with pytest.raises(ImageLoadError, match=r"too large in pixels: 10000x4001 is 40,010,000 pixels"):
        load_image(data, name="sneaky.gif")


def test_thin_strip_is_refused_by_aspect() -> None:
    data = bilevel_png(20_000, 8)
    with pytest.raises(
        ImageLoadError, match=r"^strip\.png is too elongated: 20000x8 has an aspect ratio of 2500\.0:1"
    ):
        load_image(data, name="strip.png")


def test_aspect_exactly_at_limit_is_accepted() -> None:
    img = load_image(encode(Image.new("L", (4, 64), 200), "PNG"))
    assert img.size == (4, 64)
    assert pixel(img, 3, 63) == (200, 200, 200)


def test_bytes_over_max_bytes_are_refused() -> None:
    data = encode(noise(32, 32), "PNG")
    with pytest.raises(ImageLoadError, match=r"^big\.png is too big: .* KB, the limit is 100 bytes\.$"):
        load_image(data, name="big.png", max_bytes=100)


def test_file_over_max_bytes_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as fh:
        fh.truncate(21 * 1024 * 1024)  # sparse: costs nothing, fails on size alone
    with pytest.raises(ImageLoadError, match=r"huge\.jpg is too big: 21\.0 MB, the limit is 20\.0 MB\.$"):
        load_image(path)


def test_file_growing_after_stat_is_still_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "growing.png"
    path.write_bytes(encode(noise(32, 32), "PNG"))
    small = os.stat_result((0o100644, 0, 0, 1, 0, 0, 10, 0, 0, 0))  # what stat() saw: 10 bytes

    class StaleStatPath(type(Path())):  # type: ignore[misc]
        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            return small

    monkeypatch.setattr(images, "Path", StaleStatPath)
    with pytest.raises(ImageLoadError, match=r"growing\.png is too big: the limit is 100 bytes\.$"):
        load_image(path, max_bytes=100)


# --- refusals: paths --------------------------------------------------------------------------


def test_missing_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match=r"nope\.png does not exist\.$"):
        load_image(path)
    with pytest.raises(ImageLoadError, match=r"^upload\.png does not exist\.$"):
        load_image(str(path), name="upload.png")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos.png"
    folder.mkdir()
    with pytest.raises(ImageLoadError, match=r"photos\.png is a directory, not an image file\.$"):
        load_image(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match=r"pipe\.png is not a regular file\.$"):
        load_image(fifo)


def test_wrong_source_type_and_bad_limits() -> None:
    with pytest.raises(TypeError, match="source must be bytes or a path"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        load_image(b"x", max_pixels=0)
    with pytest.raises(ValueError, match="max_aspect must be at least 1"):
        load_image(b"x", max_aspect=0.5)


def test_name_is_sanitised_in_messages() -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(b"hello", name="evil\nname\x1b[31m.png")
    message = str(info.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert message.startswith("evil?name?[31m.png is not a supported image")


# --- accepted inputs: pixel values ---------------------------------------------------------------


def test_one_by_one_png() -> None:
    img = load_image(encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"))
    assert img.mode == "RGB"
    assert img.size == (1, 1)
    assert pixel(img, 0, 0) == (12, 34, 56)


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(encode(Image.new("RGB", (3, 2), (7, 8, 9)), "PNG"))
    img = load_image(path)
    path.unlink()
    assert getattr(img, "fp", None) is None
    assert img.info == {}
    assert np.asarray(img).tolist() == [[[7, 8, 9]] * 3] * 2


def test_grayscale_and_bilevel_become_rgb() -> None:
    gray = load_image(encode(Image.new("L", (2, 2), 77), "PNG"))
    assert pixel(gray, 1, 1) == (77, 77, 77)
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    img = load_image(encode(bilevel, "PNG"))
    assert np.asarray(img).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_cmyk_jpeg_colours() -> None:
    colours = [(220, 30, 30), (30, 180, 60), (40, 60, 200), (240, 220, 40)]
    rgb = Image.new("RGB", (64, 16))
    for i, colour in enumerate(colours):
        rgb.paste(colour, (16 * i, 0, 16 * i + 16, 16))
    data = encode(rgb.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = load_image(data)
    assert img.mode == "RGB"
    assert img.size == (64, 16)
    for i, colour in enumerate(colours):
        assert_close_rgb(pixel(img, 16 * i + 8, 8), colour, tol=12)


def test_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    img = load_image(encode(source, "PNG"))
    assert img.mode == "RGB"
    # v * 255 / 65535, rounded: 1000 -> 4 (clipping would give 255), 32768 -> 128.
    assert np.asarray(img)[0, :, 0].tolist() == [0, 4, 128, 255]
    assert np.asarray(img)[0, :, 1].tolist() == np.asarray(img)[0, :, 2].tolist() == [0, 4, 128, 255]


def test_palette_png_with_transparency_becomes_white() -> None:
    palette_img = Image.new("P", (2, 1), 0)
    palette_img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    palette_img.putpixel((1, 0), 1)
    data = encode(palette_img, "PNG", transparency=0)  # index 0 (red) is fully transparent
    img = load_image(data)
    assert np.asarray(img).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_rgba_hidden_colour_becomes_white() -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # red hidden under alpha 0
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    rgba.putpixel((2, 0), (0, 255, 0, 255))
    img = load_image(encode(rgba, "PNG"))
    assert pixel(img, 0, 0) == (255, 255, 255)
    assert_close_rgb(pixel(img, 1, 0), (127, 127, 127), tol=1)
    assert pixel(img, 2, 0) == (0, 255, 0)


def test_la_png_hidden_value_becomes_white() -> None:
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))
    la.putpixel((1, 0), (40, 255))
    img = load_image(encode(la, "PNG"))
    assert np.asarray(img).tolist() == [[[255, 255, 255], [40, 40, 40]]]


def frames(*colours: tuple[int, int, int], mode: str = "RGB") -> list[Image.Image]:
    return [Image.new(mode, (8, 8), colour) for colour in colours]


def test_animated_gif_gives_first_frame() -> None:
    first, *rest = frames((255, 0, 0), (0, 255, 0), (0, 0, 255))
    data = encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = load_image(data)
    assert img.size == (8, 8)
    assert pixel(img, 4, 4) == (255, 0, 0)


def test_animated_webp_gives_first_frame() -> None:
    first, *rest = frames((0, 0, 255), (255, 255, 0))
    data = encode(first, "WEBP", save_all=True, append_images=rest, duration=100, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    img = load_image(data)
    assert pixel(img, 4, 4) == (0, 0, 255)


def test_animated_png_gives_first_frame() -> None:
    first, *rest = frames((10, 120, 230), (200, 100, 0))
    data = encode(first, "PNG", save_all=True, append_images=rest, duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert pixel(load_image(data), 4, 4) == (10, 120, 230)


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    # Stored 40 wide x 20 high, a red marker in the stored top-left corner. Orientation 6 means
    # "rotate 90 degrees clockwise to display": upright it is 20 x 40, the marker top-right.
    stored = Image.new("RGB", (40, 20), (128, 128, 128))
    stored.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img = load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (20, 40)
    assert_close_rgb(pixel(img, 15, 4), (255, 0, 0), tol=20)  # stored (4, 4) -> (20 - 1 - 4, 4)
    assert_close_rgb(pixel(img, 4, 4), (128, 128, 128), tol=20)
    assert_close_rgb(pixel(img, 15, 35), (128, 128, 128), tol=20)


def test_png_with_html_and_zip_appended_loads_the_png_only() -> None:
    # Decision: trailing bytes after IEND are ignored, never interpreted; the pixels are the PNG's.
    png = encode(Image.new("RGB", (2, 2), (9, 99, 199)), "PNG")
    data = png + b"<html><script>alert(1)</script></html>" + b"PK\x03\x04" + b"\x00" * 26
    img = load_image(data, name="polyglot.png")
    assert np.asarray(img).tolist() == [[[9, 99, 199]] * 2] * 2


def test_html_with_png_inside_is_refused() -> None:
    png = encode(Image.new("RGB", (2, 2), (9, 99, 199)), "PNG")
    data = b"<html><body><script>alert(1)</script><!--" + png + b"--></body></html>"
    with pytest.raises(ImageLoadError, match=rf"{UNSUPPORTED} \(the file looks like HTML\)"):
        load_image(data, name="polyglot.png")


def test_bytearray_and_memoryview_sources() -> None:
    data = encode(Image.new("RGB", (1, 1), (5, 6, 7)), "PNG")
    assert pixel(load_image(bytearray(data)), 0, 0) == (5, 6, 7)
    assert pixel(load_image(memoryview(data)), 0, 0) == (5, 6, 7)


def test_constants_and_describe() -> None:
    assert ALLOWED_FORMATS == ("JPEG", "PNG", "WEBP", "GIF")
    assert set(ALLOWED_EXTENSIONS) == {"jpg", "jpeg", "png", "webp", "gif"}
    assert describe_image(Image.new("RGB", (640, 480))) == "640x480 RGB"


def test_library_leaves_pillow_and_streamlit_alone() -> None:
    with pytest.raises(ImageLoadError):
        load_image(encode(noise(8, 8), "JPEG")[:200])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # Pillow's default
    source = Path(images.__file__).read_text(encoding="utf-8")
    assert "import streamlit" not in source
    assert "from streamlit" not in source
