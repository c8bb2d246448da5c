"""Pictures and figures of transformer attention: the grid of every layer's heads, the marked
query, the query picker, per-head statistics and the summary token's prefix attention.

The numbers come from :mod:`attnviz.views.transformer`; these functions only draw them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import Colormap
from PIL import Image

from attnviz.render._figures import empty_figure
from attnviz.render._pixels import (
    blend,
    check_alpha,
    check_range,
    colorize,
    colour_table,
    normalized_stack,
    ranged_stack,
    resize_stack,
    shifted_rgbx,
)
from attnviz.render.text import font, text_width
from attnviz.runtime.images import as_rgb_array, as_rgb_image

__all__ = [
    "head_grid_image",
    "head_grid_margins",
    "head_stats_figure",
    "mark_point",
    "prefix_attention_figure",
    "query_figure",
]


def mark_point(
    image: Image.Image | np.ndarray, point_yx: tuple[float, float], *, radius: float | None = None
) -> Image.Image:
    """Draws a white ring with a black outline around a point (a query position) on a copy of ``image``.

    Args:
        image: PIL image or ``[H, W, 3]`` uint8 array.
        point_yx: (y, x) pixel of ``image`` (pixel centres at integers).
        radius: ring radius in pixels; default 3 % of the shorter side (at least 3).

    Returns:
        An RGB ``PIL.Image.Image`` of the image's size.
    """
    from PIL import ImageDraw

    img = Image.fromarray(as_rgb_array(image).copy())
    y, x = float(point_yx[0]), float(point_yx[1])
    r = float(radius) if radius is not None else max(3.0, 0.03 * min(img.size))
    if not (math.isfinite(y) and math.isfinite(x)):
        raise ValueError(f"point_yx must be finite, got {point_yx}")
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"radius must be a positive number of pixels, got {radius}")
    draw = ImageDraw.Draw(img)
    draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], outline=(0, 0, 0), width=3)
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=2)
    return img


def head_grid_image(
    image: Image.Image | np.ndarray,
    maps: Sequence[np.ndarray],
    *,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    tile: int = 72,
    gap: int = 2,
    labels: bool = False,
    value_range: tuple[float, float] | None = None,
    label_px: int = 13,
) -> Image.Image:
    """One picture of every layer and head: row l, column h is head h's map of layer l over the image.

    Each tile is :func:`overlay` of the image (resized to ``tile`` px) with one head's map, scaled
    on its own (min-max), or on ``value_range`` shared by every tile. Layers with fewer heads than
    the widest one (Swin: 3, 6, 12, 24) leave white tiles.

    Args:
        image: PIL image or ``[H, W, 3]`` uint8 array (the model input).
        maps: one ``[heads, h, w]`` array per layer (the grids may differ between layers).
        cmap, alpha: as in :func:`overlay`.
        tile: tile side in pixels (16-512).
        gap: white pixels between tiles (0-16).
        labels: write the layer index left of each row and the head index above each column
            (adds margins on the left and on top, see :func:`head_grid_margins`).
        value_range: ``(lo, hi)`` shared by every tile (as in :func:`overlay`); None scales each
            tile to its own minimum and maximum.
        label_px: font size of the labels in pixels (8-40).

    Returns:
        An RGB image of ``layers * (tile + gap) - gap`` by ``max_heads * (tile + gap) - gap`` pixels
        (plus the label margins).
    """
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or not 16 <= tile <= 512:
        raise ValueError(f"tile must be an int in [16, 512], got {tile!r}")
    if isinstance(gap, bool) or not isinstance(gap, int | np.integer) or not 0 <= gap <= 16:
        raise ValueError(f"gap must be an int in [0, 16], got {gap!r}")
    if isinstance(label_px, bool) or not isinstance(label_px, int | np.integer) or not 8 <= label_px <= 40:
        raise ValueError(f"label_px must be an int in [8, 40], got {label_px!r}")
    tile, gap = int(tile), int(gap)
    if value_range is not None:
        value_range = check_range(value_range)
    layers = [np.asarray(m) for m in maps]
    if not layers:
        raise ValueError("head_grid_image needs at least one layer of maps")
    for i, m in enumerate(layers):
        if m.ndim != 3 or m.shape[0] == 0:
            raise ValueError(f"maps[{i}] must be [heads, h, w] with at least one head, got {m.shape}")
    thumb = as_rgb_image(image).resize((tile, tile), Image.Resampling.BILINEAR)
    alpha = check_alpha(alpha)
    table = colour_table(cmap)
    shifted = shifted_rgbx(thumb)
    cols = max(m.shape[0] for m in layers)
    step = tile + gap
    left, top = head_grid_margins(len(layers), int(label_px)) if labels else (0, 0)
    out = Image.new("RGB", (left + cols * step - gap, top + len(layers) * step - gap), (255, 255, 255))
    for row, m in enumerate(layers):
        # Tile (row, h) is overlay(thumb, m[h]). A layer's heads are resized, coloured and blended
        # together, laid out as [tile rows, heads, tile columns], and pasted as one RGBX strip
        # with a white `gap` after each tile.
        scaled = normalized_stack(m) if value_range is None else ranged_stack(m, value_range)
        heads = resize_stack(scaled, tile, tile)
        tiles = blend(shifted[:, None], colorize(heads, table), alpha)
        n = m.shape[0]
        strip = np.full((tile, n, step, 4), 255, dtype=np.uint8)
        strip[:, :, :tile] = tiles
        strip_img = Image.frombytes("RGB", (n * step - gap, tile), strip, "raw", "RGBX", n * step * 4)
        out.paste(strip_img, (left, top + row * step))
    if labels:
        from PIL import ImageDraw

        draw = ImageDraw.Draw(out)
        fnt = font(int(label_px))
        for row in range(len(layers)):
            draw.text(
                (left - 4, top + row * step + tile / 2), f"L{row}", fill=(40, 40, 40), font=fnt, anchor="rm"
            )
        for col in range(cols):
            draw.text(
                (left + col * step + tile / 2, top - 3), f"h{col}", fill=(40, 40, 40), font=fnt, anchor="md"
            )
    return out


def head_grid_margins(layers: int, label_px: int = 13) -> tuple[int, int]:
    """(left, top) label margins of :func:`head_grid_image` in pixels for ``layers`` rows."""
    return math.ceil(text_width(f"L{max(layers - 1, 0)}", font(label_px))) + 8, int(label_px) + 6


def query_figure(
    image: Image.Image | np.ndarray,
    grid: tuple[int, int],
    stride: tuple[float, float],
    point_yx: tuple[float, float] | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """The image with one clickable, nearly invisible marker per query token (for picking a query).

    Plotly reports no click on an image trace, so a ``go.Scatter`` of markers at the token centres
    (pixel ``((i + 0.5) * stride_y - 0.5, (j + 0.5) * stride_x - 0.5)``) carries the clicks; each
    marker's ``customdata`` is ``[row, col, y, x]``. The current query, when given, is a ring.

    Args:
        image: the model input, PIL or ``[H, W, 3]`` uint8.
        grid: (rows, cols) of the query tokens.
        stride: input pixels per token (y, x).
        point_yx: the current query pixel (y, x), or None.
        title: figure title.
    """
    rgb = as_rgb_array(image)
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must have at least one token, got {grid}")
    if not all(math.isfinite(float(v)) and float(v) > 0 for v in stride):
        raise ValueError(f"stride must be two positive numbers of pixels per token, got {stride}")
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ys = (ii.reshape(-1) + 0.5) * float(stride[0]) - 0.5
    xs = (jj.reshape(-1) + 0.5) * float(stride[1]) - 0.5
    custom = np.stack([ii.reshape(-1), jj.reshape(-1), ys, xs], axis=1)
    fig = go.Figure(go.Image(z=rgb, hoverinfo="skip"))
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker={"size": max(4.0, min(30.0, 300.0 / max(rows, cols))), "color": "white", "opacity": 0.02},
            customdata=custom,
            hovertemplate="token (%{customdata[0]}, %{customdata[1]})<extra></extra>",
            name="tokens",
            showlegend=False,
        )
    )
    if point_yx is not None:
        fig.add_trace(
            go.Scatter(
                x=[float(point_yx[1])],
                y=[float(point_yx[0])],
                mode="markers",
                marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"color": "white", "width": 3}},
                hoverinfo="skip",
                name="query",
                showlegend=False,
            )
        )
    fig.update_layout(title=title, dragmode=False, clickmode="event+select")
    fig.update_xaxes(visible=False, range=[-0.5, rgb.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[rgb.shape[0] - 0.5, -0.5])
    return fig


def head_stats_figure(
    layers: Sequence[str], distance: Sequence[np.ndarray], entropy: Sequence[np.ndarray]
) -> go.Figure:
    """Per-head mean attention distance (pixels) and entropy (nats) by layer, one dot per head.

    Args:
        layers: layer labels, forward order.
        distance: per layer, ``[heads]`` mean attention distance in model-input pixels.
        entropy: per layer, ``[heads]`` mean row entropy in nats.

    Returns:
        Two stacked panels sharing the layer axis; a line through each layer's head mean.
    """
    from plotly.subplots import make_subplots

    if not (len(layers) == len(distance) == len(entropy)):
        raise ValueError("layers, distance and entropy must have one entry per layer")
    if not layers:
        return empty_figure("no self-attention layers")
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
        subplot_titles=("mean attention distance (px): how far each head looks", "attention entropy (nats)"),
    )  # fmt: skip
    for row, (series, unit) in enumerate(((distance, "px"), (entropy, "nats")), start=1):
        xs, ys, heads = [], [], []
        for layer_index, values in enumerate(series):
            v = np.asarray(values, dtype=np.float64).reshape(-1)
            xs += [layer_index] * len(v)
            ys += v.tolist()
            heads += list(range(len(v)))
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="markers", marker={"size": 7, "opacity": 0.75, "color": "#1f77b4"},
                customdata=heads, name="one head", legendgroup="head", showlegend=row == 1,
                hovertemplate=f"layer %{{x}} · head %{{customdata}}<br>%{{y:.2f}} {unit}<extra></extra>",
            ),
            row=row, col=1,
        )  # fmt: skip
        means = [float(np.mean(v)) for v in series]
        fig.add_trace(
            go.Scatter(
                x=list(range(len(means))), y=means, mode="lines", line={"color": "gray", "dash": "dot"},
                name="mean over the layer's heads", legendgroup="mean", showlegend=row == 1,
                hovertemplate=f"layer %{{x}} · head mean %{{y:.2f}} {unit}<extra></extra>",
            ),
            row=row, col=1,
        )  # fmt: skip
    ticks = {"tickmode": "array", "tickvals": list(range(len(layers))), "ticktext": [str(x) for x in layers]}
    fig.update_xaxes(**ticks, row=2, col=1, title_text="layer")
    fig.update_xaxes(**ticks, row=1, col=1)
    fig.update_yaxes(title_text="px", row=1, col=1)
    fig.update_yaxes(title_text="nats", row=2, col=1)
    fig.update_layout(legend={"orientation": "h", "y": 1.12, "yanchor": "bottom", "x": 0.0})
    return fig


def prefix_attention_figure(
    names: Sequence[str], layers: Sequence[str], values: np.ndarray, grid_mass: np.ndarray
) -> go.Figure:
    """Stacked bars per layer: how the summary token's attention splits between each prefix token
    (class, distillation, registers) and the image patches.

    Args:
        names: prefix token names.
        layers: layer labels.
        values: ``[layers, prefix]`` attention mass on each prefix token.
        grid_mass: ``[layers]`` attention mass on the patch tokens.
    """
    vals = np.asarray(values, dtype=np.float64)
    mass = np.asarray(grid_mass, dtype=np.float64).reshape(-1)
    if vals.ndim != 2 or vals.shape != (len(layers), len(names)) or mass.shape != (len(layers),):
        raise ValueError(
            f"values must be [layers, prefix] = [{len(layers)}, {len(names)}] and grid_mass [layers], "
            f"got {vals.shape} and {mass.shape}"
        )
    x = [str(layer) for layer in layers]
    fig = go.Figure()
    for k, name in enumerate(names):
        hover = f"{name}: %{{y:.1%}}<extra></extra>"
        fig.add_trace(go.Bar(x=x, y=vals[:, k], name=name, hovertemplate=hover))
    fig.add_trace(go.Bar(x=x, y=mass, name="patches", hovertemplate="patches: %{y:.1%}<extra></extra>"))
    fig.update_layout(barmode="stack", legend={"orientation": "h"})
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title_text="share of attention")
    fig.update_xaxes(title_text="layer")
    return fig
