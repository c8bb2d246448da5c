"""The playground's default run, measured for ``python -m attnviz bench``.

The figure that matters is the time from pressing *Train* to a model that classifies the
held-out scenes at 90% or better: scene generation, training and the snapshots included, as the
page runs it (:func:`attnviz.workflows.playground.run_playground` with
:func:`~attnviz.workflows.playground.default_config`). Small mode runs a reduced budget, to check
the wiring quickly; its accuracy means nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from attnviz.workflows.playground import PlaygroundConfig, Task, default_config, run_playground

__all__ = ["TARGET_ACCURACY", "PlaygroundBench", "measure_playground", "small_config"]

log = logging.getLogger(__name__)

TARGET_ACCURACY = 0.9
"""The held-out accuracy the default run must reach (within 60 s on the 2-core CPU)."""


@dataclass(frozen=True)
class PlaygroundBench:
    """The playground's default run on one device.

    Attributes:
        placement: what was trained (``Placement.text``).
        classes, n_train, steps, batch_size: the task and the budget.
        seconds: the whole run, from the start to the last snapshot (scenes included).
        data_seconds: until the scenes were drawn and the first snapshot began.
        seconds_to_target: until the first snapshot at or above :data:`TARGET_ACCURACY`
            (None: never reached).
        final_accuracy: held-out accuracy at the end.
        samples_per_s: training throughput (snapshots excluded).
        energy_ratio_first, energy_ratio_last: the module's energy-in-box ratio at the first
            (untrained) and last snapshots (None for modules without a spatial map).
        pointing_last: the pointing game at the last snapshot (None without a map).
        snapshots: how many snapshots were taken.
        small: a reduced run (small mode).
    """

    placement: str
    device: str
    classes: int
    n_train: int
    steps: int
    batch_size: int
    seconds: float
    data_seconds: float
    seconds_to_target: float | None
    final_accuracy: float
    samples_per_s: float
    energy_ratio_first: float | None
    energy_ratio_last: float | None
    pointing_last: float | None
    snapshots: int
    small: bool


def small_config() -> PlaygroundConfig:
    """The reduced run of small mode: a few steps on a few scenes."""
    base = default_config()
    return dataclasses.replace(
        base,
        task=Task(n_train=256, n_eval=50, n_probe=2),
        train=dataclasses.replace(base.train, steps=20),
        snapshot_every=10,
    )


def measure_playground(device: torch.device, small: bool = False) -> PlaygroundBench:
    """Run the playground's default run (or the reduced one) once and report its figures."""
    config = small_config() if small else default_config()
    config = dataclasses.replace(config, device=str(device))
    log.info("bench: playground run (%s, %d steps)", config.placement.text, config.train.steps)
    state, _ = run_playground(config)
    shots = state.snapshots
    reached = [s.seconds for s in shots if s.accuracy >= TARGET_ACCURACY]
    first, last = shots[0], shots[-1]
    return PlaygroundBench(
        placement=config.placement.text,
        device=str(device),
        classes=config.task.classes,
        n_train=config.task.n_train,
        steps=config.train.steps,
        batch_size=config.train.batch_size,
        seconds=round(last.seconds, 2),
        data_seconds=round(first.seconds, 2),
        seconds_to_target=round(reached[0], 2) if reached else None,
        final_accuracy=last.accuracy,
        samples_per_s=round(state.samples_per_s, 1),
        energy_ratio_first=first.energy_ratio,
        energy_ratio_last=last.energy_ratio,
        pointing_last=last.pointing,
        snapshots=len(shots),
        small=small,
    )


def format_playground(p: PlaygroundBench) -> list[str]:
    """The report's lines for the playground run."""
    reached = (
        f"{TARGET_ACCURACY:.0%} reached after {p.seconds_to_target:.1f} s"
        if p.seconds_to_target is not None
        else f"{TARGET_ACCURACY:.0%} not reached"
    )
    energy = (
        ""
        if p.energy_ratio_first is None or p.energy_ratio_last is None
        else f"; energy in box {p.energy_ratio_first:.2f}x -> {p.energy_ratio_last:.2f}x uniform"
    )
    return [
        f"playground default run{' (small mode: a reduced run)' if p.small else ''} on {p.device}: "
        f"{p.placement}, {p.classes} classes, {p.n_train} scenes, {p.steps} steps x {p.batch_size}",
        f"  {reached}; final held-out accuracy {p.final_accuracy:.1%} after {p.seconds:.1f} s "
        f"(scenes {p.data_seconds:.1f} s); {p.samples_per_s:.0f} samples/s{energy}",
    ]
