"""Hostile and odd uploads (tests/hostile_corpus.py) through the library, the CLI and the app.

Each odd but valid file gives a correct image; each hostile one gives exactly one clear message,
in all three places, and the app keeps serving afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hostile_corpus import Case, cases
from streamlit.testing.v1 import AppTest

import attnviz
from attnviz.cli import main

CASES = cases()
REFUSED = [c for c in CASES if c.expect is not None]
VALID = [c for c in CASES if c.expect is None]
APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _id(case: Case) -> str:
    return case.name


def test_the_corpus_covers_the_issue() -> None:
    names = {c.name for c in CASES}
    for required in (
        "empty.png", "notes.png", "page.html", "vector.svg", "cut.jpg", "cut.png", "bomb.png",
        "over.png", "tiny.png", "strip.png", "cmyk.jpg", "gray16.png", "palette.png", "hidden.png",
        "anim.gif", "anim.webp", "rotated.jpg", "photo.heic", "polyglot.html", "png_with_zip.png",
    ):  # fmt: skip
        assert required in names


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_library(case: Case) -> None:
    if case.expect is None:
        image = attnviz.load_image(case.data, name=case.name)
        assert image.mode == "RGB"
        assert case.check is None or case.check(image), case.name
    else:
        with pytest.raises(attnviz.ImageLoadError) as info:
            attnviz.load_image(case.data, name=case.name)
        message = str(info.value)
        assert re.search(case.expect, message), message
        assert message.startswith(case.name) and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("case", REFUSED, ids=_id)
def test_cli_refuses_with_one_line(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.data)
    out = tmp_path / "out"
    rc = main(["analyze", str(path), "--model", "zoo_cbam", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: "), captured.err
    assert re.search(case.expect, lines[0]), lines[0]
    assert captured.out == "" and not out.exists()


@pytest.mark.slow
def test_cli_analyses_every_odd_but_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for case in VALID:
        path = tmp_path / case.name
        path.write_bytes(case.data)
        paths.append(str(path))
    out = tmp_path / "out"
    rc = main(
        ["analyze", *paths, "--model", "zoo_cbam", "--device", "cpu", "--out", str(out), "--no-gradcam"]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == len(VALID)
    assert all(r["input_size"] == [96, 96] for r in summary["results"])


@pytest.mark.slow
def test_app_shows_one_message_per_hostile_upload_and_keeps_serving() -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    uploads = [(c.name, c.data, "image/png") for c in REFUSED]
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == len(REFUSED), errors
    for case, message in zip(REFUSED, errors, strict=True):
        assert message.startswith(case.name) and re.search(case.expect, message), message
    # the odd but valid files go through a run next to them; the cap on images per run applies
    valid = [(c.name, c.data, "image/png") for c in VALID]
    at.file_uploader[0].set_value(uploads + valid).run()
    assert any("at most 8" in w.value for w in at.warning)  # 9 valid uploads + the default sample
    at.pills(key="compare_models_zoo").set_value(["zoo_cbam"]).run()  # the zoo runs its own weights
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert len(at.error) == len(REFUSED)  # still one message each, nothing new
    stored = at.session_state["compare_results"]
    assert len(stored) == 8 and all(a.input_image.shape == (96, 96, 3) for a in stored.values())


def test_server_side_limits_live_in_the_streamlit_config() -> None:
    """The upload cap must be the server's (the widget's own limit is only checked in the browser),
    and it must agree with the library's byte cap; error details stay out of the browser."""
    import tomllib

    from attnviz.io.images import MAX_BYTES

    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_BYTES
    assert config["server"]["fileWatcherType"] == "none"
    assert config["client"]["showErrorDetails"] == "none"


def test_per_run_caps_of_the_app_and_the_cli() -> None:
    from attnviz import cli
    from ui.compare.state import MAX_IMAGES
    from ui.picker import MAX_MODELS

    assert (MAX_IMAGES, MAX_MODELS) == (8, 4)
    assert (cli.MAX_IMAGES, cli.MAX_MODELS) == (10_000, 4)


def test_cli_error_stays_one_line_when_a_library_logger_is_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library logger set to INFO elsewhere (an embedding app, another test) must not add lines."""
    import logging

    case = next(c for c in REFUSED if c.name == "cut.png")
    path = tmp_path / case.name
    path.write_bytes(case.data)
    logger = logging.getLogger("attnviz.io.images")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        rc = main(
            ["analyze", str(path), "--model", "zoo_cbam", "--device", "cpu", "--out", str(tmp_path / "o")]
        )
    finally:
        logger.setLevel(old)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("attnviz: error: "), lines
