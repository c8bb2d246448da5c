"""Tests of the command line (attnviz.cli), in-process through main() and once as ``python -m attnviz``."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz import list_models
from attnviz.cli import MAX_IMAGES, MAX_MODELS, main

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
    "seresnet50",
    "ecaresnet26t",
    "skresnet18",
    "resnest14d",
    "gcresnext26ts",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_small_patch16_224.dino",
    "vit_small_patch14_reg4_dinov2",
    "swin_tiny_patch4_window7_224",
    "botnet26t_256",
    "halonet26t",
    "vit_b_16",
    "swin_t",
    "deformable_detr",
    "dat_tiny",
    "resnet50",
} | {
    f"zoo_{kind}"
    for kind in ("none", "se", "eca", "cbam", "ca", "gc", "sk", "nonlocal", "mhsa", "dat", "deform")
}


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _one_error_line(err: str) -> str:
    """The whole stderr must be a single ``attnviz: error:`` line, without a traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("attnviz: error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------------
# list
# --------------------------------------------------------------------------------------------------


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in specs} == MODELS
    assert len(specs) == len(MODELS)
    sk = next(s for s in specs if s["name"] == "skresnet18")
    assert sk["attention"] == ["sk"]
    assert sk["input_size"] == [224, 224]
    assert isinstance(sk["pretrained_available"], bool)


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SOURCE", "ATTENTION"]
    assert len(lines) == 1 + len(MODELS)
    for spec, line in zip(list_models(), lines[1:], strict=True):
        assert line.startswith(spec.name + " ")
        assert ("yes" if spec.pretrained_available else "no") in line.split()
        assert line.endswith(spec.description)
        assert f"{spec.input_size[0]}x{spec.input_size[1]}" in line


@pytest.mark.slow
def test_entry_point_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "attnviz", "list", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert {s["name"] for s in json.loads(proc.stdout)} == MODELS


# --------------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_analyze_writes_a_bundle(png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["analyze", str(png), "--model", "skresnet18", "--model", "gcresnext26ts"]
    rc = main([*args, "--weights", "random", "--device", "cpu", "--out", str(out), "-v"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Traceback" not in captured.err
    assert "UNTRAINED" in captured.err  # the note before the run
    # -v: a header per model on stdout (and a line per result)
    assert "skresnet18 (random weights, UNTRAINED)" in captured.out
    assert "gcresnext26ts (random weights, UNTRAINED)" in captured.out

    def refuse(token: str) -> None:
        raise ValueError(token)

    summary = json.loads((out / "summary.json").read_text("utf-8"), parse_constant=refuse)
    results = summary["results"]
    assert [(r["image"], r["model"]) for r in results] == [
        (str(png), "skresnet18"),
        (str(png), "gcresnext26ts"),
    ]
    for result in results:
        assert result["weights"] == "random"
        assert result["untrained"] is True
        assert result["folder"] == f"in/{result['model']}"
        assert result["records"]
        assert result["records"][-1]["type"] == "GradCAM"
        for entry in result["records"]:
            assert (out / entry["file"]).is_file()
    assert any(e["type"] == "SpatialMap" for e in results[1]["records"])
    assert (out / "plotly.min.js").is_file()
    with Image.open(out / "in" / "gcresnext26ts" / "input.png") as img:
        assert img.size == (256, 256)


@pytest.mark.parametrize(
    ("make_args", "match"),
    [
        (lambda d, png: ["analyze", str(d / "missing.png"), "-m", "skresnet18"], "does not exist"),
        (lambda d, png: ["analyze", str(d / "text.png"), "-m", "skresnet18"], "not a supported image"),
        (lambda d, png: ["analyze", str(png), "-m", "nosuchnet"], "Unknown model 'nosuchnet'"),
        (
            lambda d, png: [
                "analyze",
                str(png),
                "-m",
                "skresnet18",
                "--weights",
                str(d / "nope.safetensors"),
            ],
            "no such checkpoint file",
        ),
        (lambda d, png: ["analyze", str(png), "-m", "skresnet18", "--device", "tpu"], "Unknown device"),
        (lambda d, png: ["analyze", str(png), "-m", "skresnet18", "--cmap", "nope"], "unknown colormap"),
        (lambda d, png: ["analyze", str(png), "-m", "skresnet18", "--alpha", "2"], "--alpha"),
        (lambda d, png: ["analyze", str(png), "-m", "skresnet18", "--out", str(png)], "not a folder"),
        (lambda d, png: ["analyze", str(png), "--out", str(d)], "--model"),
        (lambda d, png: ["analyze", *[str(png)] * (MAX_IMAGES + 1), "-m", "skresnet18"], "too many images"),
        (
            lambda d, png: ["analyze", str(png), *[f"--model={m}" for m in sorted(MODELS)[: MAX_MODELS + 1]]],
            "too many models",
        ),
        (lambda d, png: ["frobnicate"], "invalid choice"),
        (lambda d, png: [], "choose a command"),
    ],
    ids=[
        "missing-image",
        "text-as-png",
        "unknown-model",
        "missing-checkpoint",
        "bad-device",
        "bad-cmap",
        "bad-alpha",
        "out-is-a-file",
        "no-model",
        "too-many-images",
        "too-many-models",
        "unknown-command",
        "no-command",
    ],
)
def test_errors_are_one_line(
    make_args, match: str, png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "text.png").write_text("hello, not an image\n")
    args = make_args(tmp_path, png)
    if args and args[0] == "analyze" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    handlers = list(logging.getLogger().handlers)
    rc = main(args)
    captured = capsys.readouterr()
    assert rc != 0
    assert match in _one_error_line(captured.err)
    assert captured.out == ""
    assert not (tmp_path / "out").exists()  # nothing written for a failed call
    assert logging.getLogger().handlers == handlers  # main() leaves logging as it found it


def test_cuda_without_cuda_is_one_line(png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["analyze", str(png), "-m", "skresnet18", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "CUDA" in _one_error_line(capsys.readouterr().err)


def test_verbose_adds_the_traceback(png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", str(png), "-m", "nosuchnet", "--out", str(tmp_path / "o"), "-v"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("attnviz: error: Unknown model")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--help"]) == 0
    assert "--weights" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# analyze: folders, batches, unreadable files
# --------------------------------------------------------------------------------------------------


def _folder_of_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        pixels = np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_analyze_a_folder_in_batches_skips_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "pics"
    good = _folder_of_images(folder, 3)
    (folder / "bad.png").write_text("hello, not an image\n")
    (folder / ".hidden.png").write_text("never read\n")
    (folder / "notes.txt").write_text("not an image name\n")
    out = tmp_path / "out"
    models = ["zoo_se", "zoo_cbam"]
    args = ["analyze", str(folder), *(f"-m{m}" for m in models), "--batch-size", "2", "--no-gradcam"]
    rc = main([*args, "--device", "cpu", "--out", str(out), "-v"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err  # one file could not be read: 1, though the rest is written
    patterns = []
    for model in models:  # -v: model by model, each result as soon as it is written
        patterns.append(re.escape(f"{model} (pretrained weights)"))
        patterns += [
            re.escape(f"  {p}: top-1 ")
            + r".+ \(\d+\.\d%\), \d+ records -> "
            + re.escape(f"{out / p.stem / model}/")
            for p in good
        ]
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    patterns.append(re.escape(f"Wrote {n_files} files to {out} (see {out / 'summary.json'})."))
    lines = captured.out.splitlines()
    assert len(lines) == len(patterns), captured.out
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), line

    err = captured.err.splitlines()
    assert "Traceback" not in captured.err
    assert f"attnviz: skipped: {folder / 'bad.png'} is not a supported image" in captured.err
    assert err[-1].startswith("attnviz: error: 1 of 4 image(s) could not be read")
    assert any("images/s" in line and "forward" in line and "render+write" in line for line in err)
    for model in models:  # each model's progress ends with one line (off a terminal)
        assert sum(line.startswith(f"attnviz: [{model}] 3/3 images, ") for line in err) == 1, err
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert [(r["image"], r["model"]) for r in summary["results"]] == [
        (str(p), m) for m in models for p in good
    ]
    assert not (out / ".hidden").exists() and not (out / "bad").exists()


@pytest.mark.slow
def test_analyze_exits_zero_when_every_image_was_analysed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _folder_of_images(tmp_path / "pics", 3)
    out = tmp_path / "out"
    args = ["analyze", str(images[0]), str(tmp_path / "pics"), "-m", "zoo_se", "--batch-size", "64"]
    rc = main([*args, "--no-gradcam", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    # a file given twice (alone and through its folder) gets a second folder, as before
    assert [r["folder"] for r in summary["results"]] == [
        "img0/zoo_se",
        "img0-2/zoo_se",
        "img1/zoo_se",
        "img2/zoo_se",
    ]
    assert "error" not in captured.err
    # without -v stdout holds only the closing line; the progress is on stderr
    assert captured.out.startswith("Wrote ") and len(captured.out.splitlines()) == 1, captured.out
    assert "attnviz: [zoo_se] 4/4 images, " in captured.err


@pytest.mark.parametrize("value", ["0", "65", "x", "2.5", "-1"])
def test_batch_size_must_be_1_to_64(
    value: str, png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(["analyze", str(png), "-m", "zoo_se", f"--batch-size={value}", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    assert f"--batch-size: expected an integer in [1, 64], got '{value}'" in _one_error_line(captured.err)
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("content", [[], [".hidden.png", "readme.txt"]], ids=["empty", "no-images"])
def test_a_folder_without_images_is_one_line(
    content: list[str], png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    out = tmp_path / "out"
    rc = main(["analyze", str(png), str(folder), "-m", "zoo_se", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    assert f"the folder {folder} holds no image files (.jpg," in _one_error_line(captured.err)
    assert captured.out == "" and not out.exists()


def test_the_image_cap_counts_folder_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnviz import cli

    monkeypatch.setattr(cli, "MAX_IMAGES", 2)
    _folder_of_images(tmp_path / "pics", 3)
    rc = main(["analyze", str(tmp_path / "pics"), "-m", "zoo_se", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "too many images: 3 given, at most 2 per call" in _one_error_line(capsys.readouterr().err)
    assert MAX_IMAGES == 10_000


def test_no_readable_image_lists_each_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_text("hello\n")
    (tmp_path / "b.jpg").write_bytes(b"")
    out = tmp_path / "out"
    rc = main(
        ["analyze", str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "-m", "zoo_se", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.splitlines() == [
        f"attnviz: skipped: {tmp_path / 'a.png'} is not a supported image: JPEG, PNG, WebP or GIF expected "
        "(the file looks like text).",
        f"attnviz: skipped: {tmp_path / 'b.jpg'} is empty (0 bytes).",
        "attnviz: error: none of the 2 images could be read",
    ]
    assert captured.out == "" and not out.exists()


def test_help_documents_folders_batches_and_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size N images per forward, 1 to 64 (default: 8)" in text
    assert "or folders" in text and "*.jpg" in text and "sorted by name" in text
    assert "At most 10000 images" in text
    assert "the exit status is then 1" in text


@pytest.mark.parametrize("mode", ["absolute", "stretched"])
def test_scale_of_the_overlays_is_chosen_and_reported(
    mode: str, png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(["analyze", str(png), "-m", "zoo_gc", "--scale", mode, "--no-gradcam", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    [result] = json.loads((out / "summary.json").read_text())["results"]
    # the zoo's 96 px input, enlarged 3x for a readable colour bar under every overlay
    assert result["overlay_scale"] == {"mode": mode, "enlarged": 3}
    [context, _] = [e for e in result["records"] if e["kind"] == "gc_context"]
    lo, hi = context["map_range"]
    scale = context["scale"]
    assert (scale["mode"], scale["quantity"], scale["unit"]) == (mode, "attention probability", "")
    expected = (0.0, hi) if mode == "absolute" else (lo, hi)
    assert (scale["min"], scale["max"]) == pytest.approx(expected)
    with Image.open(out / context["file"]) as img:
        assert img.width == 288 and img.height > 288 + 30  # the strip under the overlay


def test_an_unknown_scale_is_one_line(png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", str(png), "-m", "zoo_se", "--scale", "log", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "--scale: invalid choice: 'log'" in _one_error_line(capsys.readouterr().err)
