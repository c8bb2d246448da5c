"""``attnviz analyze --faithfulness [--road]``: the files and summary entries, checked against
:func:`attnviz.analysis.faithfulness.measure` run directly on the same image (``zoo_cbam`` ships its
weights: no network)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from attnviz import analyze, load_image, load_model
from attnviz.analysis.faithfulness import measure
from attnviz.cli import main
from attnviz.io.tables import FAITHFULNESS_COLUMNS
from attnviz.views.faithfulness import input_maps
from attnviz.workflows.pipeline import analyze_to_folder

MODEL = "zoo_cbam"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    make_image(3).save(path)
    return path


def _run(image: Path, out: Path, *extra: str) -> int:
    return main(["analyze", str(image), "-m", MODEL, "--device", "cpu", "--out", str(out), *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text("utf-8")
    assert text.splitlines()[0] == ",".join(FAITHFULNESS_COLUMNS)
    return list(csv.DictReader(io.StringIO(text)))


def _strict(entry: object) -> None:
    """Every number finite (strict JSON: the writer turns the others into null)."""
    if isinstance(entry, dict):
        for v in entry.values():
            _strict(v)
    elif isinstance(entry, list):
        for v in entry:
            _strict(v)
    elif isinstance(entry, float):
        assert math.isfinite(entry)


@pytest.mark.slow
def test_faithfulness_files_and_entry_match_measure(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(image, out, "--faithfulness") == 0, capsys.readouterr().err
    folder = out / image.stem / MODEL
    summary_text = (out / "summary.json").read_text("utf-8")
    summary = json.loads(summary_text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    (entry,) = summary["results"]
    faith = entry["faithfulness"]
    _strict(faith)

    model = load_model(MODEL, device="cpu")
    (analysis,) = analyze(model, [load_image(str(image))])
    expected = measure(model, analysis, input_maps(analysis), road=False)
    assert analysis.gradcam is not None and expected.target == analysis.gradcam.target

    assert faith["target"] == expected.target
    assert faith["target_label"] == expected.target_label
    assert faith["probability"] == pytest.approx(expected.probability, rel=1e-6)
    assert faith["file"] == f"{image.stem}/{MODEL}/faithfulness.csv"
    assert entry["files"]["faithfulness_csv"] == faith["file"]
    assert faith["steps"] == 20 and faith["forwards"] == expected.forwards
    assert faith["unscored"] == [{"name": n, "reason": r} for n, r in expected.unscored]
    baseline = expected.baseline
    assert baseline is not None
    maps = [s for s in expected.scores if s is not baseline]
    assert [m["name"] for m in faith["maps"]] == [s.name for s in maps]
    assert len(maps) >= 3  # two CBAM spatial maps and Grad-CAM
    for got, want in zip([*faith["maps"], faith["random_baseline"]], [*maps, baseline], strict=True):
        assert got["deletion_auc"] == pytest.approx(want.deletion.auc, rel=1e-5, abs=1e-7)
        assert got["insertion_auc"] == pytest.approx(want.insertion.auc, rel=1e-5, abs=1e-7)
        assert got["road_combined"] is None

    rows = _rows(folder / "faithfulness.csv")
    assert len(rows) == len(expected.scores) * 2 * 21
    assert {r["metric"] for r in rows} == {"deletion", "insertion"}
    i = 0
    for score in expected.scores:
        for metric, curve in (("deletion", score.deletion), ("insertion", score.insertion)):
            chunk = rows[i : i + len(curve.fractions)]
            i += len(curve.fractions)
            assert {(r["map"], r["layer"], r["kind"], r["metric"]) for r in chunk} == {
                (score.name, score.layer, score.kind, metric)
            }
            assert all(r["percentile"] == "" and r["change"] == "" for r in chunk)
            np.testing.assert_array_equal([float(r["fraction"]) for r in chunk], curve.fractions)
            np.testing.assert_allclose(
                [float(r["probability"]) for r in chunk], curve.probabilities, rtol=1e-5, atol=1e-7
            )


@pytest.mark.slow
def test_without_the_option_nothing_changes(image: Path, tmp_path: Path) -> None:
    plain, scored = tmp_path / "plain", tmp_path / "scored"
    assert _run(image, plain, "--no-gradcam") == 0
    analyze_to_folder([image], [MODEL], scored, device="cpu", gradcam=False, faithfulness=True)
    assert not list(plain.rglob("faithfulness.csv"))
    (entry,) = json.loads((plain / "summary.json").read_text("utf-8"))["results"]
    assert "faithfulness" not in entry and "faithfulness_csv" not in entry["files"]
    # with it: the other files are the same bytes; the entry only gains its object and file
    assert {p.relative_to(scored) for p in scored.rglob("*") if p.is_file()} == {
        p.relative_to(plain) for p in plain.rglob("*") if p.is_file()
    } | {Path(image.stem, MODEL, "faithfulness.csv")}
    for p in plain.rglob("*"):
        if p.suffix in (".png", ".csv"):  # plotly's HTML has random div ids
            assert (scored / p.relative_to(plain)).read_bytes() == p.read_bytes(), p
    (other,) = json.loads((scored / "summary.json").read_text("utf-8"))["results"]
    other.pop("faithfulness")
    other["files"].pop("faithfulness_csv")
    assert other == entry


@pytest.mark.slow
def test_road_adds_its_rows_and_combined_score(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(image, out, "--faithfulness", "--road", "--no-gradcam") == 0
    (entry,) = json.loads((out / "summary.json").read_text("utf-8"))["results"]
    faith = entry["faithfulness"]
    # no Grad-CAM: the top-1 is followed
    assert faith["target"] == entry["top5"][0]["index"]
    scored = [*faith["maps"], faith["random_baseline"]]
    assert all(isinstance(m["road_combined"], float) for m in scored)
    rows = _rows(out / image.stem / MODEL / "faithfulness.csv")
    for metric in ("road_morf", "road_lerf"):
        mine = [r for r in rows if r["metric"] == metric]
        assert len(mine) == 9 * len(scored)
        assert [float(r["percentile"]) for r in mine[:9]] == [10.0 * k for k in range(1, 10)]
        assert all(r["fraction"] == "" and r["probability"] == "" for r in mine)
        assert all(math.isfinite(float(r["change"])) for r in mine)
    for m in scored:  # ROAD combined is the mean of (LeRF - MoRF) / 2 over the percentiles
        name = m.get("name", "random map (baseline)")
        morf = [float(r["change"]) for r in rows if r["map"] == name and r["metric"] == "road_morf"]
        lerf = [float(r["change"]) for r in rows if r["map"] == name and r["metric"] == "road_lerf"]
        assert m["road_combined"] == pytest.approx(np.mean(np.subtract(lerf, morf)) / 2, abs=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--faithfulness", "--ray"], "--faithfulness runs in this process only: leave out --ray"),
        (["--faithfulness", "--ray=127.0.0.1:6379"], "--faithfulness runs in this process only"),
        (["--road"], "--road is one of the faithfulness metrics: give it with --faithfulness"),
    ],
)
def test_usage_errors(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    rc = main(["analyze", str(image), "-m", MODEL, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_library_checks_the_flags(image: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="road=True needs faithfulness=True"):
        analyze_to_folder([image], [MODEL], tmp_path / "o", road=True)
    with pytest.raises(TypeError, match="faithfulness must be a bool"):
        analyze_to_folder([image], [MODEL], tmp_path / "o", faithfulness="yes")  # type: ignore[arg-type]
