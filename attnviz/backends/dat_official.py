"""DAT-T (v1, CVPR 2022), built by attnviz to load its authors' released ImageNet checkpoint.

The checkpoint is not on a library hub: it comes from the official DAT release page and goes into
torch hub's checkpoint folder, where this backend looks for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnviz.backends.base import Backend, Built, Entry, WeightsLocation, missing_weights_error
from attnviz.backends.weights import apply_checkpoint, load_checkpoint

__all__ = ["BACKEND"]

_FILENAME = "dat_tiny_in1k_224.pth"
_RELEASE = (
    "the official DAT release (github.com/LeapLabTHU/DAT, README: DAT-T ImageNet-1K 224 checkpoint, "
    "Tsinghua Cloud or Google Drive)"
)
_ENTRIES = (
    Entry("dat_tiny", ("dat", "dat_window"), (224, 224),
          "DAT-T (v1, CVPR 2022): deformable attention in stages 3-4, local and shifted windows in 1-2",
          "stages.3"),
)  # fmt: skip


class DatOfficialBackend(Backend):
    """attnviz's DAT-T (:mod:`attnviz.layers.dat_tiny`) with the authors' checkpoint."""

    source = "official"
    order = 30

    def entries(self) -> tuple[Entry, ...]:
        return _ENTRIES

    def weights_location(self, entry: Entry) -> WeightsLocation:
        path = Path(torch.hub.get_dir()) / "checkpoints" / _FILENAME
        return WeightsLocation(_FILENAME, path, path.is_file())

    def missing_weights(self, entry: Entry, where: WeightsLocation, cause: BaseException):
        return missing_weights_error(
            missing=f"The official weights of {entry.name} ({where.filename}) are not on this machine",
            how=f"download {where.filename} from {_RELEASE} and put it at {where.path}",
            summary=f"The official {entry.name} checkpoint is not on this machine: download "
            f"{where.filename} from the authors' release page and copy it into the torch hub cache "
            "(the Models page shows where).",
            filename=where.filename,
            path=where.path,
            cause=cause,
        )

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        from torchvision import transforms as T
        from torchvision.models import ResNet50_Weights

        from attnviz.layers.dat_tiny import DAT_TINY_PREPROCESS, build_dat_tiny

        module = build_dat_tiny()
        if pretrained_file is not None:
            apply_checkpoint(module, load_checkpoint(pretrained_file), pretrained_file.name)
        cfg = DAT_TINY_PREPROCESS
        transform = T.Compose([
            T.Resize((cfg["resize"], cfg["resize"]), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(cfg["input_size"]),
            T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ])  # fmt: skip
        categories = tuple(ResNet50_Weights.DEFAULT.meta["categories"])  # the ImageNet-1k class names
        return Built(module, transform, tuple(cfg["mean"]), tuple(cfg["std"]), categories)


BACKEND = DatOfficialBackend()
