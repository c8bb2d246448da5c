"""One export bundle for the CLI and the app's "download everything" ZIP.

:func:`export_files` turns analyses into a mapping of relative POSIX paths to file contents; the
CLI writes it to a folder with :func:`write_bundle`, the app offers it as :func:`zip_bundle`. Both
get the same layout::

    plotly.min.js                     plotly's bundled JS, so the HTML charts work offline
    summary.json                      every result and record, with stats and file paths
    <image-stem>/<model>/
        input.png                     the crop the model saw ([H, W] = the model's input size)
        gradcam.png                   Grad-CAM overlay (when it was computed); every overlay has
                                      its colour bar strip underneath (values, unit, scale)
        block03_gc_context.png        one overlay per SpatialMap record
        block01_ca_axisgates.png      one overlay per other record with a heat map (attnviz.views.maps):
                                      axis gates, token attention, sampling points
        block01_dat_points.npz        SamplingPoints: points, reference, weights (input pixels, y, x)
        block01_dat_offsets.png       its offset length as an overlay, and
        block01_dat_offset_field.html a subsampled arrow field (reference -> sampled point)
        channel_weights.csv           block, layer, kind, path, then the C values (one row per path)
        faithfulness.csv              with the pipeline's ``faithfulness`` option only: deletion,
                                      insertion (and ROAD) curves of every map (export_faithfulness)
        top5.html                     HTML charts, loading ../../plotly.min.js
        channels_heatmap.html
        gate_stats.html
        block03_channels.html         one bar chart per ChannelWeights record
        head_grid.png                 transformers: every layer (rows) x head (columns) summary map
        rollout.png                   attention rollout (ViTs: every block keeps the same tokens)
        head_stats.html               per-head mean attention distance and entropy by layer
        prefix_attention.html         attention to the class/distillation/register tokens by layer

Overlays are drawn on the crop the model saw, enlarged by a whole factor (nearest neighbour) when
it is narrower than :data:`MIN_OVERLAY_WIDTH` so that the colour bar stays readable, with the
colour bar strip of their :class:`attnviz.core.scales.MapScale` underneath; ``summary.json`` gives each
map's value range and the scale used.

Folder names keep only ``[A-Za-z0-9._-]``, never start with a dot and are made unique (also
case-insensitively, for the file systems that fold case) with a ``-2``, ``-3``... suffix.

The pieces live in their own modules, re-exported here: folder names (:mod:`.bundle_names`),
``summary.json`` and its numbers (:mod:`.summary`), the CSV tables (:mod:`.tables`), the overlays
with their colour bars (:mod:`.overlay_painter`) and writing or zipping a bundle
(:mod:`.bundle_writer`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import plotly.offline
from PIL import Image

from attnviz import render
from attnviz.core.faithfulness_records import Faithfulness, MapScore
from attnviz.core.records import Analysis, ChannelWeights, Detections, GradCAM, SamplingPoints, SpatialMap
from attnviz.core.scales import GRADCAM, OFFSET_LENGTH, ROLLOUT, check_mode
from attnviz.io.bundle_names import FolderNames, folder_names, safe_name, unique_name
from attnviz.io.bundle_writer import write_bundle, zip_bundle
from attnviz.io.overlay_painter import OverlayPainter
from attnviz.io.summary import SUMMARY_FILENAME, array_stats, finite_or_none, summary_json
from attnviz.io.tables import channel_path_names, channel_weights_csv, faithfulness_csv
from attnviz.views import deformable, transformer
from attnviz.views.maps import record_map

__all__ = [
    "CSV_FILENAME",
    "FAITHFULNESS_FILENAME",
    "SUMMARY_FILENAME",
    "FolderNames",
    "export_faithfulness",
    "export_files",
    "export_result",
    "summary_json",
    "validate_style",
    "write_bundle",
    "zip_bundle",
]

log = logging.getLogger(__name__)

CSV_FILENAME = "channel_weights.csv"
"""Name of the per-analysis CSV of channel weights (:func:`attnviz.io.tables.channel_weights_csv`)."""

FAITHFULNESS_FILENAME = "faithfulness.csv"
"""Name of the per-analysis CSV of faithfulness curves (:func:`attnviz.io.tables.faithfulness_csv`)."""

MIN_OVERLAY_WIDTH = 224
"""Overlays of narrower model inputs (the zoo's 96 px) are enlarged by a whole factor to at least
this width, so that their colour bar can be read."""

_PLOTLYJS_REF = f"../../{render.PLOTLYJS_FILENAME}"


def _html(fig: Any) -> bytes:
    return render.figure_to_html(fig, plotlyjs=_PLOTLYJS_REF).encode("utf-8")


def _png(img: Image.Image) -> bytes:
    return render.to_png_bytes(img)


def _npz(rec: SamplingPoints) -> bytes:
    buf = io.BytesIO()
    if rec.weights is None:
        np.savez_compressed(buf, points=rec.points, reference=rec.reference)
    else:
        np.savez_compressed(buf, points=rec.points, reference=rec.reference, weights=rec.weights)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


def validate_style(cmap: str, alpha: float, scale: str = "absolute") -> None:
    """Checks an overlay colormap, opacity and scale mode before any work, with the renderer's checks.

    Args:
        cmap: a name in ``matplotlib.colormaps``.
        alpha: opacity of the colour in [0, 1].
        scale: ``"absolute"`` or ``"stretched"`` (:data:`attnviz.core.scales.SCALE_MODES`).

    Raises:
        ValueError: unknown colormap or scale, or ``alpha`` outside [0, 1].
        TypeError: ``cmap`` is not a string or ``alpha`` not a number.
    """
    if not isinstance(cmap, str):
        raise TypeError(f"cmap must be a matplotlib colormap name, got {type(cmap).__name__}")
    render.overlay(np.zeros((1, 1, 3), dtype=np.uint8), np.zeros((1, 1)), cmap=cmap, alpha=alpha)
    check_mode(scale)


def _check_items(items: Sequence[tuple[str, Analysis]]) -> list[tuple[str, Analysis]]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(
            f"items must be a sequence of (image name, Analysis) pairs, got {type(items).__name__}"
        )
    pairs = list(items)
    if not pairs:
        raise ValueError("export_files needs at least one (image name, Analysis) pair")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"items[{i}] must be an (image name, Analysis) pair, got {type(pair).__name__}")
        name, analysis = pair
        if not isinstance(name, str):
            raise TypeError(f"items[{i}][0] must be the image name (str), got {type(name).__name__}")
        if not isinstance(analysis, Analysis):
            raise TypeError(f"items[{i}][1] must be an Analysis, got {type(analysis).__name__}")
    return pairs


def export_result(
    image: str,
    analysis: Analysis,
    folder: str,
    files: dict[str, bytes],
    cmap: str,
    alpha: float,
    scale: str = "absolute",
) -> dict[str, Any]:
    """Adds one analysis's files under ``folder`` and returns its entry of ``summary.json``.

    This is :func:`export_files` for one result, without the checks; the streaming pipeline
    (:mod:`attnviz.workflows.pipeline`) calls it batch by batch.

    Args:
        image: the image name or path shown in the entry and in the chart titles.
        analysis: the result.
        folder: its ``<image-stem>/<model>`` folder (from :class:`FolderNames`).
        files: the bundle so far; the result's files are added to it (a name taken in ``folder``
            gets a ``-2``, ``-3``... suffix).
        cmap: colormap of the overlays.
        alpha: opacity of the overlays, in [0, 1].
        scale: ``"absolute"`` or ``"stretched"``.

    Returns:
        The result's entry of ``summary.json`` (paths relative to the bundle's root).
    """

    def add(name: str, content: bytes) -> str:
        path = f"{folder}/{name}"
        if path in files:  # two records of one kind in one block: keep both
            stem, _, ext = name.rpartition(".")
            taken = {PurePosixPath(p).stem.casefold() for p in files if p.startswith(f"{folder}/")}
            path = f"{folder}/{unique_name(stem, taken)}.{ext}"
        files[path] = content
        return path

    tag = " [untrained]" if analysis.untrained else ""
    picture = analysis.input_image
    paint = OverlayPainter(picture, cmap, alpha, scale, min_width=MIN_OVERLAY_WIDTH)
    channel = analysis.channel_weights
    listing = {
        "input": add("input.png", _png(Image.fromarray(picture, "RGB"))),
        "channel_weights_csv": add(CSV_FILENAME, channel_weights_csv(channel)),
        "top5": add(
            "top5.html",
            _html(render.top5_bar(analysis.top5, title=f"Top-5: {analysis.model} on {image}{tag}")),
        ),
        "channels_heatmap": add("channels_heatmap.html", _html(render.block_channel_heatmap(channel))),
        "gate_stats": add("gate_stats.html", _html(render.gate_stats_figure(channel))),
    }

    records: list[dict[str, Any]] = []
    for rec in analysis.records:
        if isinstance(rec, Detections):
            shown = render.draw_detections(picture, rec)
            records.append(
                {
                    "type": "Detections",
                    "kind": rec.kind,
                    "layer": rec.layer,
                    "block": None,
                    "shape": list(rec.boxes.shape),
                    "objects": [
                        {
                            "label": label,
                            "class": int(c),
                            "score": finite_or_none(float(sc)),
                            "box_xyxy": [finite_or_none(float(v)) for v in box],
                            "query": int(q),
                        }
                        for label, c, sc, box, q in zip(
                            rec.labels, rec.classes, rec.scores, rec.boxes, rec.query_index, strict=True
                        )
                    ],
                    "file": add("detections.png", _png(shown)),
                }
            )
            listing["detections"] = records[-1]["file"]
            continue
        main = rec.points if isinstance(rec, SamplingPoints) else rec.values
        entry: dict[str, Any] = {
            "type": type(rec).__name__,
            "kind": rec.kind,
            "layer": rec.layer,
            "block": None if isinstance(rec, GradCAM) else rec.block,
            "shape": list(main.shape),
        }
        if isinstance(rec, ChannelWeights):
            entry["stats"] = {k: finite_or_none(v) for k, v in render.gate_stats(rec).items()}
            entry["path_labels"] = channel_path_names(rec) if rec.multipath else []
            entry["file"] = add(f"block{rec.block:02d}_channels.html", _html(render.channel_bar(rec)))
            entry["csv"] = listing["channel_weights_csv"]
            records.append(entry)
            continue
        entry["stats"] = array_stats(main)
        if isinstance(rec, GradCAM):
            entry["target"] = int(rec.target)
            entry["target_label"] = rec.target_label
            png, scaled = paint.overlay(rec.values, GRADCAM)
            entry["file"] = listing["gradcam"] = add("gradcam.png", png)
            entry["map_range"], entry["scale"] = scaled["range"], scaled["scale"]
            records.append(entry)
            continue
        if hasattr(rec, "stride"):
            entry["stride"] = [float(s) for s in rec.stride]
        if isinstance(rec, SamplingPoints):
            # the raw points for reuse: (y, x) model-input pixels, see SamplingPoints
            stem = f"block{rec.block:02d}_{safe_name(rec.kind, 'points')}"
            entry["points_file"] = add(f"{stem}_points.npz", _npz(rec))
            field = deformable.offset_field(rec, picture.shape[:2])
            if field is not None:
                png, scaled = paint.overlay(field.magnitude, OFFSET_LENGTH)
                entry["offset_magnitude_file"] = add(f"{stem}_offsets.png", png)
                entry["offset_magnitude_range"], entry["offset_magnitude_scale"] = (
                    scaled["range"],
                    scaled["scale"],
                )
                fig = render.offset_field_figure(picture, field, title=f"{rec.layer}: offset field")
                entry["offset_field_file"] = add(f"{stem}_offset_field.html", _html(fig))
                entry["offset_field"] = field.how
        amap = record_map(rec, picture.shape[:2])
        if amap is not None:
            # one overlay per heat map; attnviz.views.maps documents how each record becomes one
            entry["map"] = amap.how
            png, scaled = paint.overlay(amap.values, amap.quantity)
            entry["map_range"], entry["scale"] = scaled["range"], scaled["scale"]
            suffix = "" if type(rec) is SpatialMap else f"_{type(rec).__name__.lower()}"
            entry["file"] = add(f"block{rec.block:02d}_{safe_name(rec.kind, 'map')}{suffix}.png", png)
        records.append(entry)

    transformer = _transformer_views(analysis, add, paint)
    if transformer:
        listing.update(transformer.pop("files"))

    return {
        "image": image,
        "model": analysis.model,
        "weights": analysis.weights,
        "untrained": bool(analysis.untrained),
        "folder": folder,
        "input_size": [int(picture.shape[0]), int(picture.shape[1])],
        "overlay_scale": {"mode": scale, "enlarged": paint.factor},
        "top5": [
            {"index": int(p.index), "label": p.label, "probability": finite_or_none(p.probability)}
            for p in analysis.top5
        ],
        "files": listing,
        "notes": list(analysis.notes),
        "records": records,
        **({"transformer": transformer} if transformer else {}),
    }


def _aucs(score: MapScore) -> dict[str, float | None]:
    road = score.road
    return {
        "deletion_auc": finite_or_none(score.deletion.auc),
        "insertion_auc": finite_or_none(score.insertion.auc),
        "road_combined": None if road is None else finite_or_none(road.combined),
    }


def export_faithfulness(
    result: Faithfulness, folder: str, files: dict[str, bytes], entry: dict[str, Any]
) -> dict[str, Any]:
    """Adds a result's ``faithfulness.csv`` under ``folder`` and its ``"faithfulness"`` object to its
    ``summary.json`` entry (from :func:`export_result`); the file is also listed in ``entry["files"]``.

    The object (strict JSON: a non-finite number is ``null``)::

        {"target": 3, "target_label": "...", "probability": 0.41,   # unperturbed crop
         "steps": 20, "forwards": 253, "file": "<folder>/faithfulness.csv",
         "maps": [{"name", "layer", "kind", "deletion_auc", "insertion_auc", "road_combined"}],
         "random_baseline": {"deletion_auc", "insertion_auc", "road_combined"} or null,
         "unscored": [{"name", "reason"}]}

    ``road_combined`` is null when ROAD was not measured; ``target`` is null for a model without a
    class probability to follow (every map is then unscored). Deletion: lower is better; insertion
    and ROAD: higher is better (:mod:`attnviz.analysis.faithfulness`).

    Args:
        result: from :func:`attnviz.analysis.faithfulness.measure` for the entry's analysis.
        folder: the result's folder.
        files: the bundle so far; ``faithfulness.csv`` is added to it.
        entry: the result's ``summary.json`` entry; changed in place.

    Returns:
        ``entry``.
    """
    path = f"{folder}/{FAITHFULNESS_FILENAME}"
    files[path] = faithfulness_csv(result)
    entry["files"]["faithfulness_csv"] = path
    baseline = result.baseline
    maps = [s for s in result.scores if s is not baseline]
    first = result.scores[0] if result.scores else None
    entry["faithfulness"] = {
        "target": None if result.target < 0 else int(result.target),
        "target_label": result.target_label or None,
        "probability": finite_or_none(result.probability),
        "steps": None if first is None else len(first.deletion.fractions) - 1,
        "forwards": int(result.forwards),
        "file": path,
        "maps": [{"name": s.name, "layer": s.layer, "kind": s.kind, **_aucs(s)} for s in maps],
        "random_baseline": None if baseline is None else _aucs(baseline),
        "unscored": [{"name": name, "reason": why} for name, why in result.unscored],
    }
    return entry


def _short(layer: str) -> str:
    return layer.removesuffix(".attn").removesuffix(".self_attention")


def _transformer_views(analysis: Analysis, add, paint: OverlayPainter) -> dict[str, Any] | None:
    """The transformer views of an analysis with self-attention (attnviz.views.transformer): the
    layer x head grid,
    attention rollout (when every block keeps the same tokens), head distance and entropy, and the
    attention to prefix tokens; their files and their numbers for ``summary.json``."""
    grid = transformer.head_grid(analysis)
    if not grid.layers:
        return None
    grid_png, grid_scale = paint.grid(grid.maps)
    files = {"head_grid": add("head_grid.png", grid_png)}
    stats = transformer.head_statistics(analysis)
    labels = [_short(layer) for layer in stats.layers]
    files["head_stats"] = add(
        "head_stats.html", _html(render.head_stats_figure(labels, stats.distance, stats.entropy))
    )
    out: dict[str, Any] = {
        "layers": list(grid.layers),
        "heads": [int(m.shape[0]) for m in grid.maps],
        "head_grid": {"rows": "layers", "columns": "heads", "how": grid.how, **grid_scale},
        "head_distance_px": [[finite_or_none(v) for v in d] for d in stats.distance],
        "head_entropy_nats": [[finite_or_none(v) for v in e] for e in stats.entropy],
        "max_entropy_nats": [finite_or_none(v) for v in stats.max_entropy],
    }
    if transformer.rollout_supported(analysis):
        roll = transformer.rollout(analysis)
        roll_png, roll_scale = paint.overlay(roll.values, ROLLOUT)
        files["rollout"] = add("rollout.png", roll_png)
        out["rollout"] = {
            **roll_scale,
            "how": roll.how,
            "rows": [int(r) for r in roll.rows],
            "prefix_mass": {
                n: finite_or_none(v) for n, v in zip(roll.prefix_names, roll.prefix_mass, strict=True)
            },
        }
    prefix = transformer.prefix_attention(analysis)
    if prefix is not None:
        fig = render.prefix_attention_figure(
            prefix.names, [_short(layer) for layer in prefix.layers], prefix.values, prefix.grid_mass
        )
        files["prefix_attention"] = add("prefix_attention.html", _html(fig))
        out["prefix_attention"] = {
            "names": list(prefix.names),
            "values": [[finite_or_none(v) for v in row] for row in prefix.values],
            "grid_mass": [finite_or_none(v) for v in prefix.grid_mass],
        }
    out["files"] = files
    return out


def export_files(
    items: Sequence[tuple[str, Analysis]], *, cmap: str = "jet", alpha: float = 0.5, scale: str = "absolute"
) -> dict[str, bytes]:
    """Renders analyses into the bundle's files (see the module docstring for the layout).

    Overlays are drawn on the crop the model saw (enlarged to at least :data:`MIN_OVERLAY_WIDTH`
    pixels by a whole factor), each on its own :class:`attnviz.core.scales.MapScale` (``scale``
    ``"absolute"``: the quantity's natural range, or 0 to the map's largest value; ``"stretched"``:
    the map's own min-max), with the colour bar strip underneath. ``summary.json`` is strict JSON: a
    non-finite statistic is ``null``. Its ``"file"`` and ``"csv"`` entries are paths relative to
    the bundle's root.

    Args:
        items: ``(image name, analysis)`` pairs, one per image and model; the name is an upload
            name or a path, of which only the file name's stem is used for the folder.
        cmap: colormap of the overlays, a name in ``matplotlib.colormaps``.
        alpha: opacity of the overlay colour, in [0, 1].
        scale: ``"absolute"`` (default) or ``"stretched"``.

    Returns:
        Relative POSIX path -> file content, ``plotly.min.js`` and ``summary.json`` first.

    Raises:
        TypeError: ``items`` is not a sequence of ``(str, Analysis)`` pairs, or a bad style type.
        ValueError: ``items`` is empty, unknown colormap or ``alpha`` outside [0, 1].
    """
    validate_style(cmap, alpha, scale)
    pairs = _check_items(items)
    files: dict[str, bytes] = {
        render.PLOTLYJS_FILENAME: plotly.offline.get_plotlyjs().encode("utf-8"),
        SUMMARY_FILENAME: b"",  # placeholder, so that it comes second
    }
    results = [
        export_result(image, analysis, folder, files, cmap, alpha, scale)
        for (image, analysis), folder in zip(pairs, folder_names(pairs), strict=True)
    ]
    files[SUMMARY_FILENAME] = summary_json(results)
    log.info("exported %d analyses into %d files", len(pairs), len(files))
    return files
