"""A corpus of hostile and odd image uploads, generated here (nothing downloaded or committed).

Each entry is ``Case(name, data, expect)``: ``expect`` is ``None`` for odd but valid images that
must load (with the fact ``check`` verifies on the loaded RGB image), or a regular expression that
the one user-facing message must match. Used by the library, CLI and app tests of
``tests/io/test_hostile.py``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

UNSUPPORTED = r"is not a supported image: JPEG, PNG, WebP or GIF expected"
CORRUPT = r"could not be decoded \(truncated or corrupt\)"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str | None = None  # None: loads; else a regex of the refusal message
    check: Callable[[Image.Image], bool] | None = None  # a fact about the loaded image


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bilevel_png(width: int, height: int, *, with_pixels: bool = True) -> bytes:
    """A 1-bit grayscale PNG written by hand: tiny on disk whatever size it declares.

    With ``with_pixels`` the IDAT holds a valid all-black image (zlib squeezes the zero rows to
    almost nothing); without, only the header is right.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw = b"\x00" * ((1 + (width + 7) // 8) * height) if with_pixels else b"\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def _pixel(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img.convert("RGB"))[y, x])


def _frames(fmt: str) -> bytes:
    first = Image.new("RGB", (32, 24), (200, 30, 30))
    second = Image.new("RGB", (32, 24), (30, 30, 200))
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def _exif_rotated() -> bytes:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encode(img, "JPEG", exif=exif, quality=95)


def _palette_transparent() -> bytes:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (8, 0, 16, 16))
    return encode(img, "PNG", transparency=0)  # index 0 (red) transparent


def _rgba_hidden() -> bytes:
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 0] = 255  # red hidden under alpha 0
    arr[:, 8:, 3] = 255  # right half opaque red
    return encode(Image.fromarray(arr, "RGBA"), "PNG")


def _gray16() -> bytes:
    arr = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    return encode(Image.fromarray(arr), "PNG")  # mode I;16


def _cmyk() -> bytes:
    return encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # red


def cases() -> list[Case]:
    """The whole corpus, in a fixed order."""
    png = encode(noise(64, 48), "PNG")
    jpeg = encode(noise(64, 48), "JPEG", quality=90)
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    return [
        Case("empty.png", b"", r"empty\.png is empty"),
        Case("notes.png", b"just some text, renamed to look like an image\n" * 4, UNSUPPORTED),
        Case("page.html", b"<html><body><script>alert(1)</script></body></html>", UNSUPPORTED),
        Case(
            "vector.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><rect/></svg>',
            UNSUPPORTED,
        ),
        Case("cut.jpg", jpeg[: len(jpeg) // 2], CORRUPT),
        Case("cut.png", png[: len(png) // 2], CORRUPT),
        Case("bomb.png", bilevel_png(20_000, 20_000, with_pixels=False), r"too large in pixels"),
        Case("over.png", bilevel_png(8000, 5001), r"8000x5001 is 40,008,000 pixels, the limit is 40,000,000"),
        Case("strip.png", bilevel_png(20_000, 8), r"too elongated: 20000x8"),
        Case("photo.heic", heic, r"HEIC|HEIF|not a supported image"),
        Case(
            "polyglot.html",
            b"<html><script>alert(1)</script></html>" + png,
            UNSUPPORTED,
        ),
        Case(
            "tiny.png",
            encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"),
            None,
            lambda im: im.size == (1, 1),
        ),
        Case("cmyk.jpg", _cmyk(), None, lambda im: _pixel(im, 8, 8)[0] > 200 and _pixel(im, 8, 8)[1] < 60),
        Case(
            "gray16.png", _gray16(), None, lambda im: _pixel(im, 63, 7)[0] == 255 and _pixel(im, 0, 0)[0] == 0
        ),
        Case("palette.png", _palette_transparent(), None, lambda im: _pixel(im, 0, 0) == (255, 255, 255)),
        Case(
            "hidden.png",
            _rgba_hidden(),
            None,
            lambda im: _pixel(im, 0, 0) == (255, 255, 255) and _pixel(im, 15, 0) == (255, 0, 0),
        ),
        Case("anim.gif", _frames("GIF"), None, lambda im: _pixel(im, 5, 5)[0] > 150),
        Case("anim.webp", _frames("WEBP"), None, lambda im: _pixel(im, 5, 5)[0] > 150),
        Case(
            "rotated.jpg",
            _exif_rotated(),
            None,
            lambda im: im.size == (20, 40) and _pixel(im, 10, 5)[0] > 200,
        ),
        Case(
            "png_with_zip.png",
            png + b"PK\x03\x04" + b"\x00" * 26 + b"<script>alert(1)</script>",
            None,
            lambda im: im.size == (64, 48),
        ),
    ]
