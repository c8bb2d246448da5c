"""torchvision's models with their attention modules; weights from torch hub's cache.

Pretrained weights are torchvision's ``DEFAULT`` weights, one file each in
``$TORCH_HOME/hub/checkpoints/``; preprocessing and class names come from the same weights enum.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from attnviz.backends.base import (
    Backend,
    Built,
    Entry,
    ProgressFn,
    WeightsLocation,
    explained_download,
    hub_missing_weights,
)
from attnviz.backends.weights import check_reachable, download

__all__ = ["BACKEND"]

_ENTRIES = (
    Entry("mobilenet_v3_large", ("se",), (224, 224),
          "MobileNetV3-Large: SE with a hard-sigmoid gate in 8 inverted residual blocks", "features.16"),
    Entry("efficientnet_b0", ("se",), (224, 224), "EfficientNet-B0: SE in every MBConv block", "features.8"),
    Entry("regnet_y_400mf", ("se",), (224, 224),
          "RegNetY-400MF: SE in every bottleneck", "trunk_output.block4"),
    Entry("vit_b_16", ("vit",), (224, 224), "ViT-B/16 (torchvision): 12 layers x 12 heads, class token",
          "encoder.layers.encoder_layer_11.ln_1", "tokens"),
    Entry("swin_t", ("swin",), (224, 224),
          "Swin-T (torchvision): shifted 7x7 windows, 4 stages", "features.7.1.norm1", "nhwc"),
    Entry("resnet50", (), (224, 224), "ResNet-50: no attention module, the Grad-CAM baseline", "layer4"),
)  # fmt: skip


def _weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


class TorchvisionBackend(Backend):
    """torchvision classifiers (SE in MobileNetV3, EfficientNet, RegNetY; ViT; Swin; ResNet-50)."""

    source = "torchvision"
    order = 10
    from_hub = True

    def entries(self) -> tuple[Entry, ...]:
        return _ENTRIES

    def weights_location(self, entry: Entry) -> WeightsLocation:
        filename = os.path.basename(_weights(entry.name).url)
        path = Path(torch.hub.get_dir()) / "checkpoints" / filename
        return WeightsLocation(filename, path, path.is_file())

    def missing_weights(self, entry: Entry, where: WeightsLocation, cause: BaseException):
        how = f"put {where.filename} at {where.path} (torch hub cache: $TORCH_HOME/hub/checkpoints/)"
        return hub_missing_weights(entry.name, where, cause, how)

    def fetch(self, entry: Entry, progress: ProgressFn | None) -> Path:
        where = self.weights_location(entry)
        if where.present:
            return where.path
        url = _weights(entry.name).url
        with explained_download(self, entry, where):
            check_reachable(url)
            download(url, where.path, progress)
        return where.path

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        from torchvision.models import get_model

        weights = _weights(entry.name)
        module = get_model(entry.name, weights=None)
        if pretrained_file is not None:
            module.load_state_dict(torch.load(str(pretrained_file), map_location="cpu", weights_only=True))
        transform = weights.transforms()
        return Built(
            module, transform, tuple(transform.mean), tuple(transform.std), tuple(weights.meta["categories"])
        )


BACKEND = TorchvisionBackend()
