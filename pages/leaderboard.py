"""Leaderboard page: how well each zoo model's attention finds the object, from the zoo's model cards.

The numbers are read from the JSON cards next to the committed weights (``assets/zoo/zoo_<kind>.json``,
written by ``python -m attnviz zoo train`` and ``zoo eval``): nothing runs here. One row per model
and attention map, its localisation next to its faithfulness (deletion and insertion AUCs, ROAD); the
filters and the charts are pure functions of the cards (:mod:`ui.leaderboard`).
"""

from __future__ import annotations

import streamlit as st

from ui import require_app
from ui.leaderboard import (
    FAITHFUL_COLUMNS,
    FAITHFULNESS,
    KINDS_KEY,
    MAP_CHOICES,
    MAPS_KEY,
    METRICS,
    NO_CARDS,
    SCATTER_X,
    SCATTER_X_KEY,
    card_notes,
    faithfulness_figure,
    faithfulness_notes,
    filter_rows,
    leaderboard_rows,
    metric_figure,
    read_cards,
    reference_rows,
)

_AUC = st.column_config.NumberColumn(format="%.3f")


def main() -> None:
    """Draw the page."""
    st.title("Leaderboard")
    st.caption(
        "Does each zoo model's attention land on the object? Scores on held-out generated scenes, read "
        "from the model cards of the committed weights."
    )
    st.markdown(METRICS)
    cards = read_cards()
    if not cards:
        st.info(NO_CARDS, icon=":material/info:")
        return
    for note in card_notes(cards) + faithfulness_notes(cards):
        st.caption(note)

    rows = leaderboard_rows(cards)
    if not rows:
        st.info(
            "No card has localisation scores yet: run `python -m attnviz zoo eval`.", icon=":material/info:"
        )
        return
    left, right = st.columns([3, 2])
    with left:
        kinds = st.multiselect(
            "Kinds", list(cards), default=list(cards), key=KINDS_KEY, help="Zoo models to include."
        )
    with right:
        maps = st.radio(
            "Maps",
            MAP_CHOICES,
            horizontal=True,
            key=MAPS_KEY,
            help="Grad-CAM is the baseline every model has, including the one without attention.",
        )
    shown = filter_rows(rows, kinds, gradcam=maps == MAP_CHOICES[0])
    if not shown:
        st.info("No rows match the filters.")
        return
    st.dataframe(
        shown,
        hide_index=True,
        height="content",
        column_order=(
            "model",
            "kind",
            "accuracy",
            "map",
            "pointing game",
            "energy in box",
            "box area share",
            "energy ratio",
            *FAITHFUL_COLUMNS,
            "insertion − random",
        ),
        column_config={
            "accuracy": st.column_config.NumberColumn(format="percent"),
            "map": st.column_config.TextColumn(width="medium"),
            "pointing game": st.column_config.NumberColumn(format="percent"),
            "energy in box": st.column_config.NumberColumn(format="percent"),
            "box area share": st.column_config.NumberColumn(format="percent"),
            "energy ratio": st.column_config.NumberColumn(format="%.2f"),
            **dict.fromkeys(FAITHFUL_COLUMNS, _AUC),
            "insertion − random": st.column_config.NumberColumn(format="%+.3f"),
        },
        key="leaderboard_table",
    )
    st.caption(
        "Click a column header to sort. Faithfulness: lower deletion AUC is better, higher insertion "
        "AUC and ROAD are better; the random map below is the floor."
    )
    references = [r for r in reference_rows(cards) if r["kind"] in set(kinds)]
    if references:
        with st.expander("How to read faithfulness; the floor (random map) and the reference (object box)"):
            st.markdown(FAITHFULNESS)
            st.dataframe(
                references,
                hide_index=True,
                column_config=dict.fromkeys(FAITHFUL_COLUMNS, _AUC),
                key="leaderboard_references",
            )
    st.caption("In the bar charts, red bars: attention maps; grey bars: Grad-CAM.")
    shares = [float(r["box area share"]) for r in shown if r.get("box area share") is not None]
    chance = sum(shares) / len(shares) if shares else 0.0
    ratio_tab, pointing_tab, faithful_tab = st.tabs(
        ["Energy ratio", "Pointing game", "Localisation vs faithfulness"]
    )
    with ratio_tab:
        st.plotly_chart(
            metric_figure(shown, "energy ratio", 1.0, "1 = uniform map", "Energy in box / box area share"),
            key="leaderboard_ratio_chart",
        )
    with pointing_tab:
        st.plotly_chart(
            metric_figure(
                shown,
                "pointing game",
                chance,
                f"chance ≈ {chance:.0%} (mean box area share)",
                "Pointing game: the map's maximum inside the box",
            ),
            key="leaderboard_pointing_chart",
        )
    with faithful_tab:
        x = st.radio("x axis", list(SCATTER_X), horizontal=True, key=SCATTER_X_KEY)
        st.plotly_chart(faithfulness_figure(shown, x), key="leaderboard_faithfulness_chart")
        st.caption(
            "Each point is one map of one model: to the right, it lands on the object; up, the "
            "decision comes back faster than with a random map when its most relevant pixels are "
            "put back (0 = the random floor)."
        )


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
