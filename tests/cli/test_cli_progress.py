"""Tests of ``attnviz analyze``'s progress (attnviz.cli.progress) and of its ``--ray`` option.

The progress is fed fake pipeline events with a fake clock (no sleeping), and a real zoo run
(``zoo_cbam`` and ``zoo_se`` ship their weights: no network). ``--ray`` is tested up to the call of
:func:`attnviz.workflows.pipeline_ray.analyze_to_folder_on_ray`, replaced by a stub module.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_pngs

from attnviz.cli import MAX_IMAGES, MAX_MODELS, main
from attnviz.cli.analyze import AnalyzePrinter
from attnviz.cli.console import UsageError
from attnviz.cli.parser import build_parser
from attnviz.cli.progress import FolderProgress, format_duration
from attnviz.core.records import Analysis, Prediction
from attnviz.workflows.pipeline import ModelTiming, PipelineEvent, PipelineReport

RAY_MODULE = "attnviz.workflows.pipeline_ray"


class Terminal(io.StringIO):
    """A stream that says it is a terminal (progress bars instead of lines)."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _analysis(model: str, notes: tuple[str, ...] = ()) -> Analysis:
    top5 = tuple(Prediction(i, f"class {i}, more", 0.25) for i in range(5))
    return Analysis(model, "pretrained", False, np.zeros((4, 4, 3), np.uint8), top5, (), notes=notes)


def _written(model: str, image: str) -> PipelineEvent:
    stem = Path(image).stem
    return PipelineEvent(
        "written",
        model,
        f"wrote {stem}/{model}/",
        image=image,
        folder=f"{stem}/{model}",
        analysis=_analysis(model),
    )


def _write_pngs(folder: Path, n: int) -> list[Path]:
    return write_pngs(folder, n, (48, 60))


# --------------------------------------------------------------------------------------------------
# off a terminal: periodic lines
# --------------------------------------------------------------------------------------------------


def test_lines_every_period_and_at_the_end_of_each_model() -> None:
    clock, err = Clock(), io.StringIO()
    images = [f"img{i}.png" for i in range(6)] + ["bad.png"]
    progress = FolderProgress(err, images, period_s=2.5, clock=clock)
    assert not progress.tty  # a StringIO is no terminal

    for model in ("zoo_cbam", "zoo_se"):
        progress(PipelineEvent("loading", model, "loading (pretrained weights)"))
        clock.now += 7.0  # loading is not counted in the rate
        progress(PipelineEvent("analysing", model, "analysing"))
        for i in range(6):
            clock.now += 1.0
            progress(_written(model, images[i]))
            if model == "zoo_cbam" and i == 3:
                progress(PipelineEvent("skipped", None, "bad.png is empty", image="bad.png"))

    assert err.getvalue().splitlines() == [
        # 7 images until bad.png is found unreadable, 6 after
        "attnviz: [zoo_cbam] 3/7 images, 1.0 img/s, ETA 4.0 s",
        "attnviz: [zoo_cbam] 6/6 images, 1.0 img/s, done in 6.0 s",
        "attnviz: [zoo_se] 3/6 images, 1.0 img/s, ETA 3.0 s",
        "attnviz: [zoo_se] 6/6 images, 1.0 img/s, done in 6.0 s",
    ]


def test_an_unreadable_last_image_ends_the_pass() -> None:
    """In the first pass an image found unreadable after the others were written ends the count."""
    clock, err = Clock(), io.StringIO()
    progress = FolderProgress(err, ["a.png", "b.png", "bad.png", "bad.png"], clock=clock)
    progress(PipelineEvent("analysing", "zoo_se", "analysing"))
    for image in ("a.png", "b.png"):
        clock.now += 0.5
        progress(_written("zoo_se", image))
    assert err.getvalue() == ""
    assert progress.total == 4
    progress(PipelineEvent("skipped", None, "not an image", image="bad.png"))
    assert progress.total == 2  # given twice, unreadable twice
    assert err.getvalue() == "attnviz: [zoo_se] 2/2 images, 2.0 img/s, done in 1.0 s\n"
    progress(PipelineEvent("skipped", None, "not an image", image="bad.png"))  # reported once
    assert progress.total == 2


def test_the_default_period_is_ten_seconds() -> None:
    clock, err = Clock(), io.StringIO()
    progress = FolderProgress(err, [f"{i}.png" for i in range(100)], clock=clock)
    progress(PipelineEvent("analysing", "zoo_ca", "analysing"))
    for i in range(40):
        clock.now += 0.5
        progress(_written("zoo_ca", f"{i}.png"))
    assert FolderProgress.period_s == 10.0
    assert err.getvalue().splitlines() == [
        "attnviz: [zoo_ca] 20/100 images, 2.0 img/s, ETA 40 s",
        "attnviz: [zoo_ca] 40/100 images, 2.0 img/s, ETA 30 s",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0.0 s"),
        (4.25, "4.2 s"),
        (13.4, "13 s"),
        (125, "2 min 05 s"),
        (3725, "1 h 02 min"),
        (-1, "0.0 s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _feed(printer: AnalyzePrinter, clock: Clock, models: list[str], images: list[str]) -> None:
    for model in models:
        printer(PipelineEvent("loading", model, "loading (pretrained weights)"))
        printer(PipelineEvent("analysing", model, f"analysing {len(images)} image(s) on cpu in batches of 8"))
        for image in images:
            clock.now += 0.25
            printer(_written(model, image))


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_printer_lines_with_and_without_verbose(verbose: bool, tmp_path: Path) -> None:
    clock, out, err = Clock(), io.StringIO(), io.StringIO()
    images = ["a.png", "b.png", "c.png"]
    printer = AnalyzePrinter(tmp_path, verbose, out, err, images, period_s=0.5, clock=clock)
    _feed(printer, clock, ["zoo_cbam", "zoo_se"], images)

    expected_err = []
    for model in ("zoo_cbam", "zoo_se"):
        expected_err += [
            f"attnviz: [{model}] loading (pretrained weights)",
            f"attnviz: [{model}] analysing 3 image(s) on cpu in batches of 8",
            f"attnviz: [{model}] 2/3 images, 4.0 img/s, ETA 0.2 s",
            f"attnviz: [{model}] 3/3 images, 4.0 img/s, done in 0.8 s",
        ]
    assert err.getvalue().splitlines() == expected_err
    if not verbose:
        assert out.getvalue() == ""
        return
    expected_out = []
    for model in ("zoo_cbam", "zoo_se"):
        expected_out.append(f"{model} (pretrained weights)")
        expected_out += [
            f"  {image}: top-1 class 0 (25.0%), 0 records -> {tmp_path / Path(image).stem / model}/"
            for image in images
        ]
    assert out.getvalue().splitlines() == expected_out


def test_notes_of_an_analysis_go_to_stderr_without_verbose(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = AnalyzePrinter(tmp_path, False, out, err, ["a.png", "b.png"], clock=Clock())
    event = _written("zoo_se", "a.png")
    printer(
        PipelineEvent(
            "written",
            "zoo_se",
            event.message,
            image="a.png",
            folder=event.folder,
            analysis=_analysis("zoo_se", notes=("ran in batches of 1",)),
        )
    )
    assert out.getvalue() == ""
    assert err.getvalue() == "attnviz: [zoo_se] ran in batches of 1\n"


# --------------------------------------------------------------------------------------------------
# on a terminal: a bar per model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_bars_on_a_terminal(verbose: bool, tmp_path: Path) -> None:
    clock, out, err = Clock(), io.StringIO(), Terminal()
    images = [f"img{i}.png" for i in range(4)]
    printer = AnalyzePrinter(tmp_path, verbose, out, err, images, period_s=0.0, clock=clock)
    assert printer.progress.tty
    _feed(printer, clock, ["zoo_cbam", "zoo_se"], images)
    printer.close()

    text = err.getvalue()
    for model in ("zoo_cbam", "zoo_se"):
        last = text.split(f"\r{model}:")[-1].split("\n")[0]  # the bar as it was left
        assert "4/4" in last and "img/s" in last, last
        assert f"attnviz: [{model}] loading (pretrained weights)\n" in text  # the notes, whole lines
    assert "ETA" not in text and "done in" not in text  # no line-mode progress
    assert text.index("zoo_cbam: 100%") < text.index("attnviz: [zoo_se] loading")
    assert (len(out.getvalue().splitlines()) == 2 * (1 + len(images))) is verbose


def test_bars_follow_unreadable_images_and_are_closed_after_a_failure(tmp_path: Path) -> None:
    clock, err = Clock(), Terminal()
    progress = FolderProgress(err, ["a.png", "bad.png", "c.png"], clock=clock)
    progress(PipelineEvent("analysing", "zoo_se", "analysing"))
    clock.now += 2.0
    progress(_written("zoo_se", "a.png"))
    progress(PipelineEvent("skipped", None, "bad", image="bad.png"))
    [state] = progress._passes.values()
    bar = state.bar
    assert bar is not None and bar.total == 2 and bar.n == 1
    # drawn from the first result on, its rate counts from the "analysing" event
    assert bar.format_dict["elapsed"] == pytest.approx(2.0, abs=0.5)
    progress(PipelineEvent("analysing", "zoo_ca", "analysing"))  # no result yet: no bar yet
    assert len(progress._passes) == 2 and list(progress._passes.values())[1].bar is None
    progress.close()  # the run failed half-way
    assert bar.disable and state.bar is None
    assert "1/2" in err.getvalue() and "2/2" not in err.getvalue() and "zoo_ca" not in err.getvalue()


def test_logs_are_written_above_the_bars() -> None:
    """With -v the library's INFO logs reach the terminal between two bar updates, on lines of their own."""
    err = Terminal()
    root, handler = logging.getLogger(), logging.StreamHandler(err)
    root.addHandler(handler)
    progress = FolderProgress(err, ["a.png", "b.png"])
    try:
        with progress.logs_above_bars():
            assert handler.stream is not err
            progress(PipelineEvent("analysing", "zoo_se", "analysing"))
            progress(_written("zoo_se", "a.png"))
            logging.getLogger("attnviz.test").warning("a log record")
            progress(_written("zoo_se", "b.png"))
        assert handler.stream is err  # given back
    finally:
        root.removeHandler(handler)
    text = err.getvalue()
    before, after = text.split("a log record\n")
    assert "zoo_se:" in before and before.endswith("\r")  # the bar was cleared first
    assert after.startswith("\rzoo_se:") and "2/2" in after  # and drawn again


# --------------------------------------------------------------------------------------------------
# a real run through main()
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_folder_run_reports_progress_on_stderr(
    verbose: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(FolderProgress, "period_s", 0.0)  # a line at every result
    folder = tmp_path / "pics"
    good = _write_pngs(folder, 3)
    (folder / "bad.png").write_text("not an image\n")
    out = tmp_path / "out"
    models = ["zoo_cbam", "zoo_se"]
    args = ["analyze", str(folder), *(f"-m{m}" for m in models), "--batch-size", "2", "--no-gradcam"]
    rc = main([*args, "--device", "cpu", "--out", str(out), *(["-v"] if verbose else [])])
    captured = capsys.readouterr()
    assert rc == 1, captured.err  # bad.png was skipped

    line = re.compile(r"attnviz: \[(\w+)\] (\d+)/(\d+) images, [\d.]+ img/s, (ETA|done in) [\d.]+ s")
    progress = [m.groups() for m in map(line.fullmatch, captured.err.splitlines()) if m]
    for model in models:
        mine = [(int(d), int(t), what) for name, d, t, what in progress if name == model]
        assert mine[-1] == (3, 3, "done in"), captured.err  # the closing line of the model's pass
        assert all(what == "ETA" for _, _, what in mine[:-1]) and mine[:-1]
        assert [d for d, _, _ in mine] == sorted(d for d, _, _ in mine)
    # the last writes of a model may come once the next one is loaded, never after its own writes
    assert [name for name, *_ in progress] == ["zoo_cbam"] * len(mine) + ["zoo_se"] * len(mine)

    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    closing = f"Wrote {n_files} files to {out} (see {out / 'summary.json'})."
    if not verbose:
        assert captured.out.splitlines() == [closing]
        return
    lines = captured.out.splitlines()
    assert lines[-1] == closing
    for model in models:
        assert f"{model} (pretrained weights)" in lines
        for path in good:
            assert any(
                x.startswith(f"  {path}: top-1 ") and x.endswith(f"{out / path.stem / model}/") for x in lines
            )
    assert len(lines) == len(models) * (1 + len(good)) + 1


def test_a_run_on_a_terminal_draws_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    folder = tmp_path / "pics"
    _write_pngs(folder, 3)
    out = tmp_path / "out"
    rc = main(
        ["analyze", str(folder), "-m", "zoo_cbam", "--no-gradcam", "--device", "cpu", "--out", str(out)]
    )
    err = terminal.getvalue()
    assert rc == 0, err
    assert "attnviz: [zoo_cbam] loading (pretrained weights)\n" in err
    bar = err.split("\rzoo_cbam:")[-1].split("\n")[0]
    assert "3/3" in bar and "100%" in bar, err
    assert "images/s" in err.splitlines()[-1]  # the timing line, after the bar
    assert "ETA" not in err and "done in" not in err  # no progress lines
    assert capsys.readouterr().out.splitlines() == [
        f"Wrote {sum(1 for p in out.rglob('*') if p.is_file())} files to {out} (see {out / 'summary.json'})."
    ]


# --------------------------------------------------------------------------------------------------
# --ray
# --------------------------------------------------------------------------------------------------


def _parse(*args: str) -> Any:
    return build_parser(MAX_IMAGES, MAX_MODELS).parse_args(
        ["analyze", "a.png", "-m", "zoo_se", "-o", "o", *args]
    )


@pytest.mark.parametrize(
    ("args", "value"),
    [
        ((), None),
        (("--ray",), "auto"),
        (("--ray", "ray://h:10001"), "ray://h:10001"),
        (("--ray=10.0.0.5:6379",), "10.0.0.5:6379"),
        (("--ray", "auto"), "auto"),
    ],
)
def test_ray_option_is_parsed(args: tuple[str, ...], value: str | None) -> None:
    assert _parse(*args).ray == value


def test_ray_before_the_images_takes_no_image_for_an_address() -> None:
    parser = build_parser(MAX_IMAGES, MAX_MODELS)
    parsed = parser.parse_args(["analyze", "--ray", "-m", "zoo_se", "-o", "o", "a.png"])
    assert parsed.ray == "auto" and parsed.images == ["a.png"]
    with pytest.raises(UsageError, match=r"--ray: expected auto, ray://HOST:PORT or HOST:PORT, got 'b\.png'"):
        parser.parse_args(["analyze", "a.png", "--ray", "b.png", "-m", "zoo_se", "-o", "o"])


def test_ray_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--ray [ADDRESS]" in text
    assert "ray start --head" in text and "ray://HOST:10001" in text
    assert "a bar per model on a terminal" in text


def _report(out: Path, results: int, files: int) -> PipelineReport:
    timing = ModelTiming("zoo_se", results, 1, 0.1, 0.2, 0.3)
    return PipelineReport(out, results, files, (), (timing,), 1.0, float(results), None)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Stubs for the local and the Ray run, recording their arguments."""
    from attnviz.cli import analyze as cli_analyze

    record: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}

    def run(kind: str, images: list[str], models: list[str], out_dir: Path, **kwargs: Any) -> PipelineReport:
        record[kind].append({"images": images, "models": models, "out_dir": out_dir, **kwargs})
        progress = kwargs["progress"]
        progress(PipelineEvent("analysing", "zoo_se", f"analysing {len(images)} image(s) on Ray"))
        for image in images:  # a run may give no Analysis with the event: it still counts
            event = _written("zoo_se", image)
            progress(event if kind == "local" else dataclasses.replace(event, analysis=None))
        return _report(Path(out_dir), len(images), 3 * len(images))

    stub = types.ModuleType(RAY_MODULE)
    stub.analyze_to_folder_on_ray = lambda *a, **k: run("ray", *a, **k)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, RAY_MODULE, stub)
    monkeypatch.setattr(cli_analyze, "analyze_to_folder", lambda *a, **k: run("local", *a, **k))
    return record


@pytest.mark.parametrize(
    ("option", "address"), [(["--ray"], None), (["--ray", "ray://head:10001"], "ray://head:10001")]
)
def test_ray_runs_the_same_call_on_ray(
    option: list[str],
    address: str | None,
    calls: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = [str(p) for p in _write_pngs(tmp_path / "pics", 2)]
    out = tmp_path / "out"
    common = ["analyze", *images, "-m", "zoo_se", "--out", str(out), "--batch-size", "4", "--no-gradcam"]
    common += [
        "--weights",
        "random",
        "--autocast",
        "bf16",
        "--cmap",
        "viridis",
        "--alpha",
        "0.3",
        "--scale",
        "stretched",
    ]
    assert main(common) == 0
    assert main([*common, *option]) == 0
    captured = capsys.readouterr()
    [local], [ray] = calls["local"], calls["ray"]
    assert ray.pop("address") == address
    assert type(ray.pop("progress")) is type(local.pop("progress")) is AnalyzePrinter
    assert (
        ray
        == local
        == {
            "images": images,
            "models": ["zoo_se"],
            "out_dir": out,
            "weights": "random",
            "device": "auto",
            "batch_size": 4,
            "gradcam": False,
            "autocast": "bf16",
            "cmap": "viridis",
            "alpha": 0.3,
            "scale": "stretched",
        }
    )
    closing = f"Wrote 6 files to {out} (see {out / 'summary.json'})."
    assert captured.out.splitlines() == [closing, closing]
    assert captured.err.count("attnviz: [zoo_se] 2/2 images, ") == 2  # the same progress for both


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (ConnectionError("Could not find any running Ray instance."), "cannot reach the Ray of this machine"),
        (OSError(28, "No space left on device"), "cannot write the results to"),
    ],
    ids=["no-ray", "disk-full"],
)
def test_ray_failures_are_one_line(
    failure: Exception,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(*args: Any, **kwargs: Any) -> PipelineReport:
        raise failure

    stub = types.ModuleType(RAY_MODULE)
    stub.analyze_to_folder_on_ray = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, RAY_MODULE, stub)
    [image] = _write_pngs(tmp_path / "pics", 1)
    rc = main(["analyze", str(image), "-m", "zoo_se", "--out", str(tmp_path / "out"), "--ray"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(lines) == 1 and lines[0].startswith(f"attnviz: error: {message}"), lines


def test_ray_without_ray_data_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, RAY_MODULE, None)  # import fails
    [image] = _write_pngs(tmp_path / "pics", 1)
    rc = main(["analyze", str(image), "-m", "zoo_se", "--out", str(tmp_path / "out"), "--ray"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: --ray needs Ray Data"), lines
