"""Pipelined batch analysis: many image files through several models into one export folder.

:func:`analyze_to_folder` is what ``python -m attnviz analyze`` runs. Models are taken one at a
time (only one is in memory); for each, three threads work on neighbouring batches::

    decoder thread    load_image           batch k+1
    calling thread    analyze              batch k      (the accelerator's work)
    writer thread     render + write       batch k-1    (attnviz.io.export's per-result renderer)

Bounded queues hold at most one finished batch between two stages, so memory depends on the batch
size, never on the number of images. The files are the ones :func:`attnviz.io.export.export_files`
would give for all results at once (same folder names, same ``summary.json`` entries), written
batch by batch; ``summary.json`` comes last, once every result is on disk.

The stages live in :mod:`.pipeline_stages` (on the threads of :mod:`.pipeline_threads`), the
events and report in :mod:`.pipeline_results`, folder expansion in :mod:`.image_paths`; this module
runs them and chooses what they call (``analyze``, ``load_model``, ``load_image``,
``export_result``, ``write_bundle``, looked up here when a run starts).

With ``faithfulness=True`` every result is also scored right after its batch's forward, with the
same model (:func:`attnviz.analysis.faithfulness.measure` of
:func:`attnviz.views.faithfulness.input_maps`); the score travels to the writer keyed by the
result's folder, which adds ``faithfulness.csv`` and the entry's ``"faithfulness"`` object
(:func:`attnviz.io.export.export_faithfulness`). The Ray run does not offer it.

An image that cannot be read (any :class:`attnviz.AttnvizError` from :func:`attnviz.load_image`)
is skipped and reported; every other error stops the run and reaches the caller, after all threads
have been joined.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnviz.analysis import AUTOCAST_DTYPES, analyze
from attnviz.analysis.faithfulness import measure
from attnviz.backends import get_spec, load_model
from attnviz.core.faithfulness_records import Faithfulness
from attnviz.core.records import Analysis
from attnviz.io.export import (
    SUMMARY_FILENAME,
    FolderNames,
    export_faithfulness,
    export_result,
    summary_json,
    validate_style,
    write_bundle,
)
from attnviz.io.images import load_image
from attnviz.runtime import resolve_device
from attnviz.views.faithfulness import input_maps
from attnviz.workflows.image_paths import IMAGE_EXTENSIONS, expand_image_paths
from attnviz.workflows.pipeline_results import (
    EventKind,
    ModelTiming,
    PipelineEvent,
    PipelineReport,
    ProgressCallback,
    SkippedImage,
)
from attnviz.workflows.pipeline_stages import (
    END,
    Decoded,
    Decoder,
    Job,
    PassEnd,
    ResultRenderer,
    Writer,
    Written,
)
from attnviz.workflows.pipeline_threads import THREAD_PREFIX, GpuSampler, put_unless_stopped

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "IMAGE_EXTENSIONS",
    "MAX_BATCH_SIZE",
    "THREAD_PREFIX",
    "EventKind",
    "ModelTiming",
    "PipelineEvent",
    "PipelineReport",
    "ProgressCallback",
    "RunBase",
    "SkippedImage",
    "analyze_to_folder",
    "check_args",
    "expand_image_paths",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8
"""Images per forward when the caller does not say."""

MAX_BATCH_SIZE = 64
"""Largest accepted batch size (memory grows with it: decoded images and results of ~3 batches)."""


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """One model's running totals (mutable; becomes a ModelTiming)."""

    results: int = 0
    batches: int = 0
    load_s: float = 0.0
    forward_s: float = 0.0
    write_s: float = 0.0


def _with_faithfulness(render_result: ResultRenderer, scores: dict[str, Faithfulness]) -> ResultRenderer:
    """``render_result`` that also adds the result's faithfulness (taken out of ``scores``, where the
    calling thread put it before it queued the job) to the files and the entry."""

    def render(
        image: str,
        analysis: Analysis,
        folder: str,
        files: dict[str, bytes],
        cmap: str,
        alpha: float,
        scale: str,
    ) -> dict[str, Any]:
        entry = render_result(image, analysis, folder, files, cmap, alpha, scale)
        found = scores.pop(folder, None)
        if found is not None:
            export_faithfulness(found, folder, files, entry)
        return entry

    return render


class RunBase:
    """The calling thread's side of a folder run, wherever its forwards run: the writer thread, the
    folder names, the skips met, each model's tallies and the events; the local run
    (:class:`_Run`) and the Ray Data run (:mod:`.pipeline_ray`) add how batches are analysed."""

    def __init__(
        self,
        paths: list[str],
        models: list[str],
        out_dir: Path,
        options: dict[str, Any],
        progress: ProgressCallback | None,
    ) -> None:
        self.paths, self.models, self.out_dir = paths, models, out_dir
        self.options = options
        self.progress = progress
        self.stop = threading.Event()
        style = (options["cmap"], options["alpha"], options["scale"])
        # read here, when the run starts, so that what they call can be replaced (tests do)
        render_result: ResultRenderer = export_result
        self.faithfulness: dict[str, Faithfulness] = {}  # by folder, until the writer takes it
        if options.get("faithfulness"):
            render_result = _with_faithfulness(render_result, self.faithfulness)
        self.writer = Writer(out_dir, style, self.stop, render_result=render_result, write=write_bundle)
        self.folders = FolderNames()
        self.skipped: dict[str, SkippedImage] = {}
        self.tallies = [_Tally() for _ in models]
        self.written = 0

    def emit(self, event: PipelineEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def finish(self) -> None:
        """After the last job: wait for the writer, report its last jobs, write ``summary.json``."""
        if not put_unless_stopped(self.writer.inbox, END, self.stop, self.writer):
            return
        self.writer.join()
        self.writer.raise_if_failed()
        self._drain()
        if self.writer.entries:
            write_bundle({SUMMARY_FILENAME: summary_json(self.writer.entries)}, self.out_dir)
            self.writer.files += 1

    def report(self, wall: float, utilization: float | None) -> PipelineReport:
        """The run's :class:`PipelineReport`, ``wall`` seconds after it started."""
        return PipelineReport(
            out_dir=self.out_dir,
            results=self.written,
            files=self.writer.files,
            skipped=tuple(self.skipped.values()),
            models=tuple(
                ModelTiming(name, t.results, t.batches, t.load_s, t.forward_s, t.write_s)
                for name, t in zip(self.models, self.tallies, strict=True)
            ),
            wall_s=wall,
            images_per_s=self.written / wall if wall > 0 else 0.0,
            gpu_utilization=utilization,
        )

    def _drain(self) -> None:
        """Events and timings for every job the writer finished so far."""
        self.writer.raise_if_failed()
        total = len(self.paths) * len(self.models)
        while True:
            try:
                done: Written = self.writer.outbox.get_nowait()
            except queue.Empty:
                return
            name = self.models[done.model_index]
            tally = self.tallies[done.model_index]
            tally.write_s += done.seconds
            for image, analysis, folder in done.items:
                tally.results += 1
                self.written += 1
                self.emit(
                    PipelineEvent(
                        "written",
                        name,
                        f"wrote {folder}/",
                        fraction=self.written / total,
                        image=image,
                        folder=folder,
                        analysis=analysis,
                    )
                )


class _Run(RunBase):
    """The calling thread's side of one :func:`analyze_to_folder` call."""

    def __init__(self, *args: Any) -> None:  # RunBase's
        super().__init__(*args)
        self.decoder = Decoder(
            self.paths, len(self.models), self.options["batch_size"], self.stop, load=load_image
        )

    def execute(self) -> None:
        for index, name in enumerate(self.models):
            self._model_pass(index, name)
        self.finish()

    def _model_pass(self, index: int, name: str) -> None:
        item = self._next()
        if isinstance(item, PassEnd):  # no readable image left: do not even load the model
            log.info("%s: no image to analyse", name)
            return
        opts, tally = self.options, self.tallies[index]
        weights = opts["weights"]
        self.emit(PipelineEvent("loading", name, f"loading ({weights} weights)"))
        start = time.perf_counter()
        model = load_model(
            name,
            weights=weights,
            device=opts["device"],
            progress=lambda message, fraction: self.emit(PipelineEvent("download", name, message, fraction)),
        )
        tally.load_s = time.perf_counter() - start
        # the first pass finds the unreadable images as it goes; later ones know them all
        todo = f"{'up to ' if index == 0 else ''}{len(self.paths) - len(self.skipped)}"
        self.emit(
            PipelineEvent(
                "analysing",
                name,
                f"analysing {todo} image(s) on {model.device} in batches of {opts['batch_size']}",
            )
        )
        while isinstance(item, Decoded):
            start = time.perf_counter()
            results = analyze(model, list(item.images), gradcam=opts["gradcam"], autocast=opts["autocast"])
            items = tuple(
                (path, analysis, self.folders(path, analysis.model))
                for path, analysis in zip(item.paths, results, strict=True)
            )
            del results
            if opts.get("faithfulness"):  # with the same model, before the job reaches the writer
                for _path, analysis, folder in items:
                    self.faithfulness[folder] = measure(
                        model, analysis, input_maps(analysis), road=bool(opts.get("road"))
                    )
            tally.forward_s += time.perf_counter() - start
            tally.batches += 1
            if not put_unless_stopped(self.writer.inbox, Job(index, items), self.stop, self.writer):
                return
            self._drain()
            item = self._next()
        del model  # one model in memory at a time

    def _next(self) -> Decoded | PassEnd:
        item = self.decoder.next()
        for skip in item.skipped:
            if skip.path not in self.skipped:
                self.skipped[skip.path] = skip
                self.emit(PipelineEvent("skipped", None, skip.message, image=skip.path))
        return item


def check_args(
    images: Sequence[str | os.PathLike[str]],
    models: Sequence[str],
    batch_size: int,
    autocast: str | None,
    cmap: str,
    alpha: float,
    scale: str = "absolute",
) -> tuple[list[str], list[str]]:
    """Checks :func:`analyze_to_folder`'s arguments (any runner of it uses this check).

    Returns:
        The image paths (folders expanded) and the model names (duplicates dropped), in order.

    Raises:
        TypeError, ValueError, UnknownModelError: as :func:`analyze_to_folder` documents.
    """
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
        raise TypeError(f"images must be a sequence of paths, got {type(images).__name__}")
    if not images:
        raise ValueError("analyze_to_folder needs at least one image")
    paths = expand_image_paths([os.fspath(p) for p in images])  # folders stand for their images
    if isinstance(models, str) or not isinstance(models, Sequence):
        raise TypeError(f"models must be a sequence of model names, got {type(models).__name__}")
    names = list(dict.fromkeys(models))
    if not names:
        raise ValueError("analyze_to_folder needs at least one model")
    for name in names:
        get_spec(name)  # UnknownModelError before any work
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be in [1, {MAX_BATCH_SIZE}], got {batch_size}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    validate_style(cmap, alpha, scale)
    return paths, names


_check_args = check_args  # the former private name


def analyze_to_folder(
    images: Sequence[str | os.PathLike[str]],
    models: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] = "pretrained",
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    gradcam: bool = True,
    autocast: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    scale: str = "absolute",
    faithfulness: bool = False,
    road: bool = False,
    progress: ProgressCallback | None = None,
) -> PipelineReport:
    """Analyses image files with each model and writes the export bundle into ``out_dir``.

    The files and ``summary.json`` entries are those of :func:`attnviz.io.export.export_files` for
    every ``(image, model)`` result, model by model, images in the given order (unreadable ones
    left out); they are written batch by batch while the next batch runs, and ``summary.json``
    last. Nothing is written when no image can be read. When the run fails half-way, the results
    written so far stay, without a new ``summary.json``.

    Args:
        images: image file paths and folders (expanded by :func:`expand_image_paths`); each is read by
            :func:`attnviz.load_image`, once per model, so memory does not grow with their number.
        models: model names from :func:`attnviz.list_models`; duplicates are dropped. They are
            loaded one after the other, never two at a time.
        out_dir: the output folder, created when missing; files of the same name are replaced.
        weights: as for :func:`attnviz.load_model`, used for every model.
        device: as for :func:`attnviz.load_model`.
        batch_size: images per forward, in [1, :data:`MAX_BATCH_SIZE`].
        gradcam: also compute the Grad-CAM baseline.
        autocast: ``None``, ``"bf16"`` or ``"fp16"``, as for :func:`attnviz.analyze`.
        cmap: colormap of the overlays.
        alpha: opacity of the overlays, in [0, 1].
        scale: colour scale of the overlays, ``"absolute"`` or ``"stretched"`` (see
            :mod:`attnviz.core.scales`).
        faithfulness: also score every result's maps (deletion and insertion, see
            :mod:`attnviz.analysis.faithfulness`; target: the Grad-CAM's, else the top-1) with the
            model that made it, and write ``faithfulness.csv`` and the entry's ``"faithfulness"``
            (:func:`attnviz.io.export.export_faithfulness`). Its time counts as forward time.
        road: with ``faithfulness``, also ROAD (slow on a CPU: an imputation per map and percentile).
        progress: called with a :class:`PipelineEvent` at every step, on the calling thread.

    Returns:
        The :class:`PipelineReport`: results and files written, skipped images, timings.

    Raises:
        TypeError: ``images`` or ``models`` is not a sequence, ``batch_size`` not an int,
            ``faithfulness`` or ``road`` not a bool.
        ValueError: no image or model, ``batch_size``/``autocast`` out of range, a bad style,
            ``road`` without ``faithfulness``.
        UnknownModelError, DeviceError: an unknown model or an unavailable device (before any work).
        WeightsUnavailableError, CheckpointError, GPUMemoryError: from loading or running a model.
        OSError: an output file could not be written (raised from the writer thread).
    """
    paths, names = check_args(images, models, batch_size, autocast, cmap, alpha, scale)
    for flag, value in (("faithfulness", faithfulness), ("road", road)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__}")
    if road and not faithfulness:
        raise ValueError("road=True needs faithfulness=True (ROAD is one of the faithfulness metrics)")
    dev = resolve_device(device)
    options = {
        "weights": weights,
        "device": dev,
        "batch_size": batch_size,
        "gradcam": gradcam,
        "autocast": autocast,
        "cmap": cmap,
        "alpha": alpha,
        "scale": scale,
        "faithfulness": faithfulness,
        "road": road,
    }
    run = _Run(paths, names, Path(out_dir), options, progress)
    sampler = GpuSampler(dev)
    start = time.perf_counter()
    try:
        run.decoder.start()
        run.writer.start()
        sampler.start()
        run.execute()
    finally:
        run.stop.set()  # the workers leave their loops; a half-done batch is finished first
        run.decoder.join()
        run.writer.join()
        utilization = sampler.stop()
    wall = time.perf_counter() - start

    report = run.report(wall, utilization)
    log.info(
        "%d results, %d files in %.1f s (%.2f images/s), %d skipped",
        report.results,
        report.files,
        wall,
        report.images_per_s,
        len(report.skipped),
    )
    return report
