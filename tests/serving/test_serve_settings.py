"""What a Serve deployment serves, checked before Ray is touched: settings from a config file's
``args`` or the command's options, the resource shares, the documented ``serve.yaml``, and the
library's errors surviving the trip from a replica (pickling)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

import attnviz
from attnviz.serving import ServeSettings, SettingsError, deployment_name, probe, read_config
from attnviz.serving.app import resources

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_serve_the_zoo() -> None:
    settings = ServeSettings.from_args(None)
    zoo = [s.name for s in attnviz.list_models() if s.source == "attnviz"]
    assert [m.name for m in settings.models] == zoo and all(m.replicas == 1 for m in settings.models)
    assert (settings.device, settings.max_batch_size, settings.batch_wait_s) == ("auto", 16, 0.02)


def test_models_given_by_name_or_with_their_resources() -> None:
    settings = ServeSettings.from_args(
        {"models": ["zoo_cbam", {"name": "deit_small_patch16_224", "replicas": 2, "gpus": 0.5, "cpus": 1}]}
    )
    cbam, deit = settings.models
    assert (cbam.name, cbam.replicas, cbam.gpus, cbam.cpus) == ("zoo_cbam", 1, None, None)
    assert (deit.name, deit.replicas, deit.gpus, deit.cpus) == ("deit_small_patch16_224", 2, 0.5, 1.0)
    assert ServeSettings.from_args(settings.to_args()) == settings  # the config --print-config writes


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"models": ["no_such_model"]}, "no_such_model"),
        ({"models": []}, "non-empty list"),
        ({"models": "zoo_cbam"}, "list"),
        ({"models": ["zoo_cbam", "zoo_cbam"]}, "listed twice"),
        ({"models": [{"name": "zoo_cbam", "replica": 2}]}, "unknown key(s) replica"),
        ({"models": [{"name": "zoo_cbam", "replicas": 0}]}, "replicas must be in [1, 1024]"),
        ({"models": [{"name": "zoo_cbam", "gpus": -1}]}, "gpus must be in [0, 64]"),
        ({"models": [{"name": "zoo_cbam", "replicas": 1.5}]}, "replicas must be a whole number"),
        ({"max_batch_size": 0}, "max_batch_size must be in [1, 64]"),
        ({"max_batch_size": True}, "max_batch_size must be a whole number"),
        ({"batch_wait_s": float("nan")}, "batch_wait_s must be in"),
        ({"batch_wait_s": 5}, "batch_wait_s must be in [0, 1]"),
        ({"device": "tpu"}, "device must be auto, cpu or cuda"),
        ({"autocast": "fp8"}, "autocast must be null, bf16 or fp16"),
        ({"preload": "pretrained"}, "preload must be a list"),
        ({"threads": 0}, "threads must be in [1, 256]"),
        ({"modles": ["zoo_cbam"]}, "unknown serve setting(s) modles"),
    ],
)
def test_bad_settings_name_the_key(args: dict, says: str) -> None:
    with pytest.raises(attnviz.AttnvizError) as caught:
        ServeSettings.from_args(args)
    assert says in str(caught.value)


def test_resources_share_the_cluster_out_unless_set() -> None:
    settings = ServeSettings.from_args(
        {"models": [{"name": "zoo_cbam", "replicas": 2}, "zoo_gc", {"name": "zoo_se", "gpus": 1, "cpus": 2}]}
    )
    shares = resources(settings, {"CPU": 8.0, "GPU": 2.0})
    assert shares["zoo_cbam"] == {"num_cpus": 1.0, "num_gpus": 0.5}  # 4 replicas: 8 CPUs, 2 GPUs
    assert shares["zoo_gc"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert shares["zoo_se"] == {"num_cpus": 2.0, "num_gpus": 1.0}
    # a small machine: a fraction of a CPU each, never more than one GPU each, none on "cpu"
    shares = resources(ServeSettings.from_args({"models": ["zoo_cbam", "zoo_gc"]}), {"CPU": 1.0, "GPU": 8.0})
    assert shares["zoo_cbam"] == {"num_cpus": 0.5, "num_gpus": 1.0}
    cpu_only = ServeSettings.from_args({"models": ["zoo_cbam"], "device": "cpu"})
    assert resources(cpu_only, {"CPU": 4.0, "GPU": 1.0})["zoo_cbam"]["num_gpus"] == 0.0


def test_deployment_names() -> None:
    assert deployment_name("vit_small_patch16_224.dino") == "vit_small_patch16_224_dino"
    assert deployment_name("zoo_cbam") == "zoo_cbam"


def test_the_documented_config_reads_and_names_its_parts() -> None:
    settings, parts = read_config(ROOT / "serve.yaml")
    names = [m.name for m in settings.models]
    assert {"zoo_cbam", "deit_small_patch16_224"} <= set(names)
    assert parts == {
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "name": "attnviz",
        "route_prefix": "/",
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("applications: [", "not valid YAML"),
        ("- a list", "not a Ray Serve config"),
        ("applications: []", "exactly one application"),
        (
            "applications:\n  - import_path: attnviz.serving.app:build\n    args: {models: [nope]}\n",
            "nope",
        ),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(attnviz.AttnvizError) as caught:
        read_config(path)
    assert says in str(caught.value)
    with pytest.raises(SettingsError, match="cannot read the serve config"):
        read_config(tmp_path / "missing.yaml")


def test_errors_come_back_whole_from_a_replica() -> None:
    """A replica returns the library's errors to the client (pickled): class, sentence and fields."""
    missing = attnviz.WeightsUnavailableError(
        "long story",
        weights_file="m.safetensors",
        expected_path="/x/m.safetensors",
        summary="short",
        details=("a",),
    )
    back = pickle.loads(pickle.dumps(missing))
    assert type(back) is attnviz.WeightsUnavailableError and str(back) == "long story"
    assert (back.weights_file, back.expected_path, back.summary, back.details) == (
        "m.safetensors",
        "/x/m.safetensors",
        "short",
        ("a",),
    )
    oom = pickle.loads(pickle.dumps(attnviz.GPUMemoryError("out", device="cuda:0", free_mib=12)))
    assert (str(oom), oom.device, oom.free_mib) == ("out", "cuda:0", 12)
    served = pickle.loads(pickle.dumps(attnviz.ServingError("gone")))
    assert type(served) is attnviz.ServingError and str(served) == "gone"


def test_an_unreachable_cluster_is_one_sentence_in_seconds() -> None:
    start = time.monotonic()
    with pytest.raises(attnviz.ServingError) as caught:
        probe("127.0.0.1:1")
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert message.startswith("Cannot reach the Ray cluster at 127.0.0.1:1") and "\n" not in message
    assert "ray start --head" in message
    with pytest.raises(attnviz.ServingError, match="not a Ray address"):
        probe("ray://host:notaport")
    probe("auto")  # left to Ray
