"""Pieces shared by the plotly builders of :mod:`attnviz.render`."""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["empty_figure"]


def empty_figure(message: str, title: str | None = None) -> go.Figure:
    """A figure with no axes and ``message`` in its middle: what a builder returns with nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 16}
    )
    fig.update_layout(title=title)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
