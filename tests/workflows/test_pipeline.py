"""Tests of attnviz.workflows.pipeline: streamed batches give export_files' bundle, bounded and overlapped.

Most tests replace ``analyze`` by a fast, deterministic stand-in (the zoo models still load, from
the weights in assets/); the ``slow`` ones run real zoo models end to end.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image
from PIL import Image

from attnviz import UnknownModelError, analyze, load_image, load_model
from attnviz.core.records import Analysis, ChannelWeights, GradCAM, Prediction, SpatialMap
from attnviz.io.export import export_files
from attnviz.workflows import pipeline
from attnviz.workflows.pipeline import (
    IMAGE_EXTENSIONS,
    MAX_BATCH_SIZE,
    THREAD_PREFIX,
    PipelineEvent,
    analyze_to_folder,
    expand_image_paths,
)
from attnviz.workflows.pipeline_threads import GpuSampler

MODELS = ["zoo_se", "zoo_cbam"]  # their weights ship in assets/zoo: no network
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMEOUT_S = 30  # only reached when the behaviour under test is missing


def _write_pngs(folder: Path, n: int, size: tuple[int, int] = (40, 52)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        make_image(i, size).save(path)
        paths.append(str(path))
    return paths


def _fake_analysis(model: str, image: Image.Image) -> Analysis:
    """A deterministic Analysis computed from the pixels (a stand-in for a forward)."""
    pixels = np.asarray(image.convert("RGB").resize((12, 8)))
    rng = np.random.default_rng(int(pixels.sum()))
    records = (
        ChannelWeights("layer1.se", "se", rng.random(4).astype(np.float32), 0, False),
        SpatialMap("layer1.gc", "gc_context", rng.random((2, 3)), (4.0, 4.0), 0, False),
        GradCAM("layer4", rng.random((8, 12)).astype(np.float32), 3, "tench", False),
    )
    top5 = tuple(Prediction(i, f"class {i}", 0.2) for i in range(5))
    return Analysis(model, "pretrained", False, pixels, top5, records)


def _fake_analyze(model, images, **_: object) -> list[Analysis]:
    return [_fake_analysis(model.name, image) for image in images]


@pytest.fixture
def fake_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "analyze", _fake_analyze)


def _our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _bundle(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _assert_same_bundle(streamed: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """Same files with the same bytes; summary.json and HTML up to their timestamp and div ids."""
    assert sorted(streamed) == sorted(expected)
    for path, content in expected.items():
        if path == "summary.json":
            got, want = json.loads(streamed[path]), json.loads(content)
            assert got["results"] == want["results"]
            assert got["attnviz_version"] == want["attnviz_version"]
        elif path.endswith(".html"):
            assert _UUID.sub(b"ID", streamed[path]) == _UUID.sub(b"ID", content), path
        else:
            assert streamed[path] == content, path


# --------------------------------------------------------------------------------------------------
# Folder expansion and names
# --------------------------------------------------------------------------------------------------


def test_expand_lists_image_files_sorted_without_hidden_ones(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    names = ["b.PNG", "a.jpg", "C.jpeg", "d.webp", "e.gif", "Z.Jpg"]
    for name in [*names, ".hidden.png", "notes.txt", "noext", "archive.png.zip", "f.BMP", "g.tif"]:
        (folder / name).write_bytes(b"x")
    (folder / "sub.png").mkdir()  # a folder named like an image: not a file, left out
    (folder / "sub.png" / "inner.png").write_bytes(b"x")
    got = expand_image_paths([str(folder)])
    assert got == [str(folder / n) for n in sorted(names)]
    assert {Path(p).suffix.lower() for p in got} == set(IMAGE_EXTENSIONS)


def test_expand_keeps_files_and_order(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"x")
    given = [str(tmp_path / "missing.png"), str(folder), tmp_path / "report.txt"]
    # files (even missing or not named like an image) stay as given: content decides later
    assert expand_image_paths(given) == [given[0], str(folder / "x.png"), str(given[2])]


@pytest.mark.parametrize("content", [[], [".hidden.png", "readme.md"]], ids=["empty", "no-images"])
def test_expand_refuses_a_folder_without_images(tmp_path: Path, content: list[str]) -> None:
    for name in content:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="holds no image files"):
        expand_image_paths([str(tmp_path)])


# --------------------------------------------------------------------------------------------------
# Output equals export_files
# --------------------------------------------------------------------------------------------------


def test_streamed_bundle_equals_export_files(tmp_path: Path, fake_forward: None) -> None:
    paths = _write_pngs(tmp_path / "in", 5)
    paths += _write_pngs(tmp_path / "other", 2)  # img00.png and img01.png again: -2 folders
    out = tmp_path / "out"
    report = analyze_to_folder(paths, MODELS, out, device="cpu", batch_size=3)

    items = [(p, _fake_analysis(m, load_image(p))) for m in MODELS for p in paths]
    expected = export_files(items)
    _assert_same_bundle(_bundle(out), expected)
    assert report.results == len(items) and report.files == len(expected)
    assert report.skipped == ()
    assert [(t.model, t.results, t.batches) for t in report.models] == [(m, 7, 3) for m in MODELS]


def test_a_folder_given_to_the_library_stands_for_its_images(tmp_path: Path, fake_forward: None) -> None:
    paths = _write_pngs(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    report = analyze_to_folder([tmp_path / "in"], MODELS[:1], out, device="cpu", batch_size=2)
    items = [(p, _fake_analysis(MODELS[0], load_image(p))) for p in sorted(paths)]
    _assert_same_bundle(_bundle(out), export_files(items))
    assert report.results == 3 and report.skipped == ()


@pytest.mark.slow
def test_streamed_bundle_equals_export_files_with_real_models(tmp_path: Path) -> None:
    paths = _write_pngs(tmp_path / "in", 5, size=(70, 90))
    out = tmp_path / "out"
    report = analyze_to_folder(paths, MODELS, out, weights="pretrained", device="cpu", batch_size=3)

    items = []
    images = [load_image(p) for p in paths]
    for name in MODELS:
        model = load_model(name, weights="pretrained", device="cpu")
        for start in range(0, len(images), 3):  # the same batches: the same float sums
            results = analyze(model, images[start : start + 3])
            items.extend(zip(paths[start : start + 3], results, strict=True))
    _assert_same_bundle(_bundle(out), export_files(items))
    assert report.results == 10 and report.gpu_utilization is None
    for timing in report.models:
        assert timing.batches == 2 and timing.forward_s > 0 and timing.write_s > 0
    assert report.images_per_s == pytest.approx(10 / report.wall_s)


# --------------------------------------------------------------------------------------------------
# Unreadable images
# --------------------------------------------------------------------------------------------------


def test_unreadable_images_are_skipped_and_the_rest_written(tmp_path: Path, fake_forward: None) -> None:
    folder = tmp_path / "in"
    good = _write_pngs(folder, 3)
    (folder / "x.png").write_text("hello, not an image\n")
    (folder / "y.png").write_bytes(b"")
    events: list[PipelineEvent] = []
    out = tmp_path / "out"
    report = analyze_to_folder(
        expand_image_paths([str(folder)]), MODELS, out, device="cpu", batch_size=2, progress=events.append
    )
    assert [(s.path, s.message) for s in report.skipped] == [
        (str(folder / "x.png"), f"{folder / 'x.png'} is not a supported image: JPEG, PNG, WebP or GIF "
         "expected (the file looks like text)."),
        (str(folder / "y.png"), f"{folder / 'y.png'} is empty (0 bytes)."),
    ]  # fmt: skip
    assert [e.image for e in events if e.kind == "skipped"] == [s.path for s in report.skipped]
    assert report.results == len(good) * len(MODELS)
    items = [(p, _fake_analysis(m, load_image(p))) for m in MODELS for p in good]
    _assert_same_bundle(_bundle(out), export_files(items))


def test_no_readable_image_writes_nothing_and_loads_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("no model should be loaded without an image")

    monkeypatch.setattr(pipeline, "load_model", no_model)
    (tmp_path / "a.png").write_bytes(b"")
    out = tmp_path / "out"
    report = analyze_to_folder([str(tmp_path / "a.png"), str(tmp_path / "b.png")], MODELS, out, device="cpu")
    assert report.results == 0 and report.files == 0 and report.summary_path is None
    assert [s.message for s in report.skipped] == [
        f"{tmp_path / 'a.png'} is empty (0 bytes).",
        f"{tmp_path / 'b.png'} does not exist.",
    ]
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Failures propagate; threads are always joined
# --------------------------------------------------------------------------------------------------


def test_writer_failure_propagates_and_threads_are_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_forward: None
) -> None:
    real = pipeline.write_bundle
    calls = []

    def failing(files, out_dir):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(files, out_dir)

    monkeypatch.setattr(pipeline, "write_bundle", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        analyze_to_folder(_write_pngs(tmp_path / "in", 8), MODELS, out, device="cpu", batch_size=1)
    assert not _our_threads()
    assert calls == [f"{THREAD_PREFIX}-write"] * 2  # nothing written after the failure
    assert not (out / "summary.json").exists()


def test_render_failure_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_forward: None
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("renderer broke")

    monkeypatch.setattr(pipeline, "export_result", broken)
    with pytest.raises(ValueError, match="renderer broke"):
        analyze_to_folder(
            _write_pngs(tmp_path / "in", 4), MODELS, tmp_path / "out", device="cpu", batch_size=1
        )
    assert not _our_threads()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_forward_failure_or_interrupt_joins_every_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    calls = []

    def analyze_then_fail(model, images, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise error("stop")
        return _fake_analyze(model, images)

    monkeypatch.setattr(pipeline, "analyze", analyze_then_fail)
    with pytest.raises(error):
        analyze_to_folder(
            _write_pngs(tmp_path / "in", 9), MODELS, tmp_path / "out", device="cpu", batch_size=2
        )
    assert not _our_threads()
    assert calls == [2, 2]


def test_decoder_failure_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_forward: None
) -> None:
    real = pipeline.load_image

    def load(path):
        if path.endswith("img03.png"):
            raise MemoryError("decoder out of memory")  # not an unreadable image: a real failure
        return real(path)

    monkeypatch.setattr(pipeline, "load_image", load)
    with pytest.raises(MemoryError, match="decoder out of memory"):
        analyze_to_folder(
            _write_pngs(tmp_path / "in", 6), MODELS, tmp_path / "out", device="cpu", batch_size=2
        )
    assert not _our_threads()


def test_a_failing_progress_callback_propagates(tmp_path: Path, fake_forward: None) -> None:
    def progress(event: PipelineEvent) -> None:
        if event.kind == "written":
            raise BrokenPipeError("reader went away")

    with pytest.raises(BrokenPipeError):
        analyze_to_folder(
            _write_pngs(tmp_path / "in", 6),
            MODELS,
            tmp_path / "out",
            device="cpu",
            batch_size=1,
            progress=progress,
        )
    assert not _our_threads()


# --------------------------------------------------------------------------------------------------
# Overlap and bounded memory (synchronised with barriers, not timing)
# --------------------------------------------------------------------------------------------------


def test_writing_batch_k_overlaps_the_forward_of_batch_k_plus_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both sides wait for each other: this passes only if they run at the same time.
    meet = threading.Barrier(2, timeout=_TIMEOUT_S)
    forwards: list[str] = []
    writes: list[str] = []
    real_write = pipeline.write_bundle

    def forward(model, images, **kwargs):
        forwards.append(threading.current_thread().name)
        if len(forwards) == 2:  # batch 1's forward waits until batch 0 is being written
            meet.wait()
        return _fake_analyze(model, images)

    def write(files, out_dir):
        writes.append(threading.current_thread().name)
        if len(writes) == 1:  # batch 0's writing waits until batch 1's forward runs
            meet.wait()
        return real_write(files, out_dir)

    monkeypatch.setattr(pipeline, "analyze", forward)
    monkeypatch.setattr(pipeline, "write_bundle", write)
    report = analyze_to_folder(
        _write_pngs(tmp_path / "in", 6), ["zoo_se"], tmp_path / "out", device="cpu", batch_size=2
    )
    assert report.results == 6
    main = threading.current_thread().name
    assert set(forwards) == {main}
    # every batch on the one writer thread; summary.json last, by the caller once all is written
    assert writes == [f"{THREAD_PREFIX}-write"] * 3 + [main]


def test_decoding_batch_k_plus_1_overlaps_the_forward_of_batch_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meet = threading.Barrier(2, timeout=_TIMEOUT_S)
    real_load = pipeline.load_image
    loaders: set[str] = set()
    forwards = []

    def load(path):
        loaders.add(threading.current_thread().name)
        if path.endswith("img02.png"):  # the first image of batch 1
            meet.wait()
        return real_load(path)

    def forward(model, images, **kwargs):
        forwards.append(len(images))
        if len(forwards) == 1:  # batch 0's forward waits until batch 1 is being decoded
            meet.wait()
        return _fake_analyze(model, images)

    monkeypatch.setattr(pipeline, "load_image", load)
    monkeypatch.setattr(pipeline, "analyze", forward)
    analyze_to_folder(
        _write_pngs(tmp_path / "in", 5), ["zoo_se"], tmp_path / "out", device="cpu", batch_size=2
    )
    assert forwards == [2, 2, 1]
    assert loaders == {f"{THREAD_PREFIX}-decode"}


def test_decoding_runs_at_most_two_batches_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = pipeline.load_image
    loads = []
    seen_while_blocked = []

    def load(path):
        loads.append(path)
        return real_load(path)

    def forward(model, images, **kwargs):
        if not seen_while_blocked:
            # batch 0 is here; batch 1 waits in the queue, batch 2 is decoded and waits to go in
            deadline = time.monotonic() + _TIMEOUT_S
            while len(loads) < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # room to overshoot, if the queue were unbounded
            seen_while_blocked.append(len(loads))
        return _fake_analyze(model, images)

    monkeypatch.setattr(pipeline, "load_image", load)
    monkeypatch.setattr(pipeline, "analyze", forward)
    report = analyze_to_folder(
        _write_pngs(tmp_path / "in", 20), ["zoo_se"], tmp_path / "out", device="cpu", batch_size=2
    )
    assert seen_while_blocked == [6]
    assert report.results == 20


# --------------------------------------------------------------------------------------------------
# Events, report, arguments
# --------------------------------------------------------------------------------------------------


def test_events_come_in_order_on_the_calling_thread(tmp_path: Path, fake_forward: None) -> None:
    paths = _write_pngs(tmp_path / "in", 3)
    events: list[tuple[PipelineEvent, str]] = []
    analyze_to_folder(
        paths,
        MODELS,
        tmp_path / "out",
        device="cpu",
        batch_size=2,
        progress=lambda e: events.append((e, threading.current_thread().name)),
    )
    assert {name for _, name in events} == {threading.current_thread().name}
    # a model's last results may be reported after the next model was loaded: no fixed interleaving
    steps = [(e.kind, e.model) for e, _ in events if e.kind in ("loading", "analysing")]
    assert steps == [(kind, m) for m in MODELS for kind in ("loading", "analysing")]
    second = next(i for i, (e, _) in enumerate(events) if e.kind == "analysing" and e.model == MODELS[1])
    assert all(e.model == MODELS[0] for e, _ in events[:second] if e.kind == "written")
    written = [e for e, _ in events if e.kind == "written"]
    assert [(e.model, e.image, e.folder) for e in written] == [
        (m, p, f"img{i:02d}/{m}") for m in MODELS for i, p in enumerate(paths)
    ]
    assert [e.fraction for e in written] == pytest.approx([k / 6 for k in range(1, 7)])
    assert all(isinstance(e.analysis, Analysis) for e in written)


def test_report_counts_files_on_disk(tmp_path: Path, fake_forward: None) -> None:
    out = tmp_path / "out"
    report = analyze_to_folder(_write_pngs(tmp_path / "in", 4), ["zoo_cbam"], out, device="cpu", batch_size=3)
    on_disk = [p for p in out.rglob("*") if p.is_file()]
    assert report.files == len(on_disk)
    assert report.summary_path == out / "summary.json" and report.summary_path.is_file()
    assert report.out_dir == out and report.gpu_utilization is None
    [timing] = report.models
    assert (timing.model, timing.results, timing.batches) == ("zoo_cbam", 4, 2)
    assert timing.load_s > 0 and timing.write_s > 0 and report.images_per_s > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be in \[1, 64\]"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, ValueError, "batch_size must be in"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"models": ["nosuchnet"]}, UnknownModelError, "nosuchnet"),
        ({"models": []}, ValueError, "at least one model"),
        ({"models": "zoo_se"}, TypeError, "sequence of model names"),
        ({"images": []}, ValueError, "at least one image"),
        ({"images": "a.png"}, TypeError, "sequence of paths"),
        ({"autocast": "fp8"}, ValueError, "autocast"),
        ({"cmap": "no-such-map"}, ValueError, "colormap"),
        ({"alpha": 2.0}, ValueError, "alpha"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict, error: type[Exception], match: str
) -> None:
    args = {"images": [str(tmp_path / "a.png")], "models": ["zoo_se"], "out_dir": tmp_path / "out"}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        analyze_to_folder(**args)
    assert not (tmp_path / "out").exists()
    assert not _our_threads()


# --------------------------------------------------------------------------------------------------
# GPU utilisation
# --------------------------------------------------------------------------------------------------


def test_gpu_sampler_averages_utilisation(monkeypatch: pytest.MonkeyPatch) -> None:
    values = iter([40.0, 60.0, 80.0])
    done = threading.Event()

    def utilization(device=None) -> float:
        try:
            return next(values)
        except StopIteration:
            done.set()
            raise RuntimeError("no more samples") from None

    monkeypatch.setattr(torch.cuda, "utilization", utilization)
    sampler = GpuSampler(torch.device("cuda"))
    sampler.start()
    assert done.wait(_TIMEOUT_S)
    assert sampler.stop() == pytest.approx(70.0)  # the probe took 40; the thread sampled 60, 80


def test_gpu_sampler_is_none_without_pynvml_or_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(device=None) -> float:
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", missing)
    for device in ("cuda", "cpu"):
        sampler = GpuSampler(torch.device(device))
        sampler.start()
        assert sampler.stop() is None
    assert not _our_threads()
