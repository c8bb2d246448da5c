"""The Compare page's downloads: a button per chart and map, and the ZIP of every result.

Each button's content is generated only when it is clicked (``data`` is a callable). A block's channel
weights download as the export bundle's table (:mod:`attnviz.io.tables`): the same columns as the
``channel_weights.csv`` of each result in the ZIP, holding that block's rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st
from PIL import Image

import attnviz
from attnviz import render
from attnviz.core.scales import MapScale
from attnviz.io.export import export_files, zip_bundle
from attnviz.io.tables import channel_weights_csv, top5_csv
from ui import Settings, store
from ui.compare.state import RESULTS_KEY, RunConfig
from ui.maps import map_picture

__all__ = ["bundle_zip", "channel_csv", "download", "download_everything", "map_png", "top5_csv"]


def download(label: str, data: Callable[[], bytes], file_name: str, mime: str, key: str) -> None:
    """A download button whose content is generated only when it is clicked."""
    st.download_button(
        label,
        data=data,
        file_name=file_name,
        mime=mime,
        key=key,
        on_click="ignore",
        icon=":material/download:",
    )


def channel_csv(cw: attnviz.ChannelWeights) -> bytes:
    """One block's channel weights as the export bundle's ``channel_weights.csv`` has them:
    ``block, layer, kind, path, c0 ...``, one row per path (:func:`attnviz.io.tables.channel_weights_csv`)."""
    return channel_weights_csv(cw)


def map_png(
    image: Image.Image | np.ndarray, values: np.ndarray, scale: MapScale, cmap: str, alpha: float
) -> bytes:
    """PNG bytes of a map with its colour bar, as shown (called only when its download is clicked)."""
    return render.to_png_bytes(map_picture(image, values, scale, cmap, alpha))


def bundle_zip(items: Sequence[tuple[str, attnviz.Analysis]], cmap: str, alpha: float, scale: str) -> bytes:
    """The ZIP of every result: :func:`attnviz.io.export.export_files` packed by ``zip_bundle``."""
    return zip_bundle(export_files(items, cmap=cmap, alpha=alpha, scale=scale))


def download_everything(config: RunConfig, settings: Settings, mode: str) -> None:
    """Below everything: the ZIP of every stored result of ``config`` (nothing when there is none)."""
    results: dict = store(RESULTS_KEY)
    items = [
        (ref.label, results[config.result_key(ref, m)])
        for ref in config.images
        for m in config.models
        if config.result_key(ref, m) in results
    ]
    if not items:
        return
    st.divider()
    download(
        f"Download everything (ZIP, {len(items)} result(s))",
        functools.partial(bundle_zip, items, settings.cmap, settings.alpha, mode),
        "attnviz_results.zip",
        "application/zip",
        "compare_dl_zip",
    )
    st.caption(
        "Overlays with their colour bars, channel weights (CSV), charts (HTML, offline) and summary.json "
        f"for every result; the overlays use the {mode} scale, each map on its own."
    )
