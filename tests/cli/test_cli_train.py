"""``python -m attnviz train``: trains a playground network and writes a model that loads and analyses."""

from __future__ import annotations

import json

import pytest

import attnviz
from attnviz.cli import main

TINY = ["--classes", "3", "--n-train", "48", "--steps", "4", "--batch-size", "16", "--device", "cpu"]


def test_train_writes_a_model_that_loads_and_analyses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path))
    code = main(
        [
            "train",
            "--module",
            "cbam",
            "--pattern",
            "parallel",
            "--fuse",
            "sum",
            "--stage",
            "3",
            *TINY,
            "--out",
            str(tmp_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "step 4/4" in captured.err and "held-out accuracy" in captured.err
    weights = tmp_path / "cbam-parallel-sum-s3.safetensors"
    card = json.loads((tmp_path / "cbam-parallel-sum-s3.json").read_text())
    assert captured.out.split() == [str(weights), str(weights.with_suffix(".json"))]
    assert card["placement"]["pattern"] == "parallel" and card["classes"] == 3
    assert card["train"]["steps"] == 4 and card["task"]["n_train"] == 48
    assert card["curve"]["steps"][-1] == 4 and 0 <= card["accuracy"] <= 1
    assert card["localisation"]["map"].startswith("block ")
    model = attnviz.load_model("user_cbam-parallel-sum-s3", weights="pretrained", device="cpu")
    assert model.categories == ("circle", "square", "triangle")[: len(model.categories)]
    [result] = attnviz.analyze(model, [attnviz.workflows.scenes.make_scene(3).image], gradcam=False, topk=3)
    assert any(r.kind.startswith("cbam") for r in result.records)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--steps", "5000"], "steps must be at most 3000"),
        (["--batch-size", "1000"], "batch_size must be at most 256"),
        (["--classes", "12"], "classes must be an integer from 2 to 10"),
        (["--name", "../evil"], "name"),
        (["--module", "nope"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, args, match):
    assert main(["train", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnviz: error: ") and match in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_out_is_required(capsys):
    assert main(["train"]) == 2
    assert "--out" in capsys.readouterr().err
