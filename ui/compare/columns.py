"""The Compare page's columns: one per model, drawn one row per panel kind so that panels line up.

The rows are: header, notices, predictions, Grad-CAM (:mod:`ui.compare.gradcam`), block choice,
block maps, channel weights, expanders. Everything drawn is a pure function of the stored results,
the page's colour scale and the sidebar's overlay settings; maps of one quantity share one colour
scale across the columns (:func:`attnviz.core.scales.shared_scales`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import streamlit as st

import attnviz
from attnviz import render
from attnviz.backends import zoo
from attnviz.core.scales import shared_scales
from attnviz.views.maps import AttentionMap, record_map
from ui import Settings, compact, store
from ui.compare.downloads import channel_csv, download, map_png, top5_csv
from ui.compare.gradcam import gradcam_row
from ui.compare.runs import download_weights
from ui.compare.state import (
    BLOCK_KEY,
    FAILURES_KEY,
    HEATMAP_OPEN_KEY,
    RESULTS_KEY,
    STATS_OPEN_KEY,
    Column,
    ImageRef,
    RunConfig,
)
from ui.maps import md, short, show_map
from ui.picker import weights_plan
from ui.runner import show_failure

__all__ = ["block_records", "default_block", "draw_columns"]

# Heights (px) of the charts of one row, so that the rows line up across the columns.
TOP5_HEIGHT = 240
CHANNELS_HEIGHT = 300

# A model name longer than this (for n columns) is cut in its column's header; the full name and
# the description are in the header's tooltip.
NAME_CHARS = {1: 60, 2: 34, 3: 21, 4: 15}

_OUT_OF_DOMAIN = (
    "**Trained on generated shapes only** (10 classes): on this picture its prediction means nothing and "
    "its maps show the mechanics. Pick a generated scene to see it on its own ground."
)


def block_records(analysis: attnviz.Analysis, position: int) -> tuple[str, tuple, tuple[AttentionMap, ...]]:
    """The layer name, channel weights and heat maps of the block at ``position``.

    Args:
        analysis: one result.
        position: index into ``analysis.blocks`` (0 = first captured block).

    Returns:
        ``(layer, channel_weights, maps)`` of that block; ``maps`` holds one
        :class:`attnviz.views.maps.AttentionMap` per record with a spatial reading (spatial gates,
        context maps, axis gates, token and window attention, sampling points).
    """
    block = analysis.blocks[position]
    records = [r for r in analysis.records if not isinstance(r, attnviz.GradCAM) and r.block == block]
    channels = tuple(r for r in records if isinstance(r, attnviz.ChannelWeights))
    input_hw = analysis.input_image.shape[:2]
    maps = tuple(m for m in (record_map(r, input_hw) for r in records) if m is not None)
    return records[0].layer, channels, maps


def default_block(model: str, blocks: int) -> int:
    """The block a column opens on: for a zoo model the one that localises best according to its
    card (:func:`attnviz.backends.zoo.best_block`), else the last one."""
    if model.startswith("zoo_"):
        best = zoo.best_block(model.removeprefix("zoo_"))
        if best is not None and best.block < blocks:
            return best.block
    return blocks - 1


def _header(col: Column, config: RunConfig, n: int) -> None:
    spec = col.spec
    st.subheader(short(col.model, NAME_CHARS.get(n, 19)), help=f"**{md(col.model)}**: {md(spec.description)}")
    what = "random weights (untrained)" if col.weights == "random" else weights_plan(col.model).why
    st.caption(f"{what} · {config.device}")


def _notices(col: Column, config: RunConfig, image: ImageRef) -> None:
    """Why a column shows nothing, or what to keep in mind reading it (untrained, out of domain)."""
    if col.failure is not None and col.analysis is None:
        show_failure(col.model, col.failure)
        if col.failure.weights_hint:
            st.info(
                "To see this architecture anyway, add it to **Run untrained (random weights)** above.",
                icon=":material/lightbulb:",
            )
        return
    if col.analysis is None:
        st.info("No result for this image yet: press Run.")
        return
    spec = col.spec
    if col.analysis.untrained:
        missing = col.weights == "random" and weights_plan(col.model).missing
        text = "**Untrained** (random weights): the maps show the mechanics, not learned attention."
        if missing:
            text += " Its pretrained weights are not on this machine."
        st.warning(text, icon=":material/warning:")
        if (
            missing
            and spec.from_hub
            and st.button(
                "Download pretrained weights",
                key=f"compare_get_{col.model}",
                icon=":material/download:",
                help="Fetch them from the library's hub (needs internet); then press Run.",
            )
        ):
            download_weights(col.model, config.device)
    if spec.source == "attnviz" and not image.is_scene:
        st.info(_OUT_OF_DOMAIN, icon=":material/info:")
    for note in col.analysis.notes:  # e.g. the GPU ran out of memory and the batch was split
        st.info(md(note), icon=":material/memory:")


def _predictions(col: Column, stem: str) -> None:
    analysis = col.analysis
    if analysis is None:
        return
    if analysis.top5:
        fig = render.top5_bar(analysis.top5, title="Top-5 predictions")
        st.plotly_chart(compact(fig, TOP5_HEIGHT), key=f"compare_top5_{col.model}")
        download("Top-5 (CSV)", functools.partial(top5_csv, analysis), f"{stem}_top5.csv", "text/csv",
                 f"compare_dl_top5_{col.model}")  # fmt: skip
    elif analysis.detections is not None:
        det = analysis.detections
        listed = ", ".join(
            f"{label} {score:.0%}" for label, score in zip(det.labels[:8], det.scores[:8], strict=False)
        )
        st.image(
            render.draw_detections(analysis.input_image, det),
            caption=md(
                f"{len(det.labels)} detection(s) with score > 50 %" + (f": {listed}" if listed else "")
            ),
            width="stretch",
        )
    else:
        st.caption(f"{col.model} has no classifier (self-supervised features): no predictions, no Grad-CAM.")


def _block_picker(col: Column) -> None:
    """Each column's block: a zoo model opens on the block its card says localises best."""
    analysis = col.analysis
    if analysis is None:
        return
    total = len(analysis.blocks)
    if total == 0:
        st.caption(f"{col.model} has no attention blocks (baseline): only Grad-CAM applies.")
        return
    best = zoo.best_block(col.model.removeprefix("zoo_")) if col.model.startswith("zoo_") else None
    if best is not None and best.block >= total:
        best = None
    best_block = best.block if best is not None else None
    if total == 1:
        col.position = 0
    else:
        key = f"{BLOCK_KEY}_{col.model}_{total}"
        if key not in st.session_state:
            st.session_state[key] = default_block(col.model, total)
        col.position = st.select_slider(
            "Block",
            options=list(range(total)),
            key=key,
            format_func=lambda i: f"{i} ★" if i == best_block else str(i),
            help="Attention block, in forward order (0 = first)."
            + (
                " ★: where the zoo card says this module finds the object best."
                if best_block is not None
                else ""
            ),
        )
    layer = block_records(analysis, col.position)[0]
    text = f"**Block {col.position + 1} of {total}** (index {col.position}) · `{layer}`"
    st.markdown(text)
    if best is not None and col.position == best.block:
        st.caption(f"★ {best.text} (model card).")
    elif best is not None:
        st.caption(f"The card's best block is {best.block} ★.")


def _maps_row(cols: list[Column], settings: Settings, mode: str, stems: dict[str, str]) -> None:
    """The chosen block's maps, maps of one quantity on one scale across the columns."""
    maps = {}
    for col in cols:
        if col.analysis is not None and col.position is not None:
            for k, amap in enumerate(block_records(col.analysis, col.position)[2]):
                maps[(col.model, k)] = amap
    scales = shared_scales({key: (m.values, m.quantity) for key, m in maps.items()}, mode)
    for slot, col in zip(st.columns(len(cols), gap="medium"), cols, strict=True):
        analysis = col.analysis
        if analysis is None or col.position is None:
            continue
        with slot:
            mine = [(key[1], amap) for key, amap in maps.items() if key[0] == col.model]
            if not any(not isinstance(r, attnviz.ChannelWeights | attnviz.GradCAM) for r in analysis.records):
                st.caption(f"{col.model} has no spatial attention map: its attention weighs channels only.")
            elif not mine:
                st.caption("No spatial attention map at this block.")
            for k, amap in mine:
                h, w = amap.values.shape
                scale = scales[(col.model, k)]
                img = analysis.input_image
                show_map(img, amap.values, scale, settings.cmap, settings.alpha,
                         f"{amap.kind} at {amap.layer} ({h}x{w} cells): {amap.how}")  # fmt: skip
                download("Attention map (PNG)",
                         functools.partial(map_png, img, amap.values, scale, settings.cmap, settings.alpha),
                         f"{stems[col.model]}_block{col.position:02d}_{amap.kind}.png", "image/png",
                         f"compare_dl_spatial_{col.model}_{k}")  # fmt: skip


def _channels_row(col: Column, sort: bool, stem: str) -> None:
    analysis = col.analysis
    if analysis is None or col.position is None:
        return
    channels = block_records(analysis, col.position)[1]
    if not channels and analysis.channel_weights:
        st.caption("No channel weights at this block.")
    for k, cw in enumerate(channels):
        fig = render.channel_bar(cw, sort=sort)
        st.plotly_chart(compact(fig, CHANNELS_HEIGHT, top=50), key=f"compare_channels_{col.model}_{k}")
        download("Channel weights (CSV)", functools.partial(channel_csv, cw),
                 f"{stem}_block{col.position:02d}_{cw.kind}.csv", "text/csv",
                 f"compare_dl_channels_{col.model}_{k}")  # fmt: skip


def _expanders_row(col: Column) -> None:
    analysis = col.analysis
    if analysis is None or not analysis.channel_weights:
        return
    # Drawn only while open (the expanders rerun the page when opened or closed).
    heatmap = st.expander("All blocks × channels", key=f"{HEATMAP_OPEN_KEY}_{col.model}", on_change="rerun")
    if heatmap.open:
        fig = render.block_channel_heatmap(analysis.channel_weights)
        height = max(300, 28 * len(analysis.channel_weights) + 150)
        heatmap.plotly_chart(compact(fig, height, top=50), key=f"compare_heatmap_{col.model}")
    stats = st.expander("Gate statistics per block", key=f"{STATS_OPEN_KEY}_{col.model}", on_change="rerun")
    if stats.open:
        fig = render.gate_stats_figure(analysis.channel_weights)
        stats.plotly_chart(compact(fig, 380, top=50), key=f"compare_stats_{col.model}")


def draw_columns(config: RunConfig, image: ImageRef, settings: Settings, mode: str, sort: bool) -> dict:
    """Every model's column, drawn one row per panel kind so that the panels line up.

    Returns:
        The slots of the Grad-CAM maps still due, by model (:func:`ui.compare.gradcam.add_gradcams`).
    """
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    cols = [
        Column(m, config.weights_of(m), results.get(config.result_key(image, m)),
               failures.get(config.model_key(m)))
        for m in config.models
    ]  # fmt: skip
    stems = {col.model: f"{image.stem}_{col.model}" for col in cols}
    n = len(cols)

    def row(draw: Callable[[Column], None]) -> None:
        for slot, col in zip(st.columns(n, gap="medium"), cols, strict=True):
            with slot:
                draw(col)

    slots: dict = {}
    row(lambda c: _header(c, config, n))
    row(lambda c: _notices(c, config, image))
    row(lambda c: _predictions(c, stems[c.model]))
    row(lambda c: gradcam_row(c, config, image, settings, mode, slots))
    row(_block_picker)
    _maps_row(cols, settings, mode, stems)
    row(lambda c: _channels_row(c, sort, stems[c.model]))
    row(_expanders_row)
    return slots
