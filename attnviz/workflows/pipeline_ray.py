"""The batch folder pipeline on Ray Data: :func:`analyze_to_folder_on_ray`.

It does the work of :func:`attnviz.workflows.pipeline.analyze_to_folder` and writes exactly its
files (folder names, ``summary.json`` entries and their order, skip messages), with the same
:class:`PipelineEvent` kinds and :class:`PipelineReport` fields; reading and forwards run on Ray::

    stage 1   Ray Data tasks    load_image on every path: readable, or why not
    driver                      batches of batch_size consecutive readable images
    stage 2   Ray Data actors   per model, in model order: load_model once, then for each batch
                                load_image + analyze; the Analysis records come back pickled
    driver    writer thread     render + write (attnviz.io.export), summary.json last

The driver renders and writes, so that the files land on the driver's disk even when the actors run
on other nodes of a multi-node cluster (only the compact records travel). The workers read the
images and the weights themselves: on a multi-node cluster they must be at the same path on every
node (a relative path is taken from the driver's working directory).

Same bytes as the local run: the driver composes the batches from stage 1's answers exactly as the
local decoder does, so every forward sees the same images; each actor sets torch's thread count to
the driver's (Ray gives a worker ``OMP_NUM_THREADS`` from its CPU request, and another thread count
may sum in another order); results are taken in batch order (``preserve_order`` is set for the run,
and a batch that still came early would wait), and the writer is the local pipeline's own
:class:`~attnviz.workflows.pipeline_stages.Writer`. The ``"download"`` events are those the first
batch's actor met while loading its model, sent with that batch; ``gpu_utilization`` is None.

Connection: the Ray this process is connected to, else ``ray.init(address or "auto")``, shut down
again at the end. A ``host:port`` or ``ray://host:port`` address is probed first (TCP, 3 s), even
when Ray is already connected, so that an unreachable cluster fails in seconds with one sentence;
an explicit address that is not the connected cluster's GCS address is refused, not ignored.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnviz.core.errors import AttnvizError
from attnviz.runtime import resolve_device
from attnviz.serving.client import join
from attnviz.workflows.pipeline import DEFAULT_BATCH_SIZE, RunBase, check_args
from attnviz.workflows.pipeline_results import (
    PipelineEvent,
    PipelineReport,
    ProgressCallback,
    SkippedImage,
)
from attnviz.workflows.pipeline_stages import Job
from attnviz.workflows.pipeline_threads import put_unless_stopped

__all__ = ["analyze_to_folder_on_ray"]

log = logging.getLogger(__name__)


def _connect(address: str | None) -> bool:
    """Joins Ray (see the module docstring); True when this call connected and must disconnect."""
    return join(
        address,
        hint="start it with `ray start --head` or correct the address",
        no_cluster=(
            "No Ray cluster runs on this machine: start one with `ray start --head`, or name one "
            "(--ray HOST:6379 or ray://HOST:10001)."
        ),
    )


@contextlib.contextmanager
def _preserve_order() -> Iterator[None]:
    """Ray Data keeps the rows' order in datasets created meanwhile (each copies the context), and
    keeps quiet: the command shows its own progress, so Ray Data's bars and INFO lines are off."""
    import ray.data

    context = ray.data.DataContext.get_current()
    before = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = before
        data_log.setLevel(level)


def _load(path: str, cwd: str) -> Any:
    """``load_image`` as on the driver: a relative path is the driver's; messages name it as given."""
    from attnviz.io.images import load_image

    return load_image(path if not path or os.path.isabs(path) else os.path.join(cwd, path), name=path)


def _readable(batch: dict[str, np.ndarray], cwd: str) -> dict[str, np.ndarray]:
    """Stage 1: each path's skip message as the local decoder words it; ``""`` when it loads."""
    messages = []
    for path in batch["path"]:
        try:
            _load(str(path), cwd)
            messages.append("")
        except AttnvizError as exc:
            messages.append(" ".join(str(exc).split()))
    return {"index": batch["index"], "message": np.array(messages, dtype=object)}


class _ModelActor:
    """Stage 2: one model, loaded once; each row (a batch of paths) -> its pickled analyses.

    An :class:`AttnvizError` (weights missing on the worker, a GPU out of memory) is sent back in
    the payload and raised again on the driver, the library's own error as in a local run.
    """

    def __init__(self, name: str, load: dict[str, Any], run: dict[str, Any], threads: int, cwd: str) -> None:
        from attnviz.backends import load_model

        torch.set_num_threads(threads)  # the driver's count: the same float sums as a local run
        self._cwd, self._run = cwd, run
        self._said: list[tuple[str, float | None]] = []  # load_model's messages, sent with each batch
        self._error: AttnvizError | None = None
        start = time.perf_counter()
        try:
            self._model = load_model(name, **load, progress=lambda *said: self._said.append(said))
        except AttnvizError as exc:
            self._error = exc
        self._load_s = time.perf_counter() - start

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from attnviz.analysis import analyze

        payloads = []
        for paths in batch["paths"]:
            start, results, error = time.perf_counter(), None, self._error
            if error is None:
                try:
                    images = [_load(str(p), self._cwd) for p in paths]
                    start = time.perf_counter()
                    results = analyze(self._model, images, **self._run)
                except AttnvizError as exc:
                    error = exc
            answer = (results, time.perf_counter() - start, self._load_s, self._said, error)
            payloads.append(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        return {"batch": batch["batch"], "payload": np.array(payloads, dtype=object)}


@dataclass(frozen=True)
class _Batch:
    """A forward's images, with the unreadable ones met since the previous batch (the local order)."""

    paths: tuple[str, ...]
    skipped: tuple[SkippedImage, ...]


def _compose(
    paths: list[str], messages: list[str], size: int
) -> tuple[list[_Batch], tuple[SkippedImage, ...]]:
    """The batches the local decoder forms, and the skips it meets after the last one."""
    batches: list[_Batch] = []
    todo: list[str] = []
    skipped: list[SkippedImage] = []
    for path, message in zip(paths, messages, strict=True):
        if message:
            skipped.append(SkippedImage(path, message))
            continue
        todo.append(path)
        if len(todo) == size:
            batches.append(_Batch(tuple(todo), tuple(skipped)))
            todo, skipped = [], []
    if todo:
        batches.append(_Batch(tuple(todo), tuple(skipped)))
        skipped = []
    return batches, tuple(skipped)


class _RayRun(RunBase):
    """The driver's side of one :func:`analyze_to_folder_on_ray` call (the writer, tallies and
    events are the local run's: :class:`~attnviz.workflows.pipeline.RunBase`)."""

    def __init__(self, *args: Any) -> None:  # RunBase's
        super().__init__(*args)
        self.cwd = os.getcwd()

    def say(
        self, kind: Any, model: str | None, message: str, fraction: float | None = None, **kw: Any
    ) -> None:
        self.emit(PipelineEvent(kind, model, message, fraction, **kw))

    def skip(self, skipped: tuple[SkippedImage, ...]) -> None:
        for item in skipped:
            if item.path not in self.skipped:
                self.skipped[item.path] = item
                self.say("skipped", None, item.message, image=item.path)

    def execute(self) -> None:
        batches, tail = _compose(self.paths, self._messages(), self.options["batch_size"])
        for index, name in enumerate(self.models):
            self._model_pass(index, name, batches, tail)
        self.finish()

    def _messages(self) -> list[str]:
        """Stage 1, in parallel tasks of batch_size paths: each path's skip message."""
        import ray.data

        rows = [{"index": i, "path": p} for i, p in enumerate(self.paths)]
        blocks = -(-len(rows) // self.options["batch_size"])
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            functools.partial(_readable, cwd=self.cwd), batch_format="numpy", num_cpus=self.options["cpus"]
        )
        messages = [""] * len(rows)
        for row in ds.iter_rows():
            messages[int(row["index"])] = str(row["message"])
        return messages

    def _model_pass(
        self, index: int, name: str, batches: list[_Batch], tail: tuple[SkippedImage, ...]
    ) -> None:
        import ray.data

        opts, tally = self.options, self.tallies[index]
        if index == 0:  # the first pass meets the skips as it goes; later ones know them all
            self.skip(batches[0].skipped if batches else tail)
        if not batches:  # no readable image: do not even start an actor
            log.info("%s: no image to analyse", name)
            return
        self.say("loading", name, f"loading ({opts['weights']} weights)")
        todo = f"{'up to ' if index == 0 else ''}{len(self.paths) - len(self.skipped)}"
        load = {"weights": opts["weights"], "device": "cuda" if opts["gpus"] else "cpu"}  # the GPU Ray gave
        run = {"gradcam": opts["gradcam"], "autocast": opts["autocast"]}
        rows = [{"batch": k, "paths": list(b.paths)} for k, b in enumerate(batches)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ModelActor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=opts["actors"]),
            num_cpus=opts["cpus"],
            num_gpus=opts["gpus"],
            fn_constructor_args=(name, load, run, opts["threads"], self.cwd),
        )
        early: dict[int, bytes] = {}  # a batch that came before its turn (never, with preserve_order)
        rows_back = iter(ds.iter_rows())
        try:
            for row in rows_back:
                early[int(row["batch"])] = row["payload"]
                while tally.batches in early:
                    k = tally.batches
                    analyses, forward_s, load_s, said, error = pickle.loads(early.pop(k))
                    for message, fraction in said if k == 0 else ():  # what its actor met loading it
                        self.say("download", name, message, fraction)
                    if error is not None:
                        raise error
                    if k == 0:  # the model is ready
                        device, size = opts["device"], opts["batch_size"]
                        self.say(
                            "analysing", name, f"analysing {todo} image(s) on {device} in batches of {size}"
                        )
                    elif index == 0:
                        self.skip(batches[k].skipped)
                    tally.batches, tally.forward_s = k + 1, tally.forward_s + forward_s
                    tally.load_s = max(tally.load_s, load_s)
                    items = tuple(
                        (path, analysis, self.folders(path, analysis.model))
                        for path, analysis in zip(batches[k].paths, analyses, strict=True)
                    )
                    del analyses
                    if not put_unless_stopped(self.writer.inbox, Job(index, items), self.stop, self.writer):
                        return
                    self._drain()  # events as each batch arrives, not at the end
        finally:
            getattr(rows_back, "close", lambda: None)()  # ends Ray Data's execution when left early
        if index == 0:
            self.skip(tail)


def analyze_to_folder_on_ray(
    images: Sequence[str | os.PathLike[str]],
    models: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    weights: str | os.PathLike[str] = "pretrained",
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    gradcam: bool = True,
    autocast: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    scale: str = "absolute",
    progress: ProgressCallback | None = None,
    actors_per_model: int | None = None,
    cpus_per_actor: float = 1.0,
) -> PipelineReport:
    """:func:`~attnviz.workflows.pipeline.analyze_to_folder` with the reading and forwards on Ray Data.

    The files, ``summary.json``, skips, events and report are the local run's (the module docstring
    says how). The other arguments are :func:`~attnviz.workflows.pipeline.analyze_to_folder`'s.

    Args:
        address: the Ray cluster: ``host:port`` (its GCS, what ``ray start --head`` prints),
            ``ray://host:port``, ``"auto"``, or None: the Ray this process is connected to, else
            ``"auto"``. A ``host:port`` address is probed first, connected or not.
        actors_per_model: actors (copies of the model) sharing one model's batches; None: 1.
        cpus_per_actor: CPUs each actor, and each reading task of stage 1, asks Ray for. On CUDA
            each actor also asks for one GPU.

    Returns:
        The :class:`PipelineReport`: ``forward_s`` summed over the actors, ``load_s`` the longest
        model load among them, ``gpu_utilization`` None.

    Raises:
        ServingError: no cluster runs there or it cannot be reached, or this process is connected
            to another one (before any work).
        TypeError, ValueError, UnknownModelError, DeviceError: bad arguments, before any work.
        WeightsUnavailableError, CheckpointError, GPUMemoryError, OSError: as for the local run; a
            library error on a worker is raised again as itself, any other error there arrives
            wrapped in Ray's exception types.
    """
    paths, names = check_args(images, models, batch_size, autocast, cmap, alpha, scale)
    dev = resolve_device(device)
    if isinstance(actors_per_model, bool) or not isinstance(actors_per_model, int | None):
        raise TypeError(f"actors_per_model must be an int or None, got {type(actors_per_model).__name__}")
    if isinstance(cpus_per_actor, bool) or not isinstance(cpus_per_actor, int | float):
        raise TypeError(f"cpus_per_actor must be a number, got {type(cpus_per_actor).__name__}")
    if (actors_per_model is not None and actors_per_model < 1) or not cpus_per_actor > 0:
        raise ValueError(
            f"actors_per_model ({actors_per_model}) and cpus_per_actor ({cpus_per_actor}) must be positive"
        )
    options = dict(
        weights=weights, device=dev, batch_size=batch_size, gradcam=gradcam, autocast=autocast,
        cmap=cmap, alpha=alpha, scale=scale, progress=progress, threads=torch.get_num_threads(),
        actors=actors_per_model or 1, cpus=cpus_per_actor, gpus=1 if dev.type == "cuda" else 0,
    )  # fmt: skip
    run = _RayRun(paths, names, Path(out_dir), options, progress)
    started = _connect(address)
    start = time.perf_counter()
    try:
        with _preserve_order():
            run.writer.start()
            run.execute()
    finally:
        run.stop.set()  # the writer leaves its loop; a half-done batch is finished first
        run.writer.join()
        if started:
            import ray

            ray.shutdown()
    return run.report(time.perf_counter() - start, None)
