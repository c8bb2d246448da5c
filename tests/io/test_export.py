"""Tests of attnviz.io.export: the bundle's layout, summary.json, PNG/CSV/HTML files, writing and zipping."""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import re
import zipfile
from pathlib import Path

import matplotlib
import numpy as np
import plotly.offline
import pytest
from PIL import Image

import attnviz
from attnviz import render
from attnviz.core.records import Analysis, ChannelWeights, GradCAM, Prediction, SpatialMap
from attnviz.io.export import export_files, validate_style, write_bundle, zip_bundle
from attnviz.io.tables import channel_path_names, channel_weights_csv

IMAGE_NAME = "photos/My Cat.jpg"
SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _strict_json(data: bytes) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(data, parse_constant=refuse)


def _image(seed: int = 0, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _fake_analysis(model: str = "skresnet18", seed: int = 0, values: np.ndarray | None = None) -> Analysis:
    """A small hand-made Analysis, for the tests that need no model."""
    rng = np.random.default_rng(seed)
    gate = rng.random(4).astype(np.float32) if values is None else values
    records = (
        ChannelWeights("layer1.se", "se", gate, 0, True),
        SpatialMap("layer1.gc", "gc_context", rng.random((2, 3)), (4.0, 4.0), 0, True),
        GradCAM("layer4", rng.random((8, 12)).astype(np.float32), 3, "tench", True),
    )
    top5 = tuple(Prediction(i, f"class {i}", 0.2) for i in range(5))
    return Analysis(model, "random", True, _image(seed, (8, 12)), top5, records)


def _expected_entropy(values: np.ndarray) -> float | None:
    """Normalised entropy recomputed from the definition in render.gate_stats."""
    v = values.astype(np.float64)
    if v.ndim == 1:
        v = v[:, None]  # one distribution over the C channels
    if (v < 0).any() or not np.isfinite(v).all() or (v.sum(axis=0) <= 0).any():
        return None
    p = v / v.sum(axis=0, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)  # 0 log 0 = 0
    return float(np.mean(-plogp.sum(axis=0)) / np.log(v.shape[0]))


# --------------------------------------------------------------------------------------------------
# Real analyses (slow: two random-weight models, one batch each)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyses() -> list[Analysis]:
    image = _image(0, (60, 90))
    out = []
    for name in ("skresnet18", "gcresnext26ts"):
        model = attnviz.load_model(name, weights="random", device="cpu")
        out.extend(attnviz.analyze(model, [image]))
    return out


@pytest.fixture(scope="module")
def bundle(analyses: list[Analysis]) -> dict[str, bytes]:
    return export_files([(IMAGE_NAME, a) for a in analyses])


@pytest.fixture(scope="module")
def summary(bundle: dict[str, bytes]) -> dict:
    return _strict_json(bundle["summary.json"])


@pytest.mark.slow
def test_layout(analyses: list[Analysis], bundle: dict[str, bytes]) -> None:
    assert list(bundle)[:2] == ["plotly.min.js", "summary.json"]
    expected = {"plotly.min.js", "summary.json"}
    for a in analyses:
        folder = f"My_Cat/{a.model}"
        expected |= {
            f"{folder}/{name}"
            for name in (
                "input.png",
                "gradcam.png",
                "channel_weights.csv",
                "top5.html",
                "channels_heatmap.html",
                "gate_stats.html",
            )
        }
        expected |= {f"{folder}/block{cw.block:02d}_channels.html" for cw in a.channel_weights}
        expected |= {f"{folder}/block{sm.block:02d}_gc_context.png" for sm in a.spatial_maps}
    assert set(bundle) == expected
    assert any(a.spatial_maps for a in analyses)  # gcresnext26ts contributes overlays
    assert "My_Cat/gcresnext26ts/block03_gc_context.png" in bundle


@pytest.mark.slow
def test_summary_lists_every_record_with_numpy_stats(analyses: list[Analysis], summary: dict) -> None:
    assert summary["attnviz_version"] == attnviz.__version__
    assert summary["created"].endswith("+00:00")
    assert len(summary["results"]) == len(analyses)
    for result, a in zip(summary["results"], analyses, strict=True):
        assert result["image"] == IMAGE_NAME
        assert (result["model"], result["weights"], result["untrained"]) == (a.model, "random", True)
        assert result["input_size"] == list(a.input_image.shape[:2])
        assert result["top5"] == [
            {"index": p.index, "label": p.label, "probability": pytest.approx(p.probability)} for p in a.top5
        ]
        assert len(result["records"]) == len(a.records)
        for entry, rec in zip(result["records"], a.records, strict=True):
            assert entry["type"] == type(rec).__name__
            assert (entry["kind"], entry["layer"]) == (rec.kind, rec.layer)
            assert entry["shape"] == list(rec.values.shape)
            v = rec.values.astype(np.float64)
            expected = {"min": v.min(), "max": v.max(), "mean": v.mean(), "std": v.std()}
            if isinstance(rec, ChannelWeights):
                expected["entropy"] = _expected_entropy(rec.values)
                assert entry["block"] == rec.block
                assert entry["csv"] == f"{result['folder']}/channel_weights.csv"
                assert entry["file"] == f"{result['folder']}/block{rec.block:02d}_channels.html"
            elif isinstance(rec, SpatialMap):
                assert entry["block"] == rec.block
                assert entry["stride"] == pytest.approx(list(rec.stride))
            else:
                assert entry["block"] is None
                assert (entry["target"], entry["target_label"]) == (rec.target, rec.target_label)
                assert entry["target"] == a.top5[0].index
            assert entry["stats"].keys() == expected.keys()
            for key, value in expected.items():
                if value is None:
                    assert entry["stats"][key] is None, key
                else:
                    assert entry["stats"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_gc_add_gates_have_null_entropy(summary: dict) -> None:
    """gc_add terms are signed (all zero in a fresh model): entropy is undefined, null not NaN."""
    gc = next(r for r in summary["results"] if r["model"] == "gcresnext26ts")
    adds = [e for e in gc["records"] if e["kind"] == "gc_add"]
    assert adds
    assert any(e["stats"]["entropy"] is None for e in adds)


@pytest.mark.slow
def test_every_referenced_file_exists(bundle: dict[str, bytes], summary: dict) -> None:
    referenced = set()
    for result in summary["results"]:
        referenced |= set(result["files"].values())
        for entry in result["records"]:
            referenced.add(entry["file"])
            if "csv" in entry:
                referenced.add(entry["csv"])
    assert referenced <= set(bundle)
    assert set(bundle) - referenced == {"plotly.min.js", "summary.json"}


@pytest.mark.slow
def test_overlays_are_the_input_with_the_map_and_its_colour_bar(
    analyses: list[Analysis], bundle: dict[str, bytes], summary: dict
) -> None:
    by_model = {a.model: a for a in analyses}
    pngs = [p for p in bundle if p.endswith(".png")]
    assert len(pngs) == sum(2 + len(a.spatial_maps) for a in analyses)
    entries = {r["model"]: r for r in summary["results"]}
    for path in pngs:
        a = by_model[path.split("/")[1]]
        h, w = a.input_image.shape[:2]
        with Image.open(io.BytesIO(bundle[path])) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            pixels = np.asarray(img)
        if path.endswith("/input.png"):
            np.testing.assert_array_equal(pixels, a.input_image)  # the crop itself, not enlarged
            continue
        # 224 and 256 px inputs are wide enough: the overlay keeps the input's size, with the colour
        # bar strip (values, unit, scale) under it
        assert pixels.shape[1] == w and pixels.shape[0] > h + 20
        entry = next(e for e in entries[a.model]["records"] if e.get("file") == path)
        rec = next(r for r in a.records if r.layer == entry["layer"] and type(r).__name__ == entry["type"])
        scale = entry["scale"]
        assert scale["mode"] == "absolute"
        if isinstance(rec, GradCAM):  # Grad-CAM relevance: its natural range
            assert (scale["min"], scale["max"], scale["natural_range"]) == (0.0, 1.0, True)
        else:  # a softmax over positions: 0 to the map's largest value
            assert scale["quantity"] == "attention probability" and not scale["natural_range"]
            assert scale["min"] == 0.0 and scale["max"] == pytest.approx(float(rec.values.max()))
        assert entry["map_range"] == [
            pytest.approx(float(rec.values.min())),
            pytest.approx(float(rec.values.max())),
        ]
        expected = render.overlay(
            a.input_image, rec.values, cmap="jet", alpha=0.5, value_range=(scale["min"], scale["max"])
        )
        np.testing.assert_array_equal(pixels[:h], np.asarray(expected))
        bar = pixels[h:]
        # the strip's gradient runs from the colormap's first colour to its last
        row = bar[8]
        colours = {tuple(c) for c in row.tolist()}
        assert len(colours) > 50
        first, last = (tuple(round(255 * v) for v in matplotlib.colormaps["jet"](x)[:3]) for x in (0.0, 1.0))
        assert first in colours and last in colours


def test_small_inputs_are_enlarged_for_their_colour_bar() -> None:
    a = _fake_analysis()  # an 8x12 crop
    files = export_files([("x.png", a)], scale="stretched")
    entry = _strict_json(files["summary.json"])["results"][0]
    factor = entry["overlay_scale"]["enlarged"]
    assert factor == 19 and entry["overlay_scale"]["mode"] == "stretched"  # ceil(224 / 12)
    with Image.open(io.BytesIO(files["x/skresnet18/gradcam.png"])) as img:
        pixels = np.asarray(img)
    big = np.asarray(render.enlarge(a.input_image, 224))
    assert big.shape == (8 * factor, 12 * factor, 3)
    cam = a.gradcam.values
    expected = render.overlay(big, cam, alpha=0.5, value_range=(float(cam.min()), float(cam.max())))
    np.testing.assert_array_equal(pixels[: big.shape[0]], np.asarray(expected))
    gc = next(e for e in entry["records"] if e["kind"] == "gc_context")
    assert gc["scale"]["mode"] == "stretched" and gc["scale"]["min"] == pytest.approx(gc["map_range"][0])


@pytest.mark.slow
def test_csv_rows_match_the_records(analyses: list[Analysis], bundle: dict[str, bytes]) -> None:
    for a in analyses:
        text = bundle[f"My_Cat/{a.model}/channel_weights.csv"].decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][:4] == ["block", "layer", "kind", "path"]
        body = iter(rows[1:])
        count = 0
        for cw in a.channel_weights:
            values = cw.values if cw.multipath else cw.values[None, :]
            labels = list(cw.path_labels) if cw.multipath else ["gate"]
            for label, expected in zip(labels, values, strict=True):
                row = next(body)
                count += 1
                assert row[:4] == [str(cw.block), cw.layer, cw.kind, label]
                parsed = np.array(row[4:], dtype=np.float64)
                np.testing.assert_array_equal(parsed, expected.astype(np.float64))
        assert len(rows) - 1 == count


def test_the_csv_table_is_the_bundles_for_an_analysis_or_one_record() -> None:
    a = _fake_analysis(values=np.array([0.25, 0.5, 1.0], dtype=np.float32))
    sk = ChannelWeights("layer2.sk", "sk", np.array([[0.75, 0.5], [0.25, 0.5]]), 1, True, ("3x3", "5x5"))
    unlabelled = ChannelWeights("layer3.sk", "sk", np.zeros((3, 1), dtype=np.float32), 2, True)
    records = (*a.channel_weights, sk, unlabelled)
    bundle = export_files([("x.png", a)])
    assert channel_weights_csv(a.channel_weights) == bundle["x/skresnet18/channel_weights.csv"]
    assert channel_weights_csv(sk) == channel_weights_csv([sk])
    assert channel_weights_csv(records).decode("utf-8") == (
        "block,layer,kind,path,c0,c1,c2\n"
        "0,layer1.se,se,gate,0.25,0.5,1.0\n"
        "1,layer2.sk,sk,3x3,0.75,0.5\n"
        "1,layer2.sk,sk,5x5,0.25,0.5\n"
        "2,layer3.sk,sk,path 0,0.0\n"
        "2,layer3.sk,sk,path 1,0.0\n"
        "2,layer3.sk,sk,path 2,0.0\n"
    )
    assert [channel_path_names(cw) for cw in records] == [
        ["gate"],
        ["3x3", "5x5"],
        ["path 0", "path 1", "path 2"],
    ]
    assert channel_weights_csv([]) == b"block,layer,kind,path\n"
    with pytest.raises(TypeError, match=r"records\[1\] must be a ChannelWeights record"):
        channel_weights_csv([sk, a])


@pytest.mark.slow
def test_html_charts_load_the_bundled_plotlyjs(bundle: dict[str, bytes]) -> None:
    assert bundle["plotly.min.js"] == plotly.offline.get_plotlyjs().encode("utf-8")
    pages = [p for p in bundle if p.endswith(".html")]
    assert pages
    for path in pages:
        html = bundle[path].decode("utf-8")
        assert 'src="../../plotly.min.js"' in html, path
        assert "cdn.plot.ly" not in html
        assert posixpath.normpath(posixpath.join(posixpath.dirname(path), "../../plotly.min.js")) in bundle


@pytest.mark.slow
def test_write_and_zip_the_real_bundle(bundle: dict[str, bytes], tmp_path: Path) -> None:
    written = write_bundle(bundle, tmp_path / "out")
    assert written == [tmp_path / "out" / p for p in bundle]
    for path, content in bundle.items():
        assert (tmp_path / "out" / path).read_bytes() == content
    data = zip_bundle(bundle)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == list(bundle)
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in zf.infolist())
        for path, content in bundle.items():
            assert zf.read(path) == content


# --------------------------------------------------------------------------------------------------
# Fast tests: hand-made analyses and plain files
# --------------------------------------------------------------------------------------------------


def test_folder_names_are_sanitised_and_unique() -> None:
    names = [
        ".hidden.png",
        "../../etc/passwd",
        "C:\\Users\\me\\a b?.png",
        "cat.png",
        "Cat.PNG",
        "summary.json.png",
        "nul.jpg",
        "ünïcode.png",
    ]
    files = export_files([(n, _fake_analysis(seed=i)) for i, n in enumerate(names)])
    summary = _strict_json(files["summary.json"])
    folders = [r["folder"] for r in summary["results"]]
    assert [r["image"] for r in summary["results"]] == names
    assert folders == [
        "hidden/skresnet18",
        "passwd/skresnet18",
        "a_b_/skresnet18",
        "cat/skresnet18",
        "Cat-2/skresnet18",
        "summary.json-2/skresnet18",
        "_nul/skresnet18",
        "_n_code/skresnet18",
    ]
    for path in files:
        assert all(SAFE_PART.match(part) for part in path.split("/")), path


def test_same_image_name_twice_gets_two_folders_in_any_order() -> None:
    sk = [_fake_analysis("skresnet18", seed) for seed in (1, 2)]
    gc = [_fake_analysis("gcresnext26ts", seed) for seed in (1, 2)]
    model_major = [("a.png", sk[0]), ("a.png", sk[1]), ("a.png", gc[0]), ("a.png", gc[1])]
    summary = _strict_json(export_files(model_major)["summary.json"])
    assert [r["folder"] for r in summary["results"]] == [
        "a/skresnet18",
        "a-2/skresnet18",
        "a/gcresnext26ts",
        "a-2/gcresnext26ts",
    ]


def test_non_finite_stats_become_null() -> None:
    values = np.array([0.5, np.nan, 0.25, 0.25], dtype=np.float32)
    files = export_files([("x.png", _fake_analysis(values=values))])
    stats = _strict_json(files["summary.json"])["results"][0]["records"][0]["stats"]
    assert stats == {"min": None, "max": None, "mean": None, "std": None, "entropy": None}
    rows = list(csv.reader(io.StringIO(files["x/skresnet18/channel_weights.csv"].decode())))
    assert rows[1][:4] == ["0", "layer1.se", "se", "gate"]
    assert rows[1][5] == "nan"


def test_export_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        export_files([])
    with pytest.raises(TypeError, match="Analysis"):
        export_files([("a.png", "not an analysis")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown colormap"):
        export_files([("a.png", _fake_analysis())], cmap="no-such-map")
    with pytest.raises(ValueError, match="alpha"):
        validate_style("jet", 1.5)


@pytest.mark.parametrize(
    "path", ["../x", "/abs", "a/../../x", "a/./b", "a//b", "", "a\\b", "C:x", "x/..", "nul\x00"]
)
def test_write_and_zip_refuse_escaping_paths(tmp_path: Path, path: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unsafe bundle path"):
        write_bundle({"ok.txt": b"fine", path: b"evil"}, out)
    assert not out.exists() or not any(out.iterdir())  # checked before anything is written
    with pytest.raises(ValueError, match="unsafe bundle path"):
        zip_bundle({path: b"evil"})


def test_write_refuses_symlinked_folders_and_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        write_bundle({"link/x.txt": b"evil"}, out)
    assert not any(elsewhere.iterdir())

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (out / "f.txt").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        write_bundle({"f.txt": b"evil"}, out)
    assert victim.read_bytes() == b"precious"


def test_write_refuses_a_file_used_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        write_bundle({"a": b"1", "a/b": b"2"}, tmp_path)
    (tmp_path / "c").write_bytes(b"file")
    with pytest.raises(ValueError, match="in the way"):
        write_bundle({"c/d": b"2"}, tmp_path)


def test_write_and_zip_round_trip(tmp_path: Path) -> None:
    files = {"top.txt": b"top", "a/b/c.bin": bytes(range(256)), "a/d.txt": "é".encode()}
    written = write_bundle(files, tmp_path / "new" / "dir")
    assert [p.relative_to(tmp_path / "new" / "dir").as_posix() for p in written] == list(files)
    assert all(p.read_bytes() == files[p.relative_to(tmp_path / "new" / "dir").as_posix()] for p in written)
    assert not [p for p in (tmp_path / "new" / "dir").rglob(".*")]  # no temporary files left
    # Writing again replaces the files in place.
    write_bundle({"top.txt": b"new"}, tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir" / "top.txt").read_bytes() == b"new"

    with zipfile.ZipFile(io.BytesIO(zip_bundle(files))) as zf:
        assert zf.namelist() == list(files)
        assert {n: zf.read(n) for n in zf.namelist()} == files
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


def test_fake_bundle_is_complete() -> None:
    a = _fake_analysis()
    files = export_files([("x.png", a)], cmap="viridis", alpha=0.3)
    assert set(files) == {
        "plotly.min.js",
        "summary.json",
        "x/skresnet18/input.png",
        "x/skresnet18/gradcam.png",
        "x/skresnet18/block00_gc_context.png",
        "x/skresnet18/channel_weights.csv",
        "x/skresnet18/top5.html",
        "x/skresnet18/channels_heatmap.html",
        "x/skresnet18/gate_stats.html",
        "x/skresnet18/block00_channels.html",
    }
    with Image.open(io.BytesIO(files["x/skresnet18/block00_gc_context.png"])) as img:
        big = render.enlarge(a.input_image, 224)
        values = a.spatial_maps[0].values  # a softmax: absolute is 0 to its largest value
        expected = render.overlay(
            big, values, cmap="viridis", alpha=0.3, value_range=(0.0, float(values.max()))
        )
        np.testing.assert_array_equal(np.asarray(img)[: big.height], np.asarray(expected))
    stats = _strict_json(files["summary.json"])["results"][0]["records"][0]["stats"]
    assert stats["entropy"] == pytest.approx(_expected_entropy(a.channel_weights[0].values))
    assert not math.isnan(stats["mean"])
    assert "\\" not in "".join(files)
