"""Heat maps over images: the overlay, its colour bar strip, enlarging and PNG encoding.

Every function returns an RGB ``PIL.Image.Image`` (or its PNG bytes, or ``[H, W, 3]`` uint8 colours
for :func:`heat_to_rgb`); colours come from ``matplotlib.colormaps`` through the lookup tables of
:mod:`attnviz.render._pixels`.
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
from matplotlib.colors import Colormap
from PIL import Image

from attnviz.core.scales import MapScale
from attnviz.render._pixels import (
    blend,
    check_alpha,
    colorize,
    colour_table,
    resize_bilinear,
    rgbx_image,
    scaled_heat,
    shifted_rgbx,
)
from attnviz.render.text import font, text_width, wrap
from attnviz.runtime.images import as_rgb_image

__all__ = ["colorbar", "colorbar_title", "enlarge", "heat_to_rgb", "overlay", "to_png_bytes", "with_colorbar"]


def heat_to_rgb(heat: np.ndarray, *, cmap: str | Colormap = "jet", normalize: bool = True) -> np.ndarray:
    """Colours a heat map through a matplotlib colormap.

    Args:
        heat: ``[H, W]`` numeric array. Non-finite values are treated as 0 (with a logged warning).
        cmap: name in ``matplotlib.colormaps`` (or a ``Colormap``).
        normalize: min-max scale ``heat`` to [0, 1] first (a constant map becomes all zeros);
            when False the values are clipped to [0, 1].

    Returns:
        ``[H, W, 3]`` uint8 colours, ``round(255 * cmap(v)[:3])`` per cell.

    Raises:
        ValueError: ``heat`` is not 2-D or is empty, or ``cmap`` is an unknown name.
        TypeError: ``heat`` is not numeric or ``cmap`` is neither a name nor a Colormap.
    """
    table = colour_table(cmap)
    return np.array(rgbx_image(colorize(scaled_heat(heat, normalize), table)))


def overlay(
    image: Image.Image | np.ndarray,
    heat: np.ndarray,
    *,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    normalize: bool = True,
    value_range: tuple[float, float] | None = None,
) -> Image.Image:
    """Blends a coloured heat map over an image.

    The heat map is scaled to [0, 1] on its own grid (``(v - lo) / (hi - lo)`` clipped for a
    ``value_range``; else min-max when ``normalize``, or clipped),
    upsampled to the image size with bilinear interpolation that aligns pixel centres (cell
    ``(i, j)`` of an ``[h, w]`` map is centred on input pixel ``((i + 0.5) * H / h, (j + 0.5) * W / w)``),
    coloured through ``matplotlib.colormaps[cmap]`` and blended as
    ``(1 - alpha) * image + alpha * colour``, rounded to uint8.

    Args:
        image: PIL image (any mode; converted to RGB) or ``[H, W, 3]`` uint8 array.
        heat: ``[h, w]`` numeric map of any size. Non-finite values are treated as 0 (logged).
        cmap: colormap name in ``matplotlib.colormaps`` (or a ``Colormap``).
        alpha: weight of the colour, in [0, 1]; 0 returns the image, 1 the pure colour map.
        normalize: min-max scale the heat to [0, 1] (a constant map becomes all zeros); when False
            the values are clipped to [0, 1]. Ignored when ``value_range`` is given.
        value_range: ``(lo, hi)``: ``lo`` gets the colormap's first colour and ``hi`` its last,
            values outside are clipped (a :class:`attnviz.core.scales.MapScale`'s ``value_range``, so
            that maps compared side by side use the same colours for the same values).

    Returns:
        An RGB ``PIL.Image.Image`` of the image's size.

    Raises:
        ValueError: bad ``alpha`` or ``value_range``, a heat map that is not 2-D or empty, an image
            that is not ``[H, W, 3]``, or an unknown colormap name.
        TypeError: an image that is neither a PIL image nor a uint8 array, a non-numeric heat map,
            or a non-numeric ``alpha``.
    """
    alpha = check_alpha(alpha)
    table = colour_table(cmap)
    img = as_rgb_image(image)
    arr = scaled_heat(heat, normalize, value_range)
    # Interpolate after scaling so every pixel is a convex mix of the map's own [0, 1] values.
    colour = colorize(resize_bilinear(arr, img.height, img.width), table)
    return rgbx_image(blend(shifted_rgbx(img), colour, alpha))


def to_png_bytes(img: Image.Image) -> bytes:
    """Encodes a PIL image as PNG.

    zlib's run-length strategy (``Z_RLE``) suits PNG's filtered rows: it encodes a 224 px overlay
    about 4x faster than the default strategy into a file 0.5 % larger (a Swin-T head grid of
    1612x804: 2x faster, 2.4 % larger; 512 px photos: 3.5x faster, 4 % larger).

    Args:
        img: any PIL image.

    Returns:
        The PNG file contents.

    Raises:
        TypeError: ``img`` is not a PIL image.
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"img must be a PIL image, got {type(img).__name__}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_type=zlib.Z_RLE)
    return buf.getvalue()


def colorbar_title(scale: MapScale) -> str:
    """The line under a colour bar: the quantity and how the colours span it."""
    if scale.stretched:
        how = "stretched (this map's min-max)" if scale.shared == 1 else "stretched (min-max of these maps)"
    elif scale.natural:
        how = "absolute (natural range)"
    elif scale.shared > 1:
        how = f"absolute (0 to max, shared by {scale.shared} maps)"
    else:
        how = "absolute (0 to max)"
    return f"{scale.quantity.label} · {how}"


def colorbar(
    scale: MapScale, *, cmap: str | Colormap = "jet", width: int = 448, title: str | None = None
) -> Image.Image:
    """A horizontal colour bar with its values: the strip drawn under every heat map attnviz shows.

    The bar runs from ``scale.lo`` (the colormap's first colour, left) to ``scale.hi`` (its last,
    right), each column coloured through the same lookup table as :func:`overlay`; three ticks
    label the low, middle and high values, and a line below names the quantity and the scale mode
    (:func:`colorbar_title`, or ``title``). Text scales with ``width``.

    Args:
        scale: an :class:`attnviz.core.scales.MapScale`.
        cmap: colormap name in ``matplotlib.colormaps`` (or a ``Colormap``).
        width: width in pixels (>= 64), normally the width of the picture above it.
        title: the line under the ticks; default :func:`colorbar_title`.

    Returns:
        An RGB image ``width`` pixels wide on a white background.
    """
    from PIL import ImageDraw

    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 64:
        raise ValueError(f"width must be an int >= 64, got {width!r}")
    width = int(width)
    table = colour_table(cmap)
    size = int(min(26, max(11, round(width / 21))))
    fnt = font(size)
    ticks = scale.ticks(3)
    pad = int(max(6, math.ceil(max(text_width(t, fnt) for _, t in ticks) / 2) + 2))
    bar_w, bar_h = width - 2 * pad, max(10, size)
    lines = wrap(title if title is not None else colorbar_title(scale), fnt, width - 8)
    line_h = size + 3
    top = 4
    height = top + bar_h + 4 + line_h + len(lines) * line_h + 4
    out = Image.new("RGB", (width, height), (255, 255, 255))
    gradient = colorize(np.linspace(0.0, 1.0, bar_w)[None, :].repeat(bar_h, axis=0), table)
    out.paste(rgbx_image(gradient), (pad, top))
    draw = ImageDraw.Draw(out)
    draw.rectangle([pad - 1, top - 1, pad + bar_w, top + bar_h], outline=(80, 80, 80))
    span = scale.hi - scale.lo
    for value, text in ticks:
        frac = (value - scale.lo) / span if span > 0 else 0.0
        x = pad + frac * (bar_w - 1)
        draw.line([x, top + bar_h, x, top + bar_h + 3], fill=(60, 60, 60))
        draw.text((x, top + bar_h + 4), text, fill=(30, 30, 30), font=fnt, anchor="ma")
    y = top + bar_h + 4 + line_h
    for line in lines:
        draw.text((width / 2, y), line, fill=(70, 70, 70), font=fnt, anchor="ma")
        y += line_h
    return out


def with_colorbar(
    picture: Image.Image, scale: MapScale, *, cmap: str | Colormap = "jet", title: str | None = None
) -> Image.Image:
    """``picture`` with its :func:`colorbar` underneath, as one RGB image of the same width."""
    img = as_rgb_image(picture)
    bar = colorbar(scale, cmap=cmap, width=max(64, img.width), title=title)
    out = Image.new("RGB", (bar.width, img.height + bar.height), (255, 255, 255))
    out.paste(img, (0, 0))
    out.paste(bar, (0, img.height))
    return out


def enlarge(image: Image.Image | np.ndarray, min_width: int) -> Image.Image:
    """``image`` enlarged by the smallest whole factor that makes it at least ``min_width`` wide,
    by nearest neighbour (the pixels the model saw, only bigger); unchanged when wide enough."""
    img = as_rgb_image(image)
    factor = max(1, math.ceil(int(min_width) / img.width))
    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
