"""Below the Compare page's columns: every layer and head of the transformers' self-attention.

Four tabs (:data:`ui.compare.state.VIT_VIEWS`), of which only the open one is computed (the tabs
rerun the page when switched): the layer x head grid of summary maps, where the patch under a chosen
pixel attends, attention rollout, and per-head statistics. The views are
:mod:`attnviz.views.transformer`'s; the pictures and charts :mod:`attnviz.render`'s.
"""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

import attnviz
from attnviz import render
from attnviz.core.scales import PROBABILITY, ROLLOUT, map_scale
from attnviz.views import transformer
from ui import Settings, compact
from ui.compare.clicks import query_point
from ui.compare.state import (
    ROLLOUT_DISCARD_KEY,
    ROLLOUT_FUSION_KEY,
    VIT_FUSION_KEY,
    VIT_HEAD_KEY,
    VIT_LAYER_KEY,
    VIT_MODEL_KEY,
    VIT_VIEW_KEY,
    VIT_VIEWS,
    ImageRef,
    RunConfig,
    cached_png,
)
from ui.maps import map_picture, md, show_map

__all__ = ["section", "transformer_views"]


def section(title: str, models: list[str], key: str) -> str | None:
    """A section below the columns for ``models`` (none: nothing drawn); returns the model shown."""
    if not models:
        return None
    st.divider()
    st.subheader(title)
    if len(models) == 1:
        return models[0]
    return st.segmented_control("Model", models, default=models[0], key=key) or models[0]


def _layer_label(record) -> str:
    return f"{record.block}: {record.layer.removesuffix('.attn').removesuffix('.self_attention')}"


def _layer_slider(records) -> int:
    """The transformer layer shown by the views that read one layer (heads, query point)."""
    if len(records) <= 1:
        return 0
    return st.select_slider(
        "Layer",
        options=list(range(len(records))),
        value=len(records) - 1,
        format_func=lambda i: _layer_label(records[i]),
        key=f"{VIT_LAYER_KEY}_{len(records)}",
    )


def _grid_tile(heads: int, width: int = 1150) -> int:
    """Tile size that fits ``heads`` columns in about ``width`` pixels (40-96 px)."""
    return int(min(96, max(40, (width - 40) // max(heads, 1) - 2)))


def _heads_tab(rkey: tuple, analysis: attnviz.Analysis, records, settings: Settings, mode: str) -> None:
    """Layer x head grid of the summary maps, and the chosen layer's fused or single-head map."""
    picture, cmap, alpha = analysis.input_image, settings.cmap, settings.alpha
    index = _layer_slider(records)
    record = records[index]
    maps = transformer.summary_map(record)
    left, right = st.columns(2)
    with left:
        fusion = st.segmented_control(
            "Head fusion", ["mean", "max"], default="mean", key=VIT_FUSION_KEY,
            help="How the heads of a layer are combined into one map.",
        ) or "mean"  # fmt: skip
    with right:
        options = ["all heads", *(f"head {h}" for h in range(record.heads))]
        choice = st.selectbox("Head", options, key=f"{VIT_HEAD_KEY}_{record.heads}")
    if choice == "all heads":
        heat, what = transformer.fuse_heads(maps, fusion), f"{fusion} over {record.heads} heads"
    else:
        head = int(choice.split()[1])
        heat, what = maps[head], choice
    grid = transformer.head_grid(records)
    big, small = st.columns([2, 3])
    with big:
        show_map(picture, heat, map_scale(heat, PROBABILITY, mode), cmap, alpha,
                 f"Layer {_layer_label(record)}, {what}: {grid.how.split('; ')[0]}")  # fmt: skip
    with small:
        prefix = transformer.prefix_attention(records)
        if prefix is not None:
            labels = [str(r.block) for r in records]
            fig = render.prefix_attention_figure(prefix.names, labels, prefix.values, prefix.grid_mass)
            fig.update_layout(
                title="Where the image-level token's attention goes: prefix tokens vs patches",
                legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0.0},
            )
            fig.update_xaxes(type="category", title_text="layer")
            st.plotly_chart(compact(fig, 420, top=60), key=f"compare_vit_prefix_{analysis.model}")
            if any(n.startswith("reg") for n in prefix.names):
                st.caption(
                    "Register tokens absorb attention that would otherwise land on background patches; the "
                    "maps show the patches only, so register mass is missing from them, not spread."
                )
    heads = max(m.shape[0] for m in grid.maps)
    tile = _grid_tile(heads)
    scale = map_scale(list(grid.maps), PROBABILITY, mode)
    shared = None if scale.stretched else scale.value_range
    title = "attention probability · stretched (each tile to its own min-max)" if shared is None else None

    def draw() -> Image.Image:
        img = render.head_grid_image(picture, grid.maps, cmap=cmap, alpha=alpha, tile=tile, labels=True,
                                     value_range=shared)  # fmt: skip
        return render.with_colorbar(img, scale, cmap=cmap, title=title)

    png = cached_png((*rkey, "head_grid", cmap, alpha, mode), draw)
    how = "every tile on one scale" if shared is not None else "each tile stretched to its own min-max"
    with Image.open(io.BytesIO(png)) as shown:
        natural = shown.width
    st.image(
        png,
        caption=md(
            f"Every layer (rows L0, L1, ... from the first) × head (columns h0, h1, ...): {grid.how}; {how}. "
            + scale.caption()
        ),
        width=min(natural, 1150),
    )


def _query_tab(analysis: attnviz.Analysis, records, settings: Settings, mode: str) -> None:
    """Where the patch under a chosen pixel attends: per head of the chosen layer, and per layer."""
    picture, cmap, alpha = analysis.input_image, settings.cmap, settings.alpha
    index = _layer_slider(records)
    record = records[index]
    point = query_point(analysis.model, record.grid, record.stride, picture)
    qmap = transformer.query_map(record, point)
    marked = render.mark_point(picture, point)
    row, col = qmap.query
    extra = ""
    if qmap.prefix_mass.size:
        names = record.prefix_names or tuple(f"prefix{i}" for i in range(qmap.prefix_mass.shape[1]))
        shares = ", ".join(f"{n} {v:.1%}" for n, v in zip(names, qmap.prefix_mass.mean(0), strict=True))
        extra = f" Attention to prefix tokens (mean over heads): {shares}."
    if float(qmap.padding_mass.max()) > 0:
        extra += f" Attention to padding outside the map: {float(qmap.padding_mass.mean()):.1%}."
    st.markdown(
        f"**Query token ({row}, {col})** of layer {md(_layer_label(record))} at pixel "
        f"({point[0]:.0f}, {point[1]:.0f}).{md(extra)}"
    )
    heads = [transformer.fuse_heads(qmap.values, "mean"), *qmap.values]
    scale = map_scale(heads, PROBABILITY, mode)
    st.image(
        [map_picture(marked, h, scale, cmap, alpha, min_width=224) for h in heads],
        caption=["mean of heads", *(f"head {h}" for h in range(len(heads) - 1))],
        width=190,
    )
    st.caption(md(f"This layer's heads, one scale: {scale.caption()}"))
    per_layer = [transformer.fuse_heads(transformer.query_map(r, point).values, "mean") for r in records]
    layer_scale = map_scale(per_layer, PROBABILITY, mode)
    st.image(
        [map_picture(marked, m, layer_scale, cmap, alpha, min_width=224) for m in per_layer],
        caption=[f"layer {_layer_label(r)}" for r in records],
        width=150,
    )
    st.caption(
        md(f"The same point queried in every layer (mean over heads), one scale: {layer_scale.caption()}")
    )


def _rollout_tab(analysis: attnviz.Analysis, records, settings: Settings, mode: str) -> None:
    """Attention rollout with its options, or why it does not apply."""
    try:
        transformer.rollout(records)
    except ValueError as err:
        st.info(md(f"Rollout does not apply to {analysis.model}: {err}"), icon=":material/info:")
        return
    left, right = st.columns(2)
    with left:
        fusion = st.selectbox("Head fusion", ["mean", "max", "min"], key=ROLLOUT_FUSION_KEY)
    with right:
        discard = st.slider(
            "Discard ratio", 0.0, 0.95, 0.0, step=0.05, key=ROLLOUT_DISCARD_KEY,
            help="Zero this share of the weakest patch columns in every row before mixing; prefix "
            "tokens are never discarded.",
        )  # fmt: skip
    roll = transformer.rollout(records, head_fusion=fusion, discard_ratio=discard)
    st.latex(
        r"\hat A_l = \mathrm{rownorm}\left(0.5\,A_l + 0.5\,I\right),"
        r"\qquad R = \hat A_L \cdots \hat A_2\,\hat A_1"
    )
    big, text = st.columns([2, 3])
    with big:
        show_map(analysis.input_image, roll.values, map_scale(roll.values, ROLLOUT, mode), settings.cmap,
                 settings.alpha, f"Rollout through {len(roll.layers)} layers")  # fmt: skip
    with text:
        st.markdown(md(f"How: {roll.how}."))
        shares = ", ".join(f"{n} {v:.1%}" for n, v in zip(roll.prefix_names, roll.prefix_mass, strict=True))
        if shares:
            st.caption(md(f"Mass of the read row on the prefix tokens: {shares}."))


def _stats_tab(analysis: attnviz.Analysis, records) -> None:
    """Per-head mean attention distance and entropy by layer."""
    stats = transformer.head_statistics(records)
    fig = render.head_stats_figure([_layer_label(r) for r in records], stats.distance, stats.entropy)
    st.plotly_chart(compact(fig, 560, top=60), key=f"compare_vit_stats_{analysis.model}")
    st.caption(md(stats.how))


def transformer_views(
    config: RunConfig, image: ImageRef, analyses: dict, settings: Settings, mode: str
) -> None:
    """Below the columns: every layer and head of the transformers' self-attention."""
    with_attention = [
        m for m, a in analyses.items() if a is not None and transformer.self_attention_records(a)
    ]
    model = section("Self-attention: layers, heads, query points, rollout", with_attention, VIT_MODEL_KEY)
    if model is None:
        return
    analysis = analyses[model]
    records = transformer.self_attention_records(analysis)
    rkey = config.result_key(image, model)
    # Only the open tab is computed (the tabs rerun the page when switched).
    heads, query, roll, stats = st.tabs(VIT_VIEWS, key=VIT_VIEW_KEY, on_change="rerun")
    if heads.open:
        with heads:
            _heads_tab(rkey, analysis, records, settings, mode)
    if query.open:
        with query:
            _query_tab(analysis, records, settings, mode)
    if roll.open:
        with roll:
            _rollout_tab(analysis, records, settings, mode)
    if stats.open:
        with stats:
            _stats_tab(analysis, records)
