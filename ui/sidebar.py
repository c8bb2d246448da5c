"""The sidebar shared by every page: the device, the overlay colormap and the overlay opacity.

With a Ray cluster as the backend (:mod:`ui.backend`) the device is the cluster's: the selector
shows :data:`RAY_DEVICE`, disabled, and says where the models run.

This module is the one place that names the sidebar's session-state keys and their defaults:
``app.py`` draws the widgets with :func:`draw_sidebar` around every page, and the pages read the
values through :func:`settings` (which falls back to the same defaults when a page runs alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

import attnviz

__all__ = [
    "ALPHA_KEY",
    "CMAP_KEY",
    "COLORMAPS",
    "DEFAULT_ALPHA",
    "DEFAULT_DEVICE",
    "DEVICE_KEY",
    "RAY_DEVICE",
    "Settings",
    "draw_sidebar",
    "settings",
]

# The sidebar's session-state keys: draw_sidebar writes them, settings() reads them.
DEVICE_KEY = "sidebar_device"
CMAP_KEY = "sidebar_cmap"
ALPHA_KEY = "sidebar_alpha"

# Overlay colormaps offered in the sidebar (names in ``matplotlib.colormaps``); the first is the default.
COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma")

DEFAULT_DEVICE = "auto"
RAY_DEVICE = "Ray"
"""The device shown (and passed around) when the models run on a Ray cluster."""
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class Settings:
    """The sidebar's settings (written by app.py), with defaults when a page runs alone."""

    device: str
    cmap: str
    alpha: float


def settings() -> Settings:
    """The current sidebar settings."""
    state = st.session_state
    return Settings(
        device=str(state.get(DEVICE_KEY, DEFAULT_DEVICE)),
        cmap=str(state.get(CMAP_KEY, COLORMAPS[0])),
        alpha=float(state.get(ALPHA_KEY, DEFAULT_ALPHA)),
    )


def device_or_error(chosen: Settings) -> str | None:
    """The torch device the sidebar's choice names (``"cpu"``, ``"cuda:0"``...), or None after showing
    why it cannot be used (e.g. CUDA chosen on a machine without it); :data:`RAY_DEVICE` when the
    models run on a Ray cluster (its replicas choose)."""
    from ui.backend import ray_address  # ui.backend imports ui, which imports this module

    if ray_address() is not None:
        return RAY_DEVICE
    try:
        return str(attnviz.resolve_device(chosen.device))
    except attnviz.DeviceError as err:
        st.error(str(err))
        return None


def draw_sidebar() -> None:
    """Draw the settings shared by every page; their values live in ``st.session_state``."""
    from ui.backend import ray_address

    cuda = torch.cuda.is_available()
    address = ray_address()
    with st.sidebar:
        st.header("Settings")
        if address is not None:
            st.selectbox(
                "Device",
                [RAY_DEVICE],
                key=DEVICE_KEY,
                disabled=True,
                help="The models run on the Ray cluster's replicas, each on its GPU share or its CPUs.",
            )
            st.caption(f"Models run on the Ray cluster at {address}; this app process holds none.")
        else:
            devices = [DEFAULT_DEVICE, "cpu", "cuda"] if cuda else [DEFAULT_DEVICE, "cpu"]
            st.selectbox(
                "Device",
                devices,
                key=DEVICE_KEY,
                help="auto picks the CUDA GPU when there is one, else the CPU.",
            )
            if not cuda:
                st.caption("cuda: no CUDA GPU is available on this machine, models run on the CPU.")
        st.selectbox(
            "Overlay colormap",
            COLORMAPS,
            key=CMAP_KEY,
            help="The colours of every heat map; each map's colour bar shows which value each colour means.",
        )
        st.slider(
            "Overlay opacity",
            0.0,
            1.0,
            DEFAULT_ALPHA,
            step=0.05,
            key=ALPHA_KEY,
            help="How strongly the heat map covers the image (0: the image only, 1: the map only).",
        )
        st.caption(f"attnviz {attnviz.__version__}")
