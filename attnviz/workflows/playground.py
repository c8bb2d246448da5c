"""The attention playground's run: place a module, train it on generated scenes, watch its attention.

A :class:`PlaygroundConfig` says where the module goes (:class:`~attnviz.layers.playground_net.Placement`),
what to learn (:class:`Task`: classes, clutter, object size) and the budget
(:class:`~attnviz.workflows.training.TrainSettings`). :func:`start_run` trains it in a background
thread (a page polls :meth:`PlaygroundRun.state`); :func:`run_playground` does the same synchronously
(the command line, the bench). Both use the one training loop, :func:`attnviz.workflows.training.train`.

Every ``snapshot_every`` steps (and before the first step and after the last) the run measures the
held-out accuracy and takes a :class:`Snapshot`: the module's own attention map and the Grad-CAM map
of the true class on a fixed strip of probe scenes, through the library's analysis path
(:func:`attnviz.analyze` on a :class:`~attnviz.backends.base.LoadedModel` around the module being
trained; the capture removes its hooks after each snapshot), and the energy-in-box ratio and
pointing game of the module's map on the probes and the first held-out scenes.

Limits (:data:`LIMITS`) bound every budget whatever a page sends, and a server-wide cap bounds
concurrent trainings (:func:`max_trainings`: 1 on a CPU-only server, 2 with a GPU, or the
``ATTNVIZ_MAX_TRAININGS`` environment variable); :func:`start_run` raises :class:`PlaygroundBusy`
when it is reached.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnviz.core.errors import AttnvizError
from attnviz.layers.playground_net import Placement, PlaygroundNet
from attnviz.layers.zoo_net import CLASSES, INPUT_SIZE, MEAN, STD
from attnviz.runtime.device import resolve_device
from attnviz.workflows.playground_config import (
    LIMITS,
    PlaygroundBusy,
    PlaygroundConfig,
    RunState,
    Task,
)
from attnviz.workflows.playground_snapshots import (
    SCORE_SCENES,
    Snapshot,
    SnapshotTaker,
    accuracy_on,
    wrap_module,
)
from attnviz.workflows.teaching.cost import analytic_flop_ops
from attnviz.workflows.training import TrainProgress, TrainSettings, train

__all__ = [
    "LIMITS",
    "PlaygroundBusy",
    "PlaygroundConfig",
    "PlaygroundRun",
    "RunState",
    "Snapshot",
    "Task",
    "active_runs",
    "default_config",
    "max_trainings",
    "model_cost",
    "run_card",
    "run_playground",
    "start_run",
]

log = logging.getLogger(__name__)


class _Recorder:
    """The mutable side of a run: collects its curves and snapshots, hands out frozen states."""

    def __init__(self, config: PlaygroundConfig, on_state: Callable[[RunState], None] | None) -> None:
        self.config = config
        self.on_state = on_state
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.status: Literal["running", "done", "stopped", "failed"] = "running"
        self.step = 0
        self.losses: list[tuple[float, float]] = []
        self.accuracy: list[tuple[float, float]] = []
        self.snapshots: list[Snapshot] = []
        size = INPUT_SIZE
        self.probes = np.zeros((0, size, size, 3), dtype=np.uint8)
        self.boxes = np.zeros((0, 4), dtype=np.int64)
        self.labels = np.zeros(0, dtype=np.int64)
        self.message = "starting"
        self.samples_per_s = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def update(self, **changes: object) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)
        if self.on_state is not None:
            self.on_state(self.state())

    def state(self) -> RunState:
        with self.lock:
            return RunState(
                status=self.status,
                step=self.step,
                steps=self.config.train.steps,
                losses=np.array(self.losses, dtype=np.float64).reshape(-1, 2),
                accuracy=np.array(self.accuracy, dtype=np.float64).reshape(-1, 2),
                snapshots=tuple(self.snapshots),
                probes=self.probes,
                boxes=self.boxes,
                message=self.message,
                samples_per_s=self.samples_per_s,
                seconds=self.seconds(),
                probe_labels=self.labels,
                class_names=self.config.task.class_names,
            )


def _execute(config: PlaygroundConfig, rec: _Recorder, cancel: threading.Event) -> nn.Module:
    """The run itself: draw the scenes, build and train the model with snapshots. Raises on failure."""
    task, settings = config.task, config.train
    dev = resolve_device(config.device)
    rec.update(message=f"drawing {task.n_train} training scenes")
    probes, probe_labels, probe_boxes, _ = task.scenes("probe")
    rec.update(probes=probes, boxes=probe_boxes, labels=probe_labels)
    train_images, train_labels, _, _ = task.scenes("train", workers=config.workers)
    eval_images, eval_labels, eval_boxes, _ = task.scenes("eval")
    if cancel.is_set():
        raise _Stopped
    torch.manual_seed(settings.seed)
    model = PlaygroundNet(config.placement, num_classes=task.classes).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loaded = wrap_module(model, config.placement, task.class_names, dev)
    taker = SnapshotTaker(
        loaded, probes, probe_labels, probe_boxes, eval_images, eval_boxes, autocast=config.autocast
    )
    eval_data = torch.from_numpy(eval_images).to(dev)

    def snap(step: int, loss: float) -> None:
        rec.update(message=f"step {step}: measuring accuracy and attention")
        acc = accuracy_on(model, eval_data, eval_labels, dev, config.autocast)
        shot = taker.take(step, loss, acc, rec.seconds())
        with rec.lock:
            rec.snapshots.append(shot)
            rec.accuracy.append((step, acc))
        rec.update(message=f"step {step} of {settings.steps}: held-out accuracy {acc:.0%}")

    snap(0, float("nan"))
    report_every = math.gcd(config.snapshot_every, 10)

    def progress(p: TrainProgress, _model: nn.Module) -> None:
        with rec.lock:
            rec.losses.append((p.step, p.loss))
        rec.update(step=p.step, samples_per_s=p.samples_per_s, message=f"step {p.step} of {p.steps}")
        if not cancel.is_set() and (p.step % config.snapshot_every == 0 or p.step == p.steps):
            snap(p.step, p.loss)

    rec.update(message="training")
    outcome = train(
        model,
        train_images,
        train_labels,
        settings,
        mean=MEAN,
        std=STD,
        device=dev,
        every=report_every,
        on_progress=progress,
        cancel=cancel,
        autocast=config.autocast,
    )
    del train_images, train_labels
    model.requires_grad_(False)
    if outcome.stopped:
        raise _Stopped
    return model


class _Stopped(Exception):
    """The run was asked to stop."""


def _finish(
    config: PlaygroundConfig, rec: _Recorder, cancel: threading.Event
) -> tuple[nn.Module | None, BaseException | None]:
    """Run and record how it ended; returns the model (None unless done) and the failure, if any."""
    try:
        model = _execute(config, rec, cancel)
    except _Stopped:
        rec.update(status="stopped", message=f"stopped after {rec.step} of {config.train.steps} steps")
        return None, None
    except Exception as exc:
        log.exception("playground run failed")
        text = str(exc) if isinstance(exc, AttnvizError) else f"{type(exc).__name__}: {exc}"
        rec.update(status="failed", message=f"the training failed: {text}")
        return None, exc
    last = rec.snapshots[-1].accuracy if rec.snapshots else float("nan")
    rec.update(status="done", message=f"done: {rec.step} steps, held-out accuracy {last:.0%}")
    return model, None


def run_playground(
    config: PlaygroundConfig,
    on_state: Callable[[RunState], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[RunState, nn.Module | None]:
    """Run one playground training synchronously (the command line, the bench).

    Args:
        config: the run.
        on_state: called with the new :class:`RunState` after every change.
        cancel: set it (from another thread) to stop after the current step.

    Returns:
        The final state and the trained model (eval mode, frozen; None when stopped).

    Raises:
        whatever the run raised (the state says ``"failed"`` first).
    """
    if not isinstance(config, PlaygroundConfig):
        raise TypeError(f"config must be a PlaygroundConfig, got {type(config).__name__}")
    rec = _Recorder(config, on_state)
    model, error = _finish(config, rec, cancel or threading.Event())
    if error is not None:
        raise error
    return rec.state(), model


# --- the background run and the server-wide cap --------------------------------------------------

_slots = threading.Lock()
_active: list[PlaygroundRun] = []


def max_trainings() -> int:
    """The server-wide cap on concurrent trainings: ``ATTNVIZ_MAX_TRAININGS``, else 1 (CPU) or 2 (GPU)."""
    text = os.environ.get("ATTNVIZ_MAX_TRAININGS", "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"ATTNVIZ_MAX_TRAININGS must be a positive integer, got {text!r}")
        return value
    return 2 if torch.cuda.is_available() else 1


def active_runs() -> int:
    """How many trainings run now (in this process)."""
    with _slots:
        return len(_active)


class PlaygroundRun:
    """A playground training in a background thread; poll :meth:`state`, end it with :meth:`stop`.

    Attributes:
        config: the run's configuration.
        model: the trained module once the run is done (eval mode, frozen); None before, and
            when it was stopped or failed.
    """

    def __init__(self, config: PlaygroundConfig) -> None:
        self.config = config
        self.model: nn.Module | None = None
        self._cancel = threading.Event()
        self._rec = _Recorder(config, None)
        self._thread = threading.Thread(target=self._main, name="attnviz-playground", daemon=True)

    def _main(self) -> None:
        try:
            self.model, _ = _finish(self.config, self._rec, self._cancel)
        finally:
            with _slots:
                if self in _active:
                    _active.remove(self)

    def state(self) -> RunState:
        """The run's state now."""
        return self._rec.state()

    def stop(self) -> None:
        """Ask the run to stop after its current step (or scene chunk); returns at once."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> RunState:
        """Wait for the run to end (at most ``timeout`` seconds) and return its state."""
        self._thread.join(timeout)
        return self.state()

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()


def start_run(config: PlaygroundConfig) -> PlaygroundRun:
    """Start a playground training in the background.

    Raises:
        PlaygroundBusy: the server already runs :func:`max_trainings` trainings; the message says so.
        TypeError: ``config`` is not a :class:`PlaygroundConfig`.
    """
    if not isinstance(config, PlaygroundConfig):
        raise TypeError(f"config must be a PlaygroundConfig, got {type(config).__name__}")
    cap = max_trainings()
    run = PlaygroundRun(config)
    with _slots:
        if len(_active) >= cap:
            raise PlaygroundBusy(
                f"The server is already training {len(_active)} model{'s' if len(_active) > 1 else ''} "
                f"(at most {cap} at a time): try again when {'it' if len(_active) == 1 else 'one'} ends."
            )
        _active.append(run)
    try:
        run._thread.start()
    except BaseException:
        with _slots:
            _active.remove(run)
        raise
    return run


# --- cost and defaults ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def model_cost(placement: Placement, classes: int = len(CLASSES)) -> tuple[int, int]:
    """Parameters and FLOPs of one 96 px forward of the playground network (eval mode, CPU).

    FLOPs are 2 x multiply-adds of convolutions and matrix products (torch's ``FlopCounterMode``,
    with the analytic formulas of :mod:`attnviz.workflows.teaching.cost`). Torch's global random
    generator is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        model = PlaygroundNet(placement, num_classes=classes).eval()
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False, custom_mapping=analytic_flop_ops())
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    return int(params), int(counter.get_total_flops())


def default_config(
    kind: str = "gc", pattern: Literal["serial", "parallel", "core"] = "serial", stage: int = 2
) -> PlaygroundConfig:
    """The run a page starts from and the bench measures: learns the 10-class task fast on a CPU.

    4000 scenes, 600 steps of 64, peak learning rate 2e-3, a snapshot every 50 steps. On the
    2-core CPU the default module (global context, serial at stage 2, whose softmax over
    positions moves onto the object: energy in the box from 1x to about 10x uniform) reaches 90%
    held-out accuracy after about 42 s and ends at about 96% after 54 s, scenes and snapshots
    included (``python -m attnviz bench`` measures it); CBAM serial at stage 3 needs about 52 s.
    """
    return PlaygroundConfig(
        placement=Placement(kind=kind, pattern=pattern, stage=stage),
        task=Task(),
        train=TrainSettings(),
        snapshot_every=50,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def run_card(config: PlaygroundConfig, state: RunState) -> dict:
    """The card of a finished run, for ``save_user_model`` (plain JSON: no NaN, no arrays).

    Returns:
        ``{"task", "train", "snapshot_every", "curve": {"steps", "loss", "accuracy_steps",
        "accuracy"}, "accuracy", "localisation": {"map", "quantity", "energy_ratio", "pointing",
        "first_energy_ratio", "first_pointing", "scenes"}, "seconds", "samples_per_s"}``.
    """
    last = state.snapshots[-1] if state.snapshots else None
    first = state.snapshots[0] if state.snapshots else None
    localisation = None
    if last is not None and last.maps is not None and first is not None:
        localisation = {
            "map": last.map_label,
            "quantity": last.quantity,
            "energy_ratio": _finite(last.energy_ratio),
            "pointing": _finite(last.pointing),
            "first_energy_ratio": _finite(first.energy_ratio),
            "first_pointing": _finite(first.pointing),
            "scenes": len(state.probes) + min(SCORE_SCENES, config.task.n_eval),
        }
    return {
        "task": asdict(config.task),
        "train": asdict(config.train),
        "snapshot_every": config.snapshot_every,
        "curve": {
            "steps": [int(v) for v in state.losses[:, 0]],
            "loss": [_finite(v) for v in state.losses[:, 1]],
            "accuracy_steps": [int(v) for v in state.accuracy[:, 0]],
            "accuracy": [_finite(v) for v in state.accuracy[:, 1]],
        },
        "accuracy": None if last is None else _finite(last.accuracy),
        "localisation": localisation,
        "seconds": round(state.seconds, 1),
        "samples_per_s": round(state.samples_per_s, 1),
    }
