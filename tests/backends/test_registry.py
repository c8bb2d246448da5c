"""Model registry, device choice, and weights: pretrained from the caches, random, checkpoints."""

from __future__ import annotations

import dataclasses
import pickle
import socket

import pytest
import torch
from conftest import make_image
from safetensors.torch import save_file

import attnviz
from attnviz import backends as models
from attnviz.layers.playground_net import Placement, PlaygroundNet
from attnviz.layers.zoo_net import ZOO_KINDS

ZOO = {
    "mobilenet_v3_large": ("torchvision", ("se",)),
    "efficientnet_b0": ("torchvision", ("se",)),
    "regnet_y_400mf": ("torchvision", ("se",)),
    "seresnet50": ("timm", ("se",)),
    "ecaresnet26t": ("timm", ("eca",)),
    "skresnet18": ("timm", ("sk",)),
    "resnest14d": ("timm", ("split",)),
    "gcresnext26ts": ("timm", ("gc_context", "gc_add")),
    "deit_tiny_patch16_224": ("timm", ("vit",)),
    "deit_small_patch16_224": ("timm", ("vit",)),
    "deit_tiny_distilled_patch16_224": ("timm", ("vit",)),
    "vit_small_patch16_224.dino": ("timm", ("vit",)),
    "vit_small_patch14_reg4_dinov2": ("timm", ("vit",)),
    "swin_tiny_patch4_window7_224": ("timm", ("swin",)),
    "botnet26t_256": ("timm", ("bot",)),
    "halonet26t": ("timm", ("halo",)),
    "vit_b_16": ("torchvision", ("vit",)),
    "swin_t": ("torchvision", ("swin",)),
    "deformable_detr": ("transformers", ("detr_encoder", "detr_decoder")),
    "dat_tiny": ("official", ("dat", "dat_window")),
    "resnet50": ("torchvision", ()),
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty weight caches, an empty user-models folder and no network: every connection attempt fails
    at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path / "user_models"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path


def test_list_models_describes_the_zoo(offline):
    specs = {s.name: s for s in attnviz.list_models()}
    zoo = {n for n, s in specs.items() if s.source == "attnviz"}
    assert zoo == {f"zoo_{k}" for k in ZOO_KINDS}
    assert list(specs)[: len(zoo)] == sorted(zoo, key=list(specs).index)  # the offline default comes first
    assert set(specs) - zoo == set(ZOO)
    assert specs["zoo_cbam"].attention == ("cbam_channel", "cbam_spatial") and specs[
        "zoo_cbam"
    ].input_size == (96, 96)
    for name, (source, kinds) in ZOO.items():
        spec = specs[name]
        assert (spec.source, spec.attention) == (source, kinds)
        assert spec.pretrained_available is False
        assert spec.weights_file and str(offline) in spec.weights_path
    assert specs["ecaresnet26t"].input_size == (256, 256)
    assert list(specs)[-1] == "resnet50"  # the baseline last
    # self-supervised backbones have no classifier: no Grad-CAM layer, no predictions
    assert {n for n, s in specs.items() if not s.classifier} == {
        "vit_small_patch16_224.dino",
        "vit_small_patch14_reg4_dinov2",
        "deformable_detr",  # a detector: detections instead of classes
    }


def test_dinov2_runs_at_224_with_registers():
    model = attnviz.load_model("vit_small_patch14_reg4_dinov2", weights="random", device="cpu")
    assert model.categories == ()
    assert model.preprocess([make_image(0)]).shape == (1, 3, 224, 224)
    assert model.module.patch_embed.grid_size == (16, 16) and model.module.num_prefix_tokens == 5


@pytest.mark.parametrize("name", ["vit_b_99", "", "../resnet50", None, "vit_small_patch16_224.dino/../x"])
def test_unknown_model_is_refused(name):
    with pytest.raises(attnviz.UnknownModelError, match=r"Unknown model .* choose one of .*resnet50"):
        attnviz.load_model(name, weights="random")


def test_devices():
    assert attnviz.resolve_device("cpu") == torch.device("cpu")
    assert attnviz.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(attnviz.DeviceError, match="Unknown device 'tpu'"):
        attnviz.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(attnviz.DeviceError, match="no CUDA GPU is available"):
            attnviz.resolve_device("cuda")


def test_random_weights_preprocessing_and_labels():
    model = attnviz.load_model("efficientnet_b0", weights="random", device="cpu")
    assert model.untrained and model.weights == "random"
    assert len(model.categories) == 1000 and model.categories[285] == "Egyptian cat"
    assert not model.module.training
    assert not any(p.requires_grad for p in model.module.parameters())
    batch = model.preprocess([make_image(0)])
    assert batch.shape == (1, 3, 224, 224)
    timm_model = attnviz.load_model("ecaresnet26t", weights="random", device="cpu")
    assert timm_model.categories[285].startswith("Egyptian cat")
    assert timm_model.preprocess([make_image(0)]).shape == (1, 3, 256, 256)  # from timm's data config


@pytest.mark.parametrize("name", ["resnet50", "skresnet18"])
def test_pretrained_offline_names_the_missing_file(offline, name):
    spec = attnviz.get_spec(name)
    with pytest.raises(attnviz.WeightsUnavailableError) as info:
        attnviz.load_model(name, weights="pretrained", device="cpu")
    message = str(info.value)
    assert spec.weights_file in message and "weights=<path" in message
    assert info.value.weights_file == spec.weights_file
    where = "hub/checkpoints" if spec.source == "torchvision" else "hf download timm/"
    assert where in message
    # for a page: one plain sentence, no exception names or cache paths; the rest in the details
    summary = info.value.summary
    assert summary == (
        f"The pretrained weights of {name} are not on this machine and could not be downloaded: copy them "
        "in from a connected machine (the Models page shows where they go)."
    )
    assert "Error" not in summary and str(offline) not in summary and "weights=" not in summary
    details = "\n".join(info.value.details)
    assert spec.weights_file in details and str(offline) in details and "OSError" in details


#: Record kinds that make a model a transformer (self-attention among tokens or windows).
TRANSFORMER_KINDS = {"vit", "swin", "bot", "halo", "dat", "dat_window"}


def test_the_registry_lists_every_backend_s_models_once(offline):
    from attnviz.backends.registry import backends

    listed = [s.name for s in attnviz.list_models()]
    declared = [(b.source, e.name) for b in backends() for e in b.entries()]
    assert sorted(listed) == sorted(name for _, name in declared) and len(set(listed)) == len(listed)
    assert {b.source for b in backends()} == {
        "attnviz",
        "user",
        "torchvision",
        "timm",
        "official",
        "transformers",
    }
    assert {s.name: s.source for s in attnviz.list_models()} == {n: src for src, n in declared}
    assert {f"zoo_{k}" for k in ZOO_KINDS} == {n for src, n in declared if src == "attnviz"}


def test_models_are_grouped_and_say_what_they_were_trained_on(offline):
    # a model a person trained and saved (its own group, after the zoo), a baseline one included
    for name, kind in (("mine", "cbam"), ("plain", "none")):
        models.save_user_model(name, PlaygroundNet(Placement(kind), num_classes=3), {"accuracy": 0.9})
    specs = attnviz.list_models()
    assert list(models.MODEL_GROUPS) == ["zoo", "user", "cnn", "transformer", "detector"]
    # the groups follow from what each model is, never from a hand-kept list
    for s in specs:
        if s.source == "attnviz":
            expected = "zoo"
        elif s.source == "user":
            expected = "user"
        elif not s.gradcam_layer and s.source == "transformers":
            expected = "detector"
        elif TRANSFORMER_KINDS & set(s.attention):
            expected = "transformer"
        else:
            expected = "cnn"
        assert s.group == expected, s.name
    groups = [s.group for s in specs]
    assert groups == [*sorted(groups[:-1], key=list(models.MODEL_GROUPS).index), "cnn"]  # picker order
    assert specs[-1].name == "resnet50" and not specs[-1].attention  # the baseline last
    assert all(g in groups for g in models.MODEL_GROUPS)
    zoo = {s.name for s in specs if s.group == "zoo"}
    user = {s.name for s in specs if s.group == "user"}
    assert user == {"user_mine", "user_plain"}
    trained_on = {s.name: s.trained_on for s in specs}
    assert {n for n, t in trained_on.items() if t == "generated shapes"} == zoo | user
    assert trained_on["deformable_detr"] == "COCO" and trained_on["seresnet50"] == "ImageNet-1k"
    assert "self-supervised" in trained_on["vit_small_patch16_224.dino"]
    assert all(s.description for s in specs)
    # a hub can give the weights of every model but the zoo (shipped) and DAT-T (its authors' release)
    assert {s.name for s in specs if not s.from_hub} == zoo | user | {"dat_tiny"}


def test_default_weights_are_the_zoo_s_own_and_cached_pretrained_else_random(offline):
    # offline, with empty caches: only the zoo has weights
    defaults = {s.name: models.default_weights(s) for s in attnviz.list_models()}
    assert {n for n, w in defaults.items() if w == "pretrained"} == {f"zoo_{k}" for k in ZOO_KINDS}
    assert set(defaults.values()) == {"pretrained", "random"}
    cached = dataclasses.replace(attnviz.get_spec("resnet50"), pretrained_available=True)
    assert models.default_weights(cached) == "pretrained"


def test_pretrained_torchvision_from_the_torch_hub_cache(offline):
    spec = attnviz.get_spec("regnet_y_400mf")
    reference = attnviz.load_model("regnet_y_400mf", weights="random", device="cpu")
    path = offline / "torch" / "hub" / "checkpoints" / spec.weights_file
    path.parent.mkdir(parents=True)
    torch.save(reference.module.state_dict(), path)
    assert attnviz.get_spec("regnet_y_400mf").pretrained_available
    model = attnviz.load_model("regnet_y_400mf", weights="pretrained", device="cpu")
    assert not model.untrained and model.weights == "pretrained"
    for a, b in zip(model.module.state_dict().values(), reference.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    [result] = attnviz.analyze(model, [make_image(3)], gradcam=False)
    assert not result.untrained and not any(r.untrained for r in result.records)


def test_pretrained_timm_from_the_hugging_face_cache(offline):
    reference = attnviz.load_model("skresnet18", weights="random", device="cpu")
    repo = offline / "hf" / "models--timm--skresnet18.ra_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(reference.module.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    assert attnviz.get_spec("skresnet18").pretrained_available
    model = attnviz.load_model("skresnet18", weights="pretrained", device="cpu")
    assert not model.untrained
    torch.testing.assert_close(model.module.fc.weight, reference.module.fc.weight)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_path_loads(tmp_path, suffix):
    reference = attnviz.load_model("resnest14d", weights="random", device="cpu")
    state = reference.module.state_dict()
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:  # wrapped the way training scripts save it, with a DataParallel prefix
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = attnviz.load_model("resnest14d", weights=path, device="cpu")
    assert model.weights == path.name and not model.untrained
    torch.testing.assert_close(model.module.fc.weight, reference.module.fc.weight)


def test_checkpoint_of_another_architecture_is_reported(tmp_path):
    other = attnviz.load_model("skresnet18", weights="random", device="cpu")
    path = tmp_path / "other.safetensors"
    save_file(other.module.state_dict(), str(path))
    with pytest.raises(
        attnviz.CheckpointError, match=r"does not fit this architecture: \d+ missing .*unexpected"
    ):
        attnviz.load_model("resnest14d", weights=path, device="cpu")


def test_checkpoint_with_wrong_shapes_is_reported(tmp_path):
    state = attnviz.load_model("skresnet18", weights="random", device="cpu").module.state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        attnviz.CheckpointError, match=r"1 wrong shape \(fc.weight \(10, 512\) vs \(1000, 512\)\)"
    ):
        attnviz.load_model("skresnet18", weights=path, device="cpu")


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes our protocol-4 pickle
def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Payload(marker)}, f)
    torch.save({"fc.weight": _Payload(marker)}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(attnviz.CheckpointError, match="could not be loaded safely"):
            attnviz.load_model("skresnet18", weights=p, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("missing.pth", None, "does not exist"),
        ("weights.txt", b"hello", "expected one of .safetensors"),
        ("garbage.safetensors", b"\x00" * 64, "could not be loaded safely"),
        ("empty.pth", b"", "could not be loaded safely"),
    ],
)
def test_bad_checkpoint_files(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(attnviz.CheckpointError, match=pattern):
        attnviz.load_checkpoint(path)


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    torch.save({"a": 1}, tmp_path / "ints.pth")
    with pytest.raises(attnviz.CheckpointError, match="holds no state dict"):
        attnviz.load_checkpoint(tmp_path / "list.pth")
    with pytest.raises(attnviz.CheckpointError, match="not tensors"):
        attnviz.load_checkpoint(tmp_path / "ints.pth")


def test_weights_mode_is_validated():
    with pytest.raises(
        attnviz.CheckpointError, match="'pretrianed' is neither 'pretrained', 'random' nor an"
    ):
        attnviz.load_model("skresnet18", weights="pretrianed", device="cpu")
    with pytest.raises(attnviz.CheckpointError, match="got int"):
        attnviz.load_model("skresnet18", weights=3, device="cpu")


def test_progress_is_reported():
    messages = []
    models.load_model(
        "skresnet18", weights="random", device="cpu", progress=lambda m, f: messages.append((m, f))
    )
    assert messages[0][0] == "Building skresnet18" and messages[-1] == ("skresnet18 ready on cpu", 1.0)
