"""Text in pictures and figures: Pillow's bundled font, text widths, wrapping and shortening."""

from __future__ import annotations

import functools

from PIL import Image

__all__ = ["font", "shorten", "text_width", "wrap"]


@functools.lru_cache(maxsize=32)
def font(size: int):
    """Pillow's bundled scalable font at ``size`` pixels (FreeType; the bitmap font without it)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_width(text: str, fnt) -> float:
    """Width in pixels of ``text`` drawn in ``fnt``."""
    from PIL import ImageDraw

    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=fnt)


def wrap(text: str, fnt, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (at word boundaries)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(f"{lines[-1]} {word}", fnt) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (>= 2) with an ellipsis; unchanged when it fits."""
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"
