"""The benchmark's report (:mod:`attnviz.workflows.bench`): its figures, as JSON and as text.

:class:`BenchReport` holds a :class:`MachineInfo`, one :class:`ModelRow` per model, a
:class:`ComparisonRow`, a :class:`BatchThroughput` and a :class:`FaithfulnessBench`;
:func:`report_to_json` and :func:`format_report` give what ``python -m attnviz bench`` prints
with and without ``--json``.
Import them from :mod:`attnviz.workflows.bench`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attnviz.workflows.bench_playground import PlaygroundBench, format_playground

__all__ = [
    "BatchThroughput",
    "BenchReport",
    "ComparisonRow",
    "FaithfulnessBench",
    "MachineInfo",
    "ModelRow",
    "PlaygroundBench",
    "format_report",
    "report_to_json",
]


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


FAITHFULNESS_TARGET = 2.0
"""The faithfulness overhead the project aims at: ``ratio`` at most 2x."""


@dataclass(frozen=True)
class FaithfulnessBench:
    """The faithfulness metrics (:func:`attnviz.analysis.faithfulness.measure`) of one map on one
    image.

    ``measure_ms``: deletion and insertion of the map (``steps`` steps each; ``measure`` also scores
    its random baseline, so ``maps`` is 2), ``forwards`` images in batches of ``batch_size``, masks
    and perturbed copies included; ``bare_ms``: the bare forwards of as many images in the same
    batches; ``ratio = measure_ms / bare_ms`` (the target is at most :data:`FAITHFULNESS_TARGET`).
    ``road_ms_per_map``: what ROAD adds, per map scored (one run; mostly the noisy linear imputation,
    not its ``road_forwards`` forwards).
    """

    model: str
    weights: str
    input_size: tuple[int, int]
    map_name: str
    maps: int
    steps: int
    batch_size: int
    forwards: int
    measure_ms: float
    bare_ms: float
    ratio: float
    road_ms_per_map: float
    road_forwards: int


@dataclass(frozen=True)
class BenchReport:
    """Everything :func:`~attnviz.workflows.bench.run_bench` measured."""

    machine: MachineInfo
    models: tuple[ModelRow, ...]
    comparison: ComparisonRow
    batch: BatchThroughput
    playground: PlaygroundBench | None = None
    faithfulness: FaithfulnessBench | None = None


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def report_to_json(report: BenchReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (tuples become lists; absent figures are None)."""
    return {key: _json_ready(value) for key, value in dataclasses.asdict(report).items()}


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


def _format_faithfulness(f: FaithfulnessBench) -> list[str]:
    met = "met" if f.ratio <= FAITHFULNESS_TARGET else "NOT met"
    h, w = f.input_size
    return [
        f"faithfulness ({f.model}, {f.weights} weights, {h}x{w}, 1 image, map {f.map_name!r} and the "
        f"random baseline): deletion + insertion, {f.steps} steps, {f.forwards} images in batches of "
        f"{f.batch_size}: {f.measure_ms:.1f} ms vs {f.bare_ms:.1f} ms of bare forwards = "
        f"{f.ratio:.2f}x (target <= {FAITHFULNESS_TARGET:.0f}x: {met})",
        f"  ROAD adds {f.road_ms_per_map:.1f} ms per map ({f.road_forwards} forwards for {f.maps} maps; "
        "mostly the imputation)",
    ]


def format_report(report: BenchReport) -> str:
    """A readable text report: machine, per-model table, comparison, batch throughput, faithfulness
    and the playground run."""
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
    if report.faithfulness is not None:
        lines += _format_faithfulness(report.faithfulness)
    if report.playground is not None:
        lines += format_playground(report.playground)
    if not m.rss_reset:
        lines.append(
            "note: the RSS peak could not be reset per model; each figure is the process peak so far"
        )
    return "\n".join(lines)
