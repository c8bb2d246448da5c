"""attnviz web app: the entry point (``streamlit run app.py``).

It sets the page up, configures logging, draws the sidebar shared by every page (device, overlay
colormap and opacity: :func:`ui.sidebar.draw_sidebar`, which also names their ``sidebar_*`` keys in
``st.session_state``) and runs the page chosen in the navigation. Which weights a model runs with is
decided per model where models run (the Compare page: the zoo's own weights, cached pretrained
weights, else random, with a per-model override), and results from random weights say so in their
own column. Models run in this process, or on a Ray cluster when one is named (:mod:`ui.backend`;
one clear message at start when it cannot be reached). Pages only call :mod:`attnviz` functions: no
hooks and no torch module internals here.
"""

from __future__ import annotations

import logging

import streamlit as st

from ui.backend import check_backend
from ui.sidebar import draw_sidebar


def _configure_logging() -> None:
    """Send attnviz's log records (library and pages) to stderr once per process."""
    # basicConfig is a no-op when the root logger already has handlers (every rerun after the first).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("attnviz").setLevel(logging.INFO)


def main() -> None:
    """Build the page, the sidebar and the navigation, then run the chosen page."""
    st.set_page_config(layout="wide", page_title="attnviz")
    _configure_logging()
    page = st.navigation(
        [
            st.Page("pages/compare.py", title="Compare", icon=":material/compare:", default=True),
            st.Page("pages/scene.py", title="Scene lab", icon=":material/science:"),
            st.Page("pages/playground.py", title="Playground", icon=":material/model_training:"),
            st.Page("pages/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
            st.Page("pages/modules.py", title="Modules", icon=":material/school:"),
            st.Page("pages/models.py", title="Models", icon=":material/view_list:"),
        ]
    )
    draw_sidebar()
    if check_backend() is None:  # a Ray cluster was named and cannot be used: say so, run nothing
        st.stop()
    page.run()


if __name__ in {"__main__", "__page__"}:
    main()
