"""The model zoo: which models attnviz knows, and how they are built, weighted and preprocessed.

Pretrained weights come through the libraries' own caches (torch hub for torchvision, the
Hugging Face cache for timm). Nothing is downloaded unless ``weights="pretrained"`` asks for it,
and when a download cannot happen the error names the file and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .adapters import find_taps
from .capture import Tap
from .errors import CheckpointError, DeviceError, UnknownModelError, WeightsUnavailableError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "MODEL_GROUPS",
    "LoadedModel",
    "ModelSpec",
    "ProgressFn",
    "default_weights",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_model",
    "resolve_device",
]

log = logging.getLogger(__name__)

#: ``progress(message, fraction)``: fraction in [0, 1], or None when unknown.
ProgressFn = Callable[[str, float | None], None]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")

MODEL_GROUPS: dict[str, str] = {
    "zoo": "Built-in zoo: small CNNs trained by attnviz on generated shapes",
    "cnn": "ImageNet classifiers: CNNs with attention modules",
    "transformer": "ImageNet transformers and self-attention networks",
    "detector": "Detectors (COCO)",
}
"""Model groups in the order pickers list them: key -> heading (:attr:`ModelSpec.group`)."""


@dataclass(frozen=True)
class ModelSpec:
    """What attnviz knows about a model before building it.

    Attributes:
        name: the name to pass to :func:`load_model`.
        source: who defines it: ``"torchvision"``, ``"timm"``, ``"attnviz"`` (the built-in zoo) or
            ``"official"`` (an architecture attnviz builds to load its authors' released checkpoint,
            e.g. DAT-T).
        attention: the attention kinds captured in it (empty for the baseline).
        input_size: (H, W) the model's preprocessing produces.
        pretrained_available: True when its pretrained weights are already in the local cache.
        weights_file: the checkpoint file name the pretrained weights come in.
        weights_path: where that file is (or would be) in the library's cache.
        description: one line for the UI.
        gradcam_layer: qualified name of the layer Grad-CAM explains; empty for models without a
            classifier (self-supervised DINO/DINOv2 features), which get no predictions or Grad-CAM.
        gradcam_layout: the layout of that layer's output: ``"nchw"`` (CNNs), ``"tokens"``
            (``[B, prefix + H*W, C]``, ViTs) or ``"nhwc"`` (Swin).
        build_kwargs: extra arguments the library's constructor gets (e.g. DINOv2 at 224 px).
        group: a key of :data:`MODEL_GROUPS`.
        trained_on: what its pretrained weights were trained on (``"generated shapes"``,
            ``"ImageNet-1k"``, ``"COCO"``...), so that a page can say when an image is out of domain.
    """

    name: str
    source: str
    attention: tuple[str, ...]
    input_size: tuple[int, int]
    pretrained_available: bool
    weights_file: str
    weights_path: str
    description: str
    gradcam_layer: str
    gradcam_layout: str = "nchw"
    build_kwargs: tuple[tuple[str, object], ...] = ()
    group: str = "cnn"
    trained_on: str = "ImageNet-1k"

    @property
    def from_hub(self) -> bool:
        """True when its pretrained weights come from a library's hub (torch hub, Hugging Face), so
        that :func:`load_model` can download them; the zoo ships its weights, DAT-T's come from its
        authors' release page."""
        return self.source in ("torchvision", "timm", "transformers")

    @property
    def classifier(self) -> bool:
        """True when the model predicts classes (and so has top-5 and Grad-CAM)."""
        return bool(self.gradcam_layer)


@dataclass(frozen=True)
class _Entry:
    name: str
    source: str
    attention: tuple[str, ...]
    input_size: tuple[int, int]
    description: str
    gradcam_layer: str
    gradcam_layout: str = "nchw"
    build_kwargs: tuple[tuple[str, object], ...] = ()


_MODELS: dict[str, _Entry] = {
    e.name: e
    for e in (
        _Entry("mobilenet_v3_large", "torchvision", ("se",), (224, 224),
               "MobileNetV3-Large: SE with a hard-sigmoid gate in 8 inverted residual blocks", "features.16"),
        _Entry("efficientnet_b0", "torchvision", ("se",), (224, 224),
               "EfficientNet-B0: SE in every MBConv block", "features.8"),
        _Entry("regnet_y_400mf", "torchvision", ("se",), (224, 224),
               "RegNetY-400MF: SE in every bottleneck", "trunk_output.block4"),
        _Entry("seresnet50", "timm", ("se",), (224, 224),
               "SE-ResNet-50: SE after every bottleneck", "layer4"),
        _Entry("ecaresnet26t", "timm", ("eca",), (256, 256),
               "ECA-ResNet-26-T: 1-D convolution over channels instead of an MLP", "layer4"),
        _Entry("skresnet18", "timm", ("sk",), (224, 224),
               "SK-ResNet-18: softmax over a 3x3 and a dilated 3x3 path per channel", "layer4"),
        _Entry("resnest14d", "timm", ("split",), (224, 224),
               "ResNeSt-14d: split attention, softmax over 2 radix splits per channel", "layer4"),
        _Entry("gcresnext26ts", "timm", ("gc_context", "gc_add"), (256, 256),
               "GC-ResNeXt-26-TS: global-context map over positions plus a channel add term", "stages.3"),
        _Entry("deit_tiny_patch16_224", "timm", ("vit",), (224, 224),
               "DeiT-Tiny: ViT, 12 layers x 3 heads, class token", "blocks.11.norm1", "tokens"),
        _Entry("deit_small_patch16_224", "timm", ("vit",), (224, 224),
               "DeiT-Small: ViT, 12 layers x 6 heads, class token", "blocks.11.norm1", "tokens"),
        _Entry("deit_tiny_distilled_patch16_224", "timm", ("vit",), (224, 224),
               "DeiT-Tiny distilled: class and distillation tokens, averaged at inference",
               "blocks.11.norm1", "tokens"),
        _Entry("vit_small_patch16_224.dino", "timm", ("vit",), (224, 224),
               "DINO ViT-S/16: self-supervised features, no classifier (attention only)", ""),
        _Entry("vit_small_patch14_reg4_dinov2", "timm", ("vit",), (224, 224),
               "DINOv2 ViT-S/14 with 4 register tokens, run at 224 px; no classifier", "", "tokens",
               (("img_size", 224),)),
        _Entry("swin_tiny_patch4_window7_224", "timm", ("swin",), (224, 224),
               "Swin-T (timm): shifted 7x7 windows, 4 stages", "layers.3.blocks.1.norm1", "nhwc"),
        _Entry("botnet26t_256", "timm", ("bot",), (256, 256),
               "BoTNet-26T: global multi-head self-attention in the last ResNet stages", "stages.3"),
        _Entry("halonet26t", "timm", ("halo",), (256, 256),
               "HaloNet-26T: blocked local self-attention with a halo", "stages.3"),
        _Entry("vit_b_16", "torchvision", ("vit",), (224, 224),
               "ViT-B/16 (torchvision): 12 layers x 12 heads, class token",
               "encoder.layers.encoder_layer_11.ln_1", "tokens"),
        _Entry("swin_t", "torchvision", ("swin",), (224, 224),
               "Swin-T (torchvision): shifted 7x7 windows, 4 stages", "features.7.1.norm1", "nhwc"),
        _Entry("deformable_detr", "transformers", ("detr_encoder", "detr_decoder"), (800, 1333),
               "Deformable DETR (COCO detector): multi-scale deformable attention, 6 encoder and 6 decoder "
               "layers, 8 heads x 4 levels x 4 points; input resized to 800 px on the short side", ""),
        _Entry("dat_tiny", "official", ("dat", "dat_window"), (224, 224),
               "DAT-T (v1, CVPR 2022): deformable attention in stages 3-4, local and shifted windows in 1-2",
               "stages.3"),
        _Entry("resnet50", "torchvision", (), (224, 224),
               "ResNet-50: no attention module, the Grad-CAM baseline", "layer4"),
    )
}  # fmt: skip

# Captured record kinds of each zoo attention kind (see attnviz.zoo.ZOO_KINDS).
_ZOO_RECORD_KINDS: dict[str, tuple[str, ...]] = {
    "se": ("se",),
    "eca": ("eca",),
    "cbam": ("cbam_channel", "cbam_spatial"),
    "ca": ("ca",),
    "gc": ("gc_context", "gc_add"),
    "sk": ("sk",),
    "nonlocal": ("nonlocal",),
    "mhsa": ("mhsa",),
    "dat": ("dat",),
    "deform": ("deform_conv",),
    "none": (),
}


def _zoo_entries() -> dict[str, _Entry]:
    """The built-in zoo (trained by attnviz on generated scenes): listed first, the offline default."""
    from .zoo import INPUT_SIZE, ZOO_KINDS, zoo_name

    return {
        zoo_name(kind): _Entry(
            zoo_name(kind), "attnviz", _ZOO_RECORD_KINDS[kind], (INPUT_SIZE, INPUT_SIZE),
            f"zoo: {description}", "stage3",
        )
        for kind, description in ZOO_KINDS.items()
    }  # fmt: skip


_MODELS = {**_zoo_entries(), **_MODELS}


# Architectures attnviz builds itself whose official checkpoints are published by their authors
# (not through a library hub): name -> the released file name.
_OFFICIAL_FILES = {"dat_tiny": "dat_tiny_in1k_224.pth"}
_OFFICIAL_SOURCES = {
    "dat_tiny": "the official DAT release (github.com/LeapLabTHU/DAT, README: DAT-T ImageNet-1K 224 "
    "checkpoint, Tsinghua Cloud or Google Drive)"
}


def _tv_weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def _timm_cfg(name: str):
    import timm

    return timm.models.get_pretrained_cfg(name)


def _hf_filenames(cfg) -> tuple[str, ...]:
    if getattr(cfg, "hf_hub_filename", None):
        return (cfg.hf_hub_filename,)
    return ("model.safetensors", "pytorch_model.bin")


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_timm_file(cfg) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in _hf_filenames(cfg):
        hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _weights_location(entry: _Entry) -> tuple[str, Path, bool]:
    """(file name, expected path, present locally) of an entry's pretrained weights."""
    if entry.source == "attnviz":
        from .zoo import weights_path

        path = weights_path(entry.name.removeprefix("zoo_"))
        return path.name, path, path.is_file()
    if entry.source == "transformers":
        from .detr import HUB_REPO, cached_pretrained_dir

        folder = cached_pretrained_dir()
        if folder is not None:
            return "model.safetensors", folder, True
        repo_dir = "models--" + HUB_REPO.replace("/", "--")
        return "model.safetensors", _hf_cache_dir() / repo_dir / "snapshots" / "<revision>", False
    if entry.source == "official":
        filename = _OFFICIAL_FILES[entry.name]
        path = Path(torch.hub.get_dir()) / "checkpoints" / filename
        return filename, path, path.is_file()
    if entry.source == "torchvision":
        url = _tv_weights(entry.name).url
        filename = os.path.basename(url)
        path = Path(torch.hub.get_dir()) / "checkpoints" / filename
        return filename, path, path.is_file()
    cfg = _timm_cfg(entry.name)
    hit = _cached_timm_file(cfg)
    if hit is not None:
        return hit.name, hit, True
    repo_dir = "models--" + cfg.hf_hub_id.replace("/", "--")
    filename = _hf_filenames(cfg)[0]
    return filename, _hf_cache_dir() / repo_dir / "snapshots" / "<revision>" / filename, False


_TRANSFORMER_KINDS = {"vit", "swin", "bot", "halo", "dat", "dat_window"}


def _group(entry: _Entry) -> str:
    if entry.source == "attnviz":
        return "zoo"
    if entry.source == "transformers":
        return "detector"
    return "transformer" if _TRANSFORMER_KINDS & set(entry.attention) else "cnn"


def _trained_on(entry: _Entry) -> str:
    if entry.source == "attnviz":
        return "generated shapes"
    if entry.source == "transformers":
        return "COCO"
    if not entry.gradcam_layer:
        return "ImageNet-1k images, self-supervised (no labels)"
    return "ImageNet-1k"


def _spec(entry: _Entry) -> ModelSpec:
    filename, path, present = _weights_location(entry)
    return ModelSpec(
        name=entry.name,
        source=entry.source,
        attention=entry.attention,
        input_size=entry.input_size,
        pretrained_available=present,
        weights_file=filename,
        weights_path=str(path),
        description=entry.description,
        gradcam_layer=entry.gradcam_layer,
        gradcam_layout=entry.gradcam_layout,
        build_kwargs=entry.build_kwargs,
        group=_group(entry),
        trained_on=_trained_on(entry),
    )


def default_weights(spec: ModelSpec) -> str:
    """The weights a page runs a model with unless the user asks otherwise.

    The built-in zoo always has its trained weights (they ship with attnviz); other models use
    their pretrained weights when these are on this machine already, else random weights (the
    results then say that they are untrained). Nothing is downloaded to decide.

    Returns:
        ``"pretrained"`` or ``"random"``.
    """
    return "pretrained" if spec.source == "attnviz" or spec.pretrained_available else "random"


def list_models() -> list[ModelSpec]:
    """Every model attnviz can load, with whether its pretrained weights are cached locally.

    Returns:
        One :class:`ModelSpec` per model, attention models first, the baseline last.
    """
    return [_spec(e) for e in _MODELS.values()]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        UnknownModelError: for a name that is not in :func:`list_models`.
    """
    return _spec(_entry(name))


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _MODELS:
        known = ", ".join(_MODELS)
        raise UnknownModelError(f"Unknown model {name!r}: choose one of {known}.")
    return _MODELS[name]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` are checked.

    Raises:
        DeviceError: for an unknown device or CUDA that is not available.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise DeviceError(f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was asked for, but no CUDA GPU is available on this machine: use cpu or auto."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)."
            )
    return torch.device(device)


@dataclass(eq=False)
class LoadedModel:
    """A model ready for :func:`attnviz.analyze`, with everything needed to read its results.

    Attributes:
        spec: what the model is.
        module: the ``nn.Module`` in eval mode, on ``device``, parameters frozen.
        transform: PIL image -> normalised ``[3, H, W]`` tensor, from the weights' own config.
        mean, std: the normalisation the transform applies (to undo it for display).
        categories: the 1000 ImageNet class names, index order.
        weights: ``"pretrained"``, ``"random"`` or the checkpoint's file name.
        untrained: True for random weights: every result is marked untrained.
        device: where the module lives.
        taps: the attention taps found in the module.
        lock: hold it while running the module; the model may be shared between sessions.
        detector: for detectors (Deformable DETR), the :class:`attnviz.detr.DetrBundle` that
            :func:`attnviz.analyze` runs instead of a classifier forward; None otherwise.
        memory_format: ``torch.channels_last`` when the module's weights and its input batches
            are kept channels-last (see :func:`load_model`), else ``torch.contiguous_format``.
    """

    spec: ModelSpec
    module: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: tuple[str, ...]
    weights: str
    untrained: bool
    device: torch.device
    taps: list[Tap] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    detector: object | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def name(self) -> str:
        """The model's name."""
        return self.spec.name

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Apply the model's transform to RGB images: ``[B, 3, H, W]`` on the model's device (in
        the model's memory format)."""
        batch = torch.stack([self.transform(img.convert("RGB")) for img in images])
        return batch.to(self.device, memory_format=self.memory_format)


def _report(progress: ProgressFn | None, message: str, fraction: float | None = None) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message, fraction)


def _download(url: str, dest: Path, progress: ProgressFn | None) -> None:
    """Download ``url`` to ``dest`` through a temporary file, checking torch hub's hash prefix."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            try:
                while chunk := resp.read(1 << 20):
                    tmp.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    frac = done / total if total else None
                    _report(progress, f"Downloading {dest.name}: {done / 1e6:.0f} MB", frac)
                tmp.close()
                match = re.search(r"-([a-f0-9]{6,})\.", dest.name)
                if match and not digest.hexdigest().startswith(match.group(1)):
                    raise CheckpointError(f"Downloaded {dest.name} does not match its hash: try again.")
                shutil.move(tmp.name, dest)
            finally:
                if os.path.exists(tmp.name):
                    os.unlink(tmp.name)


def _unavailable(entry: _Entry, filename: str, path: Path, cause: BaseException) -> WeightsUnavailableError:
    if entry.source == "official":
        where = f"download {filename} from {_OFFICIAL_SOURCES[entry.name]} and put it at {path}"
    elif entry.source == "attnviz":
        kind = entry.name.removeprefix("zoo_")
        where = f"restore {path} from the repository, or retrain: `python -m attnviz zoo train --kind {kind}`"
    elif entry.source == "torchvision":
        where = f"put {filename} at {path} (torch hub cache: $TORCH_HOME/hub/checkpoints/)"
    else:
        cfg = _timm_cfg(entry.name)
        where = (
            f"download the Hugging Face repo {cfg.hf_hub_id} into the HF cache ({_hf_cache_dir()}, "
            f"e.g. `hf download {cfg.hf_hub_id}` on a connected machine, then copy the cache)"
        )
    if entry.source == "official":
        missing = f"The official weights of {entry.name} ({filename}) are not on this machine"
    elif entry.source == "attnviz":
        missing = f"The zoo weights of {entry.name} ({filename}) are missing from {path.parent}"
    else:
        missing = (
            f"Pretrained weights for {entry.name} ({filename}) are not cached and could not be downloaded "
            f"({type(cause).__name__})"
        )
    if entry.source == "attnviz":
        summary = (
            f"The trained weights of {entry.name} are missing from this copy of attnviz: restore "
            f"assets/zoo/{filename} from the repository, or retrain them with "
            f"`python -m attnviz zoo train --kind {entry.name.removeprefix('zoo_')}`."
        )
    elif entry.source == "official":
        summary = (
            f"The official {entry.name} checkpoint is not on this machine: download {filename} from the "
            "authors' release page and copy it into the torch hub cache (the Models page shows where)."
        )
    else:
        summary = (
            f"The pretrained weights of {entry.name} are not on this machine and could not be downloaded: "
            "copy them in from a connected machine (the Models page shows where they go)."
        )
    cause_text = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return WeightsUnavailableError(
        f"{missing}: {where}, or pass weights=<path to a .safetensors/.pth state dict>, "
        "or use weights='random'.",
        weights_file=filename,
        expected_path=str(path),
        summary=summary,
        details=(f"file: {filename}", f"goes to: {path}", f"how: {where}", f"why: {cause_text}"),
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``.

    Pickles that carry code are refused (weights_only), and so is anything that is not a mapping
    of parameter names to tensors. A ``state_dict``/``model`` wrapper and a ``module.`` prefix
    (DataParallel) are unwrapped.

    Raises:
        CheckpointError: with a message saying what is wrong with the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist or is not a file.")
    if p.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"Checkpoint {p.name}: expected one of {', '.join(CHECKPOINT_SUFFIXES)}.")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # the loaders raise many types for hostile or broken files
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it contains Python objects, not only tensors (refused: only plain state dicts load)"
        raise CheckpointError(f"Checkpoint {p.name} could not be loaded safely: {reason}") from err
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"Checkpoint {p.name} holds no state dict (a mapping of names to tensors).")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {p.name} has entries that are not tensors, e.g. {bad[0]!r}.")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _apply_checkpoint(module: nn.Module, state: dict[str, torch.Tensor], filename: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise CheckpointError(f"Checkpoint {filename} does not fit this architecture: {'; '.join(parts)}.")
    module.load_state_dict(state, strict=True)


def _build(entry: _Entry, pretrained_file: Path | None):
    """(module, transform, mean, std, categories) for an entry, random or from a cached file."""
    if entry.source == "attnviz":
        from torchvision import transforms as T

        from .scenes import CLASSES
        from .zoo import INPUT_SIZE, MEAN, STD, build_zoo_model

        module = build_zoo_model(entry.name.removeprefix("zoo_"))
        if pretrained_file is not None:
            _apply_checkpoint(module, load_checkpoint(pretrained_file), pretrained_file.name)
        transform = T.Compose(
            [T.Resize(INPUT_SIZE), T.CenterCrop(INPUT_SIZE), T.ToTensor(), T.Normalize(MEAN, STD)]
        )
        return module, transform, MEAN, STD, CLASSES
    if entry.source == "official":
        from torchvision import transforms as T
        from torchvision.models import ResNet50_Weights

        from .dat_net import DAT_TINY_PREPROCESS, build_dat_tiny

        module = build_dat_tiny()
        if pretrained_file is not None:
            _apply_checkpoint(module, load_checkpoint(pretrained_file), pretrained_file.name)
        cfg = DAT_TINY_PREPROCESS
        transform = T.Compose([
            T.Resize((cfg["resize"], cfg["resize"]), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(cfg["input_size"]),
            T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ])  # fmt: skip
        categories = tuple(ResNet50_Weights.DEFAULT.meta["categories"])  # the ImageNet-1k class names
        return module, transform, tuple(cfg["mean"]), tuple(cfg["std"]), categories
    if entry.source == "torchvision":
        from torchvision.models import get_model

        weights = _tv_weights(entry.name)
        module = get_model(entry.name, weights=None)
        if pretrained_file is not None:
            state = torch.load(str(pretrained_file), map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        transform = weights.transforms()
        return (
            module,
            transform,
            tuple(transform.mean),
            tuple(transform.std),
            tuple(weights.meta["categories"]),
        )
    import timm
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    kwargs: dict[str, object] = dict(entry.build_kwargs)
    if pretrained_file is not None:
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    module = timm.create_model(entry.name, **kwargs)
    overrides = {"input_size": (3, *entry.input_size)} if "img_size" in kwargs else {}
    cfg = resolve_data_config(overrides, model=module)
    info = ImageNetInfo()
    # Self-supervised backbones (DINO) have no classifier: no classes, no predictions.
    n_classes = module.num_classes if entry.gradcam_layer else 0
    categories = tuple(info.index_to_description(i) for i in range(n_classes))
    return module, create_transform(**cfg), tuple(cfg["mean"]), tuple(cfg["std"]), categories


def _check_reachable(url: str) -> None:
    """Fail fast (one connection attempt) instead of the hub clients' minute of retries when offline."""
    host = urllib.parse.urlsplit(url).hostname or ""
    with socket.create_connection((host, 443), timeout=5):
        pass


def _fetch_pretrained(entry: _Entry, progress: ProgressFn | None) -> Path:
    filename, path, present = _weights_location(entry)
    if present:
        return path
    if entry.source in ("attnviz", "official"):  # nothing to download from a hub
        raise _unavailable(entry, filename, path, FileNotFoundError(filename))
    try:
        if entry.source == "torchvision":
            _check_reachable(_tv_weights(entry.name).url)
        else:
            from huggingface_hub import constants

            if constants.HF_HUB_OFFLINE:
                raise OSError("HF_HUB_OFFLINE is set")
            _check_reachable(constants.ENDPOINT)
        if entry.source == "torchvision":
            _download(_tv_weights(entry.name).url, path, progress)
            return path
        from huggingface_hub import hf_hub_download

        cfg = _timm_cfg(entry.name)
        _report(progress, f"Downloading {cfg.hf_hub_id}/{filename} from the Hugging Face hub", None)
        return Path(hf_hub_download(cfg.hf_hub_id, filename))
    except CheckpointError:
        raise
    except (OSError, urllib.error.URLError, ValueError, RuntimeError) as err:
        raise _unavailable(entry, filename, path, err) from err


def _load_detector(
    entry: _Entry, weights: str | os.PathLike, dev: torch.device, progress: ProgressFn | None
) -> LoadedModel:
    """Deformable DETR through transformers: a snapshot folder (cached, downloaded, or given) or random."""
    from .detr import HUB_REPO, build_deformable_detr, cached_pretrained_dir

    folder: Path | None = None
    if weights == "random":
        label = "random"
    elif weights == "pretrained":
        folder = cached_pretrained_dir()
        if folder is None:
            filename, path, _ = _weights_location(entry)
            try:
                from huggingface_hub import constants, snapshot_download

                if constants.HF_HUB_OFFLINE:
                    raise OSError("HF_HUB_OFFLINE is set")
                _check_reachable(constants.ENDPOINT)
                _report(progress, f"Downloading {HUB_REPO} from the Hugging Face hub", None)
                folder = Path(snapshot_download(HUB_REPO, allow_patterns=["*.json", "*.safetensors"]))
            except (OSError, ValueError, RuntimeError) as err:
                raise WeightsUnavailableError(
                    f"Pretrained weights for {entry.name} ({HUB_REPO}) are not cached and could not be "
                    f"downloaded ({type(err).__name__}): download the Hugging Face repo {HUB_REPO} on a "
                    f"connected machine (`hf download {HUB_REPO}`) and copy the cache ({_hf_cache_dir()}), "
                    "or pass weights=<the snapshot folder with config.json and model.safetensors>, or use "
                    "weights='random'.",
                    weights_file=filename,
                    expected_path=str(path),
                    summary=f"The pretrained weights of {entry.name} are not on this machine and could "
                    "not be downloaded: copy them in from a connected machine (the Models page shows "
                    "where they go).",
                    details=(
                        f"Hugging Face repo: {HUB_REPO}",
                        f"goes to: {_hf_cache_dir()}",
                        f"how: `hf download {HUB_REPO}` on a connected machine, then copy the cache folder",
                        f"why: {type(err).__name__}: {err}",
                    ),
                ) from err
        label = "pretrained"
    elif isinstance(weights, str | os.PathLike):
        folder = Path(weights)
        if not folder.is_dir():
            raise CheckpointError(
                f"weights={str(weights)!r}: Deformable DETR loads a snapshot folder (config.json and "
                "model.safetensors, as `hf download SenseTime/deformable-detr --local-dir DIR` writes), "
                "or 'pretrained' or 'random'."
            )
        label = folder.name
    else:
        raise CheckpointError(
            f"weights must be 'pretrained', 'random' or a path, got {type(weights).__name__}."
        )
    _report(progress, f"Building {entry.name}", None)
    bundle = build_deformable_detr(folder, device=dev)
    bundle.weights, bundle.untrained = label, label == "random"
    _report(progress, f"{entry.name} ready on {dev}", 1.0)
    return LoadedModel(
        spec=_spec(entry),
        module=bundle.module,
        transform=_no_transform,
        mean=bundle.mean,
        std=bundle.std,
        categories=bundle.labels,
        weights=label,
        untrained=label == "random",
        device=dev,
        taps=[],
        lock=bundle.lock,
        detector=bundle,
    )


def _no_transform(image: Image.Image) -> torch.Tensor:
    raise TypeError("a detector preprocesses whole batches: use attnviz.analyze")


def load_model(
    name: str,
    *,
    weights: str | os.PathLike = "pretrained",
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    channels_last: bool | None = None,
) -> LoadedModel:
    """Build a model with its weights, preprocessing and class names.

    Args:
        name: a name from :func:`list_models`.
        weights: ``"pretrained"`` (library cache, downloaded when missing and online),
            ``"random"`` (same architecture, untrained; results are marked untrained), or a path
            to a ``.safetensors`` file or a state dict loadable with ``torch.load(weights_only=True)``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        progress: optional ``progress(message, fraction)`` callback for the UI.
        channels_last: keep the weights and input batches channels-last (NHWC), which lets
            cuDNN pick its faster kernels for convolutions. None (default): on CUDA for
            convolutional networks, not on the CPU (see ``python -m attnviz bench``). Captured
            values are the same either way (within float rounding). Ignored for Deformable DETR.

    Returns:
        The :class:`LoadedModel`, in eval mode with frozen parameters.

    Raises:
        UnknownModelError: unknown name.
        DeviceError: unavailable device.
        WeightsUnavailableError: pretrained weights neither cached nor downloadable; the
            message names the file and where to put it.
        CheckpointError: a path that is unsafe, unreadable, or does not fit the architecture.
    """
    entry = _entry(name)
    dev = resolve_device(device)
    if entry.source == "transformers":
        return _load_detector(entry, weights, dev, progress)
    checkpoint: dict[str, torch.Tensor] | None = None
    pretrained_file: Path | None = None
    if isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and weights not in ("pretrained", "random")
    ):
        path = Path(weights)
        if not path.exists():
            raise CheckpointError(
                f"weights={str(weights)!r} is neither 'pretrained', 'random' nor an existing checkpoint file."
            )
        _report(progress, f"Reading checkpoint {path.name}", None)
        checkpoint = load_checkpoint(path)
        label = path.name
    elif weights == "pretrained":
        pretrained_file = _fetch_pretrained(entry, progress)
        label = "pretrained"
    elif weights == "random":
        label = "random"
    else:
        raise CheckpointError(
            f"weights must be 'pretrained', 'random' or a path, got {type(weights).__name__}."
        )

    _report(progress, f"Building {name}", None)
    module, transform, mean, std, categories = _build(entry, pretrained_file)
    if checkpoint is not None:
        _apply_checkpoint(module, checkpoint, label)
    module.eval().requires_grad_(False).to(dev)
    if channels_last is None:
        channels_last = dev.type == "cuda" and entry.gradcam_layout == "nchw"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module.to(memory_format=torch.channels_last)
    _report(progress, f"{name} ready on {dev}", 1.0)
    return LoadedModel(
        spec=_spec(entry),
        module=module,
        transform=transform,
        mean=mean,
        std=std,
        categories=categories,
        weights=label,
        untrained=label == "random",
        device=dev,
        taps=find_taps(module),
        memory_format=memory_format,
    )
