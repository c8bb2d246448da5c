"""Progress of ``attnviz analyze`` on stderr: one bar per model, or periodic lines off a terminal.

:class:`FolderProgress` is driven by the :class:`~attnviz.workflows.pipeline.PipelineEvent`\\ s of a
run (local or on Ray: the events are the same). Each model counts its ``"written"`` results against
the number of images, less the unreadable ones (``"skipped"``). On a terminal each model gets a
``tqdm`` bar (done/total, img/s, ETA); elsewhere (a pipe, a log file, CI, tests) a bar would be
noise, so a line ``attnviz: [model] 40/200 images, 12.3 img/s, ETA 13 s`` is written every
:attr:`FolderProgress.period_s` seconds and once when the model's pass ends.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

from attnviz.cli.console import PROG, note
from attnviz.workflows.pipeline_results import PipelineEvent

__all__ = ["FolderProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``"4.2 s"``, ``"13 s"``, ``"2 min 05 s"`` or ``"1 h 02 min"``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _rate(rate: float | None) -> str:
    if rate is None:
        return "- img/s"
    return f"{rate:.1f} img/s" if rate >= 1 else f"{rate:.2f} img/s"


@dataclass
class _Pass:
    """One model's progress."""

    start: float
    done: int = 0
    last_line: float = 0.0
    finished: bool = False
    bar: tqdm | None = None


class FolderProgress:
    """Per-model progress of a folder run on ``err``, fed with pipeline events.

    Args:
        err: where it goes (stderr).
        images: the image paths of the run, folders expanded (a path given twice counts twice).
        tty: draw bars (True) or write periodic lines (False); None asks ``err.isatty()``.
        period_s: seconds between two lines off a terminal; None keeps :attr:`period_s`.
        clock: seconds of a monotonic clock, for the lines' rate and ETA (tests pass a fake one).
    """

    period_s: float = 10.0
    """Seconds between two progress lines when ``err`` is not a terminal."""

    def __init__(
        self,
        err: TextIO,
        images: Iterable[str],
        *,
        tty: bool | None = None,
        period_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.err = err
        self.tty = _isatty(err) if tty is None else tty
        if period_s is not None:
            self.period_s = period_s
        self.clock = clock
        self._counts = Counter(images)
        self._images = sum(self._counts.values())
        self._skipped: set[str] = set()
        self._unreadable = 0
        self._passes: dict[str, _Pass] = {}

    @property
    def total(self) -> int:
        """Results each model is expected to write: the images less the unreadable ones seen so far."""
        return max(0, self._images - self._unreadable)

    def __call__(self, event: PipelineEvent) -> None:
        """Takes one event: ``"analysing"`` starts a model's count, ``"written"`` adds to it,
        ``"skipped"`` lowers every model's total; the others are not counted."""
        if event.kind == "analysing" and event.model is not None:
            self._start(event.model)
        elif event.kind == "skipped" and event.image is not None:
            self._skip(event.image)
        elif event.kind == "written" and event.model is not None:
            state = self._start(event.model)
            state.done += 1
            if self.tty and not state.finished:
                self._bar(event.model, state).update(1)
            self._check(event.model, state)

    def note(self, message: str) -> None:
        """Writes ``attnviz: <message>`` on ``err`` without breaking a bar being drawn."""
        if self._bars_open():
            tqdm.write(f"{PROG}: {message}", file=self.err)
            self.err.flush()
        else:
            note(self.err, message)

    def write(self, stream: TextIO, text: str) -> None:
        """Writes ``text`` on ``stream`` (stdout); bars sharing the terminal are cleared and redrawn."""
        if self._bars_open():
            with tqdm.external_write_mode(file=stream):
                stream.write(text)
                stream.flush()
        else:
            stream.write(text)
            stream.flush()

    @contextmanager
    def logs_above_bars(self) -> Iterator[None]:
        """Within: the log handlers writing to ``err`` (``-v``'s INFO logs) clear the bars before
        each record and redraw them after, as :meth:`note` does; off a terminal nothing changes."""
        swapped: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
        if self.tty:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is self.err:
                    swapped.append((handler, handler.stream))
                    handler.setStream(_AboveBars(self.err))
        try:
            yield
        finally:
            for handler, stream in swapped:
                handler.setStream(stream)

    def close(self) -> None:
        """Closes the bars still open (a run that failed half-way); nothing else is written."""
        for state in self._passes.values():
            if state.bar is not None:
                state.bar.close()
                state.bar = None

    # ----------------------------------------------------------------------------------------------

    def _start(self, model: str) -> _Pass:
        state = self._passes.get(model)
        if state is None:
            now = self.clock()
            state = self._passes[model] = _Pass(start=now, last_line=now)
        return state

    def _bar(self, model: str, state: _Pass) -> tqdm:
        """The model's bar, drawn from its first result on: the previous model's last results
        come after the next model is loaded, and two bars at once would move each other."""
        if state.bar is None:
            state.bar = tqdm(
                total=self.total,
                desc=model,
                unit="img",
                file=self.err,
                leave=True,
                smoothing=0,  # the average rate: results come in bursts of a batch
                dynamic_ncols=True,
                disable=False,
            )
            state.bar.start_t -= self.clock() - state.start  # the rate counts from "analysing"
        return state.bar

    def _skip(self, image: str) -> None:
        if image in self._skipped:
            return
        self._skipped.add(image)
        self._unreadable += self._counts.get(image, 1)
        for model, state in list(self._passes.items()):
            if state.bar is not None and not state.finished:
                state.bar.total = self.total
                state.bar.refresh()
            self._check(model, state, line=False)

    def _check(self, model: str, state: _Pass, *, line: bool = True) -> None:
        """Ends the model's pass when every expected result is written, else a line when due."""
        if state.finished:
            return
        if state.done >= self.total:
            state.finished = True
            if state.bar is not None:
                state.bar.close()
                state.bar = None
            else:
                self._line(model, state, final=True)
        elif line and not self.tty and self.clock() - state.last_line >= self.period_s:
            self._line(model, state, final=False)

    def _line(self, model: str, state: _Pass, *, final: bool) -> None:
        now = self.clock()
        state.last_line = now
        elapsed = now - state.start
        rate = state.done / elapsed if elapsed > 0 else None
        if final:
            tail = f"done in {format_duration(elapsed)}"
        elif rate:
            tail = f"ETA {format_duration((self.total - state.done) / rate)}"
        else:
            tail = "ETA ?"
        note(self.err, f"[{model}] {state.done}/{self.total} images, {_rate(rate)}, {tail}")

    def _bars_open(self) -> bool:
        return any(state.bar is not None for state in self._passes.values())


class _AboveBars:
    """A stream for a log handler: each write (one whole record) clears the bars on the same
    terminal first and redraws them after."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        with tqdm.external_write_mode(file=self.stream):
            written = self.stream.write(text)
            self.stream.flush()
        return written

    def flush(self) -> None:
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
