"""Render: pure renderers of captured attention, as pictures, figures, HTML.

Nothing here displays anything and nothing imports streamlit: every function takes records or
arrays and returns a ``PIL.Image.Image``, a ``plotly.graph_objects.Figure``, a string or bytes.
Colours come from matplotlib's colormap registry (``matplotlib.colormaps``), never from hand-made
tables; the only state kept is a cache of lookup tables built from those colormaps (and from
blend weights), which makes every render a few array gathers.

Owns heat-map overlays, the colour bar strip and PNG encoding (:mod:`.overlays`); figures of
channel gates, their statistics per block and the top-5 classes (:mod:`.channels`); transformer
head grids, the query picker and per-head statistics (:mod:`.transformer`); deformable sampling,
offset fields and detection boxes (:mod:`.deformable`); standalone HTML pages (:mod:`.html`) and
text fitting (:mod:`.text`). It may import :mod:`attnviz.views`, :mod:`attnviz.runtime`,
:mod:`attnviz.core` and the layers between them; the numbers it draws are computed there (the gate
statistics in :mod:`attnviz.views.statistics`).
"""

from attnviz.render.channels import (
    EMPTY_CHANNEL_MESSAGE,
    EMPTY_PREDICTION_MESSAGE,
    block_channel_heatmap,
    channel_bar,
    gate_stats_figure,
    top5_bar,
)
from attnviz.render.deformable import draw_detections, offset_field_figure, sampling_figure
from attnviz.render.html import PLOTLYJS_FILENAME, figure_to_html, write_plotlyjs
from attnviz.render.overlays import (
    colorbar,
    colorbar_title,
    enlarge,
    heat_to_rgb,
    overlay,
    to_png_bytes,
    with_colorbar,
)
from attnviz.render.text import shorten
from attnviz.render.transformer import (
    head_grid_image,
    head_grid_margins,
    head_stats_figure,
    mark_point,
    prefix_attention_figure,
    query_figure,
)
from attnviz.views.statistics import gate_stats

__all__ = [
    "EMPTY_CHANNEL_MESSAGE",
    "EMPTY_PREDICTION_MESSAGE",
    "PLOTLYJS_FILENAME",
    "block_channel_heatmap",
    "channel_bar",
    "colorbar",
    "colorbar_title",
    "draw_detections",
    "enlarge",
    "figure_to_html",
    "gate_stats",
    "gate_stats_figure",
    "head_grid_image",
    "head_grid_margins",
    "head_stats_figure",
    "heat_to_rgb",
    "mark_point",
    "offset_field_figure",
    "overlay",
    "prefix_attention_figure",
    "query_figure",
    "sampling_figure",
    "shorten",
    "to_png_bytes",
    "top5_bar",
    "with_colorbar",
    "write_plotlyjs",
]
