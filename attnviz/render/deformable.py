"""Pictures and figures of deformable attention and detection: where one query samples, a
layer's offset field, and a detector's boxes.

The points and offsets come from :mod:`attnviz.views.deformable`; these functions only draw them.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from attnviz.render.text import font
from attnviz.runtime.images import as_rgb_array

__all__ = ["draw_detections", "offset_field_figure", "sampling_figure"]

_GROUP_COLOURS = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#000075",
)  # fmt: skip


def _group_colour(g: int) -> str:
    return _GROUP_COLOURS[g % len(_GROUP_COLOURS)]


def sampling_figure(image: Image.Image | np.ndarray, samples, *, title: str | None = None) -> go.Figure:
    """Where one query samples: its reference and sampled points over the image, one panel per level.

    Points are coloured by group/head and sized by their weight (attention or modulation; the
    largest weight of the query gets the largest marker); a thin line joins each point to its
    reference (the learned offset); the query's own pixel is a white star.

    Args:
        image: the model input, PIL or ``[H, W, 3]`` uint8.
        samples: an :class:`attnviz.views.deformable.QuerySamples`.
        title: figure title.
    """
    from plotly.subplots import make_subplots

    rgb = as_rgb_array(image)
    pts = np.asarray(samples.points, dtype=np.float64)
    ref = np.asarray(samples.reference, dtype=np.float64)
    groups = pts.shape[0]
    n_levels = max(len(samples.levels), 1)
    wts = None if samples.weights is None else np.asarray(samples.weights, dtype=np.float64)
    wmax = float(wts.max()) if wts is not None and wts.size and wts.max() > 0 else 1.0
    titles = [f"level {i} ({h}x{w})" for i, (h, w) in enumerate(samples.levels)] or [""]
    fig = make_subplots(rows=1, cols=n_levels, subplot_titles=titles, horizontal_spacing=0.02)
    for lv in range(n_levels):
        col = lv + 1
        fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=1, col=col)
        on = np.asarray(samples.level) == lv
        for g in range(groups):
            colour = _group_colour(g)
            p, r = pts[g, on], ref[g, on]
            xs, ys = [], []
            for (py, px), (ry, rx) in zip(p, r, strict=True):
                xs += [rx, px, None]
                ys += [ry, py, None]
            fig.add_trace(
                go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": 1}, hoverinfo="skip",
                           showlegend=False),
                row=1, col=col,
            )  # fmt: skip
            size = 6.0 if wts is None else 4.0 + 14.0 * wts[g, on] / wmax
            hover = "(%{y:.1f}, %{x:.1f})" + ("" if wts is None else "<br>weight %{customdata:.3f}")
            fig.add_trace(
                go.Scatter(
                    x=p[:, 1], y=p[:, 0], mode="markers",
                    marker={"size": size, "color": colour, "line": {"color": "black", "width": 0.5}},
                    customdata=None if wts is None else wts[g, on],
                    name=f"{samples.group_name} {g}", legendgroup=f"g{g}", showlegend=lv == 0,
                    hovertemplate=f"{samples.group_name} {g} " + hover + "<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=ref[:, on, 1].reshape(-1), y=ref[:, on, 0].reshape(-1), mode="markers",
                       marker={"symbol": "x-thin", "size": 6, "line": {"color": "white", "width": 1.5}},
                       name="reference", showlegend=lv == 0, legendgroup="ref", hoverinfo="skip"),
            row=1, col=col,
        )  # fmt: skip
        if samples.query_point is not None:
            qy, qx = (float(v) for v in samples.query_point)
            fig.add_trace(
                go.Scatter(x=[qx], y=[qy], mode="markers", name="query", showlegend=lv == 0, legendgroup="q",
                           marker={"symbol": "star", "size": 16, "color": "white",
                                   "line": {"color": "black", "width": 1}}, hoverinfo="skip"),
                row=1, col=col,
            )  # fmt: skip
        fig.update_xaxes(visible=False, range=[-0.5, rgb.shape[1] - 0.5], row=1, col=col)
        fig.update_yaxes(visible=False, range=[rgb.shape[0] - 0.5, -0.5], row=1, col=col)
    fig.update_layout(title=title, legend={"orientation": "h"})
    return fig


def draw_detections(image: Image.Image | np.ndarray, detections, *, top: int = 20) -> Image.Image:
    """A detector's boxes with their label and score drawn on a copy of the image.

    Args:
        image: the model input, PIL or ``[H, W, 3]`` uint8.
        detections: an :class:`attnviz.core.records.Detections` (boxes in the image's pixels).
        top: draw at most this many, highest score first.

    Returns:
        An RGB ``PIL.Image.Image`` of the image's size.
    """
    from PIL import ImageDraw

    img = Image.fromarray(as_rgb_array(image).copy())
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 250))
    fnt = font(max(12, round(min(img.size) / 45)))  # readable when the picture is fitted to a column
    for k in range(min(int(top), len(detections.labels))):
        x0, y0, x1, y1 = (float(v) for v in detections.boxes[k])
        colour = _group_colour(int(detections.classes[k]))
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{detections.labels[k]} {float(detections.scores[k]):.0%}"
        left, top_, right, bottom = draw.textbbox((x0, y0), text, font=fnt)
        ty = max(0.0, y0 - (bottom - top_) - 4)
        draw.rectangle([x0, ty, x0 + (right - left) + 6, ty + (bottom - top_) + 4], fill=colour)
        draw.text((x0 + 3, ty + 2 - (top_ - y0)), text, fill=(255, 255, 255), font=fnt)
    return img


def offset_field_figure(image: Image.Image | np.ndarray, field, *, title: str | None = None) -> go.Figure:
    """A subsampled arrow field of a layer's offsets over the image, coloured by group/head.

    Args:
        image: the model input, PIL or ``[H, W, 3]`` uint8.
        field: an :class:`attnviz.views.deformable.OffsetField`.
        title: figure title.
    """
    rgb = as_rgb_array(image)
    fig = go.Figure(go.Image(z=rgb, hoverinfo="skip"))
    starts, ends = np.asarray(field.starts, np.float64), np.asarray(field.ends, np.float64)
    group = np.asarray(field.group)
    for g in np.unique(group):
        sel = group == g
        xs, ys = [], []
        for (sy, sx), (ey, ex) in zip(starts[sel], ends[sel], strict=True):
            xs += [sx, ex, None]
            ys += [sy, ey, None]
        colour = _group_colour(int(g))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": 1.5},
                                 name=f"group {int(g)}", hoverinfo="skip"))  # fmt: skip
        fig.add_trace(go.Scatter(x=ends[sel, 1], y=ends[sel, 0], mode="markers", showlegend=False,
                                 marker={"color": colour, "size": 4}, hoverinfo="skip"))  # fmt: skip
    fig.update_layout(title=title, legend={"orientation": "h"})
    fig.update_xaxes(visible=False, range=[-0.5, rgb.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[rgb.shape[0] - 0.5, -0.5])
    return fig
