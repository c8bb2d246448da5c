"""The model registry: every backend in this package, found without naming them, and one catalogue.

Each module of :mod:`attnviz.backends` that defines ``BACKEND`` (a
:class:`~attnviz.backends.base.Backend`) is a weight source; adding a source is adding one such
file. The registry lists their models (grouped as :data:`~attnviz.backends.base.MODEL_GROUPS`
orders them, a baseline without attention last), builds specs, and loads a model with its weights
on a device.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import zlib
from collections.abc import Hashable
from pathlib import Path

import torch

import attnviz.backends as _package
from attnviz.backends.base import MODEL_GROUPS, Backend, Entry, LoadedModel, ModelSpec, ProgressFn, report
from attnviz.backends.weights import apply_checkpoint, load_checkpoint
from attnviz.capture import find_taps
from attnviz.core.errors import CheckpointError, UnknownModelError
from attnviz.runtime import resolve_device

__all__ = ["backends", "default_weights", "get_spec", "list_models", "load_model"]


@functools.cache
def backends() -> tuple[Backend, ...]:
    """Every backend module's ``BACKEND``, by :attr:`Backend.order`."""
    found = []
    for info in pkgutil.iter_modules(_package.__path__):
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        backend = getattr(module, "BACKEND", None)
        if isinstance(backend, Backend):
            found.append(backend)
    return tuple(sorted(found, key=lambda b: b.order))


def _catalogue() -> dict[str, tuple[Backend, Entry]]:
    """name -> (backend, entry): by group, then by backend, the ImageNet baseline without attention last.

    Listed again when a backend's :meth:`~attnviz.backends.base.Backend.version` changes (a model
    saved into or deleted from the user-models folder), else cached.
    """
    return _catalogue_of(tuple(b.version() for b in backends()))


@functools.lru_cache(maxsize=8)
def _catalogue_of(versions: tuple[Hashable, ...]) -> dict[str, tuple[Backend, Entry]]:
    """The catalogue for these backend versions (the argument is the cache key only)."""
    groups = list(MODEL_GROUPS)
    rows = [(b, e) for b in backends() for e in b.entries()]
    names = [e.name for _, e in rows]
    if len(set(names)) != len(names):
        raise RuntimeError(
            f"two backends list the same model name: {sorted(n for n in names if names.count(n) > 1)}"
        )
    # the ImageNet baseline without attention closes the list; zoo and user models stay in their group
    rows.sort(
        key=lambda r: (not r[1].attention and r[0].group(r[1]) == "cnn", groups.index(r[0].group(r[1])))
    )
    return {e.name: (b, e) for b, e in rows}


def _find(name: str) -> tuple[Backend, Entry]:
    catalogue = _catalogue()
    if not isinstance(name, str) or name not in catalogue:
        raise UnknownModelError(f"Unknown model {name!r}: choose one of {', '.join(catalogue)}.")
    return catalogue[name]


def _spec(backend: Backend, entry: Entry) -> ModelSpec:
    where = backend.weights_location(entry)
    return ModelSpec(
        name=entry.name,
        source=backend.source,
        attention=entry.attention,
        input_size=entry.input_size,
        pretrained_available=where.present,
        weights_file=where.filename,
        weights_path=str(where.path),
        description=entry.description,
        gradcam_layer=entry.gradcam_layer,
        gradcam_layout=entry.gradcam_layout,
        build_kwargs=entry.build_kwargs,
        group=backend.group(entry),
        trained_on=backend.trained_on_of(entry),
        from_hub=backend.from_hub,
    )


def list_models() -> list[ModelSpec]:
    """Every model attnviz can load, with whether its pretrained weights are cached locally.

    Returns:
        One :class:`ModelSpec` per model: the zoo first, then the models saved in the user-models
        folder (:mod:`attnviz.backends.user_models`), ImageNet CNNs, transformers and detectors,
        the baseline without attention last.
    """
    return [_spec(b, e) for b, e in _catalogue().values()]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        UnknownModelError: for a name that is not in :func:`list_models`.
    """
    return _spec(*_find(name))


def default_weights(spec: ModelSpec) -> str:
    """The weights a page runs a model with unless the user asks otherwise.

    The built-in zoo always has its trained weights (they ship with attnviz), and so has a model a
    person trained and saved (its weights are its own file: a missing one is an error); other models use
    their pretrained weights when these are on this machine already, else random weights (the
    results then say that they are untrained). Nothing is downloaded to decide.

    Returns:
        ``"pretrained"`` or ``"random"``.
    """
    return "pretrained" if spec.source in ("attnviz", "user") or spec.pretrained_available else "random"


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
            ``"random"`` (same architecture, untrained; results are marked untrained; the same
            weights in every process, drawn from a seed made of the model's name, so that the app
            and a Ray replica give the same results), or a path
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
    backend, entry = _find(name)
    dev = resolve_device(device)
    spec = _spec(backend, entry)
    special = backend.load(entry, spec, weights, dev, progress)
    if special is not None:
        return special
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
        report(progress, f"Reading checkpoint {path.name}", None)
        checkpoint = load_checkpoint(path)
        label = path.name
    elif weights == "pretrained":
        pretrained_file = backend.fetch(entry, progress)
        label = "pretrained"
    elif weights == "random":
        label = "random"
    else:
        raise CheckpointError(
            f"weights must be 'pretrained', 'random' or a path, got {type(weights).__name__}."
        )

    report(progress, f"Building {name}", None)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(zlib.crc32(name.encode("utf-8")))
        built = backend.build(entry, pretrained_file)
    module = built.module
    if checkpoint is not None:
        apply_checkpoint(module, checkpoint, label)
    module.eval().requires_grad_(False).to(dev)
    if channels_last is None:
        channels_last = dev.type == "cuda" and entry.gradcam_layout == "nchw"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module.to(memory_format=torch.channels_last)
    report(progress, f"{name} ready on {dev}", 1.0)
    return LoadedModel(
        spec=spec,
        module=module,
        transform=built.transform,
        mean=built.mean,
        std=built.std,
        categories=built.categories,
        weights=label,
        untrained=label == "random",
        device=dev,
        taps=find_taps(module),
        memory_format=memory_format,
    )
