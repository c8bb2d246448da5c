"""Tests of attnviz.io.samples and the shipped sample photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnviz.io.images import load_image
from attnviz.io.samples import SAMPLES_DIR, list_samples, load_sample

SAMPLES = list_samples()


def test_samples_are_shipped() -> None:
    assert SAMPLES_DIR.is_dir()
    assert 4 <= len(SAMPLES) <= 6
    assert [path.name for path in SAMPLES] == sorted(path.name for path in SAMPLES)
    assert all(path.parent == SAMPLES_DIR for path in SAMPLES)
    assert "ATTRIBUTION.md" not in {path.name for path in SAMPLES}


def test_samples_are_small() -> None:
    assert sum(path.stat().st_size for path in SAMPLES) < 600 * 1024


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
def test_sample_loads_as_rgb(path: Path) -> None:
    img = load_image(path)
    assert img.mode == "RGB"
    assert max(img.size) <= 640
    assert min(img.size) >= 224
    pixels = np.asarray(img)
    assert pixels.std() > 20  # a photo, not a blank or broken image
    by_name = np.asarray(load_sample(path.name))
    np.testing.assert_array_equal(by_name, pixels)


@pytest.mark.parametrize(
    "name",
    [
        "../cat.jpg",
        "../../etc/passwd",
        "..",
        ".",
        "",
        "samples/cat.jpg",
        "..\\cat.jpg",
        "/etc/passwd",
        "cat.jpg\x00.png",
        str(SAMPLES_DIR / "cat.jpg"),
    ],
)
def test_paths_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must be a bare file name"):
        load_sample(name)


def test_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no sample named 'dog\.jpg'; available: .*cat\.jpg"):
        load_sample("dog.jpg")
    with pytest.raises(ValueError, match=r"no sample named 'ATTRIBUTION\.md'"):
        load_sample("ATTRIBUTION.md")


def test_non_string_name_is_refused() -> None:
    with pytest.raises(TypeError, match="sample name must be a string"):
        load_sample(SAMPLES_DIR / "cat.jpg")  # type: ignore[arg-type]


def test_attribution_mentions_every_sample() -> None:
    text = (SAMPLES_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for path in SAMPLES:
        assert f"`{path.name}`" in text, path.name
    assert "public domain" in text.lower()
    assert "CC0" in text
