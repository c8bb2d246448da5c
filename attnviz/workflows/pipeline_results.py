"""What a run of :func:`attnviz.workflows.pipeline.analyze_to_folder` reports: its events and its report.

:class:`PipelineEvent` is passed to the ``progress`` callback at every step; :class:`PipelineReport`
is returned at the end, with a :class:`ModelTiming` per model and a :class:`SkippedImage` per
unreadable file. All are frozen dataclasses; import them from :mod:`attnviz.workflows.pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from attnviz.core.records import Analysis
from attnviz.io.export import SUMMARY_FILENAME

__all__ = [
    "EventKind",
    "ModelTiming",
    "PipelineEvent",
    "PipelineReport",
    "ProgressCallback",
    "SkippedImage",
]

EventKind = Literal["loading", "download", "analysing", "skipped", "written"]


@dataclass(frozen=True)
class SkippedImage:
    """An image file that could not be read; the run went on without it.

    Attributes:
        path: the path as given.
        message: the one-sentence reason, from :func:`attnviz.load_image`.
    """

    path: str
    message: str


@dataclass(frozen=True)
class ModelTiming:
    """Where one model's time went, in seconds of wall time.

    Attributes:
        model: the model name.
        results: images this model analysed.
        batches: forwards (calls of :func:`attnviz.analyze`).
        load_s: building the model with its weights.
        forward_s: :func:`attnviz.analyze` on the calling thread (capture and Grad-CAM included).
        write_s: rendering and writing its results on the writer thread, which overlaps the next
            batch's forward.
    """

    model: str
    results: int
    batches: int
    load_s: float
    forward_s: float
    write_s: float


@dataclass(frozen=True)
class PipelineReport:
    """What a run of :func:`~attnviz.workflows.pipeline.analyze_to_folder` did.

    Attributes:
        out_dir: the folder written to.
        results: ``(image, model)`` results written (one folder each).
        files: files written, ``summary.json`` and ``plotly.min.js`` included.
        skipped: unreadable images, in the order they were met (each path once).
        models: per-model timings, in the order of the models.
        wall_s: wall time of the whole run.
        images_per_s: ``results / wall_s`` (an image analysed by two models counts twice).
        gpu_utilization: mean GPU utilisation in percent sampled during the run
            (``torch.cuda.utilization``, needs ``pynvml``); None on CPU or when unavailable.
    """

    out_dir: Path
    results: int
    files: int
    skipped: tuple[SkippedImage, ...]
    models: tuple[ModelTiming, ...]
    wall_s: float
    images_per_s: float
    gpu_utilization: float | None

    @property
    def summary_path(self) -> Path | None:
        """``out_dir / summary.json``, or None when nothing was written (no readable image)."""
        return self.out_dir / SUMMARY_FILENAME if self.results else None


@dataclass(frozen=True)
class PipelineEvent:
    """One step of a run, passed to the ``progress`` callback, always on the calling thread.

    Attributes:
        kind: ``"loading"`` (a model is about to be built), ``"download"`` (a progress message of
            :func:`attnviz.load_model`, with its ``fraction``), ``"analysing"`` (the model is ready),
            ``"skipped"`` (``image`` could not be read: ``message`` says why) or ``"written"``
            (``image``'s result by ``model`` is on disk under ``folder``, with its ``analysis``).
        model: the model concerned; None for ``"skipped"``.
        message: a short, user-facing sentence without the model name.
        fraction: ``"download"``: the download's progress; ``"written"``: results written so far
            over ``images x models``; else None.
        image: the image path, for ``"skipped"`` and ``"written"``.
        folder: the result's folder relative to the output folder (``"written"``).
        analysis: the result itself (``"written"``).
    """

    kind: EventKind
    model: str | None
    message: str
    fraction: float | None = None
    image: str | None = None
    folder: str | None = None
    analysis: Analysis | None = None


ProgressCallback = Callable[[PipelineEvent], None]
