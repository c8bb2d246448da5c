"""Tests of the benchmark (attnviz.workflows.bench, ``attnviz bench``): its output is well-formed.

Speed targets are judged from the benchmark's own figures, never asserted here: the tests check
that every figure is present, finite and positive, that ratios are the quotients of their parts,
and that the JSON and the text table carry all of it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from attnviz.cli import main
from attnviz.workflows import bench
from attnviz.workflows.bench import (
    SMALL_MODELS,
    BatchThroughput,
    BenchReport,
    ComparisonRow,
    FaithfulnessBench,
    MachineInfo,
    ModelRow,
    PlaygroundBench,
    format_report,
    report_to_json,
    run_bench,
)


def _positive(value: object, what: str) -> None:
    assert isinstance(value, float | int) and not isinstance(value, bool), f"{what}: {value!r}"
    assert math.isfinite(value) and value > 0, f"{what}: {value!r}"


def _keys(obj: object) -> object:
    """The nested key structure of a JSON value (lists collapse to the keys of their items)."""
    if isinstance(obj, dict):
        return {k: _keys(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        merged: dict = {}
        for item in obj:
            merged.update(_keys(item))
        return [merged]
    return None


def _fake_report() -> BenchReport:
    """A hand-made report (no models run), for the CLI wiring and the formatting."""
    machine = MachineInfo("cpu", "test CPU", "2.x", 2, 2, "3.11", "2025-01-01T00:00:00+00:00", 3, True, True)
    vit = ModelRow(
        "vit_x", "random", (224, 224), 10.0, 8.0, 11.0, 1.1, 1.375, None, None, 20.0, 40.0, 2.0, 500.0, None
    )
    cnn = ModelRow(
        "cnn_y", "pretrained", (96, 96), 2.0, None, 2.2, 1.1, None, 1.5, 0.75, 4.0, 6.0, 1.5, 510.0, None
    )
    comparison = ComparisonRow(("vit_x", "cnn_y"), 15.0, 35.0, 50.0, 10.0, 1.5, 5.0, 3.25, 600.0, None)
    batch = BatchThroughput("cnn_y", 4, 4, 8.0, 4.0, 2.0, None)
    return BenchReport(machine, (vit, cnn), comparison, batch)


# --------------------------------------------------------------------------------------------------
# fast: formatting and the command line's wiring
# --------------------------------------------------------------------------------------------------


def test_format_report_names_every_model_and_ratio() -> None:
    text = format_report(_fake_report())
    for name in ("vit_x", "cnn_y"):
        assert name in text
    assert "1.38x" in text  # the fused ratio of the ViT
    assert "0.75x" in text  # channels-last ÷ bare of the CNN
    assert "15.0 ms = 1.50x" in text  # the comparison's first view ÷ bare forwards
    assert "50.0 ms = 5.00x" in text  # with Grad-CAM
    assert "speed-up 2.00x" in text


def test_cli_bench_json_wiring(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = {}

    def fake_run_bench(**kwargs: object) -> BenchReport:
        seen.update(kwargs)
        return _fake_report()

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["bench", "--small", "--json", "--repeats", "2", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(report_to_json(_fake_report())))
    assert seen["small"] is True and seen["repeats"] == 2 and str(seen["device"]) == "cpu"
    assert seen["playground"] is True
    assert main(["bench", "--small", "--json", "--no-playground"]) == 0
    assert seen["playground"] is False


def _fake_faithfulness(ratio: float = 1.5) -> FaithfulnessBench:
    return FaithfulnessBench(
        "resnet50", "random", (224, 224), "Grad-CAM · layer4", 2, 20, 64, 85, 150.0, 150.0 / ratio,
        ratio, 4000.0, 72,
    )  # fmt: skip


def test_format_report_gives_the_faithfulness_figure() -> None:
    report = dataclasses.replace(_fake_report(), faithfulness=_fake_faithfulness())
    text = format_report(report)
    assert "faithfulness (resnet50, random weights, 224x224" in text
    assert "85 images in batches of 64: 150.0 ms vs 100.0 ms of bare forwards = 1.50x" in text
    assert "(target <= 2x: met)" in text
    assert "ROAD adds 4000.0 ms per map (72 forwards for 2 maps" in text
    slow = dataclasses.replace(report, faithfulness=_fake_faithfulness(2.5))
    assert "= 2.50x (target <= 2x: NOT met)" in format_report(slow)
    data = report_to_json(report)["faithfulness"]
    assert data["ratio"] == 1.5 and data["input_size"] == [224, 224] and data["forwards"] == 85
    assert report_to_json(_fake_report())["faithfulness"] is None
    assert "faithfulness" not in format_report(_fake_report())


def test_format_report_gives_the_playground_run() -> None:
    run = PlaygroundBench(
        "cbam, serial at stage 3",
        "cpu",
        10,
        4000,
        600,
        64,
        55.0,
        5.0,
        50.5,
        0.93,
        800.0,
        1.0,
        2.5,
        0.8,
        13,
        False,
    )
    report = dataclasses.replace(_fake_report(), playground=run)
    text = format_report(report)
    assert "90% reached after 50.5 s; final held-out accuracy 93.0% after 55.0 s" in text
    assert "800 samples/s; energy in box 1.00x -> 2.50x uniform" in text
    assert report_to_json(report)["playground"]["seconds_to_target"] == 50.5
    never = dataclasses.replace(run, seconds_to_target=None, energy_ratio_first=None, energy_ratio_last=None)
    assert "90% not reached" in format_report(dataclasses.replace(report, playground=never))


def test_cli_bench_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "run_bench", lambda **_: _fake_report())
    assert main(["bench", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == format_report(_fake_report()) + "\n"


@pytest.mark.parametrize(
    ("argv", "status", "match"),
    [
        (["bench", "--repeats", "0"], 2, "--repeats must be at least 1"),
        (["bench", "--repeats", "x"], 2, "invalid int value"),
        (["bench", "--model", "no_such_model"], 1, "no_such_model"),
        (["bench", "--device", "tpu"], 1, "tpu"),
    ],
)
def test_cli_bench_errors(
    argv: list[str], status: int, match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: ") and match in lines[0], err


@pytest.mark.parametrize(("kwargs", "match"), [({"repeats": 0}, "repeats"), ({"models": []}, "at least one")])
def test_run_bench_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_bench(device="cpu", **kwargs)


# --------------------------------------------------------------------------------------------------
# slow: the real small benchmark, run once
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report() -> BenchReport:
    return run_bench(small=True, device="cpu")


@pytest.mark.slow
def test_machine_info(report: BenchReport) -> None:
    m = report.machine
    assert m.device == "cpu" and m.small and m.repeats == bench.SMALL_REPEATS
    assert m.device_name and m.torch_version and m.date
    assert m.cpu_count >= 1 and m.torch_threads >= 1


@pytest.mark.slow
def test_model_rows_are_positive_and_consistent(report: BenchReport) -> None:
    assert [r.model for r in report.models] == list(SMALL_MODELS)
    for r in report.models:
        for field in ("bare_ms", "capture_ms", "capture_ratio", "maps_ms", "peak_rss_mib"):
            _positive(getattr(r, field), f"{r.model}.{field}")
        assert r.capture_ratio == pytest.approx(r.capture_ms / r.bare_ms)
        # every small model is a classifier: Grad-CAM is measured for all of them
        _positive(r.gradcam_ms, f"{r.model}.gradcam_ms")
        assert r.gradcam_ratio == pytest.approx(r.gradcam_ms / r.maps_ms)
        assert r.cuda_max_allocated_mib is None  # CPU run
        vit = r.model.startswith("deit")
        assert (r.fused_ms is not None) == vit, r.model
        if vit:
            _positive(r.fused_ms, f"{r.model}.fused_ms")
            assert r.fused_ratio == pytest.approx(r.capture_ms / r.fused_ms)
        else:
            assert r.fused_ratio is None
        # channels-last: measured for the convolutional networks only
        assert (r.channels_last_ms is not None) == (not vit), r.model
        if not vit:
            _positive(r.channels_last_ms, f"{r.model}.channels_last_ms")
            assert r.channels_last_ratio == pytest.approx(r.channels_last_ms / r.bare_ms)


@pytest.mark.slow
def test_comparison_and_batch(report: BenchReport) -> None:
    c = report.comparison
    assert c.models == SMALL_MODELS[:4]
    times = ("first_view_ms", "gradcam_ms", "total_ms", "sum_bare_ms")
    for field in (*times, "first_view_ratio", "ratio", "stored_mib", "peak_rss_mib"):
        _positive(getattr(c, field), f"comparison.{field}")
    assert c.total_ms == pytest.approx(c.first_view_ms + c.gradcam_ms)
    assert c.ratio == pytest.approx(c.total_ms / c.sum_bare_ms)
    assert c.first_view_ratio == pytest.approx(c.first_view_ms / c.sum_bare_ms)
    bare = {r.model: r.fused_ms if r.fused_ms is not None else r.bare_ms for r in report.models}
    assert c.sum_bare_ms == pytest.approx(sum(bare[m] for m in c.models))
    b = report.batch
    assert b.images == bench.SMALL_BATCH_IMAGES and b.model in SMALL_MODELS
    assert b.batch_size == bench.SMALL_BATCH_IMAGES and b.gpu_utilization is None  # CPU run
    for field in ("batched_img_s", "single_img_s", "speedup"):
        _positive(getattr(b, field), f"batch.{field}")
    assert b.speedup == pytest.approx(b.batched_img_s / b.single_img_s)


@pytest.mark.slow
def test_json_round_trips(report: BenchReport) -> None:
    data = report_to_json(report)
    assert json.loads(json.dumps(data, allow_nan=False)) == json.loads(json.dumps(data))
    assert set(data) == {f.name for f in dataclasses.fields(BenchReport)}
    assert [row["model"] for row in data["models"]] == list(SMALL_MODELS)


@pytest.mark.slow
def test_text_table_names_every_model(report: BenchReport) -> None:
    text = format_report(report)
    for r in report.models:
        assert r.model in text
    assert "CAPTURE/BARE" in text and "img/s" in text
    assert "playground default run (small mode: a reduced run)" in text


@pytest.mark.slow
def test_small_playground_run(report: BenchReport) -> None:
    p = report.playground
    assert p is not None and p.small and p.steps == 20 and p.snapshots == 3
    _positive(p.seconds, "seconds")
    _positive(p.samples_per_s, "samples_per_s")
    assert 0 <= p.final_accuracy <= 1 and p.energy_ratio_first is not None


@pytest.mark.slow
def test_faithfulness_figure(report: BenchReport) -> None:
    f = report.faithfulness
    assert f is not None
    assert f.model == SMALL_MODELS[0] and f.input_size == (96, 96) and f.map_name
    assert f.maps == 2 and f.steps == 20 and f.batch_size == 64
    assert f.forwards == 2 * 2 * (f.steps + 1) + 1  # two maps' curves and the unperturbed crop
    assert f.road_forwards == 4 * 9 * f.maps  # ROADCombined's percentiles, MoRF and LeRF
    for field in ("measure_ms", "bare_ms", "ratio", "road_ms_per_map"):
        _positive(getattr(f, field), f"faithfulness.{field}")
    assert f.ratio == pytest.approx(f.measure_ms / f.bare_ms)
    assert "faithfulness (" in format_report(report) and "ROAD adds" in format_report(report)


@pytest.mark.slow
def test_cli_bench_small_json(report: BenchReport, capsys: pytest.CaptureFixture[str]) -> None:
    """Reruns the small benchmark through the command line (one repeat)."""
    assert main(["bench", "--small", "--json", "--device", "cpu", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert _keys(out) == _keys(report_to_json(report))
    assert out["machine"]["repeats"] == 1
