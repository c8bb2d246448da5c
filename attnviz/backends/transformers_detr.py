"""Deformable DETR through transformers (``SenseTime/deformable-detr``): a COCO detector whose
multi-scale deformable attention attnviz draws.

Paper: "Deformable DETR: Deformable Transformers for End-to-End Object Detection", Zhu et al.,
ICLR 2021, https://arxiv.org/abs/2010.04159. Model: transformers'
``DeformableDetrForObjectDetection``, run with ``attn_implementation="eager"``. Weights come from a
snapshot folder (the Hugging Face cache, a download, or a folder given); the runner that reads its
attention is :mod:`attnviz.analysis.detector`.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnviz.backends.base import (
    Backend,
    Built,
    Entry,
    LoadedModel,
    ModelSpec,
    ProgressFn,
    WeightsLocation,
    hub_missing_weights,
    missing_weights_error,
    report,
)
from attnviz.backends.weights import check_reachable, hf_cache_dir
from attnviz.core.errors import CheckpointError, WeightsUnavailableError
from attnviz.runtime import as_pil, resolve_device

__all__ = [
    "BACKEND",
    "COCO_LABELS",
    "HUB_REPO",
    "DetrBundle",
    "build_deformable_detr",
    "cached_pretrained_dir",
]


#: The Hugging Face repository of the pretrained model.
HUB_REPO = "SenseTime/deformable-detr"


#: Weight files a local snapshot may hold (``from_pretrained`` reads either).
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _coco_labels() -> tuple[str, ...]:
    # torchvision's COCO list uses the 91 original category ids (gaps are "N/A"), as DETR's
    # id2label does; only id 0 differs ("__background__" there, "N/A" in DETR's config).
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    categories = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    return ("N/A", *categories[1:])


#: The 91 COCO category names by original COCO id, as in ``SenseTime/deformable-detr``'s
#: ``config.id2label`` (id 0 and the ids COCO never used are ``"N/A"``).
COCO_LABELS: tuple[str, ...] = _coco_labels()


@dataclass(eq=False)
class DetrBundle:
    """A Deformable DETR ready for :func:`analyze_detr`.

    Attributes:
        module: ``DeformableDetrForObjectDetection`` in eval mode, parameters frozen, eager attention.
        processor: the ``DeformableDetrImageProcessor`` that prepares its input.
        labels: class names by class id (``config.id2label``), COCO's 91 ids for the pretrained model.
        mean, std: the normalisation the processor applies (to undo it for display).
        weights: ``"pretrained"`` or ``"random"``.
        untrained: True for random weights.
        device: where the module lives.
        name: model name for :class:`~attnviz.core.records.Analysis`.
        lock: hold it while running the module; the model may be shared between sessions.
    """

    module: nn.Module
    processor: Any
    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    untrained: bool
    device: torch.device
    name: str = "deformable_detr"
    lock: threading.RLock = field(default_factory=threading.RLock)

    def preprocess(self, images: Sequence[Image.Image | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The processor's resize, rescale, normalise and pad, on the module's device.

        Each image is resized so that its shorter side is ``shortest_edge`` (800) unless the longer
        side would then exceed ``longest_edge`` (1333); a batch of different sizes is zero-padded at
        the bottom and right to the largest height and width, as the processor does.

        Args:
            images: RGB PIL images or ``[H, W, 3]`` uint8 arrays.

        Returns:
            ``pixel_values`` ``[B, 3, H, W]`` float and ``pixel_mask`` ``[B, H, W]`` int64 (1 on
            each image's valid region, 0 on padding).
        """
        if isinstance(images, Image.Image | np.ndarray):
            images = [images]
        if not images:
            raise ValueError("preprocess needs at least one image")
        batch = self.processor(images=[as_pil(img) for img in images], return_tensors="pt")
        return batch["pixel_values"].to(self.device), batch["pixel_mask"].to(self.device)


def cached_pretrained_dir(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The snapshot folder of ``SenseTime/deformable-detr`` in the local Hugging Face cache, if any.

    Looks only at the cache (no network): the folder must hold ``config.json`` and a weight file.

    Args:
        cache_dir: the hub cache to look in (default: the Hugging Face default, ``$HF_HUB_CACHE``).
    """
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(
        HUB_REPO, "config.json", cache_dir=None if cache_dir is None else str(cache_dir)
    )
    if not isinstance(hit, str) or not os.path.isfile(hit):
        return None
    folder = Path(hit).parent
    return folder if any((folder / f).is_file() for f in _WEIGHT_FILES) else None


def _default_config():
    from transformers import DeformableDetrConfig

    # The timm ResNet-50 backbone is built with random weights (use_pretrained_backbone is False
    # in transformers 5's default timm backbone config): nothing is downloaded.
    return DeformableDetrConfig(id2label=dict(enumerate(COCO_LABELS)))


def _check_offline_backbone(config) -> None:
    backbone = getattr(config, "backbone_config", None)
    flags = (
        getattr(backbone, "use_pretrained_backbone", False),
        getattr(config, "use_pretrained_backbone", False),
    )
    if any(flags):
        raise ValueError(
            "config asks for a pretrained backbone (use_pretrained_backbone=True), which would be "
            "downloaded: set it to False"
        )


def _unavailable(folder: Path, filename: str) -> WeightsUnavailableError:
    return missing_weights_error(
        missing=f"Deformable DETR weights are missing: {folder} has no {filename}",
        how=f"download the Hugging Face repo {HUB_REPO} on a connected machine "
        f"(`hf download {HUB_REPO} --local-dir <folder>`), copy the folder here and pass it",
        alternatives="or use random weights (pretrained_dir=None)",
        summary=f"The Deformable DETR weights are incomplete: {filename} is missing from the folder given.",
        filename=filename,
        path=folder / filename,
        details=(f"folder: {folder}", f"download: hf download {HUB_REPO} --local-dir <folder>"),
    )


def _load_pretrained(folder: Path):
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

    if not folder.is_dir():
        raise _unavailable(folder, "config.json")
    if not (folder / "config.json").is_file():
        raise _unavailable(folder, "config.json")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise _unavailable(folder, _WEIGHT_FILES[0])
    try:
        config = DeformableDetrConfig.from_pretrained(str(folder), local_files_only=True)
        backbone = getattr(config, "backbone_config", None)
        if backbone is not None and getattr(backbone, "use_pretrained_backbone", False):
            backbone.use_pretrained_backbone = False  # the checkpoint holds the backbone weights
        return DeformableDetrForObjectDetection.from_pretrained(
            str(folder), config=config, attn_implementation="eager", local_files_only=True
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(f"Deformable DETR snapshot {folder} could not be loaded: {reason}") from err


def _processor(folder: Path | None, shortest_edge: int, longest_edge: int):
    from transformers import DeformableDetrImageProcessor

    size = {"shortest_edge": shortest_edge, "longest_edge": longest_edge}
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        # the snapshot's own settings (the hub's are the defaults below), read from the folder only
        return DeformableDetrImageProcessor.from_pretrained(str(folder), local_files_only=True, size=size)
    # constructed in code from the class defaults (bilinear resize, 1/255, ImageNet mean/std,
    # pad bottom-right with a pixel mask): no hub call
    return DeformableDetrImageProcessor(size=size)


def build_deformable_detr(
    pretrained_dir: str | os.PathLike | None,
    *,
    config=None,
    device: str | torch.device = "cpu",
    shortest_edge: int = 800,
    longest_edge: int = 1333,
) -> DetrBundle:
    """Deformable DETR with its preprocessing, pretrained from a local snapshot or random.

    Args:
        pretrained_dir: a local snapshot folder of ``SenseTime/deformable-detr`` (``config.json``
            plus ``model.safetensors`` or ``pytorch_model.bin``, e.g. from
            :func:`cached_pretrained_dir`), or None for random weights. Nothing is downloaded.
        config: a ``DeformableDetrConfig`` for random weights (default: the pretrained model's
            architecture with a random timm ResNet-50 backbone and COCO's 91 labels). It must not
            ask for a pretrained backbone. Not allowed together with ``pretrained_dir``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        shortest_edge, longest_edge: the processor's resize (800 and 1333 for the pretrained model).

    Returns:
        The :class:`DetrBundle`, module in eval mode with frozen parameters and eager attention.

    Raises:
        ValueError: bad sizes, both ``pretrained_dir`` and ``config``, or a config that would download.
        WeightsUnavailableError: ``pretrained_dir`` lacks ``config.json`` or the weights.
        CheckpointError: a snapshot that transformers cannot load.
    """
    for name, value in (("shortest_edge", shortest_edge), ("longest_edge", longest_edge)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if shortest_edge > longest_edge:
        raise ValueError(f"shortest_edge ({shortest_edge}) must not exceed longest_edge ({longest_edge})")
    if pretrained_dir is not None and config is not None:
        raise ValueError("pass either pretrained_dir or config, not both")
    dev = resolve_device(device)
    folder = Path(pretrained_dir) if pretrained_dir is not None else None
    if folder is not None:
        module = _load_pretrained(folder)
    else:
        from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

        if config is None:
            config = _default_config()
        elif not isinstance(config, DeformableDetrConfig):
            raise TypeError(f"config must be a DeformableDetrConfig, got {type(config).__name__}")
        else:
            config = copy.deepcopy(config)
        _check_offline_backbone(config)
        module = DeformableDetrForObjectDetection(config)
        module.set_attn_implementation("eager")
    module.eval().requires_grad_(False).to(dev)
    processor = _processor(folder, shortest_edge, longest_edge)
    id2label = module.config.id2label
    labels = tuple(str(id2label.get(i, f"class {i}")) for i in range(module.config.num_labels))
    return DetrBundle(
        module=module,
        processor=processor,
        labels=labels,
        mean=tuple(float(v) for v in processor.image_mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in processor.image_std),  # type: ignore[arg-type]
        weights="pretrained" if folder is not None else "random",
        untrained=folder is None,
        device=dev,
    )


def _location() -> WeightsLocation:
    folder = cached_pretrained_dir()
    if folder is not None:
        return WeightsLocation("model.safetensors", folder, True)
    repo_dir = "models--" + HUB_REPO.replace("/", "--")
    return WeightsLocation("model.safetensors", hf_cache_dir() / repo_dir / "snapshots" / "<revision>", False)


def _load(
    entry: Entry, spec: ModelSpec, weights: str | os.PathLike, dev: torch.device, progress: ProgressFn | None
) -> LoadedModel:
    """Deformable DETR through transformers: a snapshot folder (cached, downloaded, or given) or random."""
    folder: Path | None = None
    if weights == "random":
        label = "random"
    elif weights == "pretrained":
        folder = cached_pretrained_dir()
        if folder is None:
            where = _location()
            try:
                from huggingface_hub import constants, snapshot_download

                if constants.HF_HUB_OFFLINE:
                    raise OSError("HF_HUB_OFFLINE is set")
                check_reachable(constants.ENDPOINT)
                report(progress, f"Downloading {HUB_REPO} from the Hugging Face hub", None)
                folder = Path(snapshot_download(HUB_REPO, allow_patterns=["*.json", "*.safetensors"]))
            except (OSError, ValueError, RuntimeError) as err:
                raise hub_missing_weights(
                    entry.name,
                    where,
                    err,
                    f"download the Hugging Face repo {HUB_REPO} on a connected machine (`hf download "
                    f"{HUB_REPO}`) and copy the cache ({hf_cache_dir()})",
                    source=HUB_REPO,
                    alternatives="or pass weights=<the snapshot folder with config.json and "
                    "model.safetensors>, or use weights='random'",
                    details=(
                        f"Hugging Face repo: {HUB_REPO}",
                        f"goes to: {hf_cache_dir()}",
                        f"how: `hf download {HUB_REPO}` on a connected machine, then copy the cache folder",
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
    report(progress, f"Building {entry.name}", None)
    bundle = build_deformable_detr(folder, device=dev)
    bundle.weights, bundle.untrained = label, label == "random"
    report(progress, f"{entry.name} ready on {dev}", 1.0)
    return LoadedModel(
        spec=spec,
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


class DetrBackend(Backend):
    """Deformable DETR: a detector, loaded its own way (a snapshot folder, not a state dict)."""

    source = "transformers"
    order = 40
    from_hub = True
    trained_on = "COCO"

    def entries(self) -> tuple[Entry, ...]:
        return (
            Entry(
                "deformable_detr",
                ("detr_encoder", "detr_decoder"),
                (800, 1333),
                "Deformable DETR (COCO detector): multi-scale deformable attention, 6 encoder and 6 decoder "
                "layers, 8 heads x 4 levels x 4 points; input resized to 800 px on the short side",
                "",
            ),
        )

    def group(self, entry: Entry) -> str:
        return "detector"

    def trained_on_of(self, entry: Entry) -> str:
        return self.trained_on

    def weights_location(self, entry: Entry) -> WeightsLocation:
        return _location()

    def missing_weights(self, entry: Entry, where: WeightsLocation, cause: BaseException):
        return _unavailable(where.path, where.filename)

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        raise TypeError(
            "Deformable DETR is loaded as a whole (DetrBackend.load), not built from a state dict"
        )

    def load(
        self,
        entry: Entry,
        spec: ModelSpec,
        weights: str | os.PathLike,
        device: torch.device,
        progress: ProgressFn | None,
    ) -> LoadedModel:
        return _load(entry, spec, weights, device, progress)


BACKEND = DetrBackend()
