"""Tests of attnviz.workflows.pipeline_ray: the Ray Data run writes the local run's bytes.

Each comparison runs :func:`analyze_to_folder` and :func:`analyze_to_folder_on_ray` on the same
files with real zoo models (their weights ship in assets/) and compares every output file byte for
byte. Two things would differ from run to run whatever runs the models, so both runs fix them:
``summary.json``'s ``"created"`` time, and the random div ids plotly writes into each HTML page
(replaced by a counter that restarts for each run; pages are rendered on the driver, in order).
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import plotly.io._html
import pytest
from conftest import write_pngs

import attnviz.io.summary
from attnviz import AttnvizError, CheckpointError, ServingError
from attnviz.workflows.pipeline import THREAD_PREFIX, PipelineEvent, PipelineReport, analyze_to_folder
from attnviz.workflows.pipeline_ray import analyze_to_folder_on_ray

MODELS = ["zoo_cbam", "zoo_se"]  # pretrained weights ship in assets/zoo: no network
CPUS = 0.5  # per actor and reading task: two fit in the session's 2 CPUs


class FixedDatetime(datetime):
    """``datetime`` whose ``now`` is always the same instant (for summary.json's ``"created"``)."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return cls(2024, 5, 6, 7, 8, 9, tzinfo=tz)


def _repeatable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed creation time and plotly div ids counted from 0: two runs can give the same bytes."""
    monkeypatch.setattr(attnviz.io.summary, "datetime", FixedDatetime)
    counter = itertools.count()
    ids = SimpleNamespace(uuid4=lambda: f"00000000-0000-4000-8000-{next(counter):012d}")
    monkeypatch.setattr(plotly.io._html, "uuid", ids)


@dataclass
class Run:
    out: Path
    report: PipelineReport
    events: list[PipelineEvent]


def _run_both(
    tmp: Path, paths: list[str], models: list[str], batch_size: int, **on_ray: object
) -> tuple[Run, Run]:
    """The local run and the Ray run (with ``on_ray`` too) on the same files, in folders of ``tmp``."""
    runs = []
    for name, function in (("local", analyze_to_folder), ("ray", analyze_to_folder_on_ray)):
        extra = {"cpus_per_actor": CPUS, **on_ray} if name == "ray" else {}
        events: list[PipelineEvent] = []
        with pytest.MonkeyPatch.context() as monkeypatch:
            _repeatable(monkeypatch)
            report = function(
                paths,
                models,
                tmp / name,
                device="cpu",
                batch_size=batch_size,
                progress=events.append,
                **extra,
            )
        runs.append(Run(tmp / name, report, events))
    return runs[0], runs[1]


def _write_pngs(folder: Path, n: int) -> list[str]:
    return [str(p) for p in write_pngs(folder, n, (40, 52))]


def _bundle(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _assert_same_files(ray_out: Path, local_out: Path) -> None:
    got, want = _bundle(ray_out), _bundle(local_out)
    assert sorted(got) == sorted(want)
    different = [path for path in want if got[path] != want[path]]
    assert not different, f"{len(different)} file(s) differ, e.g. {different[:5]}"


def _steps(events: list[PipelineEvent], written: bool) -> list[tuple]:
    """What an event says, without its Analysis; the "written" ones or all others."""
    return [
        (e.kind, e.model, e.message, e.fraction, e.image, e.folder)
        for e in events
        if (e.kind == "written") == written
    ]


def _same_report(ray: PipelineReport, local: PipelineReport) -> None:
    assert (ray.results, ray.files, ray.skipped) == (local.results, local.files, local.skipped)
    assert [(t.model, t.results, t.batches) for t in ray.models] == [
        (t.model, t.results, t.batches) for t in local.models
    ]
    assert ray.gpu_utilization is None and ray.summary_path == ray.out_dir / "summary.json"


# --------------------------------------------------------------------------------------------------
# An unreachable cluster (no ray_local: it must fail fast whether Ray is connected or not)
# --------------------------------------------------------------------------------------------------


def test_an_unreachable_address_fails_fast_with_one_sentence(tmp_path: Path) -> None:
    import ray

    connected = ray.is_initialized()
    start = time.perf_counter()
    with pytest.raises(AttnvizError, match=r"^Cannot reach the Ray cluster at 127\.0\.0\.1:1 \(") as info:
        analyze_to_folder_on_ray([str(tmp_path / "a.png")], MODELS, tmp_path / "out", address="127.0.0.1:1")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert isinstance(info.value, ServingError)
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert ray.is_initialized() == connected and not (tmp_path / "out").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_an_unreachable_address_fails_fast_while_ray_is_connected(ray_local: None, tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(ServingError, match=r"^Cannot reach the Ray cluster at 127\.0\.0\.1:1 \("):
        analyze_to_folder_on_ray([str(tmp_path / "a.png")], MODELS, tmp_path / "out", address="127.0.0.1:1")
    assert time.perf_counter() - start < 5


@pytest.mark.ray
@pytest.mark.slow
def test_another_reachable_cluster_than_the_connected_one_is_refused(ray_local: None, tmp_path: Path) -> None:
    with socket.socket() as listener:  # something listens there, but it is not our cluster's GCS
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServingError, match=f"already connected to the Ray cluster at .*, not {address}:"):
            analyze_to_folder_on_ray([str(tmp_path / "a.png")], MODELS, tmp_path / "out", address=address)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# The same files as the local run
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twenty(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    """20 images, 2 models, batches of 8, 8 and 4; on Ray with 2 actors per model."""
    tmp = tmp_path_factory.mktemp("twenty")
    paths = _write_pngs(tmp / "in", 20)
    yield _run_both(tmp, paths, MODELS, batch_size=8, actors_per_model=2)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_writes_the_local_runs_bytes(twenty: tuple[Run, Run]) -> None:
    local, ray = twenty
    _assert_same_files(ray.out, local.out)
    summary = json.loads((ray.out / "summary.json").read_bytes())
    assert len(summary["results"]) == 40 and summary["created"] == "2024-05-06T07:08:09+00:00"
    _same_report(ray.report, local.report)
    assert [t.batches for t in ray.report.models] == [3, 3]  # 8 + 8 + 4 images
    assert all(t.forward_s > 0 and t.load_s > 0 and t.write_s > 0 for t in ray.report.models)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_reports_the_local_runs_events(twenty: tuple[Run, Run]) -> None:
    local, ray = twenty
    assert _steps(ray.events, written=True) == _steps(local.events, written=True)
    assert _steps(ray.events, written=False) == _steps(local.events, written=False)
    assert [e.kind for e in ray.events if e.kind != "written"] == [
        *("loading", "download", "download", "analysing"),
        *("loading", "download", "download", "analysing"),
    ]
    fractions = [e.fraction for e in ray.events if e.kind == "written"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(
        e.analysis is not None and e.analysis.model == e.model for e in ray.events if e.kind == "written"
    )
    # each model's results are reported while the run goes on, before the next model is loaded
    second = next(i for i, e in enumerate(ray.events) if e.kind == "loading" and e.model == MODELS[1])
    assert {e.model for e in ray.events[:second] if e.kind == "written"} == {MODELS[0]}


@pytest.mark.ray
@pytest.mark.slow
def test_unreadable_images_are_skipped_as_locally(ray_local: None, tmp_path: Path) -> None:
    import ray

    paths = _write_pngs(tmp_path / "in", 6)
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    (tmp_path / "in" / "garbage.png").write_bytes(b"not an image at all \x00\x01\x02")
    paths.insert(0, str(tmp_path / "in" / "empty.png"))  # before the first batch: before "loading"
    paths.insert(4, str(tmp_path / "in" / "garbage.png"))  # in the second batch
    paths.append(str(tmp_path / "in" / "missing.png"))  # after the last batch
    # the connected cluster's own address is accepted
    gcs = ray.get_runtime_context().gcs_address
    local, on_ray = _run_both(tmp_path, paths, MODELS[:1], batch_size=3, address=gcs)

    assert [s.path for s in on_ray.report.skipped] == [paths[0], paths[4], paths[-1]]
    assert on_ray.report.skipped == local.report.skipped
    assert "is not a supported image" in on_ray.report.skipped[1].message
    assert _steps(on_ray.events, written=False) == _steps(local.events, written=False)
    assert _steps(on_ray.events, written=True) == _steps(local.events, written=True)
    assert [e.kind for e in on_ray.events if e.kind != "written"] == [
        *("skipped", "loading", "download", "download", "analysing", "skipped", "skipped")
    ]
    _assert_same_files(on_ray.out, local.out)
    _same_report(on_ray.report, local.report)
    assert on_ray.report.results == 6 and [t.batches for t in on_ray.report.models] == [2]


# --------------------------------------------------------------------------------------------------
# Errors on the workers
# --------------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_a_library_error_on_a_worker_reaches_the_caller_as_itself(ray_local: None, tmp_path: Path) -> None:
    paths = _write_pngs(tmp_path / "in", 2)
    missing = str(tmp_path / "missing.safetensors")  # the actor's load_model refuses it
    with pytest.raises(CheckpointError, match="neither 'pretrained', 'random' nor an existing checkpoint"):
        analyze_to_folder_on_ray(paths, MODELS, tmp_path / "out", weights=missing, cpus_per_actor=CPUS)
    assert not (tmp_path / "out" / "summary.json").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
