"""The benchmark behind ``python -m attnviz bench``: what capture, maps and batching cost.

Everything is measured in one process, warm (after warm-up runs), as the median of repeated runs,
and reported as ratios as well as milliseconds, so that figures from noisy machines still compare:

- **capture overhead**: one forward under :class:`~attnviz.capture.hooks.Capture` ÷ the bare forward of the
  same model. ViTs capture with timm's fused attention switched off (the attention matrix must
  exist), so their bare forward is the unfused one (``Capture(read=False)``: the capture's
  settings without its hooks); ``fused_ratio`` divides by the model as loaded.
- **channels-last**: the bare forward of the same weights kept NHWC (``load_model(channels_last=
  True)``) for convolutional networks, to show where it helps (it is on by default on CUDA only).
- **native maps vs Grad-CAM**: ``analyze(gradcam=False)`` plus :func:`attnviz.views.maps.attention_maps`
  (one forward, no backward) against :func:`attnviz.add_gradcam` (a forward and a backward).
- **comparison**: the compare page for up to 4 models and 1 image, in its two phases: the first
  view (preprocess, forward with capture, compact storage, and what the page draws before any
  click: predictions, the last block's maps and channel bars, the transformer section's open
  tab, the deformable section), then the Grad-CAM baselines it adds; each ÷ the sum of the
  models' bare forwards.
- **batch throughput**: images/s of the CLI path (``analyze`` + :func:`attnviz.io.export.export_files`)
  for a folder of images in one batch, against a one-image-at-a-time loop.
- **faithfulness**: :func:`attnviz.analysis.faithfulness.measure` of one map (deletion and
  insertion, batched) of :data:`FAITHFULNESS_MODEL` (ResNet-50, random weights; the first
  classifier in small mode) on one image ÷ the bare batched forwards of as many images (target:
  at most 2x), and ROAD's extra time per map (one run: its imputation dominates).
- **peak memory**: RSS high-water mark (reset per model where Linux allows) and CUDA max allocated.

Load times are not measured; models are loaded before their timed runs. The report's records and
its JSON and text forms are in :mod:`.bench_report` (re-exported here), the timers and memory
probes in :mod:`.bench_measuring`.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import platform
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attnviz import render
from attnviz.analysis import add_gradcam, analyze
from attnviz.analysis.faithfulness import DEFAULT_BATCH as FAITHFULNESS_BATCH
from attnviz.analysis.faithfulness import measure, random_map
from attnviz.backends import LoadedModel, get_spec, load_model
from attnviz.capture.hooks import Capture
from attnviz.core.faithfulness_records import InputMap
from attnviz.core.records import Analysis, ChannelWeights, GradCAM, compact
from attnviz.io.export import export_files, write_bundle
from attnviz.io.images import load_image
from attnviz.io.samples import list_samples
from attnviz.runtime import resolve_device
from attnviz.views import deformable, transformer
from attnviz.views.faithfulness import input_maps
from attnviz.views.maps import attention_maps, record_map
from attnviz.workflows.bench_measuring import (
    cuda_peak_mib,
    device_name,
    interleaved_ms,
    median_ms,
    peak_rss_mib,
    reset_cuda_peak,
    reset_peak_rss,
)
from attnviz.workflows.bench_playground import PlaygroundBench, measure_playground
from attnviz.workflows.bench_report import (
    BatchThroughput,
    BenchReport,
    ComparisonRow,
    FaithfulnessBench,
    MachineInfo,
    ModelRow,
    format_report,
    report_to_json,
)
from attnviz.workflows.pipeline import DEFAULT_BATCH_SIZE, analyze_to_folder

__all__ = [
    "FAITHFULNESS_MODEL",
    "FULL_MODELS",
    "SMALL_MODELS",
    "BatchThroughput",
    "BenchReport",
    "ComparisonRow",
    "FaithfulnessBench",
    "MachineInfo",
    "ModelRow",
    "PlaygroundBench",
    "format_report",
    "measure_faithfulness",
    "report_to_json",
    "run_bench",
]

log = logging.getLogger(__name__)

FULL_MODELS: tuple[str, ...] = (
    "mobilenet_v3_large",
    "seresnet50",
    "deit_tiny_patch16_224",
    "swin_t",
    "zoo_cbam",
    "zoo_gc",
)
"""Models of the full run; the first four make the comparison."""

SMALL_MODELS: tuple[str, ...] = ("zoo_cbam", "zoo_gc", "mobilenet_v3_large", "deit_tiny_patch16_224")
"""Models of the small (CI) run: two tiny zoo CNNs, one ImageNet CNN and one ViT."""

FAITHFULNESS_MODEL = "resnet50"
"""The faithfulness figure's model in the full run (random weights: no download)."""

DEFAULT_REPEATS, SMALL_REPEATS = 7, 2
FULL_BATCH_IMAGES, SMALL_BATCH_IMAGES = 16, 4


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _changes_path(model: LoadedModel) -> bool:
    """Whether capture runs another path than the model as loaded (timm's fused attention off)."""
    return any(getattr(obj, name, None) != value for tap in model.taps for obj, name, value in tap.attrs)


def _weights_for(name: str) -> str:
    """The zoo ships trained weights; the ImageNet models run with random weights (no download)."""
    return "pretrained" if get_spec(name).source == "attnviz" else "random"


def _ratio(num: float, den: float | None) -> float | None:
    return None if den is None else num / den


# --------------------------------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------------------------------


def _bare_forward(model: LoadedModel, batch: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model.module(batch)

    return run


def _capture_forward(model: LoadedModel, batch: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with Capture(model.module, model.taps) as cap, torch.inference_mode():
            model.module(batch)
        return cap.results()

    return run


def _model_row(name: str, image: Image.Image, device: torch.device, repeats: int) -> ModelRow:
    weights = _weights_for(name)
    model = load_model(name, weights=weights, device=device, channels_last=False)
    batch = model.preprocess([image])
    bare_forward = _bare_forward(model, batch)

    def capture_path_forward() -> object:  # the capture's settings, no hooks
        with Capture(model.module, model.taps, read=False):
            return bare_forward()

    fns: dict[str, Callable[[], object]] = {
        "bare": capture_path_forward,
        "capture": _capture_forward(model, batch),
        "maps": lambda: attention_maps(analyze(model, [image], gradcam=False)[0]),
    }
    if _changes_path(model):
        fns["fused"] = bare_forward
    nhwc = None
    if model.spec.gradcam_layout == "nchw":
        nhwc = load_model(name, weights=weights, device=device, channels_last=True)
        nhwc.module.load_state_dict(model.module.state_dict())  # the same (random) weights
        fns["channels_last"] = _bare_forward(nhwc, nhwc.preprocess([image]))
    if model.spec.classifier:
        native = analyze(model, [image], gradcam=False)
        fns["gradcam"] = lambda: add_gradcam(model, native, [image])
    with model.lock:
        ms = interleaved_ms(fns, repeats, device)
    del nhwc
    fused_ms, gradcam_ms, cl_ms = ms.get("fused"), ms.get("gradcam"), ms.get("channels_last")
    return ModelRow(
        model=name,
        weights=weights,
        input_size=(int(batch.shape[-2]), int(batch.shape[-1])),
        bare_ms=ms["bare"],
        fused_ms=fused_ms,
        capture_ms=ms["capture"],
        capture_ratio=ms["capture"] / ms["bare"],
        fused_ratio=_ratio(ms["capture"], fused_ms),
        channels_last_ms=cl_ms,
        channels_last_ratio=None if cl_ms is None else cl_ms / ms["bare"],
        maps_ms=ms["maps"],
        gradcam_ms=gradcam_ms,
        gradcam_ratio=None if gradcam_ms is None else gradcam_ms / ms["maps"],
        peak_rss_mib=peak_rss_mib(),
        cuda_max_allocated_mib=cuda_peak_mib(device),
    )


def _column(analysis: Analysis) -> list[object]:
    """One model's column as the page first draws it: predictions, the last block's maps and
    channel bars (the expanders below start closed and draw nothing)."""
    image = analysis.input_image
    made: list[object] = [render.top5_bar(analysis.top5)] if analysis.top5 else []
    if analysis.blocks:
        last = analysis.blocks[-1]
        records = [r for r in analysis.records if not isinstance(r, GradCAM) and r.block == last]
        hw = image.shape[:2]
        made += [render.overlay(image, m.values) for m in map(lambda r: record_map(r, hw), records) if m]
        made += [render.channel_bar(r) for r in records if isinstance(r, ChannelWeights)]
    return made


def _sections(analyses: Sequence[Analysis]) -> list[object]:
    """Below the columns: the first transformer's open tab (heads x layers) and the first
    deformable model's sampling views, as the page first draws them."""
    made: list[object] = []
    tokens = next((a for a in analyses if transformer.self_attention_records(a)), None)
    if tokens is not None:
        records = transformer.self_attention_records(tokens)
        image = tokens.input_image
        made.append(
            render.overlay(image, transformer.fuse_heads(transformer.summary_map(records[-1]), "mean"))
        )
        made.append(
            render.to_png_bytes(render.head_grid_image(image, transformer.head_grid(records).maps, tile=64))
        )
        prefix = transformer.prefix_attention(records)
        if prefix is not None:
            layers = [r.layer for r in records]
            made.append(render.prefix_attention_figure(prefix.names, layers, prefix.values, prefix.grid_mass))
    deform = next((a for a in analyses if a.sampling_points), None)
    if deform is not None:
        record, hw = deform.sampling_points[0], deform.input_image.shape[:2]
        query = deformable.nearest_query(record, (hw[0] / 2, hw[1] / 2), hw)
        made.append(render.sampling_figure(deform.input_image, deformable.query_samples(record, query, hw)))
        field = deformable.offset_field(record, hw)
        if field is not None:
            made += [render.overlay(deform.input_image, field.magnitude),
                     render.offset_field_figure(deform.input_image, field)]  # fmt: skip
    return made


def _comparison(
    names: Sequence[str], image: Image.Image, bare: dict[str, float], device: torch.device, repeats: int
) -> ComparisonRow:
    models = [load_model(n, weights=_weights_for(n), device=device) for n in names]
    shown: list[Analysis] = []

    def first_view() -> None:
        shown.clear()
        for model in models:
            [analysis] = analyze(model, [image], gradcam=False)
            shown.append(compact(analysis))
            _column(shown[-1])
        _sections(shown)

    def gradcams() -> None:
        for model, analysis in zip(models, list(shown), strict=True):
            [done] = add_gradcam(model, [analysis], [image])
            if done.gradcam is not None:
                render.overlay(done.input_image, done.gradcam.values)

    rss_reset = reset_peak_rss()
    reset_cuda_peak(device)
    ms = interleaved_ms({"first": first_view, "gradcam": gradcams}, repeats, device)
    sum_bare = sum(bare[n] for n in names)
    peak = peak_rss_mib()
    if not rss_reset:
        log.info("RSS peak could not be reset: the comparison's peak is the process peak")
    total = ms["first"] + ms["gradcam"]
    return ComparisonRow(
        models=tuple(names),
        first_view_ms=ms["first"],
        gradcam_ms=ms["gradcam"],
        total_ms=total,
        sum_bare_ms=sum_bare,
        first_view_ratio=ms["first"] / sum_bare,
        ratio=total / sum_bare,
        stored_mib=sum(a.nbytes for a in shown) / 2**20,
        peak_rss_mib=peak,
        cuda_max_allocated_mib=cuda_peak_mib(device),
    )


def _folder_of_images(n: int, folder: Path) -> list[str]:
    """``n`` image files in ``folder``: the sample photos, copied round-robin."""
    paths = list_samples()
    if not paths:
        raise FileNotFoundError("no sample images to benchmark with (assets/samples is empty)")
    out = []
    for i in range(n):
        source = paths[i % len(paths)]
        target = folder / f"{i:03d}_{source.name}"
        shutil.copyfile(source, target)
        out.append(str(target))
    return out


def _batch_throughput(
    name: str, n: int, batch_size: int, device: torch.device, repeats: int
) -> BatchThroughput:
    weights = _weights_for(name)
    model = load_model(name, weights=weights, device=device)
    runs = max(1, min(repeats, 3))  # each run is already n images
    with tempfile.TemporaryDirectory(prefix="attnviz-bench-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        paths = _folder_of_images(n, root / "in")
        reports = []

        def pipelined() -> None:
            report = analyze_to_folder(paths, [name], root / "batched", weights=weights, device=device,
                                       batch_size=batch_size)  # fmt: skip
            reports.append(report)

        def one_at_a_time() -> None:
            for path in paths:
                [result] = analyze(model, [load_image(path)])
                write_bundle(export_files([(path, result)]), root / "single")

        pipelined()  # warm-up (and the model's first load)
        one_at_a_time()
        reports.clear()
        single_s = median_ms(one_at_a_time, runs, device, warmup=0) / 1e3
        median_ms(pipelined, runs, device, warmup=0)
    # the pipeline loads its model on each call: its own timings give the time without loading
    batched_s = statistics.median(r.wall_s - sum(t.load_s for t in r.models) for r in reports)
    usage = [r.gpu_utilization for r in reports if r.gpu_utilization is not None]
    return BatchThroughput(
        model=name,
        images=n,
        batch_size=batch_size,
        batched_img_s=n / batched_s,
        single_img_s=n / single_s,
        speedup=single_s / batched_s,
        gpu_utilization=statistics.mean(usage) if usage else None,
    )


def measure_faithfulness(
    name: str, image: Image.Image, device: torch.device, repeats: int
) -> FaithfulnessBench:
    """The :class:`FaithfulnessBench` of ``name`` on ``image``: ``measure`` (no ROAD) and the bare
    forwards of as many images, interleaved, median of ``min(repeats, 3)`` runs after a warm-up;
    then ROAD once.

    The map is the first non-constant one of :func:`attnviz.views.faithfulness.input_maps` (a
    random-weights model may have none: then a smooth random map; the time does not depend on it).
    """
    weights = _weights_for(name)
    model = load_model(name, weights=weights, device=device)
    [analysis] = analyze(model, [image])
    hw = analysis.input_image.shape[:2]
    chosen = next((m for m in input_maps(analysis) if np.ptp(m.values) > 0), None)
    if chosen is None:
        chosen = InputMap("smooth random map", "bench", "random", random_map(hw, seed=1))

    def faith(road: bool = False) -> int:
        return measure(model, analysis, [chosen], road=road, batch_size=FAITHFULNESS_BATCH).forwards

    plain = measure(model, analysis, [chosen], road=False, batch_size=FAITHFULNESS_BATCH)
    # measure's forwards: the unperturbed crop, then the perturbations in batches of batch_size
    rest = plain.forwards - 1
    sizes = [1] + [min(FAITHFULNESS_BATCH, rest - i) for i in range(0, rest, FAITHFULNESS_BATCH)]
    x = model.preprocess([image]).to(model.device)
    inputs = [x.expand(n, -1, -1, -1).contiguous(memory_format=model.memory_format) for n in sizes]

    def bare() -> None:
        with torch.inference_mode():
            for batch in inputs:
                model.module(batch)

    runs = max(1, min(repeats, 3))  # each run is already ~2 x (steps + 1) x 2 images
    ms = interleaved_ms({"measure": faith, "bare": bare}, runs, device)
    import pytorch_grad_cam.metrics.road  # noqa: F401  (its import is not ROAD's time)

    road_forwards: list[int] = []
    road_ms = median_ms(lambda: road_forwards.append(faith(road=True)), 1, device, warmup=0)
    maps = len(plain.scores)
    return FaithfulnessBench(
        model=name,
        weights=weights,
        input_size=(int(hw[0]), int(hw[1])),
        map_name=chosen.name,
        maps=maps,
        steps=len(plain.scores[0].deletion.fractions) - 1,
        batch_size=FAITHFULNESS_BATCH,
        forwards=plain.forwards,
        measure_ms=ms["measure"],
        bare_ms=ms["bare"],
        ratio=ms["measure"] / ms["bare"],
        road_ms_per_map=max(road_ms - ms["measure"], 0.0) / maps,
        road_forwards=road_forwards[0] - plain.forwards,
    )


def run_bench(
    *,
    device: str | torch.device = "auto",
    small: bool = False,
    repeats: int | None = None,
    models: Sequence[str] | None = None,
    playground: bool = True,
    faithfulness: bool = True,
) -> BenchReport:
    """Measure capture overhead, maps vs Grad-CAM, the comparison page and batch throughput.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        small: the CI mode: tiny zoo models, MobileNetV3 and DeiT-tiny, 2 repeats, 4 images.
        repeats: timed runs per figure (the median is kept), after one warm-up run; default 7
            (2 when ``small``).
        models: the models to measure; default :data:`FULL_MODELS` or :data:`SMALL_MODELS`. The
            first four make the comparison; the CLI batch runs MobileNetV3-L when listed (not in
            ``small`` mode), else the first classifier.
        playground: also time the playground's default run (a reduced run when ``small``):
            seconds to 90% held-out accuracy, samples/s, energy ratio first vs last snapshot.
        faithfulness: also time the faithfulness metrics (:func:`measure_faithfulness`) of
            :data:`FAITHFULNESS_MODEL`, or of the first classifier when ``small``.

    Returns:
        The :class:`BenchReport`.

    Raises:
        ValueError: ``repeats`` below 1, no models, or a detector among them.
        UnknownModelError, DeviceError: from :func:`attnviz.load_model`.
    """
    dev = resolve_device(device)
    if repeats is None:
        repeats = SMALL_REPEATS if small else DEFAULT_REPEATS
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    names = list(dict.fromkeys(models if models is not None else (SMALL_MODELS if small else FULL_MODELS)))
    if not names:
        raise ValueError("the benchmark needs at least one model")
    for name in names:
        if get_spec(name).source == "transformers":
            raise ValueError(f"{name} is a detector; the benchmark measures classifiers and backbones")
    classifiers = [n for n in names if get_spec(n).classifier]
    if not classifiers:
        raise ValueError("the benchmark needs at least one classifier (for Grad-CAM and the CLI batch)")

    from attnviz.io.samples import load_sample

    image = load_sample("cat.jpg")
    rss_reset = True
    rows = []
    bare = {}
    for name in names:
        rss_reset &= reset_peak_rss()
        reset_cuda_peak(dev)
        log.info("bench: %s", name)
        row = _model_row(name, image, dev, repeats)
        rows.append(row)
        bare[name] = row.fused_ms if row.fused_ms is not None else row.bare_ms
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    comparison = _comparison(names[:4], image, bare, dev, repeats)
    gc.collect()
    # small: the first classifier (a tiny zoo CNN); full: MobileNetV3, the CLI's typical model
    batch_model = classifiers[0] if small or "mobilenet_v3_large" not in classifiers else "mobilenet_v3_large"
    n = SMALL_BATCH_IMAGES if small else FULL_BATCH_IMAGES
    batch = _batch_throughput(batch_model, n, min(n, DEFAULT_BATCH_SIZE), dev, repeats)
    machine = MachineInfo(
        device=str(dev),
        device_name=device_name(dev),
        torch_version=torch.__version__,
        cpu_count=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        python_version=platform.python_version(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        repeats=repeats,
        small=small,
        rss_reset=rss_reset,
    )
    faith = None
    if faithfulness:
        gc.collect()
        faith = measure_faithfulness(classifiers[0] if small else FAITHFULNESS_MODEL, image, dev, repeats)
    trained = None
    if playground:
        gc.collect()
        trained = measure_playground(dev, small=small)
    return BenchReport(machine, tuple(rows), comparison, batch, trained, faith)
