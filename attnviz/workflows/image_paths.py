"""Image paths from files and folders, as ``python -m attnviz analyze`` accepts them.

A folder stands for its image files (by extension, sorted, hidden ones left out); a file is kept
as given, and :func:`attnviz.load_image` decides later, by content, whether it is an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from attnviz.io.images import ALLOWED_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "expand_image_paths"]

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(f".{ext}" for ext in ALLOWED_EXTENSIONS)
"""File name extensions a folder is expanded to (case-insensitive): the formats ``load_image``
reads. Files named otherwise are left out of a folder; a file given by name is read whatever its
name, and its content decides."""


def expand_image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expands folders into their image files; files are kept as given.

    A folder gives its regular files whose extension is in :data:`IMAGE_EXTENSIONS`
    (case-insensitive), sorted by name, hidden files (a leading dot) left out; it is not searched
    recursively. Anything else (a file, a missing path) is kept as is: :func:`attnviz.load_image`
    decides later, by content.

    Args:
        paths: files and folders.

    Returns:
        The image paths as strings, folders replaced by their files, in the given order.

    Raises:
        ValueError: a folder holds no image file.
        OSError: a folder cannot be listed.
    """
    out: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if not os.path.isdir(path):
            out.append(path)
            continue
        with os.scandir(path) as entries:
            names = sorted(
                e.name
                for e in entries
                if not e.name.startswith(".")
                and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                and e.is_file()
            )
        if not names:
            kinds = ", ".join(IMAGE_EXTENSIONS)
            raise ValueError(f"the folder {path} holds no image files ({kinds})")
        out.extend(os.path.join(path, name) for name in names)
    return out
