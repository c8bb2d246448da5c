"""attnviz web app: the entry point (``streamlit run app.py``).

It sets the page up, configures logging, draws the sidebar shared by every page (device, weights
mode, overlay colormap and opacity, stored in ``st.session_state`` under ``sidebar_*`` keys) and
runs the page chosen in the navigation. Pages only call :mod:`attnviz` functions: no hooks and no
torch module internals here.
"""

from __future__ import annotations

import logging

import streamlit as st
import torch

import attnviz

DEVICE_KEY = "sidebar_device"
WEIGHTS_KEY = "sidebar_weights"
CMAP_KEY = "sidebar_cmap"
ALPHA_KEY = "sidebar_alpha"

# Overlay colormaps offered in the sidebar (names in ``matplotlib.colormaps``).
COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma")

UNTRAINED_BANNER = (
    "Results come from untrained (random) weights: maps and predictions are not meaningful, they only "
    "show what the app can display. Pretrained weights need the files listed on the Models page."
)


def _configure_logging() -> None:
    """Send attnviz's log records (library and pages) to stderr once per process."""
    # basicConfig is a no-op when the root logger already has handlers (every rerun after the first).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("attnviz").setLevel(logging.INFO)


def _default_weights() -> str:
    """``"pretrained"`` when at least one model's weights are cached locally, else ``"random"``.

    A fresh offline machine then opens on something that works.
    """
    return "pretrained" if any(spec.pretrained_available for spec in attnviz.list_models()) else "random"


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
        if WEIGHTS_KEY not in st.session_state:
            st.session_state[WEIGHTS_KEY] = _default_weights()
        st.radio(
            "Weights",
            ["pretrained", "random"],
            key=WEIGHTS_KEY,
            help="pretrained: the ImageNet weights from the local cache (see the Models page). "
            "random: the same architectures, untrained.",
        )
        st.selectbox("Overlay colormap", COLORMAPS, key=CMAP_KEY)
        st.slider("Overlay opacity", 0.0, 1.0, 0.5, step=0.05, key=ALPHA_KEY)
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
    if st.session_state[WEIGHTS_KEY] == "random":
        st.warning(UNTRAINED_BANNER, icon=":material/warning:")
    page.run()


if __name__ in {"__main__", "__page__"}:
    main()
