"""Modules page: what each attention module computes, how attnviz reads it, what it costs, and live.

One tab per attention kind of :data:`attnviz.layers.ATTENTION_REGISTRY`, drawn from
:data:`attnviz.workflows.teaching.MODULE_GUIDE`: the paper, the formula, the data-flow graph
(Graphviz, rendered by Streamlit's bundled frontend, no network), what the module computes and what
its heat map means, its parameters and FLOPs at the chosen size
(:func:`attnviz.workflows.teaching.module_cost`), and its zoo model run on a fixed generated scene.
Then the three insertion patterns with runnable code. The logic lives in :mod:`ui.modules`; this
file lays the page out.

Zoo models come from :func:`ui.cached_model` (``st.cache_resource`` keyed by ``(name, weights,
device)``); the live results are kept in ``st.session_state["modules_results"]``.
"""

from __future__ import annotations

import streamlit as st

import attnviz
from attnviz.workflows.teaching import INSERTION_PATTERNS, MODULE_GUIDE
from ui import require_app
from ui import settings as read_settings
from ui.maps import scale_control
from ui.modules import CHANNELS_KEY, SCALE_KEY, SIDE_KEY, cost_comparison, module_tab


def main() -> None:
    """Draw the page."""
    st.title("Modules")
    st.caption(
        "The attention modules attnviz implements: what each computes, what the app's heat map of it "
        "means, what it costs, and its zoo model at work."
    )
    sidebar = read_settings()
    try:
        device = str(attnviz.resolve_device(sidebar.device))
    except attnviz.DeviceError as err:
        st.error(str(err))
        return
    left, right, scale_column = st.columns([1, 1, 2], vertical_alignment="bottom")
    with scale_column:
        mode = scale_control(SCALE_KEY)
    settings = (device, sidebar.cmap, sidebar.alpha, mode)
    with left:
        channels = int(
            st.number_input(
                "Channels C",
                min_value=8,
                max_value=512,
                value=64,
                step=8,
                key=CHANNELS_KEY,
                help="Channels of the feature map the module runs on (a multiple of 8: MHSA and DAT "
                "split the channels into 4 heads).",
            )
        )
    with right:
        side = int(
            st.number_input(
                "Feature map side (H = W)",
                min_value=2,
                max_value=32,
                value=12,
                step=1,
                key=SIDE_KEY,
                help="The zoo's stage-2 map is 12x12, stage 3 is 6x6; a ResNet's stage 3 at 224 px is 14x14.",
            )
        )
    tabs = st.tabs([g.short for g in MODULE_GUIDE.values()])
    for tab, guide in zip(tabs, MODULE_GUIDE.values(), strict=True):
        with tab:
            module_tab(guide, channels, side, settings)

    st.header("Cost of every module")
    cost_comparison(channels, side)

    st.header("Three ways to insert attention")
    st.caption("Each snippet runs as it is (the test suite executes them).")
    for pattern in INSERTION_PATTERNS:
        st.subheader(pattern.title)
        st.markdown(pattern.explanation)
        st.code(pattern.code, language="python")


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
