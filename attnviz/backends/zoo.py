"""The built-in zoo: small CNNs trained by attnviz on generated scenes, weights shipped in ``assets/zoo/``.

Each zoo model (:mod:`attnviz.layers.zoo_net`) has a ``.safetensors`` file and a JSON card
(training settings, accuracy, localisation per block) side by side; this backend reads both.
Training and evaluation are :mod:`attnviz.workflows.zoo_training`.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from attnviz.backends.base import Backend, Built, Entry, WeightsLocation, missing_weights_error
from attnviz.backends.weights import apply_checkpoint, load_checkpoint
from attnviz.layers.zoo_net import CLASSES, INPUT_SIZE, MEAN, STD, ZOO_KINDS, build_zoo_model, zoo_name

__all__ = ["BACKEND", "ZOO_DIR", "BestBlock", "best_block", "card_path", "read_card", "weights_path"]

ZOO_DIR = Path(__file__).resolve().parents[2] / "assets" / "zoo"


def weights_path(kind: str) -> Path:
    """Where the committed weights of ``kind`` live."""
    return ZOO_DIR / f"{zoo_name(kind)}.safetensors"


def card_path(kind: str) -> Path:
    """The JSON card (training settings and metrics) next to the weights."""
    return ZOO_DIR / f"{zoo_name(kind)}.json"


def read_card(kind: str) -> dict | None:
    """The model card of ``kind``, or None when it has not been trained.

    Read once per version of the file (the pages ask for cards on every rerun); each call gets its
    own copy, so a caller may change it.
    """
    path = card_path(kind)
    if not path.is_file():
        return None
    return copy.deepcopy(_parsed_card(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _parsed_card(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class BestBlock:
    """The attention block whose map finds the object best on the held-out scenes (from the card).

    Attributes:
        block: the block index (as in ``Analysis.blocks`` and the map labels).
        name: the card's map label (``"block 0 · attn2 (gc_context)"``).
        pointing: its pointing-game score in [0, 1].
        energy_ratio: its energy in the box over the box's area share (1 = a uniform map).
    """

    block: int
    name: str
    pointing: float
    energy_ratio: float

    @property
    def text(self) -> str:
        """``"block 0 finds the object best: pointing game 100%, energy 12.3x uniform"``."""
        return (
            f"block {self.block} finds the object best on the held-out scenes: pointing game "
            f"{self.pointing:.0%}, energy in the box {self.energy_ratio:.1f}x uniform"
        )


_BLOCK_LABEL = re.compile(r"^block (\d+) ")


def best_block(kind_or_card: str | dict | None) -> BestBlock | None:
    """The block of a zoo model whose attention map localises best, according to its card.

    Best is the highest pointing game among the card's attention maps (Grad-CAM rows are not
    blocks), ties broken by the energy ratio.

    Args:
        kind_or_card: a zoo kind (its card is read) or a card as :func:`read_card` returns it.

    Returns:
        The :class:`BestBlock`, or None when the model has no scored spatial map (channel-only
        attention, no card, or a card without localisation).
    """
    card = read_card(kind_or_card) if isinstance(kind_or_card, str) else kind_or_card
    best: BestBlock | None = None
    for row in (card or {}).get("localization") or []:
        match = _BLOCK_LABEL.match(str(row.get("name", "")))
        pointing, ratio = row.get("pointing"), row.get("energy_ratio")
        if match is None or pointing is None or ratio is None:
            continue
        candidate = BestBlock(int(match.group(1)), str(row["name"]), float(pointing), float(ratio))
        if best is None or (candidate.pointing, candidate.energy_ratio) > (best.pointing, best.energy_ratio):
            best = candidate
    return best


# Captured record kinds of each zoo attention kind.
_RECORD_KINDS: dict[str, tuple[str, ...]] = {
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


class ZooBackend(Backend):
    """The zoo: listed first, the offline default; its weights always ship with attnviz."""

    source = "attnviz"
    order = 0
    trained_on = "generated shapes"

    def entries(self) -> tuple[Entry, ...]:
        return tuple(
            Entry(
                zoo_name(kind), _RECORD_KINDS[kind], (INPUT_SIZE, INPUT_SIZE), f"zoo: {description}", "stage3"
            )
            for kind, description in ZOO_KINDS.items()
        )

    def group(self, entry: Entry) -> str:
        return "zoo"

    def weights_location(self, entry: Entry) -> WeightsLocation:
        path = weights_path(entry.name.removeprefix("zoo_"))
        return WeightsLocation(path.name, path, path.is_file())

    def missing_weights(self, entry: Entry, where: WeightsLocation, cause: BaseException):
        kind = entry.name.removeprefix("zoo_")
        return missing_weights_error(
            missing=f"The zoo weights of {entry.name} ({where.filename}) are missing from "
            f"{where.path.parent}",
            how=f"restore {where.path} from the repository, or retrain: "
            f"`python -m attnviz zoo train --kind {kind}`",
            summary=f"The trained weights of {entry.name} are missing from this copy of attnviz: restore "
            f"assets/zoo/{where.filename} from the repository, or retrain them with "
            f"`python -m attnviz zoo train --kind {kind}`.",
            filename=where.filename,
            path=where.path,
            cause=cause,
        )

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        from torchvision import transforms as T

        module = build_zoo_model(entry.name.removeprefix("zoo_"))
        if pretrained_file is not None:
            apply_checkpoint(module, load_checkpoint(pretrained_file), pretrained_file.name)
        transform = T.Compose(
            [T.Resize(INPUT_SIZE), T.CenterCrop(INPUT_SIZE), T.ToTensor(), T.Normalize(MEAN, STD)]
        )
        return Built(module, transform, MEAN, STD, CLASSES)


BACKEND = ZooBackend()
