"""``python -m attnviz serve``: the config it stands for, its errors, and a real deployment on the
session's local Ray (as a second application, next to the one the serving tests use)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from conftest import make_image

import attnviz
from attnviz.cli import main
from attnviz.serving import ServeSettings, read_config


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import sys

    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(args)
    finally:
        sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def test_print_config_writes_a_file_serve_deploy_takes(tmp_path: Path) -> None:
    code, out, err = run(
        ["serve", "-m", "zoo_cbam", "-m", "zoo_gc", "--replicas", "2", "--gpus", "0.5", "--print-config"]
    )
    assert code == 0 and err == ""
    path = tmp_path / "serve.yaml"
    path.write_text(out)
    settings, parts = read_config(path)
    assert [(m.name, m.replicas, m.gpus, m.cpus) for m in settings.models] == [
        ("zoo_cbam", 2, 0.5, None),
        ("zoo_gc", 2, 0.5, None),
    ]
    config = yaml.safe_load(out)
    assert config["applications"][0]["import_path"] == "attnviz.serving.app:build"
    assert parts["http_options"] == {"host": "127.0.0.1", "port": 8000}
    # no model named: the zoo
    code, out, _ = run(["serve", "--print-config"])
    assert code == 0
    zoo = [s.name for s in attnviz.list_models() if s.source == "attnviz"]
    assert [m["name"] for m in yaml.safe_load(out)["applications"][0]["args"]["models"]] == zoo


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["serve", "-m", "nope"], 1, "nope"),
        (["serve", "--config", "serve.yaml", "-m", "zoo_cbam"], 2, "either in --config or with --model"),
        (["serve", "--config", "/no/such.yaml"], 1, "cannot read the serve config /no/such.yaml"),
        (["serve", "--replicas", "0", "-m", "zoo_cbam"], 2, "--replicas must be at least 1"),
        (["serve", "--max-batch-size", "500", "-m", "zoo_cbam"], 1, "max_batch_size must be in [1, 64]"),
        (
            ["serve", "--address", "127.0.0.1:1", "-m", "zoo_cbam"],
            1,
            "Cannot reach the Ray cluster at 127.0.0.1:1",
        ),
    ],
)
def test_serve_errors_are_one_line(args: list[str], code: int, says: str) -> None:
    got, out, err = run(args)
    assert got == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: ") and says in lines[0], err


@pytest.mark.ray
@pytest.mark.slow
def test_serve_deploys_on_the_cluster_this_process_is_connected_to(ray_local: None, tmp_path: Path) -> None:
    from ray import serve

    settings = ServeSettings.from_args({"models": [{"name": "zoo_se", "cpus": 0.1}], "device": "cpu"})
    config = {
        "applications": [
            {
                "name": "attnviz_cli",
                "route_prefix": "/cli",
                "import_path": "attnviz.serving.app:build",
                "args": settings.to_args(),
            }
        ]
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        code, out, err = run(["serve", "--config", str(path)])
        assert code == 0, err
        assert out.startswith("Serving 1 model(s) on the Ray cluster at ")
        assert "  zoo_se: 1 replica(s), 0.1 CPU and 0 GPU each\n" in out
        assert "POST an image to http://127.0.0.1:8000/cli/analyze?model=NAME" in out
        client = attnviz.serving.connect(app_name="attnviz_cli")
        [served] = client.analyze("zoo_se", [make_image(3)], gradcam=False)
        [ref] = attnviz.analyze(attnviz.load_model("zoo_se", device="cpu"), [make_image(3)], gradcam=False)
        assert [p.index for p in served.top5] == [p.index for p in ref.top5]
    finally:
        serve.delete("attnviz_cli")
