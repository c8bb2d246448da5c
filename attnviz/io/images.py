"""Safe image loading for uploads, sample files and the command line.

Everything that reaches a model goes through :func:`load_image`. It accepts the bytes of an upload
or a path, decides the format from the content (never from the file name), refuses anything that
is not a JPEG, PNG, WebP or GIF, caps the file size, the pixel count and the aspect ratio before
decoding, forces a full decode so that truncated files fail here rather than later, and returns a
detached, upright ``RGB`` image whatever the source mode (CMYK, 16-bit grayscale, palette,
transparency, animation).

Every refusal is an :class:`ImageLoadError` whose message is one short sentence meant for the
user; the app and the CLI show it as is.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attnviz.core.errors import AttnvizError

__all__ = [
    "ALLOWED_EXTENSIONS",
    "ALLOWED_FORMATS",
    "MAX_ASPECT",
    "MAX_BYTES",
    "MAX_PIXELS",
    "ImageLoadError",
    "describe_image",
    "load_image",
]

logger = logging.getLogger(__name__)

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
"""Pillow format names :func:`load_image` accepts; everything else is refused."""

ALLOWED_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "gif")
"""File name extensions for upload widgets. A hint for the browser only: content decides."""

MAX_BYTES: int = 20 * 1024 * 1024
"""Largest accepted file, in bytes (20 MiB)."""

MAX_PIXELS: int = 40_000_000
"""Largest accepted ``width * height``, checked on the header before decoding."""

MAX_ASPECT: float = 16
"""Largest accepted ratio of the longer side to the shorter side."""

_FORMATS_TEXT = "JPEG, PNG, WebP or GIF expected"
_MAX_LABEL = 80
_WHITE = (255, 255, 255, 255)
_WARNINGS_LOCK = threading.Lock()

# What a decoder may raise on a truncated or corrupt stream. UnidentifiedImageError is an OSError
# too, but it is handled before these.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
)

# Magic numbers of the allowed formats: such a file that Pillow cannot open is corrupt, not foreign.
_ALLOWED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")

# Magic numbers of formats users commonly try, to say what the file looks like.
_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"8BPS", "a Photoshop document"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a program"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


class ImageLoadError(AttnvizError, ValueError):
    """A file or upload that cannot be used as an image.

    The message is one short, user-facing sentence, for example ``"x.png is not a supported image:
    JPEG, PNG, WebP or GIF expected (the file looks like text)."``; show it as is.
    """


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    name: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_aspect: float = MAX_ASPECT,
) -> Image.Image:
    """Load an upload or a file as a fully decoded, upright RGB image.

    The format is decided by the content: JPEG, PNG (APNG included), WebP and GIF are accepted,
    anything else is refused whatever its name. Limits are checked as early as possible: the file
    size before reading, the pixel count and the aspect ratio on the header before decoding. The
    image is then decoded completely, so a truncated file fails here. Animations give their first
    frame; EXIF orientation is applied; CMYK, grayscale, palette and 16-bit images are converted to
    8-bit RGB (16-bit values scaled by their bit depth, ``F`` images min-max scaled), and anything
    with transparency is composited onto white, so colour hidden under transparent pixels never
    shows.

    Args:
        source: the file's content (``bytes``, ``bytearray`` or ``memoryview``) or the path of a
            regular file.
        name: how to call the image in error messages (typically the uploaded file's name).
            Defaults to the path, or ``"The file"`` for bytes.
        max_bytes: largest accepted file size in bytes.
        max_pixels: largest accepted ``width * height``.
        max_aspect: largest accepted ratio of the longer side to the shorter side.

    Returns:
        A new ``PIL.Image.Image`` in mode ``"RGB"``, its pixels loaded and no file attached.

    Raises:
        ImageLoadError: the source is missing, empty, too big, not a supported image, corrupt,
            truncated, too large in pixels or too elongated. The message is user-facing.
        TypeError: ``source`` is neither bytes nor a path.
        ValueError: a limit is not positive.
    """
    _check_limits(max_bytes, max_pixels, max_aspect)
    label = _label(name, source)
    data = _read_bounded(source, label, max_bytes)

    try:
        with _open_checked(data, label, max_pixels, max_aspect) as img:
            img.load()
            upright = _exif_upright(img, label)
            rgb = _to_rgb(upright, label)
            if rgb is img:
                rgb = img.copy()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{label} is too large in pixels: the limit is {max_pixels:,} pixels.") from exc
    except UnidentifiedImageError as exc:
        raise _unsupported(label, data) from exc
    except _DECODE_ERRORS as exc:
        logger.info("decoding %s failed: %r", label, exc)
        raise ImageLoadError(f"{label} could not be decoded (truncated or corrupt).") from exc

    rgb.info.clear()  # drop EXIF, ICC and comments of the source: pixels only from here on
    return rgb


def describe_image(img: Image.Image) -> str:
    """Describe an image in a few words, for captions and logs.

    Args:
        img: any PIL image.

    Returns:
        ``"<width>x<height> <mode>"``, e.g. ``"640x480 RGB"``.
    """
    width, height = img.size
    return f"{width}x{height} {img.mode}"


def _check_limits(max_bytes: int, max_pixels: int, max_aspect: float) -> None:
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be at least 1, got {max_aspect}")


def _label(name: str | None, source: object) -> str:
    """Name the image in messages: the given name, else the path, else ``"The file"``."""
    if name is None and isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    if not isinstance(name, str) or not name.strip():
        return "The file"
    # Names come from uploads: no control characters, no endless strings in the UI.
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in name.strip())
    if len(cleaned) > _MAX_LABEL:
        cleaned = "…" + cleaned[-(_MAX_LABEL - 1) :]
    return cleaned


def _read_bounded(source: object, label: str, max_bytes: int) -> bytes:
    """Return the source's bytes, refusing empty and oversized ones before reading them all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        _check_size(size, label, max_bytes)
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be bytes or a path, got {type(source).__name__}")

    path = Path(os.fspath(source))
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{label} does not exist.") from exc
    except OSError as exc:
        raise ImageLoadError(f"{label} cannot be read ({exc.strerror or 'access denied'}).") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"{label} is a directory, not an image file.")
    if not stat.S_ISREG(info.st_mode):
        # FIFOs, devices and sockets: reading them could block or never end.
        raise ImageLoadError(f"{label} is not a regular file.")
    _check_size(info.st_size, label, max_bytes)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ImageLoadError(f"{label} cannot be read ({exc.strerror or 'access denied'}).") from exc
    if len(data) > max_bytes:
        raise ImageLoadError(f"{label} is too big: the limit is {_human_bytes(max_bytes)}.")
    _check_size(len(data), label, max_bytes)
    return data


def _check_size(size: int, label: str, max_bytes: int) -> None:
    if size == 0:
        raise ImageLoadError(f"{label} is empty (0 bytes).")
    if size > max_bytes:
        raise ImageLoadError(
            f"{label} is too big: {_human_bytes(size)}, the limit is {_human_bytes(max_bytes)}."
        )


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _check_geometry(size: tuple[int, int], label: str, max_pixels: int, max_aspect: float) -> None:
    """Refuse from the header alone: no pixels, too many pixels, or a strip too thin."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{label} could not be decoded (truncated or corrupt).")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{label} is too large in pixels: {width}x{height} is {width * height:,} pixels, "
            f"the limit is {max_pixels:,}."
        )
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect:
        raise ImageLoadError(
            f"{label} is too elongated: {width}x{height} has an aspect ratio of {ratio:.1f}:1, "
            f"the limit is {max_aspect:g}:1."
        )


def _open_checked(data: bytes, label: str, max_pixels: int, max_aspect: float) -> Image.Image:
    """Open ``data`` as an allowed format, positioned on its first frame, geometry checked.

    Only the header is parsed here; pixels are decoded by the caller. Pillow's bomb warning is an
    error inside (it fires only between Pillow's own limit and twice that). ``catch_warnings``
    swaps the process-wide filter list, so our own calls take turns; the lock is held while the
    header is parsed, not while pixels are decoded.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        try:
            _check_geometry(img.size, label, max_pixels, max_aspect)
            # is_animated looks at most one frame ahead; n_frames would scan a whole GIF.
            if getattr(img, "is_animated", False):
                logger.info("%s is animated; using its first frame", label)
            img.seek(0)
            # A GIF grows to the extent of its frames while seeking: check again.
            _check_geometry(img.size, label, max_pixels, max_aspect)
        except BaseException:
            img.close()
            raise
    return img


def _exif_upright(img: Image.Image, label: str) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the image as stored."""
    try:
        upright = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        logger.warning("ignoring unreadable EXIF orientation of %s: %r", label, exc)
        return img
    return img if upright is None else upright


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; may return ``img`` itself when it is RGB already."""
    if _has_alpha(img):
        # convert() keeps the colour under alpha 0; compositing onto white removes it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", img.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        return _gray_to_rgb(_scale_integer(np.asarray(img)))
    if img.mode == "F":
        return _gray_to_rgb(_scale_min_max(np.asarray(img, dtype=np.float64)))
    try:
        # 1, L, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions.
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(f"{label} uses an unsupported colour mode ({img.mode}).") from exc


def _scale_integer(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit samples to 8 bits by their bit depth (``v * 255 / 65535``), never clipping.

    Mode ``"I"`` holds 32-bit integers; when they fit in 16 bits (the usual source: a 16-bit
    PNG) they are scaled as 16-bit, otherwise min-max.
    """
    values = values.astype(np.int64, copy=False)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):
        return _scale_min_max(values.astype(np.float64))
    return ((values * 255 + 0xFFFF // 2) // 0xFFFF).astype(np.uint8)


def _scale_min_max(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if not values.size:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")


def _unsupported(label: str, data: bytes) -> ImageLoadError:
    """Build the error for content Pillow could not identify as an allowed format."""
    head = data[:512]
    if head.startswith(_ALLOWED_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        # Right signature, unreadable header: a damaged file, not a foreign one.
        return ImageLoadError(f"{label} could not be decoded (truncated or corrupt).")
    kind = _sniff(head)
    hint = f" (the file looks like {kind})" if kind else ""
    return ImageLoadError(f"{label} is not a supported image: {_FORMATS_TEXT}{hint}.")


def _sniff(head: bytes) -> str | None:
    """Guess what a refused file is, for the message only; it never decides acceptance."""
    for magic, kind in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "an AVIF image"
        if brand in _HEIF_BRANDS:
            return "a HEIC image"
        return "a video or ISO media file"
    if head[:4] == b"RIFF":
        return "a RIFF file (audio or video)"
    lowered = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered:
        return "an SVG image"
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body", "<script")) or "<html" in lowered:
        return "HTML"
    if lowered.startswith("<?xml"):
        return "XML"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the head; retry without it.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "text"
    return None
