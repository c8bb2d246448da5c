"""Models a person trained in the playground: saved, listed, loaded, analysed, deleted, and kept safe."""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, randomize_norms

import attnviz
from attnviz.backends import (
    UserModel,
    UserModelError,
    check_user_model_name,
    default_weights,
    delete_user_model,
    list_user_models,
    read_user_card,
    save_user_model,
    user_models_dir,
)
from attnviz.layers.playground_net import Placement, PlaygroundNet
from attnviz.layers.zoo_net import CLASSES

# the module (the package's ``user_models`` is the function that lists the saved models)
store = importlib.import_module("attnviz.backends.user_store")


@pytest.fixture
def folder(monkeypatch, tmp_path) -> Path:
    """The user-models folder, in the test's own temporary folder (not created yet)."""
    path = tmp_path / "models"
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(path))
    return path


def net(placement: Placement | None = None, classes: int = 10, seed: int = 0) -> PlaygroundNet:
    """A playground network (CBAM, serial, by default) with seeded, non-trivial weights (as if trained)."""
    torch.manual_seed(seed)
    model = PlaygroundNet(placement or Placement("cbam"), num_classes=classes)
    randomize_norms(model, seed)
    return model.eval()


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> contents)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def user_names() -> set[str]:
    return {s.name for s in attnviz.list_models() if s.group == "user"}


def test_a_saved_model_is_listed_loads_analyses_and_is_deleted(folder):
    assert user_names() == set() and not folder.exists()  # nothing saved yet, nothing created
    model = net()
    card = {
        "task": {"classes": 10, "clutter": 0.5},
        "curve": {
            "steps": np.arange(3),
            "loss": np.array([2.3, 1.1, 0.4], np.float32),
            "accuracy": [0.1, 0.5, 0.9],
        },
        "accuracy": np.float64(0.9),
        "localisation": {"energy_ratio": 3.2, "pointing": 0.8},
    }
    path = save_user_model("my-cbam_1", model, card)
    assert path == folder / "my-cbam_1.safetensors"
    assert sorted(os.listdir(folder)) == ["my-cbam_1.json", "my-cbam_1.safetensors"]  # no temporary files
    # listed at once (no restart), in its group, with its own weights
    spec = attnviz.get_spec("user_my-cbam_1")
    assert user_names() == {"user_my-cbam_1"}
    assert (spec.source, spec.group, spec.trained_on, spec.from_hub) == (
        "user",
        "user",
        "generated shapes",
        False,
    )
    assert spec.attention == ("cbam_channel", "cbam_spatial") and spec.input_size == (96, 96)
    assert spec.pretrained_available and spec.weights_path == str(path)
    assert "cbam, serial at stage 3" in spec.description and "90%" in spec.description
    assert default_weights(spec) == "pretrained"
    [listed] = list_user_models()
    assert listed == UserModel(
        name="my-cbam_1",
        model_name="user_my-cbam_1",
        placement="cbam, serial at stage 3",
        classes=10,
        accuracy=0.9,
        created=listed.created,
        weights_path=path,
        card_path=folder / "my-cbam_1.json",
    )
    assert not listed.broken and listed.created.startswith("20")
    saved = read_user_card("my-cbam_1")
    assert saved["curve"]["loss"] == pytest.approx([2.3, 1.1, 0.4]) and saved["curve"]["steps"] == [0, 1, 2]
    assert saved["placement"] == {
        "kind": "cbam",
        "pattern": "serial",
        "stage": 3,
        "fuse": "sum",
        "depth": 2,
        "heads": 4,
    }
    assert (
        saved["classes"] == 10
        and saved["name"] == "my-cbam_1"
        and saved["attnviz_version"] == attnviz.__version__
    )
    assert saved["localisation"] == card["localisation"]

    loaded = attnviz.load_model("user_my-cbam_1", device="cpu")
    assert loaded.weights == "pretrained" and not loaded.untrained and loaded.categories == CLASSES
    for (key, want), got in zip(model.state_dict().items(), loaded.module.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=key)
    images = [make_image(1), make_image(2)]
    with torch.no_grad():
        expected = model(loaded.preprocess(images)).softmax(-1)
    [first, _] = attnviz.analyze(loaded, images)
    assert first.top5[0].index == int(expected[0].argmax())
    assert first.top5[0].probability == pytest.approx(float(expected[0].max()), abs=1e-5)
    kinds = [(r.layer, r.kind) for r in first.records]
    assert kinds == [("attn3", "cbam_channel"), ("attn3", "cbam_spatial"), ("stage3", "gradcam")]

    assert delete_user_model("my-cbam_1") is True
    assert user_names() == set() and list_user_models() == [] and os.listdir(folder) == []
    with pytest.raises(attnviz.UnknownModelError):
        attnviz.load_model("user_my-cbam_1")
    assert delete_user_model("my-cbam_1") is False  # nothing left to delete


@pytest.mark.parametrize(
    ("placement", "classes", "kinds"),
    [
        (Placement("se", "parallel", fuse="concat"), 4, ("se",)),
        (Placement("gc", stage=2), 2, ("gc_context", "gc_add")),
        (Placement("cbam", "core", depth=1, heads=2), 10, ("mhsa",)),
        (Placement("none"), 3, ()),
    ],
)
def test_every_pattern_round_trips_with_its_classes(folder, placement, classes, kinds):
    model = net(placement, classes)
    save_user_model("m", model, {})
    spec = attnviz.get_spec("user_m")
    assert spec.attention == kinds
    loaded = attnviz.load_model("user_m", device="cpu")
    assert loaded.categories == CLASSES[:classes] and loaded.module.placement == placement
    batch = loaded.preprocess([make_image(3)])
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(batch), model(batch))
    [result] = attnviz.analyze(loaded, [make_image(3)], gradcam=False, topk=min(classes, 2))
    assert tuple(dict.fromkeys(r.kind for r in result.records)) == kinds


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../evil",
        "a/b",
        "a\\b",
        "Mine",
        ".hidden",
        "-dash",
        "_under",
        "a.b",
        "a b",
        "x" * 41,
        "name\n",
        "ü",
        None,
        3,
    ],
)
def test_names_that_could_steer_a_path_are_refused(folder, tmp_path, name):
    before = files(tmp_path)
    with pytest.raises(UserModelError, match="A model name is 1 to 40 characters"):
        check_user_model_name(name)
    with pytest.raises(UserModelError, match="A model name is 1 to 40 characters"):
        save_user_model(name, net(), {})
    with pytest.raises(UserModelError, match="A model name is 1 to 40 characters"):
        delete_user_model(name)
    with pytest.raises(UserModelError, match="A model name is 1 to 40 characters"):
        read_user_card(name)
    assert files(tmp_path) == before and not folder.exists()


def test_names_up_to_forty_characters_are_kept(folder):
    assert check_user_model_name("a" * 40) == "a" * 40
    assert check_user_model_name("0-_9") == "0-_9"


def test_a_name_is_not_overwritten_unless_asked(folder):
    save_user_model("mine", net(seed=0), {"accuracy": 0.5})
    before = files(folder)
    with pytest.raises(UserModelError, match="A model named 'mine' is saved already"):
        save_user_model("mine", net(seed=1), {"accuracy": 0.7})
    assert files(folder) == before
    save_user_model("mine", net(Placement("se"), seed=1), {"accuracy": 0.7}, replace=True)
    assert sorted(os.listdir(folder)) == ["mine.json", "mine.safetensors"]
    spec = attnviz.get_spec("user_mine")  # the catalogue follows the new card
    assert spec.attention == ("se",) and "70%" in spec.description
    loaded = attnviz.load_model("user_mine", device="cpu")
    for want, got in zip(
        net(Placement("se"), seed=1).state_dict().values(), loaded.module.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("failing", ["weights", "card", "rename"])
def test_a_failed_save_leaves_nothing_behind(folder, monkeypatch, failing):
    real_replace = os.replace

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def second_rename_fails(src, dst):
        if str(dst).endswith(".json"):  # the weights are in place already: they must go again
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    if failing == "weights":
        monkeypatch.setattr(store, "_write_weights", broken)
    elif failing == "card":
        monkeypatch.setattr(store, "_write_text", broken)
    else:
        monkeypatch.setattr(store.os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        save_user_model("mine", net(), {})
    assert os.listdir(folder) == [] and user_names() == set()


def test_a_failed_replace_keeps_the_old_model(folder, monkeypatch):
    save_user_model("mine", net(seed=0), {"accuracy": 0.5})
    before = files(folder)
    real_replace = os.replace

    def card_rename_fails(src, dst):
        if str(dst).endswith("mine.json") and ".tmp" in str(src) and ".old" not in str(src):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", card_rename_fails)
    with pytest.raises(OSError, match="Input/output error"):
        save_user_model("mine", net(Placement("se"), seed=1), {"accuracy": 0.9}, replace=True)
    assert files(folder) == before
    assert attnviz.get_spec("user_mine").attention == ("cbam_channel", "cbam_spatial")


def test_what_cannot_be_saved_is_refused_before_writing(folder):
    with pytest.raises(UserModelError, match=r"cannot be saved: .*object is not JSON"):
        save_user_model("mine", net(), {"curve": object()})
    with pytest.raises(UserModelError, match="cannot be saved: its accuracy must be a fraction"):
        save_user_model("mine", net(), {"accuracy": 7})
    with pytest.raises(TypeError, match="must be a PlaygroundNet, got Linear"):
        save_user_model("mine", torch.nn.Linear(2, 2), {})
    assert not folder.exists()


def test_the_card_takes_the_model_s_own_architecture(folder):
    # whatever the caller's card says, the placement and classes are the model's
    save_user_model(
        "mine", net(Placement("eca"), 5), {"placement": {"kind": "se"}, "classes": 9, "name": "x"}
    )
    card = read_user_card("mine")
    assert (card["placement"]["kind"], card["classes"], card["name"]) == ("eca", 5, "mine")
    assert attnviz.load_model("user_mine", device="cpu").categories == CLASSES[:5]


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda card: "{not json", "not valid JSON"),
        (lambda card: json.dumps([card]), "not a JSON object"),
        (lambda card: json.dumps({**card, "name": "other"}), "names the model 'other'"),
        (lambda card: json.dumps({**card, "placement": {"kind": "evil"}}), "placement is not valid: kind"),
        (lambda card: json.dumps({**card, "placement": {"kind": "se", "code": "x"}}), "unknown fields"),
        (
            lambda card: json.dumps({**card, "placement": {"kind": "se", "stage": 3.0}}),
            "stage must be an integer",
        ),
        (lambda card: json.dumps({**card, "classes": 11}), "classes must be an integer from 2 to 10"),
        (lambda card: json.dumps({**card, "accuracy": "high"}), "accuracy must be a fraction"),
        (lambda card: b"\xff\xfe", "not valid JSON"),
    ],
)
def test_a_tampered_card_is_skipped_and_listed_as_broken(folder, caplog, tamper, problem):
    save_user_model("good", net(), {})
    save_user_model("bad", net(), {})
    card_path = folder / "bad.json"
    text = tamper(json.loads(card_path.read_text()))
    card_path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with caplog.at_level(logging.WARNING, logger="attnviz.backends.user_models"):
        assert user_names() == {"user_good"}
    assert any("skipped the saved model 'bad'" in r.message and problem in r.message for r in caplog.records)
    listed = {m.name: m for m in list_user_models()}
    assert listed["bad"].broken and problem in listed["bad"].problem and not listed["good"].broken
    assert listed["bad"].placement == "" and listed["bad"].classes is None
    with pytest.raises(UserModelError, match=f"The card of the saved model 'bad' .* is broken: .*{problem}"):
        read_user_card("bad")
    with pytest.raises(attnviz.UnknownModelError):
        attnviz.load_model("user_bad")
    assert delete_user_model("bad") and sorted(os.listdir(folder)) == ["good.json", "good.safetensors"]


def _error(name: str) -> attnviz.WeightsUnavailableError:
    with pytest.raises(attnviz.WeightsUnavailableError) as info:
        attnviz.load_model(name, device="cpu")
    return info.value


def test_missing_or_damaged_weights_name_the_file(folder):
    weights = save_user_model("mine", net(), {})
    weights.write_bytes(b"\x00" * 64)  # damaged
    err = _error("user_mine")
    assert (
        "mine.safetensors" in str(err)
        and "could not be loaded" in str(err)
        and err.weights_file == "mine.safetensors"
    )
    assert err.summary.startswith(
        "The weights file of your model user_mine (mine.safetensors) could not be loaded"
    )
    assert "CheckpointError" in "\n".join(err.details)
    # a pickle under the safetensors name is read with safetensors only, so refused
    torch.save({"x": torch.zeros(1)}, weights)
    assert "could not be loaded" in str(_error("user_mine"))
    # the weights of another architecture (a card edited to another placement)
    save_user_model("other", net(Placement("se")), {})
    os.replace(folder / "other.safetensors", weights)
    assert "does not fit this architecture" in "\n".join(_error("user_mine").details)
    # gone: still a trained model (never silently random), and the error says so
    weights.unlink()
    spec = attnviz.get_spec("user_mine")
    assert not spec.pretrained_available and default_weights(spec) == "pretrained"
    err = _error("user_mine")
    assert "is missing" in str(err) and str(folder) in str(err) and "train and save it again" in err.summary
    problems = {m.name: m.problem for m in list_user_models()}
    assert problems == {name: f"its weights file {name}.safetensors is missing" for name in ("mine", "other")}


def test_the_folder_comes_from_the_environment_and_defaults_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path / "here"))
    assert user_models_dir() == tmp_path / "here"
    save_user_model("mine", net(), {})
    assert (tmp_path / "here" / "mine.safetensors").is_file()
    assert user_names() == {"user_mine"}
    # another folder, another list
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path / "there"))
    assert user_names() == set() and list_user_models() == []
    assert [m.name for m in list_user_models(tmp_path / "here")] == ["mine"]  # an explicit folder wins
    # unset: the user's cache folder, never the repository
    monkeypatch.delenv("ATTNVIZ_USER_MODELS")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_models_dir() == tmp_path / "home" / ".cache" / "attnviz" / "user_models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert user_models_dir() == tmp_path / "cache" / "attnviz" / "user_models"
    repository = Path(attnviz.__file__).resolve().parents[1]
    assert repository not in user_models_dir().resolve().parents


def test_an_explicit_folder_is_written_and_nothing_else(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path / "default"))
    (tmp_path / "outside.txt").write_text("keep me")
    before = files(tmp_path)
    out = tmp_path / "cli-out"
    save_user_model("mine", net(), {}, folder=out)
    after = files(tmp_path)
    assert set(after) - set(before) == {"cli-out/mine.json", "cli-out/mine.safetensors"}
    assert all(after[k] == v for k, v in before.items()) and not (tmp_path / "default").exists()
    assert [m.model_name for m in list_user_models(out)] == ["user_mine"] and user_names() == set()
    assert delete_user_model("mine", folder=out) and os.listdir(out) == []


def test_links_never_lead_a_save_or_delete_out_of_the_folder(folder, tmp_path):
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text('{"precious": true}')
    (folder / "link.json").symlink_to(outside)
    listed = {m.name: m for m in list_user_models()}
    assert "not a regular file" in listed["link"].problem and user_names() == set()
    with pytest.raises(UserModelError, match="saved already"):
        save_user_model("link", net(), {})
    save_user_model("link", net(), {}, replace=True)  # replaces the link itself, not what it points to
    assert not (folder / "link.json").is_symlink() and outside.read_text() == '{"precious": true}'
    assert "user_link" in user_names()
    (folder / "link.json").unlink()
    (folder / "link.json").symlink_to(outside)
    assert delete_user_model("link") and outside.read_text() == '{"precious": true}'


def test_files_without_a_card_are_listed_as_broken_and_other_files_ignored(folder):
    folder.mkdir()
    (folder / "orphan.safetensors").write_bytes(b"x")
    (folder / "README.txt").write_text("not a model")
    (folder / "Upper.json").write_text("{}")  # not a name a save could have written
    (folder / ".mine.123.json.tmp").write_text("{}")  # a save under way
    [orphan] = list_user_models()
    assert orphan.name == "orphan" and orphan.problem == "it has no card" and user_names() == set()
    assert delete_user_model("orphan") and not (folder / "orphan.safetensors").exists()
