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
from attnviz import render
from attnviz.export import export_files, zip_bundle
from attnviz.imageio import ALLOWED_EXTENSIONS
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


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


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


def block_records(analysis: attnviz.Analysis, position: int) -> tuple[str, tuple, tuple]:
    """The layer name, channel weights and spatial maps of the block at ``position``.

    Args:
        analysis: one result.
        position: index into ``analysis.blocks`` (0 = first captured block).

    Returns:
        ``(layer, channel_weights, spatial_maps)`` of that block.
    """
    block = analysis.blocks[position]
    channels = tuple(r for r in analysis.channel_weights if r.block == block)
    spatial = tuple(r for r in analysis.spatial_maps if r.block == block)
    layer = (channels or spatial)[0].layer
    return layer, channels, spatial


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
        st.file_uploader(
            "Upload images",
            type=list(ALLOWED_EXTENSIONS),
            accept_multiple_files=True,
            key=UPLOADS_KEY,
            on_change=_on_upload,
            help="JPEG, PNG, WebP or GIF. The file's content decides, not its name.",
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
                analyses = attnviz.analyze(loaded, [images[ref.key] for ref in missing])
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
                results[config.result_key(ref, model)] = analysis
            st.write(f"{model}: {len(missing)} image(s) analysed.")
        bar.progress(1.0, text="Done")
        label = f"Done: {n - failed} of {n} model(s) ran" if failed else "Done"
        status.update(label=label, state="error" if failed == n else "complete", expanded=False)
    keep = [config.result_key(ref, m) for ref in config.images for m in config.models]
    _trim(results, MAX_STORED, keep=keep)


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
) -> None:
    """Draw one model's column."""
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
    stem = f"{image.label.rsplit('.', 1)[0]}_{model}"
    cmap, alpha = settings.cmap, settings.alpha
    img = analysis.input_image

    st.plotly_chart(_compact(render.top5_bar(analysis.top5), 260), key=f"compare_top5_{model}")
    _download("Top-5 (CSV)", functools.partial(top5_csv, analysis), f"{stem}_top5.csv", "text/csv",
              f"compare_dl_top5_{model}")  # fmt: skip

    cam = analysis.gradcam
    if cam is not None:
        st.image(
            render.overlay(img, cam.values, cmap=cmap, alpha=alpha),
            caption=f"Grad-CAM at {cam.layer} for “{cam.target_label}”",
            width="stretch",
        )
        _download("Grad-CAM (PNG)", functools.partial(overlay_png, img, cam.values, cmap, alpha),
                  f"{stem}_gradcam.png", "image/png", f"compare_dl_gradcam_{model}")  # fmt: skip

    if position is None:
        st.caption(f"{model} has no attention blocks (baseline): only Grad-CAM applies.")
        return
    total = len(analysis.blocks)
    layer, channels, spatial = block_records(analysis, position)
    st.markdown(f"**Block {position + 1} of {total}** (index {position}) · `{layer}`")

    if not analysis.spatial_maps:
        st.caption(f"{model} has no spatial attention map: its attention weighs channels only.")
    elif not spatial:
        st.caption("No spatial attention map at this block.")
    for k, sm in enumerate(spatial):
        h, w = sm.values.shape
        st.image(
            render.overlay(img, sm.values, cmap=cmap, alpha=alpha),
            caption=f"{sm.kind} map at {sm.layer} ({h}x{w} cells, stride {sm.stride[0]:g}px)",
            width="stretch",
        )
        _download("Spatial map (PNG)", functools.partial(overlay_png, img, sm.values, cmap, alpha),
                  f"{stem}_block{position:02d}_{sm.kind}.png", "image/png",
                  f"compare_dl_spatial_{model}_{k}")  # fmt: skip

    if not channels:
        st.caption("No channel weights at this block.")
    for k, cw in enumerate(channels):
        st.plotly_chart(_compact(render.channel_bar(cw, sort=sort), 320), key=f"compare_channels_{model}_{k}")
        _download("Channel weights (CSV)", functools.partial(channel_csv, cw),
                  f"{stem}_block{position:02d}_{cw.kind}.csv", "text/csv",
                  f"compare_dl_channels_{model}_{k}")  # fmt: skip

    with st.expander("All blocks × channels"):
        st.plotly_chart(
            _compact(render.block_channel_heatmap(analysis.channel_weights), 360),
            key=f"compare_heatmap_{model}",
        )
    with st.expander("Gate statistics per block"):
        st.plotly_chart(
            _compact(render.gate_stats_figure(analysis.channel_weights), 360), key=f"compare_stats_{model}"
        )


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
            )

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
    if last != current:
        st.info("The inputs or settings changed since the last run: press **Run** to update the results.")
    _results(last, settings)


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
