"""Compare page: run up to four attention models on the same images and show their attention side by side.

How state works here:

- Inputs (uploads, sample photos, models) are ordinary widgets with ``compare_*`` keys; changing
  them only reruns this script, which re-renders from stored results. Models run only when the
  **Run** button is pressed.
- Models come from :func:`ui.cached_model`, an ``st.cache_resource`` shared by every session and keyed
  by ``(name, weights, device)``; :func:`attnviz.analyze` holds the model's own lock while it runs.
- Results are :class:`attnviz.Analysis` records (frozen dataclasses of numpy arrays, no tensors) in
  ``st.session_state["compare_results"]``, keyed by ``(image key, model, weights, device)``; the
  image key is a digest of the uploaded bytes. Per-model failures are kept next to them, so an
  error stays in its model's column until a later run of that model succeeds.
- Everything drawn is a pure function of the stored results and the sidebar's overlay settings;
  file downloads are generated only when their button is clicked.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

import attnviz
from attnviz import render, sampling, vit
from attnviz.export import export_files, zip_bundle
from attnviz.imageio import ALLOWED_EXTENSIONS, MAX_BYTES, MAX_PIXELS
from attnviz.maps import AttentionMap, record_map
from attnviz.samples import list_samples, load_sample
from attnviz.scenes import CLASSES, SceneParams, make_scene
from ui import Settings, cached_model, require_app, store
from ui import settings as read_settings

log = logging.getLogger("attnviz.app.compare")

# Images analysed per run at most.
MAX_IMAGES = 8

# Models compared side by side at most.
MAX_MODELS = 4

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

# Session-state keys (widgets and stored data); the sidebar's keys belong to app.py.
UPLOADS_KEY = "compare_uploads"
SAMPLES_KEY = "compare_samples"
SAMPLES_TOUCHED_KEY = "compare_samples_touched"
MODELS_KEY = "compare_models"
RUN_KEY = "compare_run"
IMAGE_KEY = "compare_image"
SORT_KEY = "compare_sort"
BLOCK_KEY = "compare_block"
DEPTH_KEY = "compare_depth"
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

# The transformer views below the columns; only the chosen one is computed.
VIT_VIEWS = ("Heads × layers", "Query point", "Rollout", "Head statistics")

# Rendered transformer pictures kept per session (PNG bytes), the oldest dropped first.
MAX_RENDERS = 48

_WEIGHTS_HINT = (
    "Switch **Weights** in the sidebar to **random** to run this architecture untrained, or see the "
    "Models page for where the pretrained file goes."
)
_UNEXPECTED = "{model} failed unexpectedly; the details are in the server log."


# --------------------------------------------------------------------------------------------------
# Small frozen records kept in session state
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """One input image.

    Attributes:
        key: ``"upload:<sha256 of the bytes, 24 hex>"`` or ``"sample:<file name>"``.
        label: the file name shown to the user and used for the export folders.
    """

    key: str
    label: str

    @property
    def is_sample(self) -> bool:
        """True for a shipped sample photo."""
        return self.key.startswith("sample:")


@dataclass(frozen=True)
class RunConfig:
    """What a run analysed: the results shown are those of the last run."""

    images: tuple[ImageRef, ...]
    models: tuple[str, ...]
    weights: str
    device: str

    def result_key(self, image: ImageRef, model: str) -> tuple[str, str, str, str]:
        """Key of one result in the session's store."""
        return (image.key, model, self.weights, self.device)

    def model_key(self, model: str) -> tuple[str, str, str]:
        """Key of one model's failure in the session's store."""
        return (model, self.weights, self.device)


@dataclass(frozen=True)
class Failure:
    """A model that could not run: a user-facing message, and whether random weights would help."""

    message: str
    weights_hint: bool


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


def upload_key(data: bytes) -> str:
    """The image key of uploaded bytes: identical content gives the same key whatever the name."""
    return "upload:" + hashlib.sha256(data).hexdigest()[:24]


def depth_to_block(depth_percent: float, blocks: int) -> int:
    """The block position nearest to a relative depth.

    Args:
        depth_percent: 0 (first block) to 100 (last block).
        blocks: how many blocks the model has (>= 1).

    Returns:
        A position in ``[0, blocks - 1]``; halves round up.
    """
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    frac = min(max(float(depth_percent), 0.0), 100.0) / 100.0
    return min(blocks - 1, math.floor(frac * (blocks - 1) + 0.5))


def block_records(analysis: attnviz.Analysis, position: int) -> tuple[str, tuple, tuple[AttentionMap, ...]]:
    """The layer name, channel weights and heat maps of the block at ``position``.

    Args:
        analysis: one result.
        position: index into ``analysis.blocks`` (0 = first captured block).

    Returns:
        ``(layer, channel_weights, maps)`` of that block; ``maps`` holds one
        :class:`attnviz.maps.AttentionMap` per record with a spatial reading (spatial gates,
        context maps, axis gates, token and window attention, sampling points).
    """
    block = analysis.blocks[position]
    records = [r for r in analysis.records if not isinstance(r, attnviz.GradCAM) and r.block == block]
    channels = tuple(r for r in records if isinstance(r, attnviz.ChannelWeights))
    input_hw = analysis.input_image.shape[:2]
    maps = tuple(m for m in (record_map(r, input_hw) for r in records) if m is not None)
    return records[0].layer, channels, maps


def channel_csv(cw: attnviz.ChannelWeights) -> bytes:
    """One block's channel weights as CSV: ``channel`` then one column per path (or ``gate``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if cw.multipath:
        labels = list(cw.path_labels) if len(cw.path_labels) == cw.values.shape[0] else None
        names = labels or [f"path{i}" for i in range(cw.values.shape[0])]
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


def overlay_png(image, heat, cmap: str, alpha: float) -> bytes:
    """PNG bytes of a heat-map overlay (called only when a download button is clicked)."""
    return render.to_png_bytes(render.overlay(image, heat, cmap=cmap, alpha=alpha))


def bundle_zip(items: Sequence[tuple[str, attnviz.Analysis]], cmap: str, alpha: float) -> bytes:
    """The ZIP of every result: :func:`attnviz.export.export_files` packed by ``zip_bundle``."""
    return zip_bundle(export_files(items, cmap=cmap, alpha=alpha))


# --------------------------------------------------------------------------------------------------
# Models and images
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


def _image_inputs() -> tuple[list[ImageRef], dict[str, Image.Image]]:
    """Draw the image inputs; return the valid images (capped) and those decoded in this rerun.

    Every upload goes through :func:`attnviz.load_image` once (its outcome is remembered per
    digest in the session), and each refused file gets one error with the loader's message.
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
        "(attnviz.scenes, 224 px).",
    )
    checked: dict[str, str | None] = store(CHECKED_KEY)
    decoded: dict[str, Image.Image] = {}
    refs: list[ImageRef] = []
    for upload in uploads:
        data = upload.getvalue()
        ref = ImageRef(upload_key(data), upload.name)
        if ref.key not in checked:
            try:
                decoded[ref.key] = attnviz.load_image(data, name=upload.name)
                checked[ref.key] = None
            except attnviz.ImageLoadError as err:
                checked[ref.key] = str(err)
        if checked[ref.key] is not None:
            st.error(checked[ref.key], icon=":material/broken_image:")
        elif all(ref.key != r.key for r in refs):
            refs.append(ref)
    _trim(checked, 64, keep=[r.key for r in refs])
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
                loaded = cached_model(model, config.weights, config.device, progress)
                bar.progress((i + 0.5) / n, text=f"Analysing {len(missing)} image(s) with {model}")
                # Native maps first (one forward); Grad-CAM (a forward and a backward more) is added
                # once the columns are drawn, so the page shows the modules' own maps sooner.
                analyses = attnviz.analyze(loaded, [images[ref.key] for ref in missing], gradcam=False)
            except attnviz.AttnvizError as err:
                log.warning("%s could not run: %s", model, err)
                failures[config.model_key(model)] = Failure(
                    str(err), isinstance(err, attnviz.WeightsUnavailableError)
                )
                st.write(f"{model}: failed.")
                failed += 1
                continue
            except Exception:
                log.exception("analysing images with %s failed", model)
                failures[config.model_key(model)] = Failure(_UNEXPECTED.format(model=model), False)
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


# --------------------------------------------------------------------------------------------------
# Rendering (pure functions of the stored results)
# --------------------------------------------------------------------------------------------------


def _compact(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
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


def _block_selector(counts: dict[str, int]) -> dict[str, int]:
    """Draw the block slider shared by the columns; return each model's chosen block position.

    With the same number of blocks everywhere, the slider is over the block index; otherwise it
    is over the relative depth (0-100 %), mapped to the nearest block of each model.
    """
    sizes = {n for n in counts.values() if n > 0}
    if not sizes:
        return {}
    if len(sizes) == 1:
        (n,) = sizes
        if n == 1:
            return {m: 0 for m, c in counts.items() if c}
        index = st.slider(
            "Block",
            0,
            n - 1,
            n - 1,
            key=BLOCK_KEY,
            help="Attention block, in forward order (0 = first). Every column shows the same index.",
        )
        return {m: index for m, c in counts.items() if c}
    depth = st.slider(
        "Relative depth (%)",
        0,
        100,
        100,
        step=1,
        key=DEPTH_KEY,
        help="The models have different numbers of blocks: each column shows its block nearest to "
        "this depth (0 % = first block, 100 % = last).",
    )
    return {m: depth_to_block(depth, c) for m, c in counts.items() if c}


def _column(
    model: str,
    analysis: attnviz.Analysis | None,
    failure: Failure | None,
    config: RunConfig,
    image: ImageRef,
    position: int | None,
    settings: Settings,
    sort: bool,
    slots: dict,
) -> None:
    """Draw one model's column; where its Grad-CAM is still to come, leave a slot in ``slots``."""
    st.subheader(model)
    st.caption(f"weights: {config.weights} · device: {config.device}")
    if failure is not None and analysis is None:
        st.error(failure.message, icon=":material/error:")
        if failure.weights_hint:
            st.info(_WEIGHTS_HINT, icon=":material/lightbulb:")
        return
    if analysis is None:
        st.info("No result for this image yet: press Run.")
        return
    if analysis.untrained:
        st.badge("untrained", icon=":material/warning:", color="orange")
    for note in analysis.notes:  # e.g. the GPU ran out of memory and the batch was split
        st.info(note, icon=":material/memory:")
    stem = f"{image.label.rsplit('.', 1)[0]}_{model}"
    cmap, alpha = settings.cmap, settings.alpha
    img = analysis.input_image

    if analysis.top5:
        st.plotly_chart(_compact(render.top5_bar(analysis.top5), 260), key=f"compare_top5_{model}")
        _download("Top-5 (CSV)", functools.partial(top5_csv, analysis), f"{stem}_top5.csv", "text/csv",
                  f"compare_dl_top5_{model}")  # fmt: skip
    elif analysis.detections is not None:
        det = analysis.detections
        listed = ", ".join(
            f"{label} {score:.0%}" for label, score in zip(det.labels[:8], det.scores[:8], strict=False)
        )
        st.image(
            render.draw_detections(img, det),
            caption=f"{len(det.labels)} detection(s) with score > 50 %" + (f": {listed}" if listed else ""),
            width="stretch",
        )
    else:
        st.caption(f"{model} has no classifier (self-supervised features): no predictions, no Grad-CAM.")

    if analysis.gradcam is not None:
        _gradcam_view(analysis, settings, stem)
    elif config.result_key(image, model) in store(PENDING_CAM_KEY):
        slots[model] = st.empty()
        slots[model].caption("Grad-CAM baseline: computing…")

    if position is None:
        st.caption(f"{model} has no attention blocks (baseline): only Grad-CAM applies.")
        return
    total = len(analysis.blocks)
    layer, channels, maps = block_records(analysis, position)
    st.markdown(f"**Block {position + 1} of {total}** (index {position}) · `{layer}`")

    if not any(r for r in analysis.records if not isinstance(r, attnviz.ChannelWeights | attnviz.GradCAM)):
        st.caption(f"{model} has no spatial attention map: its attention weighs channels only.")
    elif not maps:
        st.caption("No spatial attention map at this block.")
    for k, amap in enumerate(maps):
        h, w = amap.values.shape
        st.image(
            render.overlay(img, amap.values, cmap=cmap, alpha=alpha),
            caption=f"{amap.kind} at {amap.layer} ({h}x{w} cells): {amap.how}",
            width="stretch",
        )
        _download("Attention map (PNG)", functools.partial(overlay_png, img, amap.values, cmap, alpha),
                  f"{stem}_block{position:02d}_{amap.kind}.png", "image/png",
                  f"compare_dl_spatial_{model}_{k}")  # fmt: skip

    if not channels and analysis.channel_weights:
        st.caption("No channel weights at this block.")
    for k, cw in enumerate(channels):
        st.plotly_chart(_compact(render.channel_bar(cw, sort=sort), 320), key=f"compare_channels_{model}_{k}")
        _download("Channel weights (CSV)", functools.partial(channel_csv, cw),
                  f"{stem}_block{position:02d}_{cw.kind}.csv", "text/csv",
                  f"compare_dl_channels_{model}_{k}")  # fmt: skip

    if not analysis.channel_weights:
        return
    # Drawn only while open (the expanders rerun the page when opened or closed).
    heatmap = st.expander("All blocks × channels", key=f"{HEATMAP_OPEN_KEY}_{model}", on_change="rerun")
    if heatmap.open:
        heatmap.plotly_chart(
            _compact(render.block_channel_heatmap(analysis.channel_weights), 360),
            key=f"compare_heatmap_{model}",
        )
    stats = st.expander("Gate statistics per block", key=f"{STATS_OPEN_KEY}_{model}", on_change="rerun")
    if stats.open:
        stats.plotly_chart(
            _compact(render.gate_stats_figure(analysis.channel_weights), 360), key=f"compare_stats_{model}"
        )


def _gradcam_view(analysis: attnviz.Analysis, settings: Settings, stem: str) -> None:
    cam, img, cmap, alpha = analysis.gradcam, analysis.input_image, settings.cmap, settings.alpha
    st.image(
        render.overlay(img, cam.values, cmap=cmap, alpha=alpha),
        caption=f"Grad-CAM at {cam.layer} for “{cam.target_label}”",
        width="stretch",
    )
    _download("Grad-CAM (PNG)", functools.partial(overlay_png, img, cam.values, cmap, alpha),
              f"{stem}_gradcam.png", "image/png", f"compare_dl_gradcam_{analysis.model}")  # fmt: skip


def _add_gradcams(config: RunConfig, image: ImageRef, slots: dict, settings: Settings) -> None:
    """Compute the Grad-CAM baselines still due for ``config`` (every image, batched per model) and
    draw the shown image's into its column's slot."""
    results: dict = store(RESULTS_KEY)
    pending: dict = store(PENDING_CAM_KEY)
    for key in [k for k in pending if k not in results]:  # dropped from the store meanwhile
        del pending[key]
    for model in config.models:
        keys = [config.result_key(ref, model) for ref in config.images]
        keys = [k for k in keys if k in pending]
        if not keys:
            continue
        try:
            loaded = cached_model(model, config.weights, config.device)
            done = attnviz.add_gradcam(loaded, [results[k] for k in keys], [pending[k] for k in keys])
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
                    _gradcam_view(shown, settings, f"{image.label.rsplit('.', 1)[0]}_{model}")
                else:
                    st.warning(shown.notes[-1], icon=":material/warning:")


def _cached_png(key: tuple, draw: Callable[[], Image.Image]) -> bytes:
    """PNG bytes of ``draw()``, kept in this session under ``key`` (lazy, rendered once per key)."""
    renders: dict = store(RENDERS_KEY)
    if key not in renders:
        renders[key] = render.to_png_bytes(draw())
        _trim(renders, MAX_RENDERS, keep=[key])
    return renders[key]


def _layer_label(record) -> str:
    return f"{record.block}: {record.layer.removesuffix('.attn').removesuffix('.self_attention')}"


def _point_of_click(event) -> tuple[float, float] | None:
    """The (y, x) pixel of the token clicked in :func:`attnviz.render.query_figure`, or None."""
    try:
        points = event.selection.points if event is not None else []
    except AttributeError:
        points = []
    for point in points:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if custom is not None and len(custom) == 4:
            return float(custom[2]), float(custom[3])
    return None


def _query_point(
    model: str, grid: tuple[int, int], stride: tuple[float, float], picture, prefix: str = "compare_query"
) -> tuple[float, float]:
    """Draw the clickable query picker and the pixel sliders; return the query pixel (y, x).

    A click on a token (:func:`attnviz.render.query_figure` reports the token's centre) moves the
    sliders; the sliders also set the point directly (and are what tests drive). ``prefix`` names
    the widgets' keys (``<prefix>_y``, ``<prefix>_x``), one pair per view.
    """
    y_key, x_key, seen_key = f"{prefix}_y", f"{prefix}_x", f"{prefix}_seen"
    h, w = picture.shape[:2]
    if y_key not in st.session_state:
        st.session_state[y_key] = h // 2
        st.session_state[x_key] = w // 2
    st.session_state[y_key] = min(int(st.session_state[y_key]), h - 1)
    st.session_state[x_key] = min(int(st.session_state[x_key]), w - 1)
    pick, controls = st.columns([3, 2])
    with pick:
        point = (float(st.session_state[y_key]), float(st.session_state[x_key]))
        title = "Click a position to query it"
        fig = render.query_figure(picture, grid, stride, point, title=title)
        event = st.plotly_chart(
            _compact(fig, 380), on_select="rerun", selection_mode="points", key=f"{prefix}_click_{model}"
        )
    clicked = _point_of_click(event)
    if clicked is not None and st.session_state.get(seen_key) != (model, clicked):
        # A selection persists across reruns: apply each click once, so the sliders stay usable.
        st.session_state[seen_key] = (model, clicked)
        st.session_state[y_key] = min(max(round(clicked[0]), 0), h - 1)
        st.session_state[x_key] = min(max(round(clicked[1]), 0), w - 1)
    with controls:
        st.slider("Query pixel y (row)", 0, h - 1, key=y_key)
        st.slider("Query pixel x (column)", 0, w - 1, key=x_key)
    return float(st.session_state[y_key]), float(st.session_state[x_key])


def _heads_tab(rkey: tuple, analysis: attnviz.Analysis, records, index: int, settings: Settings) -> None:
    """Layer x head grid of the summary maps, and the chosen layer's fused or single-head map."""
    picture, cmap, alpha = analysis.input_image, settings.cmap, settings.alpha
    record = records[index]
    maps = vit.summary_map(record)
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
        heat, what = vit.fuse_heads(maps, fusion), f"{fusion} over {record.heads} heads"
    else:
        head = int(choice.split()[1])
        heat, what = maps[head], choice
    grid = vit.head_grid(records)
    st.image(
        render.overlay(picture, heat, cmap=cmap, alpha=alpha),
        caption=f"Layer {_layer_label(record)}, {what}: {grid.how.split('; ')[0]}",
        width=420,
    )
    png = _cached_png(
        (*rkey, "head_grid", cmap, alpha),
        lambda: render.head_grid_image(picture, grid.maps, cmap=cmap, alpha=alpha, tile=64, labels=True),
    )
    st.image(
        png,
        caption=f"Every layer (rows L0, L1, ... from the first) × head (columns h0, h1, ...): {grid.how}. "
        "Each tile is scaled on its own.",
    )
    prefix = vit.prefix_attention(records)
    if prefix is not None:
        labels = [_layer_label(r) for r in records]
        fig = render.prefix_attention_figure(prefix.names, labels, prefix.values, prefix.grid_mass)
        fig.update_layout(title="Where the image-level token's attention goes: prefix tokens vs patches")
        st.plotly_chart(_compact(fig, 340), key=f"compare_vit_prefix_{analysis.model}")
        if any(n.startswith("reg") for n in prefix.names):
            st.caption(
                "Register tokens absorb attention that would otherwise land on background patches; the "
                "maps above show the patches only, so register mass is missing from them, not spread."
            )


def _query_tab(analysis: attnviz.Analysis, records, index: int, settings: Settings) -> None:
    """Where the patch under a chosen pixel attends: per head of the chosen layer, and per layer."""
    picture, cmap, alpha = analysis.input_image, settings.cmap, settings.alpha
    record = records[index]
    point = _query_point(analysis.model, record.grid, record.stride, picture)
    qmap = vit.query_map(record, point)
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
        f"**Query token ({row}, {col})** of layer {_layer_label(record)} at pixel "
        f"({point[0]:.0f}, {point[1]:.0f}).{extra}"
    )
    heads = [
        render.overlay(marked, qmap.values[h], cmap=cmap, alpha=alpha) for h in range(qmap.values.shape[0])
    ]
    st.image(
        [render.overlay(marked, vit.fuse_heads(qmap.values, "mean"), cmap=cmap, alpha=alpha), *heads],
        caption=["mean of heads", *(f"head {h}" for h in range(len(heads)))],
        width=150,
    )
    st.caption("The same point queried in every layer (mean over heads):")
    per_layer, captions = [], []
    for r in records:
        q = vit.query_map(r, point)
        per_layer.append(render.overlay(marked, vit.fuse_heads(q.values, "mean"), cmap=cmap, alpha=alpha))
        captions.append(f"layer {_layer_label(r)}, token {q.query}")
    st.image(per_layer, caption=captions, width=110)


def _rollout_tab(analysis: attnviz.Analysis, records, settings: Settings) -> None:
    """Attention rollout with its options, or why it does not apply."""
    try:
        vit.rollout(records)
    except ValueError as err:
        st.info(f"Rollout does not apply to {analysis.model}: {err}", icon=":material/info:")
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
    roll = vit.rollout(records, head_fusion=fusion, discard_ratio=discard)
    shares = ", ".join(f"{n} {v:.1%}" for n, v in zip(roll.prefix_names, roll.prefix_mass, strict=True))
    st.image(
        render.overlay(analysis.input_image, roll.values, cmap=settings.cmap, alpha=settings.alpha),
        caption=f"Rollout through {len(roll.layers)} layers: {roll.how}",
        width=420,
    )
    if shares:
        st.caption(f"Mass of the read row on the prefix tokens: {shares}.")


def _stats_tab(analysis: attnviz.Analysis, records) -> None:
    """Per-head mean attention distance and entropy by layer."""
    stats = vit.head_statistics(records)
    fig = render.head_stats_figure([_layer_label(r) for r in records], stats.distance, stats.entropy)
    st.plotly_chart(_compact(fig, 520), key=f"compare_vit_stats_{analysis.model}")
    st.caption(stats.how)


def _section(title: str, models: list[str], key: str) -> str | None:
    """A section below the columns for ``models`` (none: nothing drawn); returns the model shown."""
    if not models:
        return None
    st.divider()
    st.subheader(title)
    if len(models) == 1:
        return models[0]
    return st.segmented_control("Model", models, default=models[0], key=key) or models[0]


def _deformable_views(analyses: dict, settings: Settings) -> None:
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
                f"{detections.labels[k]} ({detections.scores[k]:.0%}), query {int(detections.query_index[k])}"
            ),
            key=DEFORM_OBJECT_KEY,
        )
        query = int(detections.query_index[pick])
    else:
        grid = record.query_grid or (record.levels[0] if record.levels else (1, 1))
        stride = (hw[0] / grid[0], hw[1] / grid[1])
        point = _query_point(model, grid, stride, picture, prefix="compare_deform")
        query = sampling.nearest_query(record, point, hw)
    samples = sampling.query_samples(record, query, hw)
    where = (
        ""
        if samples.query_point is None
        else (f" at pixel ({samples.query_point[0]:.0f}, {samples.query_point[1]:.0f})")
    )
    st.markdown(f"**Query {query}**{where} of `{record.layer}`: {record.points.shape[1]} "
                f"{record.group_name}s × {record.points.shape[2]} points")  # fmt: skip
    height = 420 if len(samples.levels) <= 1 else 330
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
    field = sampling.offset_field(record, hw)
    if field is not None:
        left, right = st.columns(2)
        with left:
            st.image(
                render.overlay(picture, field.magnitude, cmap=settings.cmap, alpha=settings.alpha),
                caption=f"Offset length ({field.grid[0]}x{field.grid[1]}): {field.how.split(';')[0]}",
                width="stretch",
            )
        with right:
            st.plotly_chart(
                _compact(render.offset_field_figure(picture, field, title="Offset field"), 380),
                key=f"compare_deform_field_{model}",
            )


def _transformer_views(config: RunConfig, image: ImageRef, analyses: dict, settings: Settings) -> None:
    """Below the columns: every layer and head of the transformers' self-attention."""
    with_attention = [m for m, a in analyses.items() if a is not None and vit.self_attention_records(a)]
    model = _section("Self-attention: layers, heads, query points, rollout", with_attention, VIT_MODEL_KEY)
    if model is None:
        return
    analysis = analyses[model]
    records = vit.self_attention_records(analysis)
    index = 0
    if len(records) > 1:
        index = st.select_slider(
            "Layer",
            options=list(range(len(records))),
            value=len(records) - 1,
            format_func=lambda i: _layer_label(records[i]),
            key=f"{VIT_LAYER_KEY}_{len(records)}",
        )
    rkey = config.result_key(image, model)
    # Only the open tab is computed (the tabs rerun the page when switched).
    heads, query, roll, stats = st.tabs(VIT_VIEWS, key=VIT_VIEW_KEY, on_change="rerun")
    if heads.open:
        with heads:
            _heads_tab(rkey, analysis, records, index, settings)
    if query.open:
        with query:
            _query_tab(analysis, records, index, settings)
    if roll.open:
        with roll:
            _rollout_tab(analysis, records, settings)
    if stats.open:
        with stats:
            _stats_tab(analysis, records)


def _results(config: RunConfig, settings: Settings) -> None:
    """Draw the last run's results: image picker, shared controls, one column per model, the ZIP."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    if not config.images or not config.models:
        return
    by_key = {ref.key: ref for ref in config.images}
    if len(config.images) > 1:
        picked = st.selectbox("Image", list(by_key), format_func=lambda key: by_key[key].label, key=IMAGE_KEY)
        image = by_key.get(picked, config.images[0])
    else:
        image = config.images[0]
    analyses = {m: results.get(config.result_key(image, m)) for m in config.models}
    counts = {m: len(a.blocks) if a is not None else 0 for m, a in analyses.items()}

    left, right = st.columns([4, 1], vertical_alignment="bottom")
    with left:
        positions = _block_selector(counts)
    with right:
        sort = st.toggle("Sort channels", key=SORT_KEY, help="Order the channel bars by weight.")

    slots: dict = {}
    for col, model in zip(st.columns(len(config.models)), config.models, strict=True):
        with col:
            _column(
                model,
                analyses[model],
                failures.get(config.model_key(model)),
                config,
                image,
                positions.get(model),
                settings,
                sort,
                slots,
            )
    _add_gradcams(config, image, slots, settings)

    _transformer_views(config, image, analyses, settings)
    _deformable_views(analyses, settings)

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
            functools.partial(bundle_zip, items, settings.cmap, settings.alpha),
            "attnviz_results.zip",
            "application/zip",
            "compare_dl_zip",
        )
        st.caption(
            "Overlays, channel weights (CSV), charts (HTML, offline) and summary.json for every result."
        )


# --------------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------------


def main() -> None:
    """Draw the page."""
    st.title("Compare attention")
    st.caption(
        "What do the attention modules look at? Choose images and up to four models, then press Run. "
        "Grad-CAM is the baseline; the block maps come from the models' own attention modules."
    )
    settings = read_settings()
    names = [spec.name for spec in attnviz.list_models()]
    inputs, controls = st.columns([3, 2])
    with inputs:
        refs, decoded = _image_inputs()
    with controls:
        models = st.multiselect(
            "Models",
            names,
            default=[m for m in DEFAULT_MODELS if m in names],
            max_selections=MAX_MODELS,
            key=MODELS_KEY,
            help=f"Up to {MAX_MODELS}; the Models page lists what each one has.",
        )
        run = st.button(
            "Run",
            type="primary",
            key=RUN_KEY,
            icon=":material/play_arrow:",
            disabled=not (refs and models),
            help="Analyse the chosen images with the chosen models.",
        )

    try:
        device = str(attnviz.resolve_device(settings.device))
    except attnviz.DeviceError as err:
        st.error(str(err))
        return
    current = RunConfig(tuple(refs), tuple(models), settings.weights, device)
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
