"""Streamlit helpers shared by the pages: the shared model cache and per-session stores.

Pages import this module (it lives next to ``app.py``, outside ``pages/``, which holds only page
scripts). Like the pages, it never touches hooks: models are only run through
:func:`attnviz.analyze`, which holds each model's lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

import attnviz

__all__ = ["Settings", "cached_model", "require_app", "settings", "store"]


@dataclass(frozen=True)
class Settings:
    """The sidebar's settings (written by app.py), with defaults when a page runs alone."""

    device: str
    weights: str
    cmap: str
    alpha: float


def settings() -> Settings:
    """The current sidebar settings."""
    state = st.session_state
    return Settings(
        device=str(state.get("sidebar_device", "auto")),
        weights=str(state.get("sidebar_weights", "random")),
        cmap=str(state.get("sidebar_cmap", "jet")),
        alpha=float(state.get("sidebar_alpha", 0.5)),
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def _load(
    name: str, weights: str, device: str, stamp: float, _progress: attnviz.models.ProgressFn | None
) -> attnviz.LoadedModel:
    return attnviz.load_model(name, weights=weights, device=device, progress=_progress)


def cached_model(
    name: str, weights: str, device: str, progress: attnviz.models.ProgressFn | None = None
) -> attnviz.LoadedModel:
    """One model per ``(name, weights, device)`` and weights file version, shared by every session.

    The key includes the modification time of the weights file, so a retrained zoo model (or a
    newly cached download) replaces the old one. Failures are not cached: a later run tries again.
    """
    stamp = 0.0
    if weights == "pretrained":
        path = attnviz.get_spec(name).weights_path
        stamp = os.path.getmtime(path) if os.path.isfile(path) else 0.0
    return _load(name, weights, device, stamp, progress)


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
    if "sidebar_weights" not in st.session_state:
        st.switch_page("app.py")
