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
- **peak memory**: RSS high-water mark (reset per model where Linux allows) and CUDA max allocated.

Load times are not measured; models are loaded before their timed runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from attnviz import render
from attnviz.analysis import add_gradcam, analyze
from attnviz.backends import LoadedModel, get_spec, load_model
from attnviz.capture.hooks import Capture
from attnviz.core.records import Analysis, ChannelWeights, GradCAM, compact
from attnviz.io.export import export_files, write_bundle
from attnviz.io.images import load_image
from attnviz.io.samples import list_samples
from attnviz.runtime import resolve_device
from attnviz.views import deformable, transformer
from attnviz.views.maps import attention_maps, record_map
from attnviz.workflows.pipeline import DEFAULT_BATCH_SIZE, analyze_to_folder

__all__ = [
    "FULL_MODELS",
    "SMALL_MODELS",
    "BatchThroughput",
    "BenchReport",
    "ComparisonRow",
    "MachineInfo",
    "ModelRow",
    "format_report",
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

DEFAULT_REPEATS, SMALL_REPEATS = 7, 2
FULL_BATCH_IMAGES, SMALL_BATCH_IMAGES = 16, 4
_WARMUP = 1


@dataclass(frozen=True)
class MachineInfo:
    """Where and how the figures were measured."""

    device: str
    device_name: str
    torch_version: str
    cpu_count: int
    torch_threads: int
    python_version: str
    date: str
    repeats: int
    small: bool
    rss_reset: bool  # True: the RSS peak was reset before each model (else it is the process peak)


@dataclass(frozen=True)
class ModelRow:
    """One model, one image.

    ``bare_ms`` is the plain forward with the same attention path as the capture (unfused for
    ViTs); ``fused_ms`` the ViT as loaded (fused attention), None for other models.
    ``capture_ratio = capture_ms / bare_ms``; ``fused_ratio = capture_ms / fused_ms``.
    ``channels_last_ms`` is the bare forward with NHWC weights and input (convolutional networks;
    None for token models), ``channels_last_ratio = channels_last_ms / bare_ms`` (below 1: faster).
    ``maps_ms`` is ``analyze(gradcam=False)`` + ``attention_maps``; ``gradcam_ms``
    :func:`attnviz.add_gradcam` alone; ``gradcam_ratio = gradcam_ms / maps_ms`` (None for models
    without a classifier).
    """

    model: str
    weights: str
    input_size: tuple[int, int]
    bare_ms: float
    fused_ms: float | None
    capture_ms: float
    capture_ratio: float
    fused_ratio: float | None
    channels_last_ms: float | None
    channels_last_ratio: float | None
    maps_ms: float
    gradcam_ms: float | None
    gradcam_ratio: float | None
    peak_rss_mib: float
    cuda_max_allocated_mib: float | None


@dataclass(frozen=True)
class ComparisonRow:
    """The compare page for ``models`` and one image.

    ``first_view_ms``: until everything the page shows before Grad-CAM is drawn;
    ``gradcam_ms``: the Grad-CAM baselines added after it; ``total_ms`` both.
    ``first_view_ratio = first_view_ms / sum_bare_ms``, ``ratio = total_ms / sum_bare_ms``.
    ``stored_mib``: the compact results the page keeps for the session.
    """

    models: tuple[str, ...]
    first_view_ms: float
    gradcam_ms: float
    total_ms: float
    sum_bare_ms: float
    first_view_ratio: float
    ratio: float
    stored_mib: float
    peak_rss_mib: float
    cuda_max_allocated_mib: float | None


@dataclass(frozen=True)
class BatchThroughput:
    """The CLI's work (read, analyze with Grad-CAM, render and write the export) for a folder of
    ``images`` image files through ``model``.

    ``batched_img_s``: :func:`attnviz.workflows.pipeline.analyze_to_folder` (batches of ``batch_size``, the
    next batch read and the previous one written while a batch runs), model loading excluded;
    ``single_img_s``: the same work one image at a time with nothing overlapped;
    ``speedup = batched_img_s / single_img_s``. ``gpu_utilization``: mean CUDA utilisation in %
    during the pipelined run, where the driver reports it (None otherwise).
    """

    model: str
    images: int
    batch_size: int
    batched_img_s: float
    single_img_s: float
    speedup: float
    gpu_utilization: float | None


@dataclass(frozen=True)
class BenchReport:
    """Everything :func:`run_bench` measured."""

    machine: MachineInfo
    models: tuple[ModelRow, ...]
    comparison: ComparisonRow
    batch: BatchThroughput


# --------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = _WARMUP) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs after ``warmup`` runs."""
    return _interleaved_ms({"fn": fn}, repeats, device, warmup)["fn"]


def _interleaved_ms(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = _WARMUP
) -> dict[str, float]:
    """Median wall time in ms of each of ``fns``, run round-robin so that they share the machine's
    load: a ratio of two medians then holds up on a busy machine, where absolute figures do not."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux ``clear_refs``); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if platform.system() == "Darwin":
            kib //= 1024
    return kib / 1024


def _reset_cuda_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _cuda_peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


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
        ms = _interleaved_ms(fns, repeats, device)
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
        peak_rss_mib=_peak_rss_mib(),
        cuda_max_allocated_mib=_cuda_peak_mib(device),
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

    rss_reset = _reset_peak_rss()
    _reset_cuda_peak(device)
    ms = _interleaved_ms({"first": first_view, "gradcam": gradcams}, repeats, device)
    sum_bare = sum(bare[n] for n in names)
    peak = _peak_rss_mib()
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
        cuda_max_allocated_mib=_cuda_peak_mib(device),
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
        single_s = _median_ms(one_at_a_time, runs, device, warmup=0) / 1e3
        _median_ms(pipelined, runs, device, warmup=0)
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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_bench(
    *,
    device: str | torch.device = "auto",
    small: bool = False,
    repeats: int | None = None,
    models: Sequence[str] | None = None,
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
        rss_reset &= _reset_peak_rss()
        _reset_cuda_peak(dev)
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
        device_name=_device_name(dev),
        torch_version=torch.__version__,
        cpu_count=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        python_version=platform.python_version(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        repeats=repeats,
        small=small,
        rss_reset=rss_reset,
    )
    return BenchReport(machine, tuple(rows), comparison, batch)


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def report_to_json(report: BenchReport) -> dict:
    """The report as a JSON-ready dict (tuples become lists; absent figures are None)."""
    return _json_ready(dataclasses.asdict(report))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for r in (header, *rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_report(report: BenchReport) -> str:
    """A readable text report: machine, per-model table, comparison and batch throughput."""
    m = report.machine
    lines = [
        f"attnviz bench on {m.device} ({m.device_name}), torch {m.torch_version}, "
        f"{m.cpu_count} CPUs ({m.torch_threads} torch threads), {m.date}",
        f"median of {m.repeats} warm runs, 1 image{' (small mode)' if m.small else ''}",
        "",
    ]
    header = (
        "MODEL",
        "BARE ms",
        "FUSED ms",
        "CAPTURE ms",
        "CAPTURE/BARE",
        "CAPTURE/FUSED",
        "NHWC/BARE",
        "MAPS ms",
        "GRADCAM ms",
        "GRADCAM/MAPS",
        "PEAK RSS MiB",
        "CUDA MiB",
    )
    rows = [
        (
            r.model,
            _ms(r.bare_ms),
            _ms(r.fused_ms),
            _ms(r.capture_ms),
            _x(r.capture_ratio),
            _x(r.fused_ratio),
            _x(r.channels_last_ratio),
            _ms(r.maps_ms),
            _ms(r.gradcam_ms),
            _x(r.gradcam_ratio),
            f"{r.peak_rss_mib:.0f}",
            _ms(r.cuda_max_allocated_mib),
        )
        for r in report.models
    ]
    lines += _table(header, rows)
    c, b = report.comparison, report.batch
    cuda = (
        "" if c.cuda_max_allocated_mib is None else f", CUDA max allocated {c.cuda_max_allocated_mib:.0f} MiB"
    )
    lines += [
        "",
        f"comparison of {', '.join(c.models)} (1 image; sum of bare forwards {c.sum_bare_ms:.1f} ms):",
        f"  first view (analyze + compact + the page's first renders): {c.first_view_ms:.1f} ms = "
        f"{c.first_view_ratio:.2f}x",
        f"  with the Grad-CAM baselines added: {c.total_ms:.1f} ms = {c.ratio:.2f}x; "
        f"stored {c.stored_mib:.1f} MiB, peak RSS {c.peak_rss_mib:.0f} MiB{cuda}",
        f"CLI batch ({b.model}, a folder of {b.images} images: read, analyze + Grad-CAM, write the export): "
        f"pipelined in batches of {b.batch_size} {b.batched_img_s:.2f} img/s, one at a time "
        f"{b.single_img_s:.2f} img/s, speed-up {b.speedup:.2f}x"
        + ("" if b.gpu_utilization is None else f", GPU utilisation {b.gpu_utilization:.0f} %"),
    ]
    if not m.rss_reset:
        lines.append(
            "note: the RSS peak could not be reset per model; each figure is the process peak so far"
        )
    return "\n".join(lines)
