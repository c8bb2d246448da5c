"""Snapshots of a playground model while it trains, through the library's own analysis path.

The module being trained is wrapped in a :class:`~attnviz.backends.base.LoadedModel`
(:func:`wrap_module`), so that :func:`attnviz.analyze` captures its attention exactly as it does for
any loaded model (the capture removes its hooks when it is done) and :func:`attnviz.add_gradcam`
explains each probe's true class. :class:`SnapshotTaker` turns that into a
:class:`Snapshot` (re-exported by :mod:`attnviz.workflows.playground`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attnviz.analysis import add_gradcam, analyze
from attnviz.backends.base import LoadedModel, ModelSpec
from attnviz.capture import find_taps
from attnviz.layers.playground_net import Placement
from attnviz.layers.zoo_net import INPUT_SIZE, MEAN, STD
from attnviz.views.localisation import score_maps, upsample_map
from attnviz.views.maps import attention_maps
from attnviz.workflows.training import AUTOCAST, normalise

__all__ = ["SCORE_SCENES", "Snapshot", "SnapshotTaker", "accuracy_on", "wrap_module"]

SCORE_SCENES = 64
"""Held-out scenes (besides the probes) the module's map is scored on at each snapshot."""


def wrap_module(
    module: nn.Module, placement: Placement, class_names: Sequence[str], device: torch.device
) -> LoadedModel:
    """A :class:`LoadedModel` around a playground network (not a copy: it sees the training)."""
    from torchvision import transforms as T

    spec = ModelSpec(
        name="playground",
        source="attnviz",
        attention=() if placement.kind == "none" else (placement.attention_kind,),
        input_size=(INPUT_SIZE, INPUT_SIZE),
        pretrained_available=False,
        weights_file="",
        weights_path="",
        description=f"playground: {placement.text}",
        gradcam_layer="stage3",
        group="zoo",
        trained_on="generated shapes",
    )
    transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    return LoadedModel(
        spec=spec,
        module=module,
        transform=transform,
        mean=MEAN,
        std=STD,
        categories=tuple(class_names),
        weights="playground",
        untrained=False,
        device=device,
        taps=find_taps(module),
        memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format,
    )


def accuracy_on(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    device: torch.device,
    autocast: str | None = None,
    batch_size: int = 250,
) -> float:
    """Top-1 accuracy of ``model`` on uint8 scenes ``[N, S, S, 3]`` (a tensor on ``device``)."""
    was_training = model.training
    model.eval()
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    fmt = torch.channels_last if device.type == "cuda" else None
    correct = 0
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = normalise(images[i : i + batch_size], mean, std, fmt)
                if autocast is not None:
                    with torch.autocast(device.type, dtype=AUTOCAST[autocast]):
                        logits = model(x)
                else:
                    logits = model(x)
                pred = logits.argmax(1).cpu().numpy()
                correct += int((pred == labels[i : i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(images)


@dataclass(frozen=True)
class Snapshot:
    """The model at one step of a run, on the probe scenes.

    Attributes:
        step: steps done when it was taken (0: before training).
        loss: the latest training loss (nan before training).
        accuracy: held-out accuracy at this step, in ``[0, 1]``.
        maps: ``[P, S, S]`` the module's own attention map per probe, in input pixels, or None
            for a module without a spatial map (channel gates, no attention).
        gradcam: ``[P, S, S]`` Grad-CAM of the true class per probe, in ``[0, 1]``.
        energy_ratio: energy of the module's map inside the box over the box's area share, on
            the probes and the first held-out scenes (1 is uniform); None without a map.
        pointing: the pointing game of the module's map on the same scenes; None without a map.
        quantity: what the map's values are (a :class:`attnviz.core.scales.Quantity` name).
        map_label: which record the map comes from (``"block 0 · attn3 (cbam_spatial)"``).
        seconds: wall time since the run started.
    """

    step: int
    loss: float
    accuracy: float
    maps: np.ndarray | None
    gradcam: np.ndarray
    energy_ratio: float | None
    pointing: float | None
    quantity: str
    map_label: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("maps", "gradcam"):
            value = getattr(self, name)
            if value is not None:
                arr = np.ascontiguousarray(value, dtype=np.float32)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)


class SnapshotTaker:
    """Takes the snapshots of one run: the probes' maps and Grad-CAM, and the map's scores.

    Args:
        loaded: from :func:`wrap_module`.
        probes, probe_labels, probe_boxes: ``[P, S, S, 3]`` uint8, ``[P]``, ``[P, 4]``.
        eval_images, eval_boxes: held-out scenes; the first :data:`SCORE_SCENES` are scored too.
        autocast: passed to :func:`attnviz.analyze`.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        probes: np.ndarray,
        probe_labels: np.ndarray,
        probe_boxes: np.ndarray,
        eval_images: np.ndarray,
        eval_boxes: np.ndarray,
        *,
        autocast: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.probes = list(probes)
        self.targets = [int(v) for v in probe_labels]
        self.scored = self.probes + list(eval_images[:SCORE_SCENES])
        self.boxes = np.concatenate([probe_boxes, eval_boxes[:SCORE_SCENES]])
        self.autocast = autocast
        self.label: str | None = None  # the record whose map is shown, fixed at the first snapshot

    def _pick(self, labels: list[str]) -> str | None:
        if self.label is None or self.label not in labels:
            # the deepest map of the module: the one closest to the classifier
            self.label = labels[-1] if labels else None
        return self.label

    def take(self, step: int, loss: float, accuracy: float, seconds: float) -> Snapshot:
        """Measure the module now; the model is put back in the mode and grad state it was in."""
        module = self.loaded.module
        was_training = module.training
        grads = [p.requires_grad for p in module.parameters()]
        module.eval().requires_grad_(False)
        try:
            topk = min(5, len(self.loaded.categories))
            results = analyze(self.loaded, self.scored, gradcam=False, topk=topk, autocast=self.autocast)
            probes = add_gradcam(self.loaded, results[: len(self.probes)], self.probes, targets=self.targets)
        finally:
            module.train(was_training)
            for p, g in zip(module.parameters(), grads, strict=True):
                p.requires_grad_(g)
        size = INPUT_SIZE
        gradcam = np.stack([upsample_map(attention_maps(a)[-1].values, size) for a in probes])
        per_scene = [{m.label: m for m in attention_maps(a) if m.block >= 0} for a in results]
        label = self._pick(list(per_scene[0]))
        if label is None or any(label not in maps for maps in per_scene):
            return Snapshot(step, loss, accuracy, None, gradcam, None, None, "", "", seconds)
        chosen = [maps[label] for maps in per_scene]
        score = score_maps([m.values for m in chosen], self.boxes, size, label)
        maps = np.stack([upsample_map(m.values, size) for m in chosen[: len(self.probes)]])
        return Snapshot(
            step,
            loss,
            accuracy,
            maps,
            gradcam,
            float(score.energy_ratio),
            float(score.pointing),
            chosen[0].quantity.name,
            label,
            seconds,
        )
