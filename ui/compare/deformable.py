"""Below the Compare page's columns: where the deformable modules sample, per query, and their offset
fields (the views of :mod:`attnviz.views.deformable`).

The query is a clicked point on a grid of queries, a detected object (Deformable DETR's decoder), or
none when every query shares the same samples.
"""

from __future__ import annotations

import streamlit as st

from attnviz import render
from attnviz.core.scales import OFFSET_LENGTH, map_scale
from attnviz.views import deformable
from ui import Settings, compact
from ui.compare.clicks import query_point
from ui.compare.state import DEFORM_LAYER_KEY, DEFORM_MODEL_KEY, DEFORM_OBJECT_KEY
from ui.compare.transformer import section
from ui.maps import show_map

__all__ = ["deformable_views"]


def deformable_views(analyses: dict, settings: Settings, mode: str) -> None:
    """Below the columns: where the deformable modules sample, per query, and their offset fields."""
    with_points = [m for m, a in analyses.items() if a is not None and a.sampling_points]
    model = section("Deformable sampling: where each query looks", with_points, DEFORM_MODEL_KEY)
    if model is None:
        return
    analysis = analyses[model]
    picture = analysis.input_image
    hw = picture.shape[:2]
    records = analysis.sampling_points
    index = 0
    if len(records) > 1:
        index = st.select_slider(
            "Deformable layer",
            options=list(range(len(records))),
            value=0,
            format_func=lambda i: f"{records[i].block}: {records[i].layer} ({records[i].kind})",
            key=f"{DEFORM_LAYER_KEY}_{len(records)}",
        )
    record = records[index]
    detections = analysis.detections
    multi = len(record.levels) > 1
    picker = record.points.shape[0] > 1 and not (record.kind == "detr_decoder" and detections is not None)
    left, right = st.columns(2) if picker and not multi else (st.container(), st.container())
    with left:
        if record.points.shape[0] == 1:
            query = 0
            st.caption(
                f"{record.layer}: every query shares these {record.points.shape[2]} sampled keys per "
                f"{record.group_name} (deformable attention samples once per group, then every query attends "
                "to the samples)."
            )
        elif record.query_grid is None and record.query_points is not None and not record.levels:
            query = 0
        elif record.kind == "detr_decoder" and detections is not None and len(detections.labels):
            options = list(range(len(detections.labels)))
            pick = st.selectbox(
                "Detected object",
                options,
                format_func=lambda k: (
                    f"{detections.labels[k]} ({detections.scores[k]:.0%}), "
                    f"query {int(detections.query_index[k])}"
                ),
                key=DEFORM_OBJECT_KEY,
            )
            query = int(detections.query_index[pick])
        else:
            grid = record.query_grid or (record.levels[0] if record.levels else (1, 1))
            stride = (hw[0] / grid[0], hw[1] / grid[1])
            point = query_point(model, grid, stride, picture, prefix="compare_deform", stacked=not multi)
            query = deformable.nearest_query(record, point, hw)
    samples = deformable.query_samples(record, query, hw)
    where = (
        ""
        if samples.query_point is None
        else (f" at pixel ({samples.query_point[0]:.0f}, {samples.query_point[1]:.0f})")
    )
    with right:
        groups = record.points.shape[1]
        named = record.group_name + ("s" if groups != 1 else "")
        points = record.points.shape[2]
        st.markdown(f"**Query {query}**{where} of `{record.layer}`: {groups} {named} × {points} points")
        height = 380 if multi else (600 if picker else 720)
        st.plotly_chart(
            compact(render.sampling_figure(picture, samples), height), key=f"compare_deform_points_{model}"
        )
        st.caption(
            "Coloured by "
            + record.group_name
            + "; marker size is the point's "
            + ("weight" if record.weights is not None else "(unweighted) position")
            + "; thin lines join each point to its reference (the learned offset); "
            + "✕ reference points, ★ the query."
        )
    field = deformable.offset_field(record, hw)
    if field is not None:
        left, right = st.columns(2)
        with left:
            scale = map_scale(field.magnitude, OFFSET_LENGTH, mode)
            what = f"Offset length ({field.grid[0]}x{field.grid[1]}): {field.how.split(';')[0]}"
            show_map(picture, field.magnitude, scale, settings.cmap, settings.alpha, what)
        with right:
            st.plotly_chart(
                compact(render.offset_field_figure(picture, field, title="Offset field"), 520),
                key=f"compare_deform_field_{model}",
            )
