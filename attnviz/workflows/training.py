"""The one training loop: the zoo (``python -m attnviz zoo train``) and the playground both use it.

:func:`train` runs AdamW with a one-cycle learning rate over a fixed number of steps on uint8
scenes ``[N, S, S, 3]``: the data is walked in a new random order whenever it runs out (the last
batch of a pass may be smaller), each image is flipped left-right with probability 1/2, and the
loss is cross-entropy with label smoothing. Every ``every`` steps (and at the end) a callback sees
the progress and the model (the playground takes its snapshots there); a
:class:`threading.Event` stops the run after the current step. The data can live on the device
(the GPU keeps the uint8 scenes there and normalises each batch in place).

Randomness: the order and the flips come from ``numpy.random.default_rng(settings.seed)``;
torch's global generator (weight initialisation, dropout) is the caller's: seed it before
building the model. The same settings, data and initial weights give the same weights on the
same machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AUTOCAST", "TrainOutcome", "TrainProgress", "TrainSettings", "normalise", "train"]

log = logging.getLogger(__name__)

#: Mixed-precision choices of :func:`train` (None: float32).
AUTOCAST: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class TrainSettings:
    """How to train: the budget, the optimiser and the augmentation.

    Attributes:
        steps: optimiser steps (batches), at least 1.
        batch_size: scenes per batch, at least 1.
        lr: the one-cycle schedule's peak learning rate, in ``(0, 1]`` (2e-3: the playground's
            default run reaches 90% soonest with it; the zoo's recipe sets 3e-3).
        weight_decay: AdamW's decoupled weight decay, in ``[0, 1)``.
        label_smoothing: of the cross-entropy, in ``[0, 1)``.
        warmup: fraction of the steps spent raising the learning rate, in ``(0, 1)``.
        seed: seeds the data order and the flips (non-negative).
        flip: flip each training image left-right with probability 1/2.

    Raises:
        ValueError: any value out of range (the message names the field).
    """

    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    warmup: float = 0.15
    seed: int = 0
    flip: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        ranges = {
            "lr": (0.0, 1.0, False, True),
            "weight_decay": (0.0, 1.0, True, False),
            "label_smoothing": (0.0, 1.0, True, False),
            "warmup": (0.0, 1.0, False, False),
        }
        for name, (lo, hi, lo_in, hi_in) in ranges.items():
            value = getattr(self, name)
            ok = (
                _is_number(value)
                and (lo <= value if lo_in else lo < value)
                and (value <= hi if hi_in else value < hi)
            )
            if not ok:
                lo_b, hi_b = "[" if lo_in else "(", "]" if hi_in else ")"
                raise ValueError(f"{name} must be a number in {lo_b}{lo}, {hi}{hi_b}, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.flip, bool | np.bool_):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        object.__setattr__(self, "flip", bool(self.flip))


@dataclass(frozen=True)
class TrainProgress:
    """One progress report of :func:`train`.

    Attributes:
        step: steps done so far (1-based: the report after the first step says 1).
        steps: the steps the run was asked for.
        loss: the mean training loss of the steps since the previous report.
        seconds: wall time since the run started, callbacks included.
        samples_per_s: training throughput so far (callback time excluded).
    """

    step: int
    steps: int
    loss: float
    seconds: float
    samples_per_s: float


@dataclass(frozen=True)
class TrainOutcome:
    """What a :func:`train` run did.

    Attributes:
        steps_done: steps actually taken (fewer than asked when stopped).
        stopped: True when the cancel event ended the run early.
        seconds: wall time of the whole run, callbacks included.
        losses: the training loss of every step, in order (``steps_done`` values).
        batch_sizes: the number of scenes of every step (the last batch of a pass may be smaller).
        samples_per_s: training throughput (callback time excluded).
    """

    steps_done: int
    stopped: bool
    seconds: float
    losses: tuple[float, ...]
    batch_sizes: tuple[int, ...] = ()
    samples_per_s: float = 0.0


def normalise(
    batch: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """uint8 scenes ``[B, S, S, 3]`` -> normalised float ``[B, 3, S, S]`` (on the batch's device).

    Args:
        batch: uint8 ``[B, S, S, 3]``.
        mean, std: ``[1, 3, 1, 1]`` float tensors on the batch's device.
        memory_format: optional memory format of the result (channels-last on CUDA).
    """
    x = batch.permute(0, 3, 1, 2).float().div_(255)
    x = (x - mean) / std
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def _check_data(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[3] != 3 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"images must be uint8 [N, S, S, 3], got {shape} {images.dtype}")
    if tuple(labels.shape) != (shape[0],):
        raise ValueError(f"labels must be [N] with N = {shape[0]} images, got {tuple(labels.shape)}")
    if shape[0] < 1:
        raise ValueError("images must hold at least one scene")


def train(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    settings: TrainSettings,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    every: int = 0,
    on_progress: Callable[[TrainProgress, nn.Module], None] | None = None,
    cancel: threading.Event | None = None,
    autocast: str | None = None,
) -> TrainOutcome:
    """Train ``model`` in place with AdamW and a one-cycle learning rate over ``settings.steps``.

    Args:
        model: the classifier; its logits are ``[B, K]``. It is moved to nothing: put it on
            ``device`` first.
        images: uint8 ``[N, S, S, 3]`` scenes (numpy, or a tensor already on ``device``).
        labels: ``[N]`` class indices.
        settings: the budget and the optimiser.
        mean, std: per-channel normalisation (of ``[0, 1]`` pixels).
        device: where the model is; the scenes are moved there once, as uint8.
        every: call ``on_progress`` every this many steps (0: only at the end).
        on_progress: ``on_progress(progress, model)``; the model is in train mode when called
            and is put back in train mode afterwards, so the callback may evaluate it.
        cancel: when set, the run stops after the current step.
        autocast: ``"bf16"`` or ``"fp16"`` runs forward and loss under ``torch.autocast``
            (fp16 with a gradient scaler, for CUDA); None: float32.

    Returns:
        The :class:`TrainOutcome`. The model ends in eval mode, stopped or not.

    Raises:
        ValueError: bad shapes, ``every`` or ``autocast``.
    """
    _check_data(images, labels)
    if not _is_int(every) or every < 0:
        raise ValueError(f"every must be a non-negative integer, got {every!r}")
    if autocast is not None and autocast not in AUTOCAST:
        raise ValueError(f"autocast must be None or one of {', '.join(AUTOCAST)}, got {autocast!r}")
    dev = torch.device(device)
    data = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    data = data.to(dev)
    targets = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels))
    targets = targets.to(dev).long()
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    fmt = torch.channels_last if dev.type == "cuda" else None

    n, steps = len(data), settings.steps
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=steps, pct_start=settings.warmup
    )
    dtype = AUTOCAST.get(autocast) if autocast else None
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None

    losses: list[float] = []
    sizes: list[int] = []
    start = time.perf_counter()
    callback_s = 0.0
    order = np.empty(0, dtype=np.int64)
    pos = 0
    since = 0
    stopped = False

    def rate() -> float:
        busy = time.perf_counter() - start - callback_s
        return sum(sizes) / busy if busy > 0 else 0.0

    def report(step: int) -> None:
        nonlocal callback_s, since
        if on_progress is None:
            return
        recent = losses[len(losses) - since :] if since else losses[-1:]
        progress = TrainProgress(step, steps, float(np.mean(recent)), time.perf_counter() - start, rate())
        t = time.perf_counter()
        try:
            on_progress(progress, model)
        finally:
            model.train()
            callback_s += time.perf_counter() - t
            since = 0

    model.train()
    try:
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                stopped = True
                break
            if pos >= len(order):
                order, pos = rng.permutation(n), 0
            idx = order[pos : pos + settings.batch_size]
            pos += len(idx)
            index = torch.from_numpy(idx).to(dev)
            x = normalise(data[index], mean_t, std_t, fmt)
            if settings.flip:
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(dev)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = targets[index]
            ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
            with ctx:
                loss = F.cross_entropy(model(x), y, label_smoothing=settings.label_smoothing)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            losses.append(loss.item())
            sizes.append(len(idx))
            since += 1
            if every and step % every == 0 and step < steps:
                report(step)
        if losses and (since or every == 0):
            report(len(losses))
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    if stopped:
        log.info("training stopped after %d of %d steps (%.1f s)", len(losses), steps, seconds)
    return TrainOutcome(len(losses), stopped, seconds, tuple(losses), tuple(sizes), rate())
