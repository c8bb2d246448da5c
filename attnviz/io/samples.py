"""Sample photos shipped with attnviz (``assets/samples/``).

The photos are public domain or CC0; ``assets/samples/ATTRIBUTION.md`` gives the source and
licence of each. Samples are named by their bare file name, and only names that
:func:`list_samples` returns are loaded, so a name coming from the UI can never reach another file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from attnviz.io.images import ALLOWED_EXTENSIONS, load_image

__all__ = ["SAMPLES_DIR", "list_samples", "load_sample"]

logger = logging.getLogger(__name__)

SAMPLES_DIR: Path = Path(__file__).resolve().parents[2] / "assets" / "samples"
"""Folder holding the sample photos and their ``ATTRIBUTION.md``."""


def list_samples() -> list[Path]:
    """List the sample photos.

    Returns:
        Paths of the image files in :data:`SAMPLES_DIR` (by extension, hidden files skipped),
        sorted by name; an empty list when the folder is missing.
    """
    if not SAMPLES_DIR.is_dir():
        logger.warning("sample folder %s is missing", SAMPLES_DIR)
        return []
    return sorted(
        path
        for path in SAMPLES_DIR.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower().lstrip(".") in ALLOWED_EXTENSIONS
    )


def load_sample(name: str) -> Image.Image:
    """Load one sample photo by its file name.

    Args:
        name: a bare file name as returned by :func:`list_samples` (e.g. ``"cat.jpg"``).

    Returns:
        The photo as a loaded RGB image (see :func:`attnviz.io.images.load_image`).

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is a path rather than a bare file name, or names no sample.
    """
    if not isinstance(name, str):
        raise TypeError(f"sample name must be a string, got {type(name).__name__}")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"sample name must be a bare file name such as 'cat.jpg', got {name!r}")
    samples = {path.name: path for path in list_samples()}
    if name not in samples:
        known = ", ".join(sorted(samples)) or "none"
        raise ValueError(f"no sample named {name!r}; available: {known}")
    return load_image(samples[name], name=name)
