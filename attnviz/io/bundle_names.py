"""Folder names inside an export bundle: ``<image-stem>/<model>``, safe and unique.

Names keep only ``[A-Za-z0-9._-]``, never start with a dot, avoid the names Windows refuses and
are made unique (also case-insensitively, for the file systems that fold case) with a ``-2``,
``-3``... suffix. :class:`FolderNames` gives the folders result by result, so that the streaming
pipeline (:mod:`attnviz.workflows.pipeline`) names its results as :func:`attnviz.io.export.export_files`
does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attnviz import render
from attnviz.core.records import Analysis
from attnviz.io.summary import SUMMARY_FILENAME

__all__ = ["FolderNames", "folder_names", "image_stem", "safe_name", "unique_name"]

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 80
# Names Windows refuses whatever the extension: the ZIP may be unpacked there.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10))}


def safe_name(name: str, fallback: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, no leading dot, at most 80 characters."""
    cleaned = _UNSAFE_CHARS.sub("_", name).lstrip(".")
    cleaned = cleaned[:_MAX_NAME].rstrip(".") or fallback
    if cleaned.split(".")[0].upper() in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    return cleaned


def image_stem(image: str) -> str:
    """The file name of an image path or upload name without its extension, made safe."""
    base = re.split(r"[\\/]", image.strip())[-1]
    stem, dot, _ext = base.rpartition(".")
    return safe_name(stem if dot and stem.strip(".") else base, "image")


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever is not in ``taken`` (case-insensitive)."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate.casefold())
    return candidate


class FolderNames:
    """``<image-stem>/<model>`` folder names, unique across a bundle, given result by result.

    The k-th pair of one image name and one model goes to the k-th stem folder of that name: two
    uploads can share a name, and the pairs may come image-major or model-major. Calling it for
    the items of a bundle in order gives the folders :func:`export_files` uses (the streaming
    :mod:`attnviz.workflows.pipeline` names its results the same way).
    """

    def __init__(self) -> None:
        self._taken = {render.PLOTLYJS_FILENAME.casefold(), SUMMARY_FILENAME.casefold()}
        self._stems: dict[str, list[str]] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def __call__(self, image: str, model: str) -> str:
        safe = safe_name(model, "model")
        k = self._seen.get((image, safe.casefold()), 0)
        self._seen[(image, safe.casefold())] = k + 1
        known = self._stems.setdefault(image, [])
        if k == len(known):
            known.append(unique_name(image_stem(image), self._taken))
        return f"{known[k]}/{safe}"


def folder_names(items: Sequence[tuple[str, Analysis]]) -> list[str]:
    """``<image-stem>/<model>`` for every item, unique across the bundle (see :class:`FolderNames`)."""
    names = FolderNames()
    return [names(image, analysis.model) for image, analysis in items]
