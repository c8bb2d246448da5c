"""Streamlit helpers shared by the pages: the shared model cache, per-session stores and compact
charts; :mod:`ui.sidebar` holds the sidebar's settings (re-exported here), :mod:`ui.maps` draws heat
maps with their colour bars, :mod:`ui.picker` the grouped model picker and the weights each model
runs with, :mod:`ui.runner` runs a model and reports its failure. Each page's logic lives in its own
module (:mod:`ui.compare`, :mod:`ui.scene`, :mod:`ui.modules`, :mod:`ui.leaderboard`), so that tests
import it without loading a page file.

Pages import this package (it lives next to ``app.py``, outside ``pages/``, which holds only page
scripts). Like the pages, it never touches hooks: models are only run through
:func:`attnviz.analyze`, which holds each model's lock.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import streamlit as st

import attnviz
from ui.sidebar import ALPHA_KEY, CMAP_KEY, COLORMAPS, DEVICE_KEY, Settings, settings

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "ALPHA_KEY",
    "CMAP_KEY",
    "COLORMAPS",
    "DEVICE_KEY",
    "Settings",
    "cached_model",
    "compact",
    "require_app",
    "settings",
    "store",
]

# Models kept in the shared cache at most; the least recently used one goes first.
MAX_MODELS = 32


@dataclass
class _ModelCache:
    """Loaded models shared by every session: ``key -> model``, plus a lock per key being loaded."""

    models: dict = field(default_factory=dict)
    loading: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@st.cache_resource(show_spinner=False)
def _model_cache() -> _ModelCache:
    # Only the container is an st.cache_resource: loading happens outside any cached function,
    # so the progress bar a loader draws belongs to its own session and is never replayed into
    # another session's page (Streamlit replays elements drawn inside cached functions).
    return _ModelCache()


def cached_model(
    name: str, weights: str, device: str, progress: attnviz.backends.ProgressFn | None = None
) -> attnviz.LoadedModel:
    """One model per ``(name, weights, device)`` and weights file version, shared by every session.

    The key includes the modification time of the weights file, so a retrained zoo model (or a
    newly cached download) replaces the old one. A model is loaded once even when several sessions
    ask for it at the same time (the others wait for it); failures are not cached: a later run
    tries again.
    """
    stamp = 0.0
    if weights == "pretrained":
        path = attnviz.get_spec(name).weights_path
        stamp = os.path.getmtime(path) if os.path.isfile(path) else 0.0
    key = (name, weights, device, stamp)
    cache = _model_cache()
    with cache.lock:
        if key in cache.models:
            cache.models[key] = cache.models.pop(key)  # most recently used last
            return cache.models[key]
        key_lock = cache.loading.setdefault(key, threading.Lock())
    with key_lock:
        with cache.lock:
            if key in cache.models:
                return cache.models[key]
        try:
            model = attnviz.load_model(name, weights=weights, device=device, progress=progress)
        finally:
            with cache.lock:
                cache.loading.pop(key, None)
        with cache.lock:
            cache.models[key] = model
            while len(cache.models) > MAX_MODELS:
                cache.models.pop(next(iter(cache.models)))
        return model


def store(key: str) -> dict:
    """A dict kept in this session's state under ``key``."""
    if key not in st.session_state:
        st.session_state[key] = {}
    return st.session_state[key]


def require_app() -> None:
    """Send a session that reached a page without ``app.py`` (a deep link to a fresh server) to it.

    With a folder named ``pages/``, Streamlit runs a directly requested page file on its own
    until ``app.py`` has called ``st.navigation`` once; such a run has no sidebar settings.
    """
    if DEVICE_KEY not in st.session_state:
        st.switch_page("app.py")


def compact(fig: go.Figure, height: int, top: int = 40, bottom: int = 10) -> go.Figure:
    """``fig`` with the given height and narrow margins (the charts of one row line up)."""
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": top, "b": bottom})
    return fig
