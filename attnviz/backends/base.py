"""What every model backend shares: the spec, the catalogue entry, the loaded model, the contract.

A backend (one file per weight source in this package) declares its catalogue entries and says
where their pretrained weights live, how to fetch them, what to say when they are missing, and how
to build the module with its preprocessing. :mod:`attnviz.backends.registry` finds the backends
without naming them and does everything else (checkpoint paths, devices, memory format, taps).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from attnviz.capture import Tap
from attnviz.core.errors import CheckpointError, WeightsUnavailableError

__all__ = [
    "MODEL_GROUPS",
    "Backend",
    "Built",
    "Entry",
    "LoadedModel",
    "ModelSpec",
    "ProgressFn",
    "WeightsLocation",
    "explained_download",
    "hub_missing_weights",
    "missing_weights_error",
    "report",
]

log = logging.getLogger(__name__)

_TRANSFORMER_KINDS = {"vit", "swin", "bot", "halo", "dat", "dat_window"}


#: ``progress(message, fraction)``: fraction in [0, 1], or None when unknown.
ProgressFn = Callable[[str, float | None], None]


MODEL_GROUPS: dict[str, str] = {
    "zoo": "Built-in zoo: small CNNs trained by attnviz on generated shapes",
    "user": "Your models: trained in the Playground",
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
        source: who defines it: ``"torchvision"``, ``"timm"``, ``"attnviz"`` (the built-in zoo),
            ``"user"`` (a playground network a person trained and saved) or ``"official"`` (an
            architecture attnviz builds to load its authors' released checkpoint, e.g. DAT-T).
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
        from_hub: True when its pretrained weights come from a library's hub (torch hub, Hugging
            Face), so that :func:`load_model` can download them; the zoo ships its weights, DAT-T's
            come from its authors' release page.
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
    from_hub: bool = False

    @property
    def classifier(self) -> bool:
        """True when the model predicts classes (and so has top-5 and Grad-CAM)."""
        return bool(self.gradcam_layer)


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
        detector: for detectors (Deformable DETR), the
            :class:`~attnviz.backends.transformers_detr.DetrBundle` that :func:`attnviz.analyze`
            runs instead of a classifier forward; None otherwise.
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

    @property
    def kind(self) -> str:
        """Which runner :func:`attnviz.analyze` uses: ``"detector"`` or ``"classifier"`` (feature
        extractors such as DINO included: no classes, attention only)."""
        return "detector" if self.detector is not None else "classifier"

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Apply the model's transform to RGB images: ``[B, 3, H, W]`` on the model's device (in
        the model's memory format)."""
        batch = torch.stack([self.transform(img.convert("RGB")) for img in images])
        return batch.to(self.device, memory_format=self.memory_format)


def report(progress: ProgressFn | None, message: str, fraction: float | None = None) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message, fraction)


@dataclass(frozen=True)
class Entry:
    """One catalogue line: a model a backend can build.

    Attributes:
        name: the name :func:`~attnviz.backends.registry.load_model` takes.
        attention: the record kinds captured in it (empty for a baseline).
        input_size: (H, W) its preprocessing produces.
        description: one line for the UI.
        gradcam_layer: the layer Grad-CAM explains; empty for models without a classifier.
        gradcam_layout: ``"nchw"``, ``"tokens"`` or ``"nhwc"``.
        build_kwargs: extra arguments for the library's constructor.
    """

    name: str
    attention: tuple[str, ...]
    input_size: tuple[int, int]
    description: str
    gradcam_layer: str
    gradcam_layout: str = "nchw"
    build_kwargs: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class WeightsLocation:
    """Where an entry's pretrained weights are: file name, (expected) path, and whether it is there."""

    filename: str
    path: Path
    present: bool


@dataclass(frozen=True)
class Built:
    """A freshly built module with what reads and labels its input and output."""

    module: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: tuple[str, ...]


class Backend:
    """One source of models and weights. Subclasses set the class attributes and override
    :meth:`entries`, :meth:`weights_location`, :meth:`missing_weights` and :meth:`build`; hub
    backends override :meth:`fetch`, and a backend whose models are not classifiers (a detector)
    overrides :meth:`load`.

    Attributes:
        source: the :attr:`ModelSpec.source` of its models.
        order: where its models come in a group of :func:`~attnviz.backends.registry.list_models`
            (lower first).
        from_hub: its pretrained weights come from a library hub (downloadable).
        trained_on: what its pretrained weights were trained on.
    """

    source: str = ""
    order: int = 50
    from_hub: bool = False
    trained_on: str = "ImageNet-1k"

    def entries(self) -> Sequence[Entry]:
        """The models this backend builds, in the order a picker lists them."""
        raise NotImplementedError

    def version(self) -> Hashable:
        """What :meth:`entries` depends on besides the code (a folder's contents): the registry
        lists the entries again whenever it changes. None (the default): a fixed list."""
        return None

    def group(self, entry: Entry) -> str:
        """The :data:`MODEL_GROUPS` key of ``entry``: transformers apart from CNNs by default."""
        return "transformer" if _TRANSFORMER_KINDS & set(entry.attention) else "cnn"

    def trained_on_of(self, entry: Entry) -> str:
        """What ``entry``'s pretrained weights were trained on."""
        if not entry.gradcam_layer:
            return f"{self.trained_on} images, self-supervised (no labels)"
        return self.trained_on

    def weights_location(self, entry: Entry) -> WeightsLocation:
        """Where ``entry``'s pretrained weights are or would be; never touches the network."""
        raise NotImplementedError

    def missing_weights(
        self, entry: Entry, where: WeightsLocation, cause: BaseException
    ) -> WeightsUnavailableError:
        """The error for pretrained weights that are neither here nor downloadable."""
        raise NotImplementedError

    def fetch(self, entry: Entry, progress: ProgressFn | None) -> Path:
        """The pretrained weights file of ``entry``, downloaded when missing (hub backends).

        Raises:
            WeightsUnavailableError: not here and not downloadable.
        """
        where = self.weights_location(entry)
        if where.present:
            return where.path
        raise self.missing_weights(entry, where, FileNotFoundError(where.filename))

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        """``entry``'s module (random, or with the weights in ``pretrained_file``) and preprocessing."""
        raise NotImplementedError

    def load(
        self,
        entry: Entry,
        spec: ModelSpec,
        weights: str | os.PathLike,
        device: torch.device,
        progress: ProgressFn | None,
    ) -> LoadedModel | None:
        """Load ``entry`` in a way of the backend's own, or None for the registry's classifier path."""
        return None


def missing_weights_error(
    *,
    missing: str,
    how: str,
    summary: str,
    filename: str,
    path: str | os.PathLike,
    cause: BaseException | None = None,
    alternatives: str = "or pass weights=<path to a .safetensors/.pth state dict>, or use weights='random'",
    details: Sequence[str] | None = None,
) -> WeightsUnavailableError:
    """The one builder of :class:`WeightsUnavailableError`: what is missing, how to get it, a plain
    summary for a page, and details (file, where it goes, how, why) for the one who fixes it."""
    why: tuple[str, ...] = ()
    if cause is not None:
        why = (f"why: {type(cause).__name__}: {cause}" if str(cause) else f"why: {type(cause).__name__}",)
    if details is None:
        details = (f"file: {filename}", f"goes to: {path}", f"how: {how}")
    return WeightsUnavailableError(
        f"{missing}: {how}, {alternatives}.",
        weights_file=filename,
        expected_path=str(path),
        summary=summary,
        details=(*details, *why),
    )


def hub_missing_weights(
    name: str, where: WeightsLocation, cause: BaseException, how: str, *, source: str = "", **kwargs: Any
) -> WeightsUnavailableError:
    """The error for a hub model whose weights are neither cached nor downloadable (torch hub,
    Hugging Face): the same summary for every hub, ``how`` says where the file goes, ``source``
    what is missing when it is more than the file (a Hugging Face repo)."""
    return missing_weights_error(
        missing=f"Pretrained weights for {name} ({source or where.filename}) are not cached and could not be "
        f"downloaded ({type(cause).__name__})",
        how=how,
        summary=f"The pretrained weights of {name} are not on this machine and could not be downloaded: "
        "copy them in from a connected machine (the Models page shows where they go).",
        filename=where.filename,
        path=where.path,
        cause=cause,
        **kwargs,
    )


@contextmanager
def explained_download(backend: Backend, entry: Entry, where: WeightsLocation) -> Iterator[None]:
    """Turn a failed download inside the block into ``backend``'s missing-weights error (a file that
    arrived but does not match its hash stays a :class:`CheckpointError`)."""
    try:
        yield
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError) as err:  # URLError and socket errors are OSErrors
        raise backend.missing_weights(entry, where, err) from err
