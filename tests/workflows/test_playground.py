"""The playground run: limits, snapshots at the right steps, stop, the server-wide cap, failures."""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest

from attnviz.core.errors import AttnvizError
from attnviz.layers.playground_net import Placement
from attnviz.workflows import playground as pg
from attnviz.workflows.training import TrainSettings

TINY_TASK = pg.Task(classes=3, n_train=48, n_eval=12, n_probe=2)


def tiny(
    kind: str = "cbam", pattern: str = "serial", steps: int = 8, every: int = 4, **task
) -> pg.PlaygroundConfig:
    return pg.PlaygroundConfig(
        placement=Placement(kind=kind, pattern=pattern),
        task=pg.Task(**{**TINY_TASK.__dict__, **task}),
        train=TrainSettings(steps=steps, batch_size=16, lr=5e-3),
        snapshot_every=every,
    )


def _no_hooks(model) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: pg.Task(classes=11), "classes must be an integer from 2 to 10"),
        (lambda: pg.Task(n_train=20001), "n_train must be an integer from 16 to 20000"),
        (lambda: pg.Task(n_eval=5000), "n_eval must be"),
        (lambda: pg.Task(clutter=1.5), r"clutter must be a number in \[0.0, 1.0\]"),
        (lambda: pg.Task(object_size=0.9), "object_size must be"),
        (lambda: pg.PlaygroundConfig(train=TrainSettings(steps=3001)), "steps must be at most 3000"),
        (lambda: pg.PlaygroundConfig(train=TrainSettings(batch_size=512)), "batch_size must be at most 256"),
        (
            lambda: pg.PlaygroundConfig(train=TrainSettings(steps=3000), snapshot_every=10),
            "snapshot_every must be at least 30",
        ),
        (lambda: pg.PlaygroundConfig(autocast="fp8"), "autocast must be"),
    ],
)
def test_budgets_beyond_the_limits_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_fields_are_type_checked():
    with pytest.raises(TypeError, match="placement must be a Placement"):
        pg.PlaygroundConfig(placement="cbam")  # type: ignore[arg-type]


def test_a_short_run_learns_and_snapshots_at_the_right_steps():
    states = []
    state, model = pg.run_playground(tiny(), on_state=states.append)
    assert state.status == "done" and state.step == 8 and state.steps == 8
    assert [s.step for s in state.snapshots] == [0, 4, 8]
    assert state.accuracy.shape == (3, 2) and state.accuracy[:, 0].tolist() == [0, 4, 8]
    assert state.losses.shape[1] == 2 and state.losses[-1, 0] == 8
    assert state.probes.shape == (2, 96, 96, 3) and state.probes.dtype == np.uint8
    assert state.boxes.shape == (2, 4) and state.probe_labels.shape == (2,)
    assert state.class_names == ("circle", "square", "triangle")[: len(state.class_names)]
    assert len(state.class_names) == 3
    last = state.snapshots[-1]
    assert last.maps is not None and last.maps.shape == (2, 96, 96)
    assert last.gradcam.shape == (2, 96, 96) and last.gradcam.min() >= 0 and last.gradcam.max() <= 1 + 1e-6
    assert last.quantity == "gate value" and "cbam_spatial" in last.map_label
    assert last.energy_ratio is not None and last.energy_ratio > 0 and 0 <= last.pointing <= 1
    assert not last.maps.flags.writeable and not state.losses.flags.writeable
    assert model is not None and not model.training and _no_hooks(model)
    assert all(not p.requires_grad for p in model.parameters())
    assert states[0].status == "running" and states[-1].status == "done"


def test_a_module_without_a_spatial_map_has_no_maps_but_gradcam():
    state, _ = pg.run_playground(tiny(kind="se", steps=2, every=2))
    assert [s.step for s in state.snapshots] == [0, 2]
    assert all(s.maps is None and s.energy_ratio is None for s in state.snapshots)
    assert state.snapshots[-1].gradcam.shape == (2, 96, 96)


def _wait_for(run, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run.state()
        if predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"timed out: {run.state().message}")


def test_stop_mid_run_leaves_nothing_behind(monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MAX_TRAININGS", "1")
    before = threading.active_count()
    run = pg.start_run(tiny(steps=2000, every=20))
    _wait_for(run, lambda s: s.step >= 2)
    run.stop()
    state = run.join(timeout=60)
    assert state.status == "stopped" and 2 <= state.step < 2000 and "stopped" in state.message
    assert run.model is None and not run.alive
    assert pg.active_runs() == 0 and threading.active_count() == before
    again = pg.start_run(tiny(steps=1, every=1))  # the slot is free again
    assert again.join(timeout=60).status == "done"
    assert again.model is not None and _no_hooks(again.model)


def test_the_cap_is_enforced_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MAX_TRAININGS", "1")
    first = pg.start_run(tiny(steps=2000, every=20))
    try:
        with pytest.raises(
            pg.PlaygroundBusy, match=r"already training 1 model \(at most 1 at a time\)"
        ) as info:
            pg.start_run(tiny())
        assert isinstance(info.value, AttnvizError)
    finally:
        first.stop()
        first.join(timeout=60)
    assert pg.active_runs() == 0


def test_the_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MAX_TRAININGS", "3")
    assert pg.max_trainings() == 3
    monkeypatch.setenv("ATTNVIZ_MAX_TRAININGS", "zero")
    with pytest.raises(ValueError, match="ATTNVIZ_MAX_TRAININGS must be a positive integer"):
        pg.max_trainings()
    monkeypatch.delenv("ATTNVIZ_MAX_TRAININGS")
    assert pg.max_trainings() in (1, 2)


def test_a_failed_run_says_so_plainly_and_frees_its_slot(monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MAX_TRAININGS", "1")
    config = pg.PlaygroundConfig(
        task=TINY_TASK, train=TrainSettings(steps=2, batch_size=16), snapshot_every=1, device="cuda:99"
    )
    run = pg.start_run(config)
    state = run.join(timeout=60)
    assert state.status == "failed" and state.message.startswith("the training failed: ")
    assert "\n" not in state.message and run.model is None and pg.active_runs() == 0
    with pytest.raises(AttnvizError):
        pg.run_playground(config)


def test_model_cost_counts_parameters_and_flops():
    base = pg.model_cost(Placement(kind="none"), 10)
    cbam = pg.model_cost(Placement(kind="cbam"), 10)
    core = pg.model_cost(Placement(kind="cbam", pattern="core"), 10)
    assert all(isinstance(v, int) and v > 0 for v in (*base, *cbam, *core))
    assert cbam[0] > base[0] and cbam[1] > base[1] and core != cbam
    assert pg.model_cost(Placement(kind="none"), 3)[0] < base[0]  # a smaller classifier


def test_default_config_is_within_the_limits():
    config = pg.default_config()
    assert config.task.classes == 10 and config.placement.kind == "gc" and config.placement.stage == 2
    assert config.train.steps <= pg.LIMITS["steps"]
    assert pg.default_config("se", "parallel").placement.pattern == "parallel"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_stays_bounded_over_repeated_runs():
    rss = []
    for _ in range(5):
        state, model = pg.run_playground(tiny(steps=4, every=2))
        assert state.status == "done"
        del state, model
        gc.collect()
        rss.append(_rss_mib())
    # the first runs warm up allocators and caches; later runs must not keep adding
    assert rss[-1] - rss[1] < 40, rss
