"""Plotly figures of channel attention and predictions: gates per channel, per block, their
statistics per block, and the top-5 classes.

The statistics themselves are numbers, computed in :mod:`attnviz.views.statistics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from attnviz.core.records import ChannelWeights, Prediction
from attnviz.render._figures import empty_figure
from attnviz.render.text import shorten
from attnviz.views.statistics import gate_stats

__all__ = [
    "EMPTY_CHANNEL_MESSAGE",
    "EMPTY_PREDICTION_MESSAGE",
    "block_channel_heatmap",
    "channel_bar",
    "gate_stats_figure",
    "top5_bar",
]

EMPTY_CHANNEL_MESSAGE = "no channel attention in this model"
"""Annotation of the channel-attention figures when there is nothing to plot."""

EMPTY_PREDICTION_MESSAGE = "no predictions"
"""Annotation of :func:`top5_bar` when there is nothing to plot."""
_HEATMAP_COLORSCALE = "Viridis"


def _check_records(records: Sequence[ChannelWeights]) -> list[ChannelWeights]:
    if isinstance(records, ChannelWeights):
        raise TypeError("expected a sequence of ChannelWeights records, got a single record")
    out = list(records)
    for i, r in enumerate(out):
        if not isinstance(r, ChannelWeights):
            raise TypeError(f"records[{i}] must be a ChannelWeights record, got {type(r).__name__}")
    return out


def _block_label(cw: ChannelWeights) -> str:
    return f"{cw.block}: {cw.layer}"


def _path_labels(cw: ChannelWeights) -> list[str]:
    paths = cw.values.shape[0]
    if len(cw.path_labels) == paths:
        return [str(s) for s in cw.path_labels]
    return [f"path {i}" for i in range(paths)]


def _in_unit_interval(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0


_CHANNEL_VALUE = {"gc_add": "added term (not a gate)"}
"""What a ``[C]`` record's values are when they are not gates (GC's transform is added to the input)."""


def channel_bar(cw: ChannelWeights, *, sort: bool = False, top: int | None = None) -> go.Figure:
    """Bar chart of one block's weight per channel.

    The x axis is categorical with the real channel index as the category, so sorting or
    selecting keeps each bar's index in the tick labels and the hover. For ``[paths, C]``
    records there is one stacked bar trace per path (legend: ``cw.path_labels`` or ``"path i"``),
    and ranking uses the weight of path 0.

    Args:
        cw: the record (``values`` ``[C]`` or ``[paths, C]``).
        sort: order the bars by descending value (path 0 for multipath) instead of by index.
        top: keep only the ``top`` channels with the highest value (path 0 for multipath);
            None keeps all.

    Returns:
        The figure; the y axis is fixed to [0, 1] when every value lies in [0, 1].

    Raises:
        TypeError: ``cw`` is not a ``ChannelWeights`` or ``top`` is not an int.
        ValueError: ``top`` < 1.
    """
    if not isinstance(cw, ChannelWeights):
        raise TypeError(f"channel_bar expects a ChannelWeights record, got {type(cw).__name__}")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)):
            raise TypeError(f"top must be an int or None, got {type(top).__name__}")
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")

    values = np.asarray(cw.values, dtype=np.float64)
    rows = values if cw.multipath else values[None, :]
    key = rows[0]
    # NaN ranks last; stable sort keeps ties in index order.
    ranked = np.argsort(-np.nan_to_num(key, nan=-np.inf), kind="stable")
    order = ranked[:top] if top is not None else ranked
    if not sort:
        order = np.sort(order)

    x = [str(int(c)) for c in order]
    title = f"{cw.layer} ({cw.kind}), block {cw.block}"
    if cw.untrained:
        title += " [untrained]"
    fig = go.Figure()
    if cw.multipath:
        for label, row in zip(_path_labels(cw), rows, strict=True):
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=row[order],
                    name=label,
                    hovertemplate=f"channel %{{x}}<br>{label}: %{{y:.3f}}<extra></extra>",
                )
            )
        fig.update_layout(barmode="stack", legend_title_text="path")
        y_title = "weight over paths"
    else:
        what = _CHANNEL_VALUE.get(cw.kind, "gate value")
        fig.add_trace(
            go.Bar(
                x=x,
                y=key[order],
                name=what,
                hovertemplate=f"channel %{{x}}<br>{what}: %{{y:.3f}}<extra></extra>",
            )
        )
        y_title = what
    fig.update_layout(title=title, bargap=0.05)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=x, title_text="channel")
    fig.update_yaxes(title_text=y_title)
    if _in_unit_interval(values):
        fig.update_yaxes(range=[0.0, 1.0])
    return fig


def block_channel_heatmap(records: Sequence[ChannelWeights]) -> go.Figure:
    """Heat map of every block's channel weights: rows = blocks, columns = channel index.

    Blocks have different channel counts, so ``z`` is ``[blocks, max C]`` padded with NaN,
    drawn as gaps. For ``[paths, C]`` records the row is the weight of path 0 (named in the
    hover and, when any record is multipath, in the colorbar title). The colour scale is fixed
    to [0, 1]. Row ``i`` is ``records[i]``, labelled ``"block: layer"``, first row on top.

    Args:
        records: channel-weight records, typically ``Analysis.channel_weights``.

    Returns:
        The figure, or one with the annotation ``"no channel attention in this model"`` when
        ``records`` is empty.

    Raises:
        TypeError: an element is not a ``ChannelWeights``.
    """
    recs = _check_records(records)
    if not recs:
        return empty_figure(EMPTY_CHANNEL_MESSAGE, title="Channel weights per block")
    width = max(r.channels for r in recs)
    z = np.full((len(recs), width), np.nan)
    what = np.empty((len(recs), width), dtype=object)
    for i, r in enumerate(recs):
        row = r.values[0] if r.multipath else r.values
        z[i, : r.channels] = row
        what[i, :] = f"weight of {_path_labels(r)[0]}" if r.multipath else "gate"
    any_multipath = any(r.multipath for r in recs)
    layers = np.array([[_block_label(r)] * width for r in recs], dtype=object)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(width)),
            y=[f"block {r.block}" for r in recs],
            customdata=np.stack([what, layers], axis=-1),
            zmin=0.0,
            zmax=1.0,
            colorscale=_HEATMAP_COLORSCALE,
            hoverongaps=False,
            colorbar={
                "title": {"text": "gate / path-0 weight" if any_multipath else "gate value", "side": "right"},
                "thickness": 12,
            },
            hovertemplate="%{customdata[1]}<br>channel %{x}<br>%{customdata[0]}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title="Channel weights per block (0-1)")
    fig.update_xaxes(title_text="channel")
    fig.update_yaxes(type="category", autorange="reversed", title_text=None)
    return fig


def gate_stats_figure(records: Sequence[ChannelWeights]) -> go.Figure:
    """Per-block mean, standard deviation and normalised entropy of the channel weights.

    One line-with-markers trace per statistic (see :func:`gate_stats`), x = ``"block: layer"``.

    Args:
        records: channel-weight records, typically ``Analysis.channel_weights``.

    Returns:
        The figure, or one with the annotation ``"no channel attention in this model"`` when
        ``records`` is empty.

    Raises:
        TypeError: an element is not a ``ChannelWeights``.
    """
    recs = _check_records(records)
    if not recs:
        return empty_figure(EMPTY_CHANNEL_MESSAGE, title="Channel-weight statistics per block")
    labels = [_block_label(r) for r in recs]
    stats = [gate_stats(r) for r in recs]
    fig = go.Figure()
    for key, name in (("mean", "mean"), ("std", "std"), ("entropy", "normalised entropy")):
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=[s[key] for s in stats],
                mode="lines+markers",
                name=name,
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Gate statistics per block",
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.25, "yanchor": "top", "x": 0.0},
    )
    fig.update_xaxes(
        type="category",
        title_text="block",
        tickmode="array",
        tickvals=labels,
        ticktext=[str(r.block) for r in recs],
    )
    fig.update_yaxes(title_text="value")
    return fig


def top5_bar(predictions: Sequence[Prediction], *, title: str = "Top-5", label_chars: int = 18) -> go.Figure:
    """Horizontal bar chart of predicted class probabilities, most probable on top.

    Bars are placed at integer rank positions (0 = most probable) with the class labels as tick
    text, so classes that share a label (ImageNet has a few) stay separate bars. Labels longer than
    ``label_chars`` are cut with an ellipsis (the hover shows them whole), so that long ImageNet
    names do not squeeze the bars.

    Args:
        predictions: the predictions, in any order (sorted here by descending probability).
        title: figure title.
        label_chars: longest tick label (>= 4).

    Returns:
        The figure, or one with the annotation ``"no predictions"`` when ``predictions`` is empty.

    Raises:
        TypeError: an element is not a ``Prediction``.
    """
    preds = list(predictions)
    for i, p in enumerate(preds):
        if not isinstance(p, Prediction):
            raise TypeError(f"predictions[{i}] must be a Prediction, got {type(p).__name__}")
    if not preds:
        return empty_figure(EMPTY_PREDICTION_MESSAGE, title=title)
    preds.sort(key=lambda p: p.probability, reverse=True)
    ranks = list(range(len(preds)))
    probs = [float(p.probability) for p in preds]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=ranks,
            orientation="h",
            text=[f"{100.0 * p:.1f}%" for p in probs],
            textposition="auto",
            customdata=[[p.label, p.index] for p in preds],
            hovertemplate="%{customdata[0]} (class %{customdata[1]})<br>%{x:.2%}<extra></extra>",
        )
    )
    fig.update_layout(title=title)
    fig.update_xaxes(range=[0.0, 1.0], tickformat=".0%", title_text="probability")
    fig.update_yaxes(
        tickmode="array",
        tickvals=ranks,
        ticktext=[shorten(p.label, max(4, int(label_chars))) for p in preds],
        autorange="reversed",
        automargin=True,
    )
    return fig
