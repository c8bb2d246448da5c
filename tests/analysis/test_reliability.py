"""Reliability: one model shared by many threads, flat memory over many analyses, and the GPU
out-of-memory fallback of :func:`attnviz.analyze` (simulated on the CPU; a ``gpu`` test runs it on
CUDA when there is one)."""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, randomize_norms
from PIL import Image

import attnviz
from attnviz.cli import main
from attnviz.core.errors import GPUMemoryError
from attnviz.workflows import pipeline

ROOT = Path(__file__).resolve().parents[2]

SIZES = [(240, 320), (300, 260), (200, 200), (256, 320), (320, 240), (224, 280)]


def load(name: str, weights: str, device: str = "cpu") -> attnviz.LoadedModel:
    model = attnviz.load_model(name, weights=weights, device=device)
    if weights == "random":
        randomize_norms(model.module)
    return model


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("zoo_cbam", "pretrained"), id="zoo_cbam"),
        pytest.param(("mobilenet_v3_large", "random"), id="mobilenet_v3_large", marks=pytest.mark.slow),
    ],
)
def shared(request: pytest.FixtureRequest) -> attnviz.LoadedModel:
    """A zoo model with its shipped weights, and a torchvision one with random weights (re-drawn so
    that every gate depends on the image: results that mixed images would show)."""
    return load(*request.param)


@pytest.fixture(scope="module")
def cbam() -> attnviz.LoadedModel:
    return load("zoo_cbam", "pretrained")


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [make_image(10 + i, size) for i, size in enumerate(SIZES)]


def assert_same(got: attnviz.Analysis, want: attnviz.Analysis, *, notes: bool = True) -> None:
    """Every field of two analyses equal, arrays element for element."""
    assert (got.model, got.weights, got.untrained) == (want.model, want.weights, want.untrained)
    np.testing.assert_array_equal(got.input_image, want.input_image)
    assert got.top5 == want.top5
    if notes:
        assert got.notes == want.notes
    assert [type(r) for r in got.records] == [type(r) for r in want.records]
    for mine, theirs in zip(got.records, want.records, strict=True):
        for f in dataclasses.fields(mine):
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{mine.layer}.{f.name}")
            else:
                assert a == b, f"{mine.layer}.{f.name}"


def assert_close(got: attnviz.Analysis, want: attnviz.Analysis) -> None:
    """Equal up to float rounding: a batch's sums may round differently from a smaller batch's."""
    np.testing.assert_array_equal(got.input_image, want.input_image)
    assert [(p.index, p.label) for p in got.top5] == [(p.index, p.label) for p in want.top5]
    torch.testing.assert_close(
        torch.tensor([p.probability for p in got.top5]), torch.tensor([p.probability for p in want.top5])
    )
    for mine, theirs in zip(got.records, want.records, strict=True):
        assert (type(mine), mine.layer) == (type(theirs), theirs.layer)
        for f in dataclasses.fields(mine):
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{mine.layer}.{f.name}")


def hooks_left(module: torch.nn.Module) -> list[str]:
    """Names of the modules below ``module`` that still carry a hook or a patched forward."""
    left = []
    for name, m in module.named_modules():
        hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
        if any(hooks) or (name and "forward" in m.__dict__):
            left.append(name or "<root>")
    return left


def lock_taken_elsewhere(lock: threading.RLock) -> bool:
    """Whether another thread holds ``lock`` (asked from a fresh thread, since an RLock is re-entrant)."""
    free: list[bool] = []

    def probe() -> None:
        got = lock.acquire(blocking=False)
        if got:
            lock.release()
        free.append(got)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return not free[0]


# --- many users, one model ---------------------------------------------------------------------


def test_threads_sharing_one_model_get_their_own_results(
    shared: attnviz.LoadedModel, pictures: list[Image.Image]
) -> None:
    reference = [attnviz.analyze(shared, [img])[0] for img in pictures]
    # results that differ between images, or a mix-up could go unseen
    assert len({r.records[0].values.tobytes() for r in reference}) == len(pictures)

    def worker(seed: int) -> list[tuple[int, attnviz.Analysis]]:
        order = list(range(len(pictures)))
        random.Random(seed).shuffle(order)
        return [(i, attnviz.analyze(shared, [pictures[i]])[0]) for i in order]

    with ThreadPoolExecutor(max_workers=6) as pool:
        for round_ in range(2):
            runs = list(pool.map(worker, range(6 * round_, 6 * round_ + 6)))
            for run in runs:
                for i, got in run:
                    assert_same(got, reference[i])
    assert hooks_left(shared.module) == []


def test_cached_model_is_loaded_once_and_shared_by_every_thread(
    monkeypatch: pytest.MonkeyPatch, pictures: list[Image.Image]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import ui  # the app's shared cache; an st.cache_resource also works outside a script run

    loads: list[str] = []
    real_load = attnviz.load_model

    def slow_load(name: str, **kwargs) -> attnviz.LoadedModel:
        loads.append(name)
        time.sleep(0.3)  # every thread arrives while the first one is still loading
        return real_load(name, **kwargs)

    monkeypatch.setattr(attnviz, "load_model", slow_load)
    ui._model_cache.clear()
    start = threading.Barrier(6)

    def session(i: int) -> tuple[attnviz.LoadedModel, attnviz.Analysis]:
        start.wait()
        model = ui.cached_model("zoo_cbam", "pretrained", "cpu")
        return model, attnviz.analyze(model, [pictures[i]])[0]

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            got = list(pool.map(session, range(6)))
        assert loads == ["zoo_cbam"]
        model = got[0][0]
        assert all(m is model for m, _ in got)
        for i, (_, analysis) in enumerate(got):
            assert_same(analysis, attnviz.analyze(model, [pictures[i]])[0])
    finally:
        ui._model_cache.clear()  # no later test gets a model loaded through the stub


# --- memory stays flat -------------------------------------------------------------------------


def resident_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm`` (pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux) to read the RSS")
def test_resident_memory_stays_flat_over_100_analyses(
    cbam: attnviz.LoadedModel, pictures: list[Image.Image], record_property: Callable
) -> None:
    for i in range(10):  # warm-up: allocator pools, oneDNN primitives, lazy imports
        attnviz.analyze(cbam, [pictures[i % len(pictures)]])
    gc.collect()
    before = resident_bytes()
    kept = []
    for i in range(100):
        [analysis] = attnviz.analyze(cbam, [pictures[i % len(pictures)]])
        kept.append(analysis.top5[0].index)  # results are used, then dropped
    gc.collect()
    after = resident_bytes()
    growth = (after - before) / before
    record_property("rss_growth", round(growth, 4))
    record_property("rss_mib", (round(before / 2**20, 1), round(after / 2**20, 1)))
    print(f"RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB over 100 analyses: {growth:+.2%}")
    assert len(kept) == 100
    assert growth <= 0.10, f"resident memory grew by {growth:.1%} over 100 analyses"


# --- GPU out of memory -------------------------------------------------------------------------


class FlakyForward:
    """Replaces ``module.forward``: raises CUDA's out-of-memory error when ``fails(size, grad)``.

    ``grad`` is True for Grad-CAM's forward (gradients on), False for the capture forward.
    Records ``(batch size, grad)`` of every call and whether the model's lock was held.
    """

    def __init__(self, model: attnviz.LoadedModel, fails: Callable[[int, bool], bool]) -> None:
        self.model, self.fails = model, fails
        self.original = model.module.forward
        self.calls: list[tuple[int, bool]] = []
        self.locked: list[bool] = []

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        size, grad = int(x.shape[0]), torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        self.calls.append((size, grad))
        self.locked.append(lock_taken_elsewhere(self.model.lock))
        if self.fails(size, grad):
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {size * 512} MiB (simulated for {size} images)"
            )
        return self.original(x, *args, **kwargs)


@pytest.fixture
def gpu_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pretend CUDA is there for the cache release only: records ``torch.cuda.empty_cache`` calls."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    return calls


def flaky(monkeypatch: pytest.MonkeyPatch, model: attnviz.LoadedModel, fails) -> FlakyForward:
    fake = FlakyForward(model, fails)
    monkeypatch.setattr(model.module, "forward", fake)
    return fake


def test_a_gpu_memory_failure_is_one_error_line_from_the_cli(
    cbam: attnviz.LoadedModel,
    pictures: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Out of memory even for one image: the CLI prints the library's message, no traceback."""
    flaky(monkeypatch, cbam, lambda size, grad: True)
    monkeypatch.setattr(pipeline, "load_model", lambda *args, **kwargs: cbam)
    image = tmp_path / "in.png"
    pictures[0].save(image)
    rc = main(
        ["analyze", str(image), "--model", "zoo_cbam", "--device", "cpu", "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("attnviz: error:")] == [
        "attnviz: error: zoo_cbam ran out of GPU memory even for one image on cpu: choose the CPU device or "
        "a smaller model, or try again when the GPU is less busy."
    ]


def test_out_of_memory_in_the_forward_retries_in_smaller_batches(
    shared: attnviz.LoadedModel,
    pictures: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    gpu_calls: list[str],
) -> None:
    images = [*pictures, make_image(20), make_image(21, (180, 300))]  # 8
    normal = attnviz.analyze(shared, images)
    in_twos = [a for k in range(0, 8, 2) for a in attnviz.analyze(shared, images[k : k + 2])]
    fake = flaky(monkeypatch, shared, lambda size, grad: size > 2)

    got = attnviz.analyze(shared, images)

    # 8 and 4 run out; the other 4 is split without trying; each pair: capture forward, Grad-CAM
    assert fake.calls == [(8, False), (4, False)] + [(2, False), (2, True)] * 4
    assert all(fake.locked), "the model's lock must be held for every forward, retries included"
    assert gpu_calls == ["empty_cache"] * 2
    note = "GPU memory ran out for a batch of 8 images; they were analysed in batches of 2."
    assert len(got) == 8
    for mine, pair, whole in zip(got, in_twos, normal, strict=True):
        assert mine.notes == (note,)
        assert whole.notes == ()
        assert_same(mine, pair, notes=False)  # exactly what batches of 2 give
        assert_close(mine, whole)  # and the normal path's result, up to rounding
    monkeypatch.undo()
    assert hooks_left(shared.module) == []


def test_out_of_memory_in_gradcam_is_handled_the_same_way(
    cbam: attnviz.LoadedModel,
    pictures: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    gpu_calls: list[str],
) -> None:
    images = pictures[:5]
    expected = attnviz.analyze(cbam, images[:2]) + attnviz.analyze(cbam, [images[2]])
    expected += attnviz.analyze(cbam, images[3:])
    fake = flaky(monkeypatch, cbam, lambda size, grad: grad and size > 2)

    got = attnviz.analyze(cbam, images)

    # 5 -> 3 + 2; 3 -> 2 + 1; the second 2 is tried again (only 3 and more ran out)
    tries = [(5, False), (5, True), (3, False), (3, True)]  # both ran out in Grad-CAM
    runs = [(2, False), (2, True), (1, False), (1, True), (2, False), (2, True)]
    assert fake.calls == tries + runs
    assert gpu_calls == ["empty_cache"] * 2
    note = "GPU memory ran out for a batch of 5 images; they were analysed in batches of 2 and 1."
    for mine, want in zip(got, expected, strict=True):
        assert mine.notes == (note,)
        assert mine.gradcam is not None
        assert_same(mine, want, notes=False)
    monkeypatch.undo()
    assert hooks_left(cbam.module) == []


@pytest.mark.parametrize("in_gradcam", [False, True], ids=["forward", "gradcam"])
def test_out_of_memory_for_one_image_raises_a_clear_error_and_leaves_no_hook(
    cbam: attnviz.LoadedModel,
    pictures: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    gpu_calls: list[str],
    in_gradcam: bool,
) -> None:
    reference = attnviz.analyze(cbam, pictures[:3])
    fake = flaky(monkeypatch, cbam, lambda size, grad: grad or not in_gradcam)

    with pytest.raises(GPUMemoryError, match=r"out of GPU memory even for one image on cpu: choose the CPU"):
        attnviz.analyze(cbam, pictures[:3])

    # 3 -> 2 -> 1: the first image alone still runs out; the others are not tried
    assert [size for size, _ in fake.calls] == ([3, 3, 2, 2, 1, 1] if in_gradcam else [3, 2, 1])
    assert gpu_calls == ["empty_cache"] * 3
    assert hooks_left(cbam.module) == []  # Capture and Grad-CAM released theirs
    assert not any(m.training for m in cbam.module.modules())
    assert not lock_taken_elsewhere(cbam.lock)
    monkeypatch.undo()
    for got, want in zip(attnviz.analyze(cbam, pictures[:3]), reference, strict=True):
        assert_same(got, want)  # the model is unharmed


def test_gpu_memory_error_carries_the_device_and_what_to_do(
    cbam: attnviz.LoadedModel, pictures: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky(monkeypatch, cbam, lambda size, grad: True)
    with pytest.raises(GPUMemoryError) as info:
        attnviz.analyze(cbam, [pictures[0]])
    err = info.value
    assert (err.device, err.free_mib) == ("cpu", None)
    assert str(err) == (
        "zoo_cbam ran out of GPU memory even for one image on cpu: choose the CPU device or a "
        "smaller model, or try again when the GPU is less busy."
    )
    assert err.__cause__ is None and err.__context__ is None  # no traceback pins the failed tensors


def test_other_errors_propagate_unchanged_without_retry(
    cbam: attnviz.LoadedModel, pictures: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = RuntimeError("cuDNN error: not an out-of-memory error")
    calls: list[int] = []

    def broken(x: torch.Tensor, *args, **kwargs):
        calls.append(x.shape[0])
        raise boom

    monkeypatch.setattr(cbam.module, "forward", broken)
    with pytest.raises(RuntimeError) as info:
        attnviz.analyze(cbam, pictures[:4])
    assert info.value is boom
    assert calls == [4]
    assert hooks_left(cbam.module) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_out_of_memory_fallback_on_a_real_gpu(
    pictures: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load("zoo_cbam", "pretrained", device="cuda")
    normal = attnviz.analyze(model, pictures[:4])
    fake = flaky(monkeypatch, model, lambda size, grad: size > 1)
    got = attnviz.analyze(model, pictures[:4])
    assert [size for size, _ in fake.calls] == [4, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    for mine, whole in zip(got, normal, strict=True):
        assert mine.notes == (
            "GPU memory ran out for a batch of 4 images; they were analysed one at a time.",
        )
        assert_close(mine, whole)
    fake.fails = lambda size, grad: True
    with pytest.raises(
        GPUMemoryError, match=r"even for one image on cuda(:\d)? \(\d+ MiB free\): choose the CPU"
    ):
        attnviz.analyze(model, pictures[:1])
    assert hooks_left(model.module) == []


def test_a_fallback_note_reaches_the_export_and_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user is told: the note is in summary.json and shown in the model's column."""
    import dataclasses
    import json
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from attnviz.io.export import export_files

    note = "GPU memory ran out for a batch of 2 images; they were analysed one at a time."
    real_analyze = attnviz.analyze

    def noted(model, images, **kwargs):
        return [dataclasses.replace(a, notes=(note,)) for a in real_analyze(model, images, **kwargs)]

    model = attnviz.load_model("zoo_cbam", weights="pretrained", device="cpu")
    [result] = noted(model, [np.zeros((96, 96, 3), np.uint8)], gradcam=False)
    summary = json.loads(export_files([("x.png", result)])["summary.json"])
    assert summary["results"][0]["notes"] == [note]

    monkeypatch.setattr(attnviz, "analyze", noted)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=180)
    at.run()
    at.pills(key="compare_models_zoo").set_value(["zoo_cbam"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert note in [i.value for i in at.info]


# --- Grad-CAM added after the native maps ---------------------------------------------------------


def test_add_gradcam_gives_what_analyze_gives(cbam: attnviz.LoadedModel, pictures: list[Image.Image]) -> None:
    images = pictures[:3]
    whole = attnviz.analyze(cbam, images)
    native = attnviz.analyze(cbam, images, gradcam=False)
    assert all(a.gradcam is None for a in native)

    got = attnviz.add_gradcam(cbam, native, images)

    for mine, want in zip(got, whole, strict=True):
        assert mine.gradcam is not None and mine.gradcam.target == mine.top5[0].index
        assert_same(mine, want)
    # results that have Grad-CAM already come back as they were
    again = attnviz.add_gradcam(cbam, got, images)
    assert all(a is b for a, b in zip(again, got, strict=True))
    assert hooks_left(cbam.module) == []


def test_add_gradcam_refuses_mismatched_input(cbam: attnviz.LoadedModel, pictures: list[Image.Image]) -> None:
    native = attnviz.analyze(cbam, pictures[:2], gradcam=False)
    with pytest.raises(ValueError, match="one image per analysis"):
        attnviz.add_gradcam(cbam, native, pictures[:1])
    other = dataclasses.replace(native[0], model="zoo_se")
    with pytest.raises(ValueError, match="an analysis of zoo_se cannot get Grad-CAM from zoo_cbam"):
        attnviz.add_gradcam(cbam, [other], pictures[:1])


@pytest.mark.slow
def test_add_gradcam_on_tokens_and_without_a_classifier() -> None:
    """A ViT's token layout needs the patch grid (taken from the analysis); DINO has no classifier."""
    image = make_image(3)
    deit = load("deit_tiny_patch16_224", "random")
    [want] = attnviz.analyze(deit, [image])
    [got] = attnviz.add_gradcam(deit, attnviz.analyze(deit, [image], gradcam=False), [image])
    assert_same(got, want)
    dino = load("vit_small_patch16_224.dino", "random")
    [native] = attnviz.analyze(dino, [image], gradcam=False)
    [same] = attnviz.add_gradcam(dino, [native], [image])
    assert same is native and same.gradcam is None


def test_out_of_memory_in_add_gradcam_halves_the_batch(
    cbam: attnviz.LoadedModel,
    pictures: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    gpu_calls: list[str],
) -> None:
    images = pictures[:4]
    native = attnviz.analyze(cbam, images, gradcam=False)
    expected = [
        a for k in range(0, 4, 2) for a in attnviz.add_gradcam(cbam, native[k : k + 2], images[k : k + 2])
    ]
    fake = flaky(monkeypatch, cbam, lambda size, grad: grad and size > 2)

    got = attnviz.add_gradcam(cbam, native, images)

    assert fake.calls == [(4, True), (2, True), (2, True)]
    assert all(fake.locked)
    assert gpu_calls == ["empty_cache"]
    note = "GPU memory ran out for a batch of 4 images; they were analysed in batches of 2."
    for mine, want in zip(got, expected, strict=True):
        assert mine.notes == (note,)
        assert_same(mine, want, notes=False)
    monkeypatch.undo()
    assert hooks_left(cbam.module) == []
