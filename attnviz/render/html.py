"""Figures as standalone HTML pages, and plotly.js beside them for pages that work offline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline

__all__ = ["PLOTLYJS_FILENAME", "figure_to_html", "write_plotlyjs"]

PLOTLYJS_FILENAME = "plotly.min.js"
"""File name that :func:`write_plotlyjs` writes and that exported HTML can reference."""


def figure_to_html(fig: go.Figure, *, plotlyjs: str = "cdn") -> str:
    """Serialises a figure as a standalone HTML page.

    Args:
        fig: the figure.
        plotlyjs: where the page loads plotly.js from: ``"cdn"`` (a script tag to the CDN),
            ``"inline"`` (the whole library embedded, ~4 MB, works offline), or a relative path
            ending in ``".js"`` such as ``"plotly.min.js"`` (pair it with :func:`write_plotlyjs`
            in the same folder for offline pages).

    Returns:
        The HTML text (``fig.to_html(full_html=True, include_plotlyjs=...)``).

    Raises:
        TypeError: ``fig`` is not a plotly Figure or ``plotlyjs`` is not a string.
        ValueError: ``plotlyjs`` is none of the accepted forms.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    if not isinstance(plotlyjs, str):
        raise TypeError(f"plotlyjs must be a string, got {type(plotlyjs).__name__}")
    if plotlyjs == "cdn":
        include: bool | str = "cdn"
    elif plotlyjs == "inline":
        include = True
    elif plotlyjs.endswith(".js") and not os.path.isabs(plotlyjs) and "://" not in plotlyjs:
        include = plotlyjs
    else:
        raise ValueError(
            f"plotlyjs must be 'cdn', 'inline' or a relative path ending in '.js', got {plotlyjs!r}"
        )
    return fig.to_html(full_html=True, include_plotlyjs=include)


def write_plotlyjs(dest_dir: str | os.PathLike[str]) -> Path:
    """Writes plotly's bundled ``plotly.min.js`` into ``dest_dir`` so exported HTML works offline.

    The file is written once: if ``dest_dir/plotly.min.js`` already holds the same bytes it is
    left alone. The write goes through a temporary file and an atomic rename, so concurrent
    callers never see a partial file. ``dest_dir`` is created if missing.

    Args:
        dest_dir: destination folder.

    Returns:
        The path of ``plotly.min.js``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / PLOTLYJS_FILENAME
    data = plotly.offline.get_plotlyjs().encode("utf-8")
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    fd, tmp = tempfile.mkstemp(prefix=".plotly-", suffix=".js.tmp", dir=dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the file is meant to be served
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
