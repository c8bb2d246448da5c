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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import plotly.offline
import torch
from PIL import Image

from attnviz import render
from attnviz.analysis import AUTOCAST_DTYPES, analyze
from attnviz.backends import get_spec, load_model
from attnviz.core.errors import AttnvizError
from attnviz.core.records import Analysis
from attnviz.io.export import (
    SUMMARY_FILENAME,
    FolderNames,
    export_result,
    summary_json,
    validate_style,
    write_bundle,
)
from attnviz.io.images import ALLOWED_EXTENSIONS, load_image
from attnviz.runtime import resolve_device

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "IMAGE_EXTENSIONS",
    "MAX_BATCH_SIZE",
    "THREAD_PREFIX",
    "ModelTiming",
    "PipelineEvent",
    "PipelineReport",
    "ProgressCallback",
    "SkippedImage",
    "analyze_to_folder",
    "expand_image_paths",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8
"""Images per forward when the caller does not say."""

MAX_BATCH_SIZE = 64
"""Largest accepted batch size (memory grows with it: decoded images and results of ~3 batches)."""

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(f".{ext}" for ext in ALLOWED_EXTENSIONS)
"""File name extensions a folder is expanded to (case-insensitive): the formats ``load_image``
reads. Files named otherwise are left out of a folder; a file given by name is read whatever its
name, and its content decides."""

THREAD_PREFIX = "attnviz-pipeline"
"""Name prefix of every thread a run starts (all are joined before it returns or raises)."""

_POLL_S = 0.1  # how often a blocked queue operation looks whether the run was stopped
_GPU_SAMPLE_S = 0.2

EventKind = Literal["loading", "download", "analysing", "skipped", "written"]


# --------------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------------


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
    """What a run of :func:`analyze_to_folder` did.

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


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def expand_image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expands folders into their image files; files are kept as given.

    A folder gives its regular files whose extension is in :data:`IMAGE_EXTENSIONS`
    (case-insensitive), sorted by name, hidden files (a leading dot) left out; it is not searched
    recursively. Anything else (a file, a missing path) is kept as is: :func:`attnviz.load_image`
    decides later, by content.

    Args:
        paths: files and folders.

    Returns:
        The image paths as strings, folders replaced by their files, in the given order.

    Raises:
        ValueError: a folder holds no image file.
        OSError: a folder cannot be listed.
    """
    out: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if not os.path.isdir(path):
            out.append(path)
            continue
        with os.scandir(path) as entries:
            names = sorted(
                e.name
                for e in entries
                if not e.name.startswith(".")
                and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                and e.is_file()
            )
        if not names:
            kinds = ", ".join(IMAGE_EXTENSIONS)
            raise ValueError(f"the folder {path} holds no image files ({kinds})")
        out.extend(os.path.join(path, name) for name in names)
    return out


# --------------------------------------------------------------------------------------------------
# Threads and queues
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    """A batch of decoded images for one model's pass."""

    model_index: int
    paths: tuple[str, ...]
    images: tuple[Image.Image, ...]
    skipped: tuple[SkippedImage, ...]


@dataclass(frozen=True)
class _PassEnd:
    """No more images for this model's pass."""

    model_index: int
    skipped: tuple[SkippedImage, ...]


@dataclass(frozen=True)
class _Job:
    """Analysed results for the writer: ``(image, analysis, folder)`` each."""

    model_index: int
    items: tuple[tuple[str, Analysis, str], ...]


@dataclass(frozen=True)
class _Written:
    """A job that is on disk, for the calling thread's events and timings."""

    model_index: int
    items: tuple[tuple[str, Analysis, str], ...]
    seconds: float


_END = object()  # no more jobs for the writer


class _Worker:
    """A named daemon thread running ``work()``; its exception is kept for the calling thread."""

    def __init__(self, role: str) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{role}", daemon=True)

    def work(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


def _put(box: queue.Queue, item: object, stop: threading.Event, consumer: _Worker | None = None) -> bool:
    """Puts ``item``, waiting while ``box`` is full; False when the run was stopped meanwhile.

    Raises the consumer's exception when it died, instead of waiting for it forever.
    """
    while not stop.is_set():
        if consumer is not None and not consumer.alive():
            consumer.raise_if_failed()
            raise RuntimeError(f"{THREAD_PREFIX}: a worker thread stopped early")
        try:
            box.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(box: queue.Queue, stop: threading.Event) -> object | None:
    """The next item, or None once the run was stopped."""
    while not stop.is_set():
        try:
            return box.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return None


class _Decoder(_Worker):
    """Decodes the images of every model's pass, one batch ahead of the forward."""

    def __init__(self, paths: list[str], passes: int, batch_size: int, stop: threading.Event) -> None:
        super().__init__("decode")
        self.outbox: queue.Queue = queue.Queue(maxsize=1)
        self._paths, self._passes, self._batch_size, self._stop = paths, passes, batch_size, stop

    def work(self) -> None:
        bad: set[int] = set()  # unreadable in an earlier pass: not read again
        for index in range(self._passes):
            paths: list[str] = []
            images: list[Image.Image] = []
            skipped: list[SkippedImage] = []
            for i, path in enumerate(self._paths):
                if i in bad:
                    continue
                if self._stop.is_set():
                    return
                try:
                    image = load_image(path)
                except AttnvizError as exc:
                    bad.add(i)
                    skipped.append(SkippedImage(path, " ".join(str(exc).split())))
                    continue
                paths.append(path)
                images.append(image)
                if len(paths) == self._batch_size:
                    batch = _Decoded(index, tuple(paths), tuple(images), tuple(skipped))
                    if not _put(self.outbox, batch, self._stop):
                        return
                    paths, images, skipped = [], [], []
            if paths:
                batch = _Decoded(index, tuple(paths), tuple(images), tuple(skipped))
                if not _put(self.outbox, batch, self._stop):
                    return
                skipped = []
            if not _put(self.outbox, _PassEnd(index, tuple(skipped)), self._stop):
                return

    def next(self) -> _Decoded | _PassEnd:
        """The next batch or end of pass (calling thread); re-raises the decoder's exception."""
        while True:
            try:
                return self.outbox.get(timeout=_POLL_S)
            except queue.Empty:
                if self.alive():
                    continue
            try:  # it may have put its last item just before it ended
                return self.outbox.get_nowait()
            except queue.Empty:
                self.raise_if_failed()
                raise RuntimeError(f"{THREAD_PREFIX}: the decoder stopped early") from None


class _Writer(_Worker):
    """Renders and writes every job's files, in order; keeps the ``summary.json`` entries."""

    def __init__(self, out_dir: Path, cmap: str, alpha: float, scale: str, stop: threading.Event) -> None:
        super().__init__("write")
        self.inbox: queue.Queue = queue.Queue(maxsize=1)
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()  # small: drained after every batch
        self.entries: list[dict[str, Any]] = []
        self.files = 0
        self._out_dir, self._cmap, self._alpha, self._scale, self._stop = out_dir, cmap, alpha, scale, stop

    def work(self) -> None:
        while True:
            job = _get(self.inbox, self._stop)
            if not isinstance(job, _Job):  # _END, or None once the run was stopped
                return
            start = time.perf_counter()
            files: dict[str, bytes] = {}
            if not self.files:
                files[render.PLOTLYJS_FILENAME] = plotly.offline.get_plotlyjs().encode("utf-8")
            entries = [
                export_result(image, analysis, folder, files, self._cmap, self._alpha, self._scale)
                for image, analysis, folder in job.items
            ]
            write_bundle(files, self._out_dir)
            self.entries.extend(entries)
            self.files += len(files)
            self.outbox.put(_Written(job.model_index, job.items, time.perf_counter() - start))


class _GpuSampler:
    """Samples ``torch.cuda.utilization`` on a thread while a run lasts; a no-op off CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type != "cuda":
            return
        try:
            torch.cuda.utilization(device)
        except Exception as exc:  # needs pynvml and a driver that answers; any failure: no figure
            log.info("GPU utilisation is not available: %s", exc)
            return
        self._thread = threading.Thread(
            target=self._run, args=(device,), name=f"{THREAD_PREFIX}-gpu", daemon=True
        )

    def _run(self, device: torch.device) -> None:
        while True:
            try:
                self.samples.append(float(torch.cuda.utilization(device)))
            except Exception as exc:  # as above: stop sampling, keep what was measured
                log.info("GPU utilisation sampling stopped: %s", exc)
                return
            if self._stop.wait(_GPU_SAMPLE_S):
                return

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def stop(self) -> float | None:
        """Stops sampling; the mean utilisation in percent, or None without samples."""
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None


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


class _Run:
    """The calling thread's side of one :func:`analyze_to_folder` call."""

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
        self.decoder = _Decoder(paths, len(models), options["batch_size"], self.stop)
        self.writer = _Writer(out_dir, options["cmap"], options["alpha"], options["scale"], self.stop)
        self.folders = FolderNames()
        self.skipped: dict[str, SkippedImage] = {}
        self.tallies = [_Tally() for _ in models]
        self.written = 0

    def emit(self, event: PipelineEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def execute(self) -> None:
        for index, name in enumerate(self.models):
            self._model_pass(index, name)
        if not _put(self.writer.inbox, _END, self.stop, self.writer):
            return
        self.writer.join()
        self.writer.raise_if_failed()
        self._drain()
        if self.writer.entries:
            write_bundle({SUMMARY_FILENAME: summary_json(self.writer.entries)}, self.out_dir)
            self.writer.files += 1

    def _model_pass(self, index: int, name: str) -> None:
        item = self._next()
        if isinstance(item, _PassEnd):  # no readable image left: do not even load the model
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
        while isinstance(item, _Decoded):
            start = time.perf_counter()
            results = analyze(model, list(item.images), gradcam=opts["gradcam"], autocast=opts["autocast"])
            tally.forward_s += time.perf_counter() - start
            tally.batches += 1
            items = tuple(
                (path, analysis, self.folders(path, analysis.model))
                for path, analysis in zip(item.paths, results, strict=True)
            )
            del results
            if not _put(self.writer.inbox, _Job(index, items), self.stop, self.writer):
                return
            self._drain()
            item = self._next()
        del model  # one model in memory at a time

    def _next(self) -> _Decoded | _PassEnd:
        item = self.decoder.next()
        for skip in item.skipped:
            if skip.path not in self.skipped:
                self.skipped[skip.path] = skip
                self.emit(PipelineEvent("skipped", None, skip.message, image=skip.path))
        return item

    def _drain(self) -> None:
        """Events and timings for every job the writer finished so far."""
        self.writer.raise_if_failed()
        total = len(self.paths) * len(self.models)
        while True:
            try:
                done: _Written = self.writer.outbox.get_nowait()
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


def _check_args(
    images: Sequence[str | os.PathLike[str]],
    models: Sequence[str],
    batch_size: int,
    autocast: str | None,
    cmap: str,
    alpha: float,
    scale: str = "absolute",
) -> tuple[list[str], list[str]]:
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
        progress: called with a :class:`PipelineEvent` at every step, on the calling thread.

    Returns:
        The :class:`PipelineReport`: results and files written, skipped images, timings.

    Raises:
        TypeError: ``images`` or ``models`` is not a sequence, ``batch_size`` not an int.
        ValueError: no image or model, ``batch_size``/``autocast`` out of range, a bad style.
        UnknownModelError, DeviceError: an unknown model or an unavailable device (before any work).
        WeightsUnavailableError, CheckpointError, GPUMemoryError: from loading or running a model.
        OSError: an output file could not be written (raised from the writer thread).
    """
    paths, names = _check_args(images, models, batch_size, autocast, cmap, alpha, scale)
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
    }
    run = _Run(paths, names, Path(out_dir), options, progress)
    sampler = _GpuSampler(dev)
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

    timings = tuple(
        ModelTiming(name, t.results, t.batches, t.load_s, t.forward_s, t.write_s)
        for name, t in zip(names, run.tallies, strict=True)
    )
    report = PipelineReport(
        out_dir=Path(out_dir),
        results=run.written,
        files=run.writer.files,
        skipped=tuple(run.skipped.values()),
        models=timings,
        wall_s=wall,
        images_per_s=run.written / wall if wall > 0 else 0.0,
        gpu_utilization=utilization,
    )
    log.info(
        "%d results, %d files in %.1f s (%.2f images/s), %d skipped",
        report.results,
        report.files,
        wall,
        report.images_per_s,
        len(report.skipped),
    )
    return report
