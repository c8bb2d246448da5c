"""Below the Compare page's columns: is the attention the explanation? Faithfulness of the maps shown.

Measured on demand (the **Measure faithfulness** button: :func:`attnviz.analysis.faithfulness.measure`
runs the model about 40 times per map, ROAD many more), per model, for the maps picked in that
model's cell (:func:`attnviz.views.faithfulness.input_maps`: the modules' maps, rollout, Grad-CAM)
and for the class that model's Grad-CAM explains (:func:`ui.compare.gradcam.target_key`), so that all
maps of a column follow one class. Results are kept in the session, keyed by result, target, maps and
ROAD, so reruns redraw them without running the model; a result that was measured is measured again
by itself when its Grad-CAM class changes. A failure is one sentence in that model's cell
(:func:`ui.runner.attempt`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

import attnviz
from attnviz.core.faithfulness_records import Faithfulness, InputMap, MapScore
from attnviz.views.faithfulness import input_maps
from ui import compact, store
from ui.backend import backend
from ui.compare.gradcam import target_key
from ui.compare.state import RESULTS_KEY, ImageRef, RunConfig, digest, trim
from ui.maps import md
from ui.runner import Failure, attempt, show_failure

__all__ = [
    "DEFAULT_MODULE_MAPS",
    "curve_figure",
    "default_maps",
    "faithfulness_section",
    "road_figure",
    "score_table",
    "target_of",
]

log = logging.getLogger("attnviz.app.compare")

TITLE = "Faithfulness: does the decision depend on what the map shows?"
HOW_TO_READ = (
    "The model is run again on copies of its input with pixels changed in the order each map ranks "
    "them. **Deletion** removes the most relevant pixels first: with a faithful map the probability "
    "falls fast (low AUC is better). **Insertion** puts them back, most relevant first, onto a blurred "
    "copy: it rises fast (high AUC is better). **ROAD** imputes the removed pixels from their "
    "neighbours instead of blanking them, so that the hole's shape tells the model nothing (combined "
    "score, higher is better). The **random map** (dashed grey) is the floor: a map that does no better "
    "shows nothing the decision depends on."
)

# A result with more module maps than this opens on its last block's maps, the rollout and Grad-CAM.
DEFAULT_MODULE_MAPS = 4
MAPS_HELP = (
    f"Each map costs about 42 forwards (deletion and insertion, 21 steps each), ROAD 36 more. Default: "
    f"every map of the result; with more than {DEFAULT_MODULE_MAPS} module maps (a transformer's "
    "blocks) the last block's maps, the attention rollout and Grad-CAM."
)

MEASURE_KEY = "compare_faith_measure"
ROAD_KEY = "compare_faith_road"
MAPS_KEY = "compare_faith_maps"  # + "_<model>_<digest of the map names>"
STORE_KEY = "compare_faithfulness"  # (result key, target, maps, road) -> Faithfulness | Failure
ASKED_KEY = "compare_faith_asked"  # (result key, maps, road) -> True: measured, follow the class
MAX_KEPT = 32
LOW_PROBABILITY = 0.05  # below it the curves cannot fall much: the caption says so

CURVE_HEIGHT = 330
TABLE_COLUMNS = ("deletion AUC ↓", "insertion AUC ↑", "ROAD combined ↑")
RANDOM_COLOUR = "#8c8c8c"
BEST_STYLE = "font-weight: bold; background-color: rgba(44, 160, 44, 0.25)"
COLOURS = plotly.colors.qualitative.Plotly


def target_of(model: str, image: ImageRef, analysis: attnviz.Analysis) -> int | None:
    """The class followed: the one ``model``'s Grad-CAM explains on ``image`` (its picker), else the
    stored Grad-CAM's, else the top-1; None without a classifier."""
    picked = st.session_state.get(target_key(model, image))
    if picked is not None:
        return int(picked)
    if analysis.gradcam is not None:
        return analysis.gradcam.target
    return analysis.top5[0].index if analysis.top5 else None


def default_maps(analysis: attnviz.Analysis, maps: list[InputMap]) -> list[str]:
    """Every map, or (more than :data:`DEFAULT_MODULE_MAPS` module maps) the last block's, the
    rollout and Grad-CAM."""
    blocks = {r.layer: r.block for r in analysis.records if not isinstance(r, attnviz.GradCAM)}
    modules = [m for m in maps if m.layer in blocks and m.kind not in ("gradcam", "rollout")]
    if len(modules) <= DEFAULT_MODULE_MAPS:
        return [m.name for m in maps]
    last = max(blocks[m.layer] for m in modules)
    return [m.name for m in maps if m not in modules or blocks[m.layer] == last]


def _colours(scores: tuple[MapScore, ...]) -> dict[str, str]:
    named = [s.name for s in scores if s.kind != "random"]
    out = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(named)}
    out.update({s.name: RANDOM_COLOUR for s in scores if s.kind == "random"})
    return out


def _layout(fig: go.Figure, title: str, x: str, y: str, y_range: tuple[float, float]) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        xaxis={"title": {"text": x}, "range": [0, 1] if "fraction" in x else None},
        yaxis={"title": {"text": y}, "range": list(y_range)},
        legend={"orientation": "h", "yanchor": "top", "y": -0.28, "x": 0, "font": {"size": 11}},
        hovermode="x unified",
    )
    return compact(fig, CURVE_HEIGHT + 22 * len(fig.data), top=40, bottom=10)


def curve_figure(result: Faithfulness, kind: str) -> go.Figure:
    """Deletion or insertion (``kind``): the target's probability against the fraction of pixels
    changed, one curve per map, the random baseline dashed grey; y from 0 to 1."""
    colours = _colours(result.scores)
    fig = go.Figure()
    for s in result.scores:
        curve = getattr(s, kind)
        random = s.kind == "random"
        fig.add_trace(
            go.Scatter(
                x=curve.fractions,
                y=curve.probabilities,
                mode="lines",
                name=f"{s.name} (AUC {curve.auc:.3f})",
                line={"color": colours[s.name], "dash": "dash" if random else "solid", "width": 2},
            )
        )
    verb = "removed" if kind == "deletion" else "inserted"
    better = "low AUC is better" if kind == "deletion" else "high AUC is better"
    return _layout(
        fig,
        f"{kind.capitalize()} ({better})",
        f"fraction of pixels {verb} (most relevant first)",
        f"probability of “{result.target_label}”",
        (0.0, 1.02),
    )


def road_figure(result: Faithfulness) -> go.Figure:
    """ROAD: the change of the target's probability per percentile, MoRF solid and LeRF dotted per
    map (random grey); y from -1 to 1."""
    colours = _colours(result.scores)
    fig = go.Figure()
    for s in result.scores:
        if s.road is None:
            continue
        for values, which, dash in (
            (s.road.most_relevant_first, "MoRF", "solid"),
            (s.road.least_relevant_first, "LeRF", "dot"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=s.road.percentiles,
                    y=values,
                    mode="lines+markers",
                    name=f"{s.name} · {which}",
                    legendgroup=s.name,
                    line={"color": colours[s.name], "dash": "dash" if s.kind == "random" and dash == "solid"
                          else dash, "width": 2},
                    marker={"size": 4},
                )
            )  # fmt: skip
    fig.add_hline(y=0, line={"color": "#bbbbbb", "width": 1})
    fig = _layout(
        fig,
        "ROAD (MoRF should drop, LeRF stay near 0)",
        "percentile p (MoRF imputes above p, LeRF below)",
        f"change of p(“{result.target_label}”)",
        (-1.0, 1.0),
    )
    fig.update_xaxes(range=[0, 100])
    return fig


def score_table(result: Faithfulness, road: bool) -> pd.DataFrame:
    """One row per map (the random baseline last): deletion AUC, insertion AUC, ROAD combined."""
    rows = {}
    for s in result.scores:
        row = {TABLE_COLUMNS[0]: s.deletion.auc, TABLE_COLUMNS[1]: s.insertion.auc}
        if road:
            row[TABLE_COLUMNS[2]] = s.road.combined if s.road is not None else np.nan
        rows[s.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "map"
    return frame


def _best(column: pd.Series) -> list[str]:
    """Bold and green for the best value of a column (lowest deletion, highest otherwise), when one
    map is best as shown (three decimals): a tie marks nothing."""
    shown = column.round(3)
    best = shown.min() if column.name == TABLE_COLUMNS[0] else shown.max()
    unique = int((shown == best).sum()) == 1
    return [
        "font-weight: bold; background-color: rgba(44, 160, 44, 0.25)" if unique and v == best else ""
        for v in shown
    ]


def _show(model: str, result: Faithfulness, road: bool) -> None:
    """One model's charts, its table of scores and the maps it could not score."""
    if result.scores:
        st.caption(
            md(
                f"Following “{result.target_label}” (class {result.target}), the class this column's "
                f"Grad-CAM explains: p = {result.probability:.1%} on the unchanged input · "
                f"{result.forwards} forward passes."
            )
        )
        if result.probability < LOW_PROBABILITY:
            st.caption(
                f"The model gives this class only {result.probability:.1%}: the curves stay near 0 and "
                "say little; pick a class it predicts in **Grad-CAM explains** above."
            )
        for kind in ("deletion", "insertion"):
            st.plotly_chart(curve_figure(result, kind), key=f"compare_faith_{kind}_{model}")
        if road:
            st.plotly_chart(road_figure(result), key=f"compare_faith_road_{model}")
        table = score_table(result, road)
        st.table(table.style.apply(_best).format("{:.3f}"))  # wraps long map names, unlike a grid
        st.caption(
            "Green: the best value of each column, when one map is best (the random map's row is the floor)."
        )
    for name, why in result.unscored:
        st.caption(md(f"Not scored: {name}: {why}."))


def _cell(config: RunConfig, image: ImageRef, model: str, analysis, pressed: bool, road: bool) -> None:
    """One model's cell: its map picker, then its measure (new or kept) or why there is none."""
    st.markdown(f"**{md(model)}**")
    if analysis is None:
        st.caption("No result for this image.")
        return
    maps = input_maps(analysis)
    if not maps:
        st.caption("No map to score.")
        return
    names = [m.name for m in maps]
    key = f"{MAPS_KEY}_{model}_{digest('|'.join(names))}"
    chosen = st.multiselect("Maps to score", names, default=default_maps(analysis, maps), key=key,
                            help=MAPS_HELP)  # fmt: skip
    if not chosen:
        st.caption("Pick at least one map.")
        return
    target = target_of(model, image, analysis)
    result_key = config.result_key(image, model)
    asked = (result_key, tuple(chosen), road)
    stored_key = (result_key, target, tuple(chosen), road)
    kept: dict = store(STORE_KEY)
    asked_before: dict = store(ASKED_KEY)
    found = kept.get(stored_key)
    if (pressed and not isinstance(found, Faithfulness)) or (found is None and asked in asked_before):
        picked = [m for m in maps if m.name in chosen]

        def work() -> Faithfulness:
            return backend().faithfulness(
                model, config.weights_of(model), config.device, analysis, picked, target, road
            )

        with st.spinner(f"Measuring {len(picked)} map(s) of {model}…"):
            found = attempt(model, work, log, "measuring the faithfulness of {model}'s maps")
        kept[stored_key] = found
        asked_before[asked] = True
        trim(kept, MAX_KEPT, keep=[stored_key])
        trim(asked_before, MAX_KEPT, keep=[asked])
    if isinstance(found, Failure):
        show_failure(model, found)
    elif isinstance(found, Faithfulness):
        _show(model, found, road)
    else:
        st.caption("Not measured yet for these maps: press **Measure faithfulness**.")


def faithfulness_section(config: RunConfig, image: ImageRef) -> None:
    """Below the columns: the faithfulness of the maps shown, per model, measured on demand."""
    if not config.models:
        return
    st.divider()
    st.subheader(TITLE)
    st.caption(HOW_TO_READ)
    left, right = st.columns([1, 3], vertical_alignment="center")
    with left:
        pressed = st.button(
            "Measure faithfulness",
            key=MEASURE_KEY,
            icon=":material/science:",
            help="Runs each model about 40 times per map on perturbed copies of the shown image.",
        )
    with right:
        road = st.checkbox(
            "also ROAD (slow on the CPU: seconds per map)",
            key=ROAD_KEY,
            help="Remove And Debias (Rong et al., ICML 2022): 9 percentiles, most and least relevant "
            "first, with noisy linear imputation (pytorch-grad-cam).",
        )
    results: dict = store(RESULTS_KEY)
    cells = st.columns(len(config.models), gap="medium")
    for cell, model in zip(cells, config.models, strict=True):
        with cell:
            analysis = results.get(config.result_key(image, model))
            _cell(config, image, model, analysis, pressed, road)
