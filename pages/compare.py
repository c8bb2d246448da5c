"""Compare page: run up to four attention models on the same images and show their attention side by side.

How state works here:

- Inputs (uploads, a camera photo, sample photos and scenes, the grouped model pills of
  :mod:`ui.picker`, the per-model random-weights override) are ordinary widgets with ``compare_*``
  keys; changing them only reruns this script, which re-renders from stored results. Models run only
  when the **Run** button is pressed.
- Weights are decided per model (:func:`ui.picker.weights_plan`): the zoo's own trained weights,
  cached pretrained weights, else random, or random on request. Models come from
  :func:`ui.cached_model`, shared by every session and keyed by ``(name, weights, device)``;
  :func:`attnviz.analyze` holds the model's own lock while it runs.
- Results are :class:`attnviz.Analysis` records (frozen dataclasses of numpy arrays, no tensors) in
  ``st.session_state["compare_results"]``, keyed by ``(image key, model, weights, device)``; the
  image key is a digest of the uploaded bytes. Per-model failures are kept next to them, so an
  error stays in its model's column until a later run of that model succeeds.
- Everything drawn is a pure function of the stored results, the page's colour scale and the
  sidebar's overlay settings. The columns are drawn one row per panel kind (header, notices,
  predictions, Grad-CAM, block choice, block maps, channel weights, expanders), so panels of the same
  kind line up; maps of one quantity share one colour scale across the columns. File downloads are
  generated only when their button is clicked.
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import functools
import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

import attnviz
from attnviz import render
from attnviz.backends import zoo
from attnviz.core.scales import GRADCAM, OFFSET_LENGTH, PROBABILITY, ROLLOUT, map_scale, shared_scales
from attnviz.io.export import export_files, zip_bundle
from attnviz.io.images import ALLOWED_EXTENSIONS, MAX_BYTES, MAX_PIXELS
from attnviz.io.samples import list_samples, load_sample
from attnviz.views import deformable, transformer
from attnviz.views.maps import AttentionMap, record_map
from attnviz.workflows.scenes import CLASSES, SceneParams, make_scene
from ui import Settings, cached_model, require_app, store
from ui import settings as read_settings
from ui.maps import error_parts, error_with_details, map_picture, md, scale_control, short, show_map
from ui.picker import MAX_MODELS, WeightsPlan, model_picker, random_override, weights_plan

log = logging.getLogger("attnviz.app.compare")

# Images analysed per run at most.
MAX_IMAGES = 8

# Preselected models: two zoo models with spatial maps (CBAM's spatial gate, GC's context softmax).
DEFAULT_MODELS = ("zoo_cbam", "zoo_gc")

# Generated scenes offered next to the sample photos: name -> (seed, class). Drawn at 224 px so
# that the ImageNet models get a full-size input; the zoo models resize them to their 96 px.
SCENE_SIZE = 224
SCENES = {f"scene_{name}_{seed}.png": (seed, name) for seed, name in ((1, "star"), (2, "arrow"), (3, "ring"))}

# Analyses kept per session; the oldest ones beyond this are dropped (never the current run's).
MAX_STORED = 96

# ... and at most this many bytes of arrays (stored compact: a ViT-B/16 result is ~11 MB, a
# Deformable DETR one ~70 MB at 800 px): the oldest results beyond it are dropped, never the
# current run's.
MAX_STORED_BYTES = 800 * 2**20

# Session-state keys (widgets and stored data); the sidebar's keys belong to the ui package.
PREFIX = "compare"
UPLOADS_KEY = "compare_uploads"
CAMERA_ON_KEY = "compare_camera_on"
CAMERA_KEY = "compare_camera"
SAMPLES_KEY = "compare_samples"
SAMPLES_TOUCHED_KEY = "compare_samples_touched"
MODELS_KEY = "compare_models"  # the chosen models in pick order (ui.picker)
RANDOM_KEY = "compare_random"
RUN_KEY = "compare_run"
IMAGE_KEY = "compare_image"
SCALE_KEY = "compare_scale"
SORT_KEY = "compare_sort"
BLOCK_KEY = "compare_block"  # + "_<model>"
TARGET_KEY = "compare_cam_target"  # + "_<model>_<image digest>"
RESULTS_KEY = "compare_results"
FAILURES_KEY = "compare_failures"
LAST_RUN_KEY = "compare_last_run"
CHECKED_KEY = "compare_checked"
VIT_MODEL_KEY = "compare_vit_model"
VIT_LAYER_KEY = "compare_vit_layer"
VIT_HEAD_KEY = "compare_vit_head"
VIT_FUSION_KEY = "compare_vit_fusion"
DEFORM_MODEL_KEY = "compare_deform_model"
DEFORM_LAYER_KEY = "compare_deform_layer"
DEFORM_OBJECT_KEY = "compare_deform_object"
ROLLOUT_DISCARD_KEY = "compare_rollout_discard"
ROLLOUT_FUSION_KEY = "compare_rollout_fusion"
RENDERS_KEY = "compare_renders"
PENDING_CAM_KEY = "compare_pending_gradcam"
VIT_VIEW_KEY = "compare_vit_view"
HEATMAP_OPEN_KEY = "compare_open_heatmap"
STATS_OPEN_KEY = "compare_open_stats"
DOWNLOADED_KEY = "compare_downloaded"

# The transformer views below the columns; only the chosen one is computed.
VIT_VIEWS = ("Heads × layers", "Query point", "Rollout", "Head statistics")

# Rendered transformer pictures kept per session (PNG bytes), the oldest dropped first.
MAX_RENDERS = 48

# Heights (px) of the charts of one row, so that the rows line up across the columns.
TOP5_HEIGHT = 240
CHANNELS_HEIGHT = 300

# A model name longer than this (for n columns) is cut in its column's header; the full name and
# the description are in the header's tooltip.
NAME_CHARS = {1: 60, 2: 34, 3: 21, 4: 15}

_UNEXPECTED = "{model} failed unexpectedly; the details are in the server log."
_OUT_OF_DOMAIN = (
    "**Trained on generated shapes only** (10 classes): on this picture its prediction means nothing and "
    "its maps show the mechanics. Pick a generated scene to see it on its own ground."
)


# --------------------------------------------------------------------------------------------------
# Small frozen records kept in session state
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """One input image.

    Attributes:
        key: ``"upload:<sha256 of the bytes, 24 hex>"``, ``"camera:<sha256 ...>"`` or
            ``"sample:<file name>"``.
        label: the file name shown to the user and used for the export folders.
    """

    key: str
    label: str

    @property
    def is_sample(self) -> bool:
        """True for a shipped sample photo or a generated scene."""
        return self.key.startswith("sample:")

    @property
    def is_scene(self) -> bool:
        """True for a generated scene (what the zoo models were trained on)."""
        return self.is_sample and self.label in SCENES


@dataclass(frozen=True)
class RunConfig:
    """What a run analysed: the results shown are those of the last run.

    Attributes:
        images: the images, in order.
        models: the models, in the order they were picked.
        weights: per model, ``"pretrained"`` or ``"random"`` (see :func:`ui.picker.weights_plan`).
        device: the resolved device.
    """

    images: tuple[ImageRef, ...]
    models: tuple[str, ...]
    weights: tuple[str, ...]
    device: str

    def weights_of(self, model: str) -> str:
        """The weights ``model`` ran with."""
        return self.weights[self.models.index(model)]

    def result_key(self, image: ImageRef, model: str) -> tuple[str, str, str, str]:
        """Key of one result in the session's store."""
        return (image.key, model, self.weights_of(model), self.device)

    def model_key(self, model: str) -> tuple[str, str, str]:
        """Key of one model's failure in the session's store."""
        return (model, self.weights_of(model), self.device)


@dataclass(frozen=True)
class Failure:
    """A model that could not run: one sentence for people, the details, and whether random weights
    would help (its pretrained weights are missing)."""

    message: str
    details: tuple[str, ...] = ()
    weights_hint: bool = False


def _trim(store: dict, limit: int, keep: Iterable[object] = ()) -> None:
    """Drop the oldest entries of ``store`` beyond ``limit``, except those in ``keep``."""
    protected = set(keep)
    for key in list(store):
        if len(store) <= limit:
            break
        if key not in protected:
            del store[key]


def _trim_bytes(store: dict, limit: int, keep: Iterable[object] = ()) -> None:
    """Drop the oldest results of ``store`` until their arrays hold at most ``limit`` bytes."""
    protected = set(keep)
    sizes = {key: a.nbytes for key, a in store.items()}
    total = sum(sizes.values())
    for key in list(store):
        if total <= limit:
            break
        if key not in protected:
            total -= sizes[key]
            del store[key]


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """True when two run configurations ask for the same images, models, weights and device.

    Compared by value: Streamlit executes this page afresh on every rerun, so a stored
    ``RunConfig`` is an instance of an earlier run's class, and dataclass ``==`` between two
    different classes falls back to identity (always unequal).
    """
    return dataclasses.astuple(a) == dataclasses.astuple(b)


def upload_key(data: bytes, kind: str = "upload") -> str:
    """The image key of uploaded bytes: identical content gives the same key whatever the name."""
    return f"{kind}:" + hashlib.sha256(data).hexdigest()[:24]


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


def channel_csv(cw: attnviz.ChannelWeights) -> bytes:
    """One block's channel weights as CSV: ``channel`` then one column per path (or ``gate``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if cw.multipath:
        labels = list(cw.path_labels) if len(cw.path_labels) == cw.values.shape[0] else None
        names = labels or [f"path {i}" for i in range(cw.values.shape[0])]
        rows = cw.values.T
    else:
        names = ["gate"]
        rows = cw.values[:, None]
    writer.writerow(["channel", *names])
    for channel, row in enumerate(rows):
        writer.writerow([channel, *(repr(float(v)) for v in row)])
    return buf.getvalue().encode("utf-8")


def top5_csv(analysis: attnviz.Analysis) -> bytes:
    """The top-5 predictions as CSV: ``rank, class, label, probability``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "class", "label", "probability"])
    for rank, p in enumerate(analysis.top5, start=1):
        writer.writerow([rank, p.index, p.label, repr(p.probability)])
    return buf.getvalue().encode("utf-8")


def map_png(image, values, scale, cmap: str, alpha: float) -> bytes:
    """PNG bytes of a map with its colour bar, as shown (called only when its download is clicked)."""
    return render.to_png_bytes(map_picture(image, values, scale, cmap, alpha))


def bundle_zip(items: Sequence[tuple[str, attnviz.Analysis]], cmap: str, alpha: float, scale: str) -> bytes:
    """The ZIP of every result: :func:`attnviz.io.export.export_files` packed by ``zip_bundle``."""
    return zip_bundle(export_files(items, cmap=cmap, alpha=alpha, scale=scale))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _custom_values(custom: object) -> list[float] | None:
    """A point's ``customdata`` as numbers, whatever shape Plotly sent it in: a list, a dict keyed by
    position (``{"0": ..}``), or Plotly 6's typed array (``{"dtype": "f8", "bdata": base64}``)."""
    if isinstance(custom, list | tuple):
        values = list(custom)
    elif isinstance(custom, Mapping) and "bdata" in custom:
        try:
            raw = base64.b64decode(str(custom["bdata"]), validate=True)
            values = np.frombuffer(raw, dtype=np.dtype(str(custom.get("dtype", "f8")))).tolist()
        except (ValueError, TypeError, binascii.Error):
            return None
    elif isinstance(custom, Mapping):
        try:
            values = [custom[k] for k in sorted(custom, key=lambda k: int(k))]
        except (ValueError, TypeError):
            return None
    else:
        return None
    return values if all(_number(v) for v in values) else None


def point_of_click(event: object) -> tuple[float, float] | None:
    """The (y, x) pixel of the token clicked in :func:`attnviz.render.query_figure`, or None.

    ``event`` is what ``st.plotly_chart(on_select=...)`` gives (an attribute object, or the dict kept
    in session state). A point's ``x`` and ``y`` are the token's centre (plain numbers); its
    ``customdata`` ``[row, col, y, x]`` is read only when they are missing, in any shape it arrives.
    """
    selection = event.get("selection") if isinstance(event, Mapping) else getattr(event, "selection", None)
    points = selection.get("points") if isinstance(selection, Mapping) else getattr(selection, "points", None)
    for point in points or []:
        if not isinstance(point, Mapping):
            continue
        x, y = point.get("x"), point.get("y")
        if _number(x) and _number(y):
            return float(y), float(x)
        custom = _custom_values(point.get("customdata"))
        if custom is not None and len(custom) >= 4:
            return float(custom[2]), float(custom[3])
    return None


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def load_choice(name: str) -> Image.Image:
    """A sample photo, or one of :data:`SCENES` by its name."""
    if name in SCENES:
        seed, shape = SCENES[name]
        scene = make_scene(seed, SceneParams(size=SCENE_SIZE, label=CLASSES.index(shape)))
        return Image.fromarray(scene.image, "RGB")
    return load_sample(name)


def _scene_label(name: str) -> str:
    """How a choice is shown: ``"scene: star #1"`` for a generated scene, else the file name."""
    if name in SCENES:
        seed, shape = SCENES[name]
        return f"scene: {shape} #{seed}"
    return name


def _on_upload() -> None:
    """When images are uploaded, drop the default sample unless the user picked samples."""
    if st.session_state.get(UPLOADS_KEY) and not st.session_state.get(SAMPLES_TOUCHED_KEY):
        st.session_state[SAMPLES_KEY] = []


def _on_samples() -> None:
    st.session_state[SAMPLES_TOUCHED_KEY] = True


def _camera_bytes() -> bytes | None:
    photo = st.session_state.get(CAMERA_KEY) if st.session_state.get(CAMERA_ON_KEY) else None
    return photo.getvalue() if photo is not None else None


def _check(ref: ImageRef, data: bytes, decoded: dict[str, Image.Image], refs: list[ImageRef]) -> None:
    """Load an upload once per digest (the outcome is remembered in the session); show a refusal."""
    checked: dict[str, str | None] = store(CHECKED_KEY)
    if ref.key not in checked:
        try:
            decoded[ref.key] = attnviz.load_image(data, name=ref.label)
            checked[ref.key] = None
        except attnviz.ImageLoadError as err:
            checked[ref.key] = str(err)
    if checked[ref.key] is not None:
        st.error(checked[ref.key], icon=":material/broken_image:")
    elif all(ref.key != r.key for r in refs):
        refs.append(ref)


def _image_inputs() -> tuple[list[ImageRef], dict[str, Image.Image]]:
    """Draw the image inputs; return the valid images (capped) and those decoded in this rerun.

    Every upload and camera photo goes through :func:`attnviz.load_image` once (its outcome is
    remembered per digest in the session), and each refused file gets one error with the loader's
    message.
    """
    uploads = (
        # No type= filter: Streamlit checks it by file name on the server and raises for any other
        # name (a crash for a crafted request). Every file goes through attnviz.load_image instead,
        # which decides by content and answers each refused file with one message.
        st.file_uploader(
            "Upload images (JPEG, PNG, WebP or GIF)",
            accept_multiple_files=True,
            key=UPLOADS_KEY,
            on_change=_on_upload,
            help=f"JPEG, PNG, WebP or GIF ({', '.join(ALLOWED_EXTENSIONS)}), at most "
            f"{MAX_BYTES // 2**20} MB and {MAX_PIXELS / 1e6:g} megapixels. The file's content decides, not "
            "its name.",
        )
        or []
    )
    if st.toggle("Camera", key=CAMERA_ON_KEY, help="Take a photo with this device's camera (live demos)."):
        st.camera_input("Take a photo", key=CAMERA_KEY)
    # Generated scenes first: the default models are the zoo's, which were trained on such scenes.
    sample_names = list(SCENES) + [path.name for path in list_samples()]
    if SAMPLES_KEY not in st.session_state:
        # Set here rather than as default=: _on_upload writes this key, and a widget given both
        # a default and a Session State value shows a warning.
        st.session_state[SAMPLES_KEY] = sample_names[:1]
    st.multiselect(
        "Sample images",
        sample_names,
        key=SAMPLES_KEY,
        on_change=_on_samples,
        format_func=_scene_label,
        help="Photos shipped with attnviz (see assets/samples/ATTRIBUTION.md) and generated scenes "
        "(attnviz.workflows.scenes, 224 px), the kind of picture the built-in zoo was trained on.",
    )
    decoded: dict[str, Image.Image] = {}
    refs: list[ImageRef] = []
    for upload in uploads:
        data = upload.getvalue()
        _check(ImageRef(upload_key(data), upload.name), data, decoded, refs)
    photo = _camera_bytes()
    if photo is not None:
        key = upload_key(photo, "camera")
        _check(ImageRef(key, f"camera_{key[7:15]}.jpg"), photo, decoded, refs)
    _trim(store(CHECKED_KEY), 64, keep=[r.key for r in refs])
    refs += [ImageRef(f"sample:{name}", name) for name in st.session_state.get(SAMPLES_KEY, [])]
    if len(refs) > MAX_IMAGES:
        st.warning(
            f"{len(refs)} images are chosen, but a run analyses at most {MAX_IMAGES}: only the first "
            f"{MAX_IMAGES} ({', '.join(r.label for r in refs[:MAX_IMAGES])}) are used. Remove some to "
            "analyse the others.",
            icon=":material/filter_8:",
        )
        refs = refs[:MAX_IMAGES]
    return refs, decoded


def _decode_all(
    refs: Sequence[ImageRef], decoded: dict[str, Image.Image]
) -> tuple[dict[str, Image.Image], list[ImageRef]]:
    """Decode each image of ``refs`` once: those decoded in this rerun are reused, others loaded now.

    Returns:
        ``(images by key, refs that failed)``; each failure is shown with its loader's message.
    """
    contents = [f.getvalue() for f in st.session_state.get(UPLOADS_KEY) or []]
    uploads = {upload_key(data): data for data in contents}
    photo = _camera_bytes()
    if photo is not None:
        uploads[upload_key(photo, "camera")] = photo
    images: dict[str, Image.Image] = {}
    failed: list[ImageRef] = []
    for ref in refs:
        try:
            if ref.key in decoded:
                images[ref.key] = decoded[ref.key]
            elif ref.is_sample:
                images[ref.key] = load_choice(ref.label)
            elif ref.key in uploads:
                images[ref.key] = attnviz.load_image(uploads[ref.key], name=ref.label)
            else:
                raise attnviz.ImageLoadError(f"{ref.label} is no longer uploaded.")
        except ValueError as err:  # ImageLoadError, or a sample that has disappeared
            st.error(str(err), icon=":material/broken_image:")
            failed.append(ref)
    return images, failed


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _failure(model: str, err: Exception) -> Failure:
    """What a column says about a model that could not run."""
    if isinstance(err, attnviz.AttnvizError):
        summary, details = error_parts(err)
        return Failure(summary, details, isinstance(err, attnviz.WeightsUnavailableError))
    return Failure(_UNEXPECTED.format(model=model))


def _run(config: RunConfig, decoded: dict[str, Image.Image]) -> None:
    """Analyse every image of ``config`` that has no stored result yet, one model at a time."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    pending: dict = store(PENDING_CAM_KEY)
    todo = {
        model: [ref for ref in config.images if config.result_key(ref, model) not in results]
        for model in config.models
    }
    needed = [ref for ref in config.images if any(ref in refs for refs in todo.values())]
    images, broken = _decode_all(needed, decoded)
    todo = {model: [ref for ref in refs if ref not in broken] for model, refs in todo.items()}
    n = len(config.models)
    with st.status(f"Analysing {len(config.images)} image(s) with {n} model(s)", expanded=True) as status:
        bar = st.progress(0.0, text="Starting")
        failed = 0
        for i, model in enumerate(config.models):
            missing = todo[model]
            if not missing:
                st.write(f"{model}: nothing new to analyse.")
                continue

            def progress(message: str, fraction: float | None, i: int = i) -> None:
                # Loading is the first half of each model's share of the bar, analysing the second.
                bar.progress(min(1.0, (i + 0.5 * (fraction or 0.0)) / n), text=message)

            try:
                loaded = cached_model(model, config.weights_of(model), config.device, progress)
                bar.progress((i + 0.5) / n, text=f"Analysing {len(missing)} image(s) with {model}")
                # Native maps first (one forward); Grad-CAM (a forward and a backward more) is added
                # once the columns are drawn, so the page shows the modules' own maps sooner.
                analyses = attnviz.analyze(loaded, [images[ref.key] for ref in missing], gradcam=False)
            except Exception as err:
                if isinstance(err, attnviz.AttnvizError):
                    log.warning("%s could not run: %s", model, err)
                else:
                    log.exception("analysing images with %s failed", model)
                failures[config.model_key(model)] = _failure(model, err)
                st.write(f"{model}: failed.")
                failed += 1
                continue
            failures.pop(config.model_key(model), None)
            for ref, analysis in zip(missing, analyses, strict=True):
                # attention probabilities kept as float16: half the memory, the same pictures
                results[config.result_key(ref, model)] = attnviz.compact(analysis)
                if analysis.top5:  # a classifier: Grad-CAM follows
                    pending[config.result_key(ref, model)] = images[ref.key]
            st.write(f"{model}: {len(missing)} image(s) analysed.")
        bar.progress(1.0, text="Done")
        label = f"Done: {n - failed} of {n} model(s) ran" if failed else "Done"
        status.update(label=label, state="error" if failed == n else "complete", expanded=False)
    keep = [config.result_key(ref, m) for ref in config.images for m in config.models]
    _trim(results, MAX_STORED, keep=keep)
    _trim_bytes(results, MAX_STORED_BYTES, keep=keep)


def _download_weights(model: str, device: str) -> None:
    """Fetch a model's pretrained weights through its library's hub, with progress (a button)."""
    bar = st.progress(0.0, text=f"Getting the pretrained weights of {model}")

    def progress(message: str, fraction: float | None) -> None:
        bar.progress(min(1.0, fraction or 0.0), text=message)

    try:
        cached_model(model, "pretrained", device, progress)
    except attnviz.AttnvizError as err:
        bar.empty()
        error_with_details(*error_parts(err))
        return
    except Exception:
        bar.empty()
        log.exception("getting the pretrained weights of %s failed", model)
        st.error(_UNEXPECTED.format(model=model), icon=":material/error:")
        return
    bar.empty()
    st.session_state[DOWNLOADED_KEY] = model
    st.rerun()


# --------------------------------------------------------------------------------------------------
# Rendering helpers (pure functions of the stored results)
# --------------------------------------------------------------------------------------------------


def _compact(fig: go.Figure, height: int, top: int = 40, bottom: int = 10) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": top, "b": bottom})
    return fig


def _download(label: str, data: Callable[[], bytes], file_name: str, mime: str, key: str) -> None:
    """A download button whose content is generated only when it is clicked."""
    st.download_button(
        label,
        data=data,
        file_name=file_name,
        mime=mime,
        key=key,
        on_click="ignore",
        icon=":material/download:",
    )


def _cached_png(key: tuple, draw: Callable[[], Image.Image]) -> bytes:
    """PNG bytes of ``draw()``, kept in this session under ``key`` (lazy, rendered once per key)."""
    renders: dict = store(RENDERS_KEY)
    if key not in renders:
        renders[key] = render.to_png_bytes(draw())
        _trim(renders, MAX_RENDERS, keep=[key])
    return renders[key]


def _layer_label(record) -> str:
    return f"{record.block}: {record.layer.removesuffix('.attn').removesuffix('.self_attention')}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


# --------------------------------------------------------------------------------------------------
# The columns, one row per panel kind
# --------------------------------------------------------------------------------------------------


@dataclass
class _Column:
    """What one model's column shows for the chosen image."""

    model: str
    weights: str
    analysis: attnviz.Analysis | None
    failure: Failure | None
    position: int | None = None

    @functools.cached_property
    def spec(self) -> attnviz.ModelSpec:
        return attnviz.get_spec(self.model)


def _header(col: _Column, config: RunConfig, n: int) -> None:
    spec = col.spec
    st.subheader(short(col.model, NAME_CHARS.get(n, 19)), help=f"**{md(col.model)}**: {md(spec.description)}")
    what = "random weights (untrained)" if col.weights == "random" else weights_plan(col.model).why
    st.caption(f"{what} · {config.device}")


def _notices(col: _Column, config: RunConfig, image: ImageRef) -> None:
    """Why a column shows nothing, or what to keep in mind reading it (untrained, out of domain)."""
    if col.failure is not None and col.analysis is None:
        error_with_details(col.failure.message, col.failure.details)
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
            _download_weights(col.model, config.device)
    if spec.source == "attnviz" and not image.is_scene:
        st.info(_OUT_OF_DOMAIN, icon=":material/info:")
    for note in col.analysis.notes:  # e.g. the GPU ran out of memory and the batch was split
        st.info(md(note), icon=":material/memory:")


def _predictions(col: _Column, stem: str) -> None:
    analysis = col.analysis
    if analysis is None:
        return
    if analysis.top5:
        fig = render.top5_bar(analysis.top5, title="Top-5 predictions")
        st.plotly_chart(_compact(fig, TOP5_HEIGHT), key=f"compare_top5_{col.model}")
        _download("Top-5 (CSV)", functools.partial(top5_csv, analysis), f"{stem}_top5.csv", "text/csv",
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


def _target_key(model: str, image: ImageRef) -> str:
    return f"{TARGET_KEY}_{model}_{_digest(image.key)}"


def _target_picker(col: _Column, image: ImageRef, device: str) -> int | None:
    """The class Grad-CAM explains: one of the top-5, or any class by name (searchable)."""
    analysis = col.analysis
    loaded_categories = _categories(col, device)
    if analysis is None or not analysis.top5 or not loaded_categories:
        return None
    top = {p.index: p for p in analysis.top5}
    options = [p.index for p in analysis.top5] + [i for i in range(len(loaded_categories)) if i not in top]

    def label(i: int) -> str:
        if i in top:
            return f"{loaded_categories[i]} ({top[i].probability:.1%}, top-{list(top).index(i) + 1})"
        return loaded_categories[i]

    return st.selectbox(
        "Grad-CAM explains",
        options,
        format_func=label,
        key=_target_key(col.model, image),
        help="Which class Grad-CAM explains: the top-5 predictions first, then every class of the model "
        "(type to search). Why did it not say 'cat'? Pick 'cat' and see where the evidence for it is.",
    )


def _categories(col: _Column, device: str) -> tuple[str, ...]:
    """The model's class names (the model is loaded: it produced the result)."""
    try:
        return cached_model(col.model, col.weights, device).categories
    except Exception:  # the model cannot be loaded any more (weights removed): no re-targeting
        log.exception("cannot reload %s for its class names", col.model)
        return ()


def _gradcam_view(analysis: attnviz.Analysis, settings: Settings, mode: str, stem: str) -> None:
    cam, img = analysis.gradcam, analysis.input_image
    scale = map_scale(cam.values, GRADCAM, mode)
    show_map(
        img,
        cam.values,
        scale,
        settings.cmap,
        settings.alpha,
        f"Grad-CAM at {cam.layer} for “{cam.target_label}”",
    )
    png = functools.partial(map_png, img, cam.values, scale, settings.cmap, settings.alpha)
    _download(
        "Grad-CAM (PNG)", png, f"{stem}_gradcam.png", "image/png", f"compare_dl_gradcam_{analysis.model}"
    )


def _retarget(config: RunConfig, image: ImageRef, col: _Column, target: int) -> attnviz.Analysis | None:
    """Grad-CAM of ``target`` for the shown result (stored in place of the old map)."""
    images, failed = _decode_all([image], {})
    if failed:
        return None
    try:
        loaded = cached_model(col.model, col.weights, config.device)
        with st.spinner(f"Grad-CAM of {loaded.categories[target]} for {col.model}"):
            [done] = attnviz.add_gradcam(loaded, [col.analysis], [images[image.key]], targets=[target])
    except attnviz.AttnvizError as err:
        st.warning(f"The Grad-CAM of that class could not be computed: {err}", icon=":material/warning:")
        return None
    store(RESULTS_KEY)[config.result_key(image, col.model)] = done
    return done


def _gradcam_row(col: _Column, config: RunConfig, image: ImageRef, settings: Settings, mode: str,
                 stem: str, slots: dict) -> None:  # fmt: skip
    analysis = col.analysis
    if analysis is None or not analysis.top5:
        return
    target = _target_picker(col, image, config.device)
    if analysis.gradcam is not None:
        if target is not None and target != analysis.gradcam.target:
            analysis = _retarget(config, image, col, target) or analysis
            col.analysis = analysis
        _gradcam_view(analysis, settings, mode, stem)
    elif config.result_key(image, col.model) in store(PENDING_CAM_KEY):
        slots[col.model] = st.empty()
        slots[col.model].caption("Grad-CAM baseline: computing…")


def _block_picker(col: _Column) -> None:
    """Each column's block: a zoo model opens on the block its card says localises best."""
    analysis = col.analysis
    if analysis is None:
        return
    total = len(analysis.blocks)
    if total == 0:
        st.caption(f"{col.model} has no attention blocks (baseline): only Grad-CAM applies.")
        return
    best = zoo.best_block(col.model.removeprefix("zoo_")) if col.model.startswith("zoo_") else None
    best_block = best.block if best is not None and best.block < total else None
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
    if best_block is not None and col.position == best_block:
        st.caption(f"★ {best.text} (model card).")
    elif best_block is not None:
        st.caption(f"The card's best block is {best_block} ★.")


def _maps_row(cols: list[_Column], settings: Settings, mode: str, stems: dict[str, str]) -> None:
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
                _download("Attention map (PNG)",
                          functools.partial(map_png, img, amap.values, scale, settings.cmap, settings.alpha),
                          f"{stems[col.model]}_block{col.position:02d}_{amap.kind}.png", "image/png",
                          f"compare_dl_spatial_{col.model}_{k}")  # fmt: skip


def _channels_row(col: _Column, sort: bool, stem: str) -> None:
    analysis = col.analysis
    if analysis is None or col.position is None:
        return
    channels = block_records(analysis, col.position)[1]
    if not channels and analysis.channel_weights:
        st.caption("No channel weights at this block.")
    for k, cw in enumerate(channels):
        fig = render.channel_bar(cw, sort=sort)
        st.plotly_chart(_compact(fig, CHANNELS_HEIGHT, top=50), key=f"compare_channels_{col.model}_{k}")
        _download("Channel weights (CSV)", functools.partial(channel_csv, cw),
                  f"{stem}_block{col.position:02d}_{cw.kind}.csv", "text/csv",
                  f"compare_dl_channels_{col.model}_{k}")  # fmt: skip


def _expanders_row(col: _Column) -> None:
    analysis = col.analysis
    if analysis is None or not analysis.channel_weights:
        return
    # Drawn only while open (the expanders rerun the page when opened or closed).
    heatmap = st.expander("All blocks × channels", key=f"{HEATMAP_OPEN_KEY}_{col.model}", on_change="rerun")
    if heatmap.open:
        fig = render.block_channel_heatmap(analysis.channel_weights)
        height = max(300, 28 * len(analysis.channel_weights) + 150)
        heatmap.plotly_chart(_compact(fig, height, top=50), key=f"compare_heatmap_{col.model}")
    stats = st.expander("Gate statistics per block", key=f"{STATS_OPEN_KEY}_{col.model}", on_change="rerun")
    if stats.open:
        fig = render.gate_stats_figure(analysis.channel_weights)
        stats.plotly_chart(_compact(fig, 380, top=50), key=f"compare_stats_{col.model}")


def _add_gradcams(config: RunConfig, image: ImageRef, slots: dict, settings: Settings, mode: str) -> None:
    """Compute the Grad-CAM baselines still due for ``config`` (every image, batched per model) and
    draw the shown image's into its column's slot."""
    results: dict = store(RESULTS_KEY)
    pending: dict = store(PENDING_CAM_KEY)
    for key in [k for k in pending if k not in results]:  # dropped from the store meanwhile
        del pending[key]
    for model in config.models:
        refs = [ref for ref in config.images if config.result_key(ref, model) in pending]
        keys = [config.result_key(ref, model) for ref in refs]
        if not keys:
            continue
        targets = [st.session_state.get(_target_key(model, ref)) for ref in refs]
        try:
            loaded = cached_model(model, config.weights_of(model), config.device)
            done = attnviz.add_gradcam(
                loaded, [results[k] for k in keys], [pending[k] for k in keys], targets=targets
            )
        except Exception as err:
            if isinstance(err, attnviz.AttnvizError):
                log.warning("Grad-CAM of %s failed: %s", model, err)
                why = str(err)
            else:
                log.exception("Grad-CAM of %s failed", model)
                why = "an unexpected error; the details are in the server log"
            note = f"The Grad-CAM baseline could not be computed: {why}"
            done = [dataclasses.replace(results[k], notes=(*results[k].notes, note)) for k in keys]
        finally:
            for k in keys:
                pending.pop(k, None)
        for k, analysis in zip(keys, done, strict=True):
            results[k] = analysis
        slot = slots.get(model)
        shown = results.get(config.result_key(image, model))
        if slot is not None and shown is not None:
            with slot.container():
                if shown.gradcam is not None:
                    _gradcam_view(shown, settings, mode, f"{image.label.rsplit('.', 1)[0]}_{model}")
                else:
                    st.warning(md(shown.notes[-1]), icon=":material/warning:")


def _columns(config: RunConfig, image: ImageRef, settings: Settings, mode: str, sort: bool) -> dict:
    """Every model's column, drawn one row per panel kind so that the panels line up."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    cols = [
        _Column(m, config.weights_of(m), results.get(config.result_key(image, m)),
                failures.get(config.model_key(m)))
        for m in config.models
    ]  # fmt: skip
    stems = {col.model: f"{image.label.rsplit('.', 1)[0]}_{col.model}" for col in cols}
    n = len(cols)

    def row(draw: Callable[[_Column], None]) -> None:
        for slot, col in zip(st.columns(n, gap="medium"), cols, strict=True):
            with slot:
                draw(col)

    slots: dict = {}
    row(lambda c: _header(c, config, n))
    row(lambda c: _notices(c, config, image))
    row(lambda c: _predictions(c, stems[c.model]))
    row(lambda c: _gradcam_row(c, config, image, settings, mode, stems[c.model], slots))
    row(_block_picker)
    _maps_row(cols, settings, mode, stems)
    row(lambda c: _channels_row(c, sort, stems[c.model]))
    row(_expanders_row)
    return slots


# --------------------------------------------------------------------------------------------------
# Below the columns: query points, transformer views, deformable sampling
# --------------------------------------------------------------------------------------------------


def _apply_click(chart_key: str, y_key: str, x_key: str, h: int, w: int) -> None:
    """``on_select`` callback of a query picker: move the query sliders to the clicked token."""
    clicked = point_of_click(st.session_state.get(chart_key))
    if clicked is not None:
        st.session_state[y_key] = min(max(round(clicked[0]), 0), h - 1)
        st.session_state[x_key] = min(max(round(clicked[1]), 0), w - 1)


def _query_point(
    model: str,
    grid: tuple[int, int],
    stride: tuple[float, float],
    picture,
    prefix: str = "compare_query",
    stacked: bool = False,
) -> tuple[float, float]:
    """Draw the clickable query picker and the pixel sliders; return the query pixel (y, x).

    A click on the picture moves the sliders to the token under it (its centre), the first time and
    every time after: the chart's ``on_select`` callback runs once per click, before the page is
    drawn again. The sliders also set the point directly, beside the picture or under it
    (``stacked``). ``prefix`` names the widgets' keys (``<prefix>_y``, ``<prefix>_x``,
    ``<prefix>_click_<model>``), one set per view.
    """
    y_key, x_key = f"{prefix}_y", f"{prefix}_x"
    chart_key = f"{prefix}_click_{model}"
    h, w = picture.shape[:2]
    if y_key not in st.session_state:
        st.session_state[y_key] = h // 2
        st.session_state[x_key] = w // 2
    st.session_state[y_key] = min(int(st.session_state[y_key]), h - 1)
    st.session_state[x_key] = min(int(st.session_state[x_key]), w - 1)
    pick, controls = (st.container(), st.container()) if stacked else st.columns([3, 2])
    with pick:
        point = (float(st.session_state[y_key]), float(st.session_state[x_key]))
        fig = render.query_figure(picture, grid, stride, point, title="Click a position to query it")
        st.plotly_chart(
            _compact(fig, 420),
            on_select=functools.partial(_apply_click, chart_key, y_key, x_key, h, w),
            selection_mode="points",
            key=chart_key,
        )
    with controls:
        st.slider("Query pixel y (row)", 0, h - 1, key=y_key)
        st.slider("Query pixel x (column)", 0, w - 1, key=x_key)
        st.caption("Click the picture (or move the sliders): the ring marks the query.")
    return float(st.session_state[y_key]), float(st.session_state[x_key])


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
            st.plotly_chart(_compact(fig, 420, top=60), key=f"compare_vit_prefix_{analysis.model}")
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

    png = _cached_png((*rkey, "head_grid", cmap, alpha, mode), draw)
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
    point = _query_point(analysis.model, record.grid, record.stride, picture)
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
    st.plotly_chart(_compact(fig, 560, top=60), key=f"compare_vit_stats_{analysis.model}")
    st.caption(md(stats.how))


def _section(title: str, models: list[str], key: str) -> str | None:
    """A section below the columns for ``models`` (none: nothing drawn); returns the model shown."""
    if not models:
        return None
    st.divider()
    st.subheader(title)
    if len(models) == 1:
        return models[0]
    return st.segmented_control("Model", models, default=models[0], key=key) or models[0]


def _deformable_views(analyses: dict, settings: Settings, mode: str) -> None:
    """Below the columns: where the deformable modules sample, per query, and their offset fields."""
    with_points = [m for m, a in analyses.items() if a is not None and a.sampling_points]
    model = _section("Deformable sampling: where each query looks", with_points, DEFORM_MODEL_KEY)
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
            point = _query_point(model, grid, stride, picture, prefix="compare_deform", stacked=not multi)
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
            _compact(render.sampling_figure(picture, samples), height), key=f"compare_deform_points_{model}"
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
                _compact(render.offset_field_figure(picture, field, title="Offset field"), 520),
                key=f"compare_deform_field_{model}",
            )


def _transformer_views(
    config: RunConfig, image: ImageRef, analyses: dict, settings: Settings, mode: str
) -> None:
    """Below the columns: every layer and head of the transformers' self-attention."""
    with_attention = [
        m for m, a in analyses.items() if a is not None and transformer.self_attention_records(a)
    ]
    model = _section("Self-attention: layers, heads, query points, rollout", with_attention, VIT_MODEL_KEY)
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


def _results(config: RunConfig, settings: Settings) -> None:
    """Draw the last run's results: image picker, page controls, one column per model, the ZIP."""
    results: dict = store(RESULTS_KEY)
    if not config.images or not config.models:
        return
    by_key = {ref.key: ref for ref in config.images}
    left, middle, right = st.columns([3, 2, 1], vertical_alignment="bottom")
    with left:
        if len(config.images) > 1:
            picked = st.selectbox(
                "Image", list(by_key), format_func=lambda key: by_key[key].label, key=IMAGE_KEY
            )
            image = by_key.get(picked, config.images[0])
        else:
            image = config.images[0]
            st.markdown(f"**Image**: {md(image.label)}")
    with middle:
        mode = scale_control(SCALE_KEY)
    with right:
        sort = st.toggle("Sort channels", key=SORT_KEY, help="Order the channel bars by weight.")

    slots = _columns(config, image, settings, mode, sort)
    _add_gradcams(config, image, slots, settings, mode)
    analyses = {m: results.get(config.result_key(image, m)) for m in config.models}
    _transformer_views(config, image, analyses, settings, mode)
    _deformable_views(analyses, settings, mode)

    items = [
        (ref.label, results[config.result_key(ref, m)])
        for ref in config.images
        for m in config.models
        if config.result_key(ref, m) in results
    ]
    if items:
        st.divider()
        _download(
            f"Download everything (ZIP, {len(items)} result(s))",
            functools.partial(bundle_zip, items, settings.cmap, settings.alpha, mode),
            "attnviz_results.zip",
            "application/zip",
            "compare_dl_zip",
        )
        st.caption(
            "Overlays with their colour bars, channel weights (CSV), charts (HTML, offline) and summary.json "
            f"for every result; the overlays use the {mode} scale, each map on its own."
        )


# --------------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------------


def _model_controls(refs: list[ImageRef]) -> tuple[list[WeightsPlan], bool]:
    """The grouped model picker, the random-weights override, what each model will run with, and
    the Run button; returns (each chosen model's weights plan, run)."""
    st.markdown(f"**Models** (up to {MAX_MODELS}, in the order picked)")
    models = model_picker(PREFIX, DEFAULT_MODELS)
    random = random_override(PREFIX, models) if models else []
    plans = [weights_plan(m, random) for m in models]
    if plans:
        st.caption(
            "  \n".join(
                f"**{md(p.model)}**: {md(attnviz.get_spec(p.model).description)} · {md(p.why)}" for p in plans
            )
        )
    downloaded = st.session_state.pop(DOWNLOADED_KEY, None)
    if downloaded:
        st.success(
            f"The pretrained weights of {downloaded} are ready: press Run to use them.",
            icon=":material/check:",
        )
    run = st.button(
        "Run",
        type="primary",
        key=RUN_KEY,
        icon=":material/play_arrow:",
        disabled=not (refs and models),
        help="Analyse the chosen images with the chosen models.",
    )
    return plans, run


def main() -> None:
    """Draw the page."""
    st.title("Compare attention")
    st.caption(
        "What do the attention modules look at? Choose images and up to four models, then press Run. "
        "Grad-CAM is the baseline; the block maps come from the models' own attention modules, each with "
        "its colour bar."
    )
    settings = read_settings()
    inputs, controls = st.columns([1, 1], gap="large")
    with inputs:
        refs, decoded = _image_inputs()
    with controls:
        plans, run = _model_controls(refs)

    try:
        device = str(attnviz.resolve_device(settings.device))
    except attnviz.DeviceError as err:
        st.error(str(err))
        return
    models = [p.model for p in plans]
    current = RunConfig(tuple(refs), tuple(models), tuple(p.weights for p in plans), device)
    if run:
        _run(current, decoded)
        st.session_state[LAST_RUN_KEY] = current

    last: RunConfig | None = st.session_state.get(LAST_RUN_KEY)
    if last is None:
        if not refs:
            st.info("Upload an image or pick a sample photo.")
        elif not models:
            st.info("Choose at least one model.")
        else:
            st.info("Press **Run** to analyse the chosen images.")
        return
    if not same_run(last, current):
        st.info("The inputs or settings changed since the last run: press **Run** to update the results.")
    _results(last, settings)


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
