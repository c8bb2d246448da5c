"""The two background stages of :mod:`attnviz.workflows.pipeline`: decoding and writing.

:class:`Decoder` reads the images of every model's pass one batch ahead of the forward;
:class:`Writer` renders and writes each analysed batch while the next one runs. Bounded queues
(one item) hold the batches between stages. The functions that read, render and write are given
by the pipeline (it looks them up when a run starts), so the stages hold no I/O policy of their
own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.offline
from PIL import Image

from attnviz import render
from attnviz.core.errors import AttnvizError
from attnviz.core.records import Analysis
from attnviz.workflows.pipeline_results import SkippedImage
from attnviz.workflows.pipeline_threads import (
    POLL_S,
    THREAD_PREFIX,
    Worker,
    get_unless_stopped,
    put_unless_stopped,
)

__all__ = ["END", "Decoded", "Decoder", "Job", "PassEnd", "ResultRenderer", "Writer", "Written"]

ResultRenderer = Callable[[str, Analysis, str, dict[str, bytes], str, float, str], dict[str, Any]]
"""``export_result(image, analysis, folder, files, cmap, alpha, scale) -> summary entry``."""


@dataclass(frozen=True)
class Decoded:
    """A batch of decoded images for one model's pass."""

    model_index: int
    paths: tuple[str, ...]
    images: tuple[Image.Image, ...]
    skipped: tuple[SkippedImage, ...]


@dataclass(frozen=True)
class PassEnd:
    """No more images for this model's pass."""

    model_index: int
    skipped: tuple[SkippedImage, ...]


@dataclass(frozen=True)
class Job:
    """Analysed results for the writer: ``(image, analysis, folder)`` each."""

    model_index: int
    items: tuple[tuple[str, Analysis, str], ...]


@dataclass(frozen=True)
class Written:
    """A job that is on disk, for the calling thread's events and timings."""

    model_index: int
    items: tuple[tuple[str, Analysis, str], ...]
    seconds: float


END = object()
"""Put into :attr:`Writer.inbox` after the last job: no more jobs."""


class Decoder(Worker):
    """Decodes the images of every model's pass, one batch ahead of the forward.

    An image that ``load`` refuses with an :class:`attnviz.AttnvizError` is skipped (and not read
    again in later passes); any other exception ends the thread and reaches the calling thread.
    """

    def __init__(
        self,
        paths: list[str],
        passes: int,
        batch_size: int,
        stop: threading.Event,
        load: Callable[[str], Image.Image],
    ) -> None:
        super().__init__("decode")
        self.outbox: queue.Queue = queue.Queue(maxsize=1)
        self._paths, self._passes, self._batch_size, self._stop = paths, passes, batch_size, stop
        self._load = load

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
                    image = self._load(path)
                except AttnvizError as exc:
                    bad.add(i)
                    skipped.append(SkippedImage(path, " ".join(str(exc).split())))
                    continue
                paths.append(path)
                images.append(image)
                if len(paths) == self._batch_size:
                    batch = Decoded(index, tuple(paths), tuple(images), tuple(skipped))
                    if not put_unless_stopped(self.outbox, batch, self._stop):
                        return
                    paths, images, skipped = [], [], []
            if paths:
                batch = Decoded(index, tuple(paths), tuple(images), tuple(skipped))
                if not put_unless_stopped(self.outbox, batch, self._stop):
                    return
                skipped = []
            if not put_unless_stopped(self.outbox, PassEnd(index, tuple(skipped)), self._stop):
                return

    def next(self) -> Decoded | PassEnd:
        """The next batch or end of pass (calling thread); re-raises the decoder's exception."""
        while True:
            try:
                return self.outbox.get(timeout=POLL_S)
            except queue.Empty:
                if self.alive():
                    continue
            try:  # it may have put its last item just before it ended
                return self.outbox.get_nowait()
            except queue.Empty:
                self.raise_if_failed()
                raise RuntimeError(f"{THREAD_PREFIX}: the decoder stopped early") from None


class Writer(Worker):
    """Renders and writes every job's files, in order; keeps the ``summary.json`` entries.

    The first job's files include ``plotly.min.js``. Each finished job goes to :attr:`outbox` as a
    :class:`Written`, for the calling thread to report.
    """

    def __init__(
        self,
        out_dir: Path,
        style: tuple[str, float, str],
        stop: threading.Event,
        render_result: ResultRenderer,
        write: Callable[[Mapping[str, bytes], Path], object],
    ) -> None:
        super().__init__("write")
        self.inbox: queue.Queue = queue.Queue(maxsize=1)
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()  # small: drained after every batch
        self.entries: list[dict[str, Any]] = []
        self.files = 0
        self._out_dir, self._style, self._stop = out_dir, style, stop
        self._render_result, self._write = render_result, write

    def work(self) -> None:
        cmap, alpha, scale = self._style
        while True:
            job = get_unless_stopped(self.inbox, self._stop)
            if not isinstance(job, Job):  # END, or None once the run was stopped
                return
            start = time.perf_counter()
            files: dict[str, bytes] = {}
            if not self.files:
                files[render.PLOTLYJS_FILENAME] = plotly.offline.get_plotlyjs().encode("utf-8")
            entries = [
                self._render_result(image, analysis, folder, files, cmap, alpha, scale)
                for image, analysis, folder in job.items
            ]
            self._write(files, self._out_dir)
            self.entries.extend(entries)
            self.files += len(files)
            self.outbox.put(Written(job.model_index, job.items, time.perf_counter() - start))
