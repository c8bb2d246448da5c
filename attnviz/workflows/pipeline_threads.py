"""The threads of :mod:`attnviz.workflows.pipeline`: a worker base, stoppable hand-offs, a GPU sampler.

Every thread is a named daemon (:data:`THREAD_PREFIX`) that the pipeline joins before it returns or
raises. A worker keeps its exception for the calling thread; a blocked hand-off looks every
:data:`POLL_S` seconds whether the run was stopped, and raises the consumer's exception when the
consumer died, instead of waiting for it forever.
"""

from __future__ import annotations

import logging
import queue
import threading

import torch

__all__ = ["POLL_S", "THREAD_PREFIX", "GpuSampler", "Worker", "get_unless_stopped", "put_unless_stopped"]

log = logging.getLogger(__name__)

THREAD_PREFIX = "attnviz-pipeline"
"""Name prefix of every thread a run starts (all are joined before it returns or raises)."""

POLL_S = 0.1
"""How often a blocked queue operation looks whether the run was stopped, in seconds."""

_GPU_SAMPLE_S = 0.2


class Worker:
    """A named daemon thread running ``work()``; its exception is kept for the calling thread."""

    def __init__(self, role: str) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{role}", daemon=True)

    def work(self) -> None:
        """The thread's job; subclasses implement it."""
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Waits for the thread, if it was started."""
        if self._thread.ident is not None:
            self._thread.join()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def raise_if_failed(self) -> None:
        """Re-raises the exception that ended ``work()``, if any, on the calling thread."""
        if self.error is not None:
            raise self.error


def put_unless_stopped(
    box: queue.Queue, item: object, stop: threading.Event, consumer: Worker | None = None
) -> bool:
    """Puts ``item``, waiting while ``box`` is full; False when the run was stopped meanwhile.

    Raises the consumer's exception when it died, instead of waiting for it forever.
    """
    while not stop.is_set():
        if consumer is not None and not consumer.alive():
            consumer.raise_if_failed()
            raise RuntimeError(f"{THREAD_PREFIX}: a worker thread stopped early")
        try:
            box.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def get_unless_stopped(box: queue.Queue, stop: threading.Event) -> object | None:
    """The next item, or None once the run was stopped."""
    while not stop.is_set():
        try:
            return box.get(timeout=POLL_S)
        except queue.Empty:
            continue
    return None


class GpuSampler:
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
