"""Modules page: what each attention module computes, how attnviz reads it, what it costs, and live.

One tab per attention kind of :data:`attnviz.layers.ATTENTION_REGISTRY`, drawn from
:data:`attnviz.workflows.teaching.MODULE_GUIDE`: the paper, the formula, the data-flow graph
(Graphviz, rendered by
Streamlit's bundled frontend, no network), what the module computes and what its heat map means,
its parameters and FLOPs at the chosen size (:func:`attnviz.workflows.teaching.module_cost`), and
its zoo model
run on a fixed generated scene. Then the three insertion patterns with runnable code.

Zoo models come from :func:`ui.cached_model` (``st.cache_resource`` keyed by ``(name, weights,
device)``); the live results are kept in ``st.session_state["modules_results"]``.
"""

from __future__ import annotations

import logging

import plotly.graph_objects as go
import streamlit as st

import attnviz
from attnviz import render
from attnviz.backends.zoo import best_block
from attnviz.core.scales import shared_scales
from attnviz.layers.zoo_net import INPUT_SIZE
from attnviz.views.maps import attention_maps
from attnviz.workflows.scenes import Scene, SceneParams, make_scene
from attnviz.workflows.teaching import INSERTION_PATTERNS, MODULE_GUIDE, ModuleGuide, flops_text, module_cost
from ui import cached_model, require_app, store
from ui import settings as read_settings
from ui.maps import boxed_map, error_parts, error_with_details, md, scale_control

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

_UNEXPECTED = "{model} failed unexpectedly; the details are in the server log."


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


def cost_rows(kinds: list[str], channels: int, side: int) -> tuple[list[dict[str, object]], dict[str, str]]:
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


def _example(guide: ModuleGuide, device: str) -> tuple[attnviz.Analysis | None, tuple | None]:
    """The zoo model's analysis of the kind's scene (stored per session), or (message, details)."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    key = (guide.zoo_model, WEIGHTS, device)
    if key not in results:
        try:
            loaded = cached_model(guide.zoo_model, WEIGHTS, device)
            [results[key]] = attnviz.analyze(loaded, [example_scene(guide.kind).image])
            failures.pop(key, None)
        except attnviz.AttnvizError as err:
            log.warning("%s could not run: %s", guide.zoo_model, err)
            failures[key] = error_parts(err)
        except Exception:
            log.exception("the live example of %s failed", guide.zoo_model)
            failures[key] = (_UNEXPECTED.format(model=guide.zoo_model), ())
    return results.get(key), failures.get(key)


def _live(guide: ModuleGuide, device: str, cmap: str, alpha: float, mode: str) -> None:
    """The zoo model on the kind's fixed scene: prediction, its best block's map(s), Grad-CAM."""
    st.markdown(f"**Live: `{guide.zoo_model}` (trained weights) on a generated scene**")
    scene = example_scene(guide.kind)
    analysis, failure = _example(guide, device)
    if analysis is None:
        summary, details = failure or (f"{guide.zoo_model} produced no result.", ())
        error_with_details(summary, details)
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
            fig = render.channel_bar(channel[0], sort=True)
            fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10})
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
# Page
# --------------------------------------------------------------------------------------------------


def _tab(guide: ModuleGuide, channels: int, side: int, settings: tuple[str, str, float, str]) -> None:
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


def _cost_comparison(channels: int, side: int) -> None:
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
            _tab(guide, channels, side, settings)

    st.header("Cost of every module")
    _cost_comparison(channels, side)

    st.header("Three ways to insert attention")
    st.caption("Each snippet runs as it is (the test suite executes them).")
    for pattern in INSERTION_PATTERNS:
        st.subheader(pattern.title)
        st.markdown(pattern.explanation)
        st.code(pattern.code, language="python")


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
