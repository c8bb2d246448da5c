"""The Modules page's logic (``pages/modules.py`` lays the page out): one tab per attention kind,
the cost comparison, and each kind's zoo model run live on a fixed generated scene.

Each tab is drawn from :data:`attnviz.workflows.teaching.MODULE_GUIDE`: the paper, the formula, the
data-flow graph, what the module computes and what its heat map means, its parameters and FLOPs at
the chosen size (:func:`attnviz.workflows.teaching.module_cost`), and its zoo model's maps. The live
results are kept in ``st.session_state["modules_results"]``, failures in ``modules_failures``.
"""

from __future__ import annotations

import logging
from typing import Any

import plotly.graph_objects as go
import streamlit as st

import attnviz
from attnviz import render
from attnviz.backends.zoo import best_block
from attnviz.core.scales import shared_scales
from attnviz.layers.zoo_net import INPUT_SIZE
from attnviz.views.maps import attention_maps
from attnviz.workflows.scenes import Scene, SceneParams, make_scene
from attnviz.workflows.teaching import MODULE_GUIDE, ModuleGuide, flops_text, module_cost
from ui import compact, store
from ui.maps import boxed_map, md
from ui.runner import Failure, run_model, show_failure

__all__ = [
    "CHANNELS_KEY",
    "SCALE_KEY",
    "SIDE_KEY",
    "cost_comparison",
    "cost_rows",
    "example_scene",
    "module_tab",
]

log = logging.getLogger("attnviz.app.modules")

CHANNELS_KEY = "modules_channels"
SCALE_KEY = "modules_scale"
SIDE_KEY = "modules_side"
RESULTS_KEY = "modules_results"
FAILURES_KEY = "modules_failures"

# Seed of each kind's example scene: fixed, so that the page always shows the same scenes.
SCENE_SEED_BASE = 20

# The live examples run the zoo's own trained weights.
WEIGHTS = "pretrained"


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def example_scene(kind: str) -> Scene:
    """The fixed generated scene of ``kind``'s live example (zoo input size, moderate clutter)."""
    seed = SCENE_SEED_BASE + list(MODULE_GUIDE).index(kind)
    return make_scene(seed, SceneParams(size=INPUT_SIZE, scale=0.25, clutter=0.4))


@st.cache_data(show_spinner=False, max_entries=512)
def _cost(kind: str, channels: int, side: int) -> tuple[int, int]:
    """:func:`attnviz.workflows.teaching.module_cost`, cached (it runs the module once)."""
    return module_cost(kind, channels, (side, side))


def cost_rows(kinds: list[str], channels: int, side: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Parameters and FLOPs of each kind at ``channels`` x ``side`` x ``side``; refusals as messages."""
    rows, errors = [], {}
    for kind in kinds:
        try:
            params, flops = _cost(kind, channels, side)
        except ValueError as err:
            errors[kind] = str(err)
            continue
        rows.append(
            {
                "module": MODULE_GUIDE[kind].short,
                "kind": kind,
                "parameters": params,
                "FLOPs": flops,
                "FLOPs (readable)": flops_text(flops),
                "FLOPs per position": round(flops / (side * side)),
            }
        )
    return rows, errors


# --------------------------------------------------------------------------------------------------
# Live example
# --------------------------------------------------------------------------------------------------


def _example(guide: ModuleGuide, scene: Scene, device: str) -> tuple[attnviz.Analysis | None, Failure | None]:
    """The zoo model's analysis of the kind's ``scene`` (stored per session), or why it has none."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    key = (guide.zoo_model, WEIGHTS, device)
    if key not in results:
        outcome = run_model(
            guide.zoo_model, WEIGHTS, device, [scene.image], log, "the live example of {model}"
        )
        if isinstance(outcome, Failure):
            failures[key] = outcome
        else:
            [results[key]] = outcome
            failures.pop(key, None)
    return results.get(key), failures.get(key)


def _live(guide: ModuleGuide, device: str, cmap: str, alpha: float, mode: str) -> None:
    """The zoo model on the kind's fixed scene: prediction, its best block's map(s), Grad-CAM."""
    st.markdown(f"**Live: `{guide.zoo_model}` (trained weights) on a generated scene**")
    scene = example_scene(guide.kind)
    analysis, failure = _example(guide, scene, device)
    if analysis is None:
        show_failure(guide.zoo_model, failure)
        return
    maps = attention_maps(analysis)
    attention = [m for m in maps if m.block >= 0]
    best = best_block(guide.kind)
    blocks = {m.block for m in attention}
    chosen = best.block if best is not None and best.block in blocks else max(blocks, default=None)
    shown = [m for m in attention if m.block == chosen] + [m for m in maps if m.block < 0]
    scales = shared_scales({(m.block, m.layer): (m.values, m.quantity) for m in shown}, mode)
    channel = [cw for cw in analysis.channel_weights if cw.block == max(analysis.blocks, default=-1)]
    panels = 1 + len(shown) + (1 if not attention and channel else 0)
    columns = st.columns(max(panels, 4))
    top = analysis.top5[0]
    mark = ":green[correct]" if top.index == scene.label else ":red[wrong]"
    with columns[0]:
        st.image(boxed_map(scene.image, scene.box), width="stretch")
        st.caption(f"scene: {scene.class_name} · predicted {top.label} ({top.probability:.0%}), {mark}")
    position = 1
    if not attention and channel:
        with columns[position]:
            fig = compact(render.channel_bar(channel[0], sort=True), 300)
            st.plotly_chart(fig, key=f"modules_channels_{guide.kind}")
            st.caption("No spatial map: the last block's channel weights, sorted.")
        position += 1
    for amap in shown:
        with columns[position]:
            scale = scales[(amap.block, amap.layer)]
            picture = boxed_map(analysis.input_image, scene.box, amap.values, scale, cmap=cmap, alpha=alpha)
            st.image(picture, width="stretch")
            st.caption(md(f"{amap.label}: {amap.how} · {scale.caption(amap.values)}"))
        position += 1
    if best is not None and chosen == best.block:
        st.caption(md(f"Shown: {best.text} (the model card)."))


# --------------------------------------------------------------------------------------------------
# Sections of the page
# --------------------------------------------------------------------------------------------------


def module_tab(guide: ModuleGuide, channels: int, side: int, settings: tuple[str, str, float, str]) -> None:
    """One module's tab."""
    device, cmap, alpha, mode = settings
    st.subheader(guide.title)
    paper = guide.paper
    st.markdown(f"Paper: [{paper.title}]({paper.link}) ({paper.year}) · zoo model: `{guide.zoo_model}`")
    st.latex(guide.formula)
    st.graphviz_chart(guide.data_flow)
    st.caption("Data flow; red: the submodules attnviz reads.")
    text, cost = st.columns([3, 2])
    with text:
        st.markdown(f"**What it computes.** {guide.what_it_computes}")
        st.markdown(f"**What its map means in attnviz.** {guide.what_the_map_means}")
    with cost:
        rows, errors = cost_rows([guide.kind], channels, side)
        st.markdown(f"**Cost at C = {channels}, {side}x{side}**")
        if errors:
            st.error(errors[guide.kind], icon=":material/error:")
        else:
            row = rows[0]
            st.table(
                {
                    "parameters": [f"{row['parameters']:,}"],
                    "FLOPs": [f"{row['FLOPs']:,} ({row['FLOPs (readable)']})"],
                    "FLOPs per position": [f"{row['FLOPs per position']:,.0f}"],
                }
            )
    _live(guide, device, cmap, alpha, mode)


def cost_comparison(channels: int, side: int) -> None:
    """Every module's cost at the chosen size: a table and a log-scale bar chart."""
    rows, errors = cost_rows(list(MODULE_GUIDE), channels, side)
    for kind, message in errors.items():
        st.error(f"{MODULE_GUIDE[kind].short}: {message}", icon=":material/error:")
    if not rows:
        return
    st.dataframe(
        rows,
        hide_index=True,
        column_order=("module", "kind", "parameters", "FLOPs", "FLOPs (readable)", "FLOPs per position"),
        column_config={
            "parameters": st.column_config.NumberColumn(format="localized"),
            "FLOPs": st.column_config.NumberColumn(format="localized"),
            "FLOPs per position": st.column_config.NumberColumn(format="localized"),
        },
    )
    fig = go.Figure(
        go.Bar(
            x=[r["module"] for r in rows],
            y=[max(int(r["FLOPs"]), 1) for r in rows],
            marker_color="#d1495b",
            hovertemplate="%{x}: %{y:,} FLOPs<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"FLOPs at C = {channels}, {side}x{side} (log scale)",
        yaxis_type="log",
        height=320,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    st.plotly_chart(fig, key="modules_cost_chart")
    st.caption(
        "FLOPs = 2 x multiply-adds of convolutions and matrix products (torch's FlopCounterMode); "
        "bilinear sampling (DAT) and deformable convolution are counted analytically; element-wise "
        "work (activations, softmax, pooling, norms) is not counted."
    )
