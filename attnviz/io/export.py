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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import stat
import time
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import plotly.offline
from PIL import Image

from attnviz import render
from attnviz.core.records import Analysis, ChannelWeights, Detections, GradCAM, SamplingPoints, SpatialMap
from attnviz.core.scales import (
    GRADCAM,
    OFFSET_LENGTH,
    PROBABILITY,
    ROLLOUT,
    MapScale,
    Quantity,
    check_mode,
    map_scale,
    value_range,
)
from attnviz.core.version import __version__
from attnviz.views import deformable, transformer
from attnviz.views.maps import record_map

__all__ = [
    "CSV_FILENAME",
    "SUMMARY_FILENAME",
    "FolderNames",
    "export_files",
    "export_result",
    "summary_json",
    "validate_style",
    "write_bundle",
    "zip_bundle",
]

log = logging.getLogger(__name__)

SUMMARY_FILENAME = "summary.json"
"""Name of the bundle's top-level summary."""

CSV_FILENAME = "channel_weights.csv"
"""Name of the per-analysis CSV of channel weights."""

MIN_OVERLAY_WIDTH = 224
"""Overlays of narrower model inputs (the zoo's 96 px) are enlarged by a whole factor to at least
this width, so that their colour bar can be read."""

_PLOTLYJS_REF = f"../../{render.PLOTLYJS_FILENAME}"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 80
# Names Windows refuses whatever the extension: the ZIP may be unpacked there.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10))}
_DRIVE = re.compile(r"^[A-Za-z]:")


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def _safe_name(name: str, fallback: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, no leading dot, at most 80 characters."""
    cleaned = _UNSAFE_CHARS.sub("_", name).lstrip(".")
    cleaned = cleaned[:_MAX_NAME].rstrip(".") or fallback
    if cleaned.split(".")[0].upper() in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    return cleaned


def _image_stem(image: str) -> str:
    """The file name of an image path or upload name without its extension, made safe."""
    base = re.split(r"[\\/]", image.strip())[-1]
    stem, dot, _ext = base.rpartition(".")
    return _safe_name(stem if dot and stem.strip(".") else base, "image")


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever is not in ``taken`` (case-insensitive)."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate.casefold())
    return candidate


class FolderNames:
    """``<image-stem>/<model>`` folder names, unique across a bundle, given result by result.

    The k-th pair of one image name and one model goes to the k-th stem folder of that name: two
    uploads can share a name, and the pairs may come image-major or model-major. Calling it for
    the items of a bundle in order gives the folders :func:`export_files` uses (the streaming
    :mod:`attnviz.workflows.pipeline` names its results the same way).
    """

    def __init__(self) -> None:
        self._taken = {render.PLOTLYJS_FILENAME.casefold(), SUMMARY_FILENAME.casefold()}
        self._stems: dict[str, list[str]] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def __call__(self, image: str, model: str) -> str:
        safe = _safe_name(model, "model")
        k = self._seen.get((image, safe.casefold()), 0)
        self._seen[(image, safe.casefold())] = k + 1
        known = self._stems.setdefault(image, [])
        if k == len(known):
            known.append(_unique(_image_stem(image), self._taken))
        return f"{known[k]}/{safe}"


def _folders(items: Sequence[tuple[str, Analysis]]) -> list[str]:
    """``<image-stem>/<model>`` for every item, unique across the bundle (see :class:`FolderNames`)."""
    names = FolderNames()
    return [names(image, analysis.model) for image, analysis in items]


def summary_json(results: list[dict[str, Any]]) -> bytes:
    """``summary.json`` of a bundle from its per-result entries (strict JSON, UTF-8)."""

    summary = {
        "attnviz_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }
    return json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Statistics and JSON
# --------------------------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    """A float for strict JSON: NaN and infinities become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _array_stats(values: np.ndarray) -> dict[str, float | None]:
    """min, max, mean and population std of every entry, in float64."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None}
    return {
        "min": _finite(v.min()),
        "max": _finite(v.max()),
        "mean": _finite(v.mean()),
        "std": _finite(v.std()),
    }


def _path_names(cw: ChannelWeights) -> list[str]:
    """One name per row of the CSV: ``"gate"`` for ``[C]``, the path labels for ``[paths, C]``."""
    if not cw.multipath:
        return ["gate"]
    paths = cw.values.shape[0]
    if len(cw.path_labels) == paths:
        return [str(label) for label in cw.path_labels]
    return [f"path {i}" for i in range(paths)]


def _channel_csv(records: Sequence[ChannelWeights]) -> bytes:
    """Rows ``block, layer, kind, path, v_0 ... v_{C-1}``; rows have as many values as channels."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    width = max((cw.channels for cw in records), default=0)
    writer.writerow(["block", "layer", "kind", "path", *(f"c{i}" for i in range(width))])
    for cw in records:
        rows = cw.values if cw.multipath else cw.values[None, :]
        for path, row in zip(_path_names(cw), rows, strict=True):
            # repr() of a Python float round-trips exactly, float32 values included.
            writer.writerow([cw.block, cw.layer, cw.kind, path, *(repr(float(v)) for v in row)])
    return buf.getvalue().encode("utf-8")


def _html(fig: Any) -> bytes:
    return render.figure_to_html(fig, plotlyjs=_PLOTLYJS_REF).encode("utf-8")


def _png(img: Image.Image) -> bytes:
    return render.to_png_bytes(img)


def _npz(rec: SamplingPoints) -> bytes:
    buf = io.BytesIO()
    arrays = {"points": rec.points, "reference": rec.reference}
    if rec.weights is not None:
        arrays["weights"] = rec.weights
    np.savez_compressed(buf, **arrays)
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


class _Painter:
    """Draws one result's overlays with their colour bars, on the enlarged crop, in one style."""

    def __init__(self, picture: np.ndarray, cmap: str, alpha: float, mode: str) -> None:
        self.picture = render.enlarge(picture, MIN_OVERLAY_WIDTH)
        self.factor = self.picture.width // picture.shape[1]
        self.cmap, self.alpha, self.mode = cmap, alpha, mode

    def overlay(self, values: np.ndarray, quantity: Quantity) -> tuple[bytes, dict[str, Any]]:
        """PNG bytes of the overlay with its colour bar, and the scale entry for ``summary.json``."""
        scale = map_scale(values, quantity, self.mode)
        shown = render.overlay(
            self.picture, values, cmap=self.cmap, alpha=self.alpha, value_range=scale.value_range
        )
        return _png(render.with_colorbar(shown, scale, cmap=self.cmap)), _scale_entry(values, scale)

    def grid(self, maps: Sequence[np.ndarray]) -> tuple[bytes, dict[str, Any]]:
        """The layer x head grid on one scale (absolute), or each tile on its own (stretched)."""
        scale = map_scale(list(maps), PROBABILITY, self.mode)
        shared = None if scale.stretched else scale.value_range
        img = render.head_grid_image(self.picture, maps, cmap=self.cmap, alpha=self.alpha, value_range=shared)
        title = "attention probability · stretched (each tile to its own min-max)" if shared is None else None
        entry = _scale_entry(np.concatenate([np.ravel(m) for m in maps]), scale)
        if shared is None:
            entry["scale"]["per_tile"] = True
        return _png(render.with_colorbar(img, scale, cmap=self.cmap, title=title)), entry


def _scale_entry(values: np.ndarray, scale: MapScale) -> dict[str, Any]:
    lo, hi = value_range(values)
    return {
        "range": [_finite(lo), _finite(hi)],
        "scale": {k: _json_value(v) for k, v in scale.to_dict().items()},
    }


def _json_value(value: object) -> object:
    return _finite(value) if isinstance(value, float) else value


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
    """Adds one analysis's files under ``folder`` and returns its entry of ``summary.json``."""

    def add(name: str, content: bytes) -> str:
        path = f"{folder}/{name}"
        if path in files:  # two records of one kind in one block: keep both
            stem, _, ext = name.rpartition(".")
            taken = {PurePosixPath(p).stem.casefold() for p in files if p.startswith(f"{folder}/")}
            path = f"{folder}/{_unique(stem, taken)}.{ext}"
        files[path] = content
        return path

    tag = " [untrained]" if analysis.untrained else ""
    picture = analysis.input_image
    paint = _Painter(picture, cmap, alpha, scale)
    channel = analysis.channel_weights
    listing = {
        "input": add("input.png", _png(Image.fromarray(picture, "RGB"))),
        "channel_weights_csv": add(CSV_FILENAME, _channel_csv(channel)),
        "top5": add(
            "top5.html",
            _html(render.top5_bar(analysis.top5, title=f"Top-5: {analysis.model} on {image}{tag}")),
        ),
        "channels_heatmap": add("channels_heatmap.html", _html(render.block_channel_heatmap(channel))),
        "gate_stats": add("gate_stats.html", _html(render.gate_stats_figure(channel))),
    }

    records = []
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
                            "score": _finite(float(sc)),
                            "box_xyxy": [_finite(float(v)) for v in box],
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
            entry["stats"] = {k: _finite(v) for k, v in render.gate_stats(rec).items()}
            entry["path_labels"] = _path_names(rec) if rec.multipath else []
            entry["file"] = add(f"block{rec.block:02d}_channels.html", _html(render.channel_bar(rec)))
            entry["csv"] = listing["channel_weights_csv"]
            records.append(entry)
            continue
        entry["stats"] = _array_stats(main)
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
            stem = f"block{rec.block:02d}_{_safe_name(rec.kind, 'points')}"
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
            entry["file"] = add(f"block{rec.block:02d}_{_safe_name(rec.kind, 'map')}{suffix}.png", png)
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
            {"index": int(p.index), "label": p.label, "probability": _finite(p.probability)}
            for p in analysis.top5
        ],
        "files": listing,
        "notes": list(analysis.notes),
        "records": records,
        **({"transformer": transformer} if transformer else {}),
    }


def _short(layer: str) -> str:
    return layer.removesuffix(".attn").removesuffix(".self_attention")


def _transformer_views(analysis: Analysis, add, paint: _Painter) -> dict[str, Any] | None:
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
        "head_distance_px": [[_finite(v) for v in d] for d in stats.distance],
        "head_entropy_nats": [[_finite(v) for v in e] for e in stats.entropy],
        "max_entropy_nats": [_finite(v) for v in stats.max_entropy],
    }
    if transformer.rollout_supported(analysis):
        roll = transformer.rollout(analysis)
        roll_png, roll_scale = paint.overlay(roll.values, ROLLOUT)
        files["rollout"] = add("rollout.png", roll_png)
        out["rollout"] = {
            **roll_scale,
            "how": roll.how,
            "rows": [int(r) for r in roll.rows],
            "prefix_mass": {n: _finite(v) for n, v in zip(roll.prefix_names, roll.prefix_mass, strict=True)},
        }
    prefix = transformer.prefix_attention(analysis)
    if prefix is not None:
        fig = render.prefix_attention_figure(
            prefix.names, [_short(layer) for layer in prefix.layers], prefix.values, prefix.grid_mass
        )
        files["prefix_attention"] = add("prefix_attention.html", _html(fig))
        out["prefix_attention"] = {
            "names": list(prefix.names),
            "values": [[_finite(v) for v in row] for row in prefix.values],
            "grid_mass": [_finite(v) for v in prefix.grid_mass],
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
        for (image, analysis), folder in zip(pairs, _folders(pairs), strict=True)
    ]
    files[SUMMARY_FILENAME] = summary_json(results)
    log.info("exported %d analyses into %d files", len(pairs), len(files))
    return files


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _check_path(path: object) -> PurePosixPath:
    """A bundle path as a relative POSIX path with plain components, or ValueError."""
    if not isinstance(path, str):
        raise TypeError(f"bundle paths must be strings, got {type(path).__name__}")
    bad = (
        not path
        or "\\" in path
        or "\x00" in path
        or path.startswith("/")
        or _DRIVE.match(path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise ValueError(f"unsafe bundle path {path!r}: expected a relative path inside the bundle")
    return PurePosixPath(path)


def _check_files(files: Mapping[str, bytes]) -> list[tuple[PurePosixPath, bytes]]:
    if not isinstance(files, Mapping):
        raise TypeError(f"files must be a mapping of paths to bytes, got {type(files).__name__}")
    checked = []
    for path, content in files.items():
        rel = _check_path(path)
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"content of {path!r} must be bytes, got {type(content).__name__}")
        checked.append((rel, bytes(content)))
    names = {rel for rel, _ in checked}
    for rel, _ in checked:
        clash = next((p for p in rel.parents if p in names), None)
        if clash is not None:
            raise ValueError(
                f"bundle path {str(rel)!r} needs {str(clash)!r} to be a folder, but it is a file"
            )
    return checked


def _safe_parent(root: Path, rel: PurePosixPath) -> Path:
    """Creates the folders of ``rel`` under ``root``, refusing any that is a symlink or not a folder."""
    current = root
    for part in rel.parts[:-1]:
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            current.mkdir()
            continue
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(f"refusing to write through the symbolic link {current}")
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"cannot create the folder {current}: a file is in the way")
    return current


def write_bundle(files: Mapping[str, bytes], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Writes a bundle into ``out_dir``, creating folders; never writes outside it.

    Every path is checked before anything is written: absolute paths, ``..``, ``.`` or empty
    components, backslashes and drive letters are refused. While writing, an existing symbolic
    link among the folders or files inside ``out_dir`` is refused rather than followed, so a
    planted link cannot redirect a write. Existing files of the same name are replaced (through a
    temporary file and a rename); other files in ``out_dir`` are left alone.

    Args:
        files: relative POSIX path -> content, as from :func:`export_files`.
        out_dir: destination folder (created if missing; it may itself be a link to a folder).

    Returns:
        The written paths (``out_dir / path``), in the order of ``files``.

    Raises:
        ValueError: a path would escape ``out_dir`` or clashes with a file or link.
        TypeError: a path is not a string or a content is not bytes.
        OSError: the file system refused a write.
    """
    checked = _check_files(files)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve(strict=True)
    written = []
    for rel, content in checked:
        parent = _safe_parent(real_root, rel)
        target = parent / rel.name
        if target.is_symlink():
            raise ValueError(f"refusing to overwrite the symbolic link {target}")
        if target.exists() and not target.is_file():
            raise ValueError(f"cannot write {target}: something that is not a file is in the way")
        tmp = parent / f".{rel.name}.{os.getpid()}.tmp"
        # O_EXCL|O_NOFOLLOW: never open through a link someone planted under the temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(tmp, target)  # replaces a link itself, never its target
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written.append(root / rel)
    log.info("wrote %d files to %s", len(written), root)
    return written


def zip_bundle(files: Mapping[str, bytes]) -> bytes:
    """Packs a bundle into an in-memory ZIP archive (deflate).

    Paths are checked as in :func:`write_bundle`, so the archive unpacks safely.

    Args:
        files: relative POSIX path -> content, as from :func:`export_files`.

    Returns:
        The ZIP file's bytes; entries in the order of ``files``, stamped with the current time.

    Raises:
        ValueError: a path that would escape the archive's root.
        TypeError: a path is not a string or a content is not bytes.
    """
    checked = _check_files(files)
    stamp = time.localtime()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, content in checked:
            info = zipfile.ZipInfo(str(rel), date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, content)
    return buf.getvalue()
