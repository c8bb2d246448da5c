"""attnviz web app: the entry point (``streamlit run app.py``).

It sets the page up, configures logging, draws the sidebar shared by every page (device, overlay
colormap and opacity, stored in ``st.session_state`` under the ``ui`` package's ``sidebar_*`` keys)
and runs the page chosen in the navigation. Which weights a model runs with is decided per model
where models run (the Compare page: the zoo's own weights, cached pretrained weights, else random,
with a per-model override), and results from random weights say so in their own column. Pages only
call :mod:`attnviz` functions: no hooks and no torch module internals here.
"""

from __future__ import annotations

import logging

import streamlit as st
import torch

import attnviz
from ui import ALPHA_KEY, CMAP_KEY, COLORMAPS, DEVICE_KEY


def _configure_logging() -> None:
    """Send attnviz's log records (library and pages) to stderr once per process."""
    # basicConfig is a no-op when the root logger already has handlers (every rerun after the first).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("attnviz").setLevel(logging.INFO)


def _sidebar() -> None:
    """Draw the settings shared by every page; their values live in ``st.session_state``."""
    cuda = torch.cuda.is_available()
    with st.sidebar:
        st.header("Settings")
        devices = ["auto", "cpu", "cuda"] if cuda else ["auto", "cpu"]
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
            0.5,
            step=0.05,
            key=ALPHA_KEY,
            help="How strongly the heat map covers the image (0: the image only, 1: the map only).",
        )
        st.caption(f"attnviz {attnviz.__version__}")


def main() -> None:
    """Build the page, the sidebar and the navigation, then run the chosen page."""
    st.set_page_config(layout="wide", page_title="attnviz")
    _configure_logging()
    page = st.navigation(
        [
            st.Page("pages/compare.py", title="Compare", icon=":material/compare:", default=True),
            st.Page("pages/scene.py", title="Scene lab", icon=":material/science:"),
            st.Page("pages/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
            st.Page("pages/modules.py", title="Modules", icon=":material/school:"),
            st.Page("pages/models.py", title="Models", icon=":material/view_list:"),
        ]
    )
    _sidebar()
    page.run()


if __name__ in {"__main__", "__page__"}:
    main()
