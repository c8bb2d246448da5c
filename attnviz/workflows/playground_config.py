"""The playground's settings and what a page polls: :class:`Task`, :class:`PlaygroundConfig`,
:class:`RunState`, the :data:`LIMITS` every budget is held to, and :class:`PlaygroundBusy`.

Import them from :mod:`attnviz.workflows.playground`, which runs the trainings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from attnviz.core.errors import AttnvizError
from attnviz.layers.playground_net import Placement
from attnviz.layers.zoo_net import CLASSES, INPUT_SIZE
from attnviz.workflows.playground_snapshots import Snapshot
from attnviz.workflows.scenes import SCALE_RANGE, SceneParams, make_dataset
from attnviz.workflows.training import AUTOCAST, TrainSettings

__all__ = ["LIMITS", "PlaygroundBusy", "PlaygroundConfig", "RunState", "Task"]


LIMITS: dict[str, int] = {
    "steps": 3000,
    "batch_size": 256,
    "n_train": 20000,
    "n_eval": 2000,
    "n_probe": 12,
    "snapshots": 100,
    "input_size": INPUT_SIZE,
}
"""The largest budget a run accepts, whatever a page sends (``snapshots``: most snapshots per run)."""

_OBJECT_SIZE = sum(SCALE_RANGE) / 2  # the scenes' mean object scale (0.19 of the image side)
_SIZE_SPREAD = (SCALE_RANGE[1] - SCALE_RANGE[0]) / 2  # each scene's scale varies this much around it
_OBJECT_SIZES = (0.1, 0.3)
_SEED_OFFSETS = {"eval": 100_000, "probe": 200_000}  # the held-out and probe scenes' dataset seeds


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= value <= hi:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


class PlaygroundBusy(AttnvizError, RuntimeError):
    """The server already runs as many trainings as it allows; try again when one ends."""


@dataclass(frozen=True)
class Task:
    """What the network learns: generated scenes (:mod:`attnviz.workflows.scenes`) at 96 px.

    Attributes:
        classes: number of shape classes, 2 to 10 (the first ``classes`` of ``CLASSES``).
        clutter: background clutter, in ``[0, 1]``.
        object_size: mean object scale (square root of its area share), in ``[0.1, 0.3]``; each
            scene's scale is drawn within +-0.05 of it (the default is the scenes' own range).
        n_train: training scenes (16 to ``LIMITS["n_train"]``).
        n_probe: probe scenes shown in every snapshot (1 to ``LIMITS["n_probe"]``).
        n_eval: held-out scenes the accuracy is measured on (10 to ``LIMITS["n_eval"]``).
        seed: the scenes' seed (train, held-out and probe sets are disjoint draws of it).

    Raises:
        ValueError: any value out of range (the message names the field).
    """

    classes: int = 10
    clutter: float = 0.5
    object_size: float = _OBJECT_SIZE
    n_train: int = 4000
    n_probe: int = 6
    n_eval: int = 500
    seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", _check_int("classes", self.classes, 2, len(CLASSES)))
        object.__setattr__(self, "n_train", _check_int("n_train", self.n_train, 16, LIMITS["n_train"]))
        object.__setattr__(self, "n_probe", _check_int("n_probe", self.n_probe, 1, LIMITS["n_probe"]))
        object.__setattr__(self, "n_eval", _check_int("n_eval", self.n_eval, 10, LIMITS["n_eval"]))
        object.__setattr__(self, "seed", _check_int("seed", self.seed, 0, 2**31 - 1))
        for name, (lo, hi) in {"clutter": (0.0, 1.0), "object_size": _OBJECT_SIZES}.items():
            value = getattr(self, name)
            if not (
                isinstance(value, int | float | np.number)
                and not isinstance(value, bool)
                and lo <= value <= hi
            ):
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def scale_range(self) -> tuple[float, float]:
        """The range each scene's object scale is drawn from."""
        return (max(0.05, self.object_size - _SIZE_SPREAD), min(0.4, self.object_size + _SIZE_SPREAD))

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the task's classes."""
        return tuple(CLASSES[: self.classes])

    def scenes(self, which: Literal["train", "eval", "probe"], workers: int = 1) -> tuple[np.ndarray, ...]:
        """The task's scenes: ``images [n, 96, 96, 3]`` uint8, ``labels [n]``, ``boxes [n, 4]``, ``masks``."""
        n = {"train": self.n_train, "eval": self.n_eval, "probe": self.n_probe}[which]
        seed = self.seed + _SEED_OFFSETS.get(which, 0)
        params = SceneParams(size=INPUT_SIZE, clutter=self.clutter)
        return make_dataset(
            n, seed, params, workers=workers, classes=self.classes, scale_range=self.scale_range
        )


@dataclass(frozen=True)
class PlaygroundConfig:
    """One playground run: the placement, the task and the budget.

    Attributes:
        placement: where and how the attention module goes.
        task: the scenes to learn.
        train: the budget and the optimiser (bounded by :data:`LIMITS`).
        snapshot_every: steps between snapshots (at most ``LIMITS["snapshots"]`` per run).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        autocast: None (float32), ``"bf16"`` or ``"fp16"`` (CUDA).
        workers: processes drawing the training scenes (1: in the run's thread; 0: one per CPU).

    Raises:
        ValueError: a budget beyond :data:`LIMITS` or a bad value (the message names the field).
        TypeError: a field of the wrong type.
    """

    placement: Placement = field(default_factory=Placement)
    task: Task = field(default_factory=Task)
    train: TrainSettings = field(default_factory=TrainSettings)
    snapshot_every: int = 50
    device: str = "cpu"
    autocast: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        for name, kind in (("placement", Placement), ("task", Task), ("train", TrainSettings)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("steps", "batch_size"):
            value = getattr(self.train, name)
            if value > LIMITS[name]:
                raise ValueError(f"{name} must be at most {LIMITS[name]}, got {value}")
        every = _check_int("snapshot_every", self.snapshot_every, 1, LIMITS["steps"])
        if math.ceil(self.train.steps / every) > LIMITS["snapshots"]:
            least = math.ceil(self.train.steps / LIMITS["snapshots"])
            raise ValueError(
                f"snapshot_every must be at least {least} for {self.train.steps} steps, got {every}"
            )
        object.__setattr__(self, "snapshot_every", every)
        if not isinstance(self.device, str | torch.device):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        object.__setattr__(self, "device", str(self.device))
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise ValueError(f"autocast must be None or one of {', '.join(AUTOCAST)}, got {self.autocast!r}")
        object.__setattr__(self, "workers", _check_int("workers", self.workers, 0, 16))


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class RunState:
    """What a page polls: where a run is, its curves and its snapshots.

    Attributes:
        status: ``"running"``, ``"done"``, ``"stopped"`` or ``"failed"``.
        step: steps done; steps: steps asked for.
        losses: ``[K, 2]`` (step, mean training loss since the previous point).
        accuracy: ``[K, 2]`` (step, held-out accuracy), one row per snapshot.
        snapshots: the snapshots so far, in step order.
        probes: ``[P, S, S, 3]`` uint8 probe scenes (``P = 0`` until they are drawn).
        boxes: ``[P, 4]`` their objects' boxes ``(y0, x0, y1, x1)``, exclusive ends.
        message: one plain line on what the run does or why it ended.
        samples_per_s: training throughput (snapshots excluded).
        seconds: wall time since the run started.
        probe_labels: ``[P]`` the probes' class indices.
        class_names: the task's class names.
    """

    status: Literal["running", "done", "stopped", "failed"]
    step: int
    steps: int
    losses: np.ndarray
    accuracy: np.ndarray
    snapshots: tuple[Snapshot, ...]
    probes: np.ndarray
    boxes: np.ndarray
    message: str
    samples_per_s: float
    seconds: float
    probe_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("losses", "accuracy", "probes", "boxes", "probe_labels"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def finished(self) -> bool:
        """True once the run has ended (done, stopped or failed)."""
        return self.status != "running"
