"""Your models as a backend: one model ``user_<name>`` per valid card of the user-models store.

The models are listed in the group ``"user"``; the registry lists them again whenever the folder
changes (:meth:`UserBackend.version`), so a saved model appears without a restart and a deleted
one disappears. Saving, deleting and listing are :mod:`attnviz.backends.user_store`'s (re-exported
here).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from attnviz.backends.base import Backend, Built, Entry, WeightsLocation, missing_weights_error
from attnviz.backends.user_store import (
    ENV_VAR,
    MODEL_PREFIX,
    NAME_PATTERN,
    Card,
    UserModel,
    UserModelError,
    card_of,
    check_user_model_name,
    delete_user_model,
    is_weights_file,
    list_user_models,
    model_paths,
    read_user_card,
    save_user_model,
    saved_names,
    user_models_dir,
)
from attnviz.backends.weights import apply_checkpoint, load_checkpoint
from attnviz.capture import find_taps
from attnviz.core.errors import CheckpointError, WeightsUnavailableError
from attnviz.layers.playground_net import Placement, PlaygroundNet
from attnviz.layers.zoo_net import CLASSES, INPUT_SIZE, MEAN, STD

__all__ = [
    "BACKEND",
    "ENV_VAR",
    "MODEL_PREFIX",
    "NAME_PATTERN",
    "UserModel",
    "UserModelError",
    "check_user_model_name",
    "delete_user_model",
    "list_user_models",
    "read_user_card",
    "save_user_model",
    "user_models_dir",
]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _record_kinds(placement: Placement) -> tuple[str, ...]:
    """The record kinds captured in a playground network with ``placement`` (a small build)."""
    return tuple(dict.fromkeys(tap.kind for tap in find_taps(PlaygroundNet(placement, num_classes=2))))


def _describe(card: Card) -> str:
    parts = [f"yours: {card.placement.text}", f"{card.classes} classes"]
    if card.accuracy is not None:
        parts.append(f"{card.accuracy:.0%} held-out accuracy")
    return ", ".join(parts)


def _architecture(entry: Entry) -> tuple[Placement, int]:
    kwargs: dict[str, Any] = dict(entry.build_kwargs)
    return Placement(**dict(kwargs["placement"])), int(kwargs["classes"])


class UserBackend(Backend):
    """Saved playground networks: listed after the zoo, their weights always their own file."""

    source = "user"
    order = 1
    trained_on = "generated shapes"

    def version(self) -> Hashable:
        folder = user_models_dir()
        cards = []
        for name in saved_names(folder):
            try:
                stat = (folder / f"{name}.json").stat()
            except OSError:
                continue
            cards.append((name, stat.st_mtime_ns, stat.st_size))
        return str(folder), tuple(cards)

    def entries(self) -> tuple[Entry, ...]:
        folder = user_models_dir()
        found = []
        for name in saved_names(folder):
            card_path = folder / f"{name}.json"
            if not card_path.exists():
                continue
            card = card_of(card_path, name)
            if isinstance(card, str):
                log.warning("skipped the saved model %r: %s (%s)", name, card, card_path)
                continue
            found.append(
                Entry(
                    MODEL_PREFIX + name,
                    _record_kinds(card.placement),
                    (INPUT_SIZE, INPUT_SIZE),
                    _describe(card),
                    "stage3",
                    build_kwargs=(
                        ("placement", tuple(dataclasses.asdict(card.placement).items())),
                        ("classes", card.classes),
                    ),
                )
            )
        return tuple(found)

    def group(self, entry: Entry) -> str:
        return "user"

    def weights_location(self, entry: Entry) -> WeightsLocation:
        path, _ = model_paths(entry.name.removeprefix(MODEL_PREFIX), user_models_dir())
        return WeightsLocation(path.name, path, is_weights_file(path))

    def missing_weights(
        self, entry: Entry, where: WeightsLocation, cause: BaseException
    ) -> WeightsUnavailableError:
        name = entry.name.removeprefix(MODEL_PREFIX)
        state = "could not be loaded" if where.path.exists() else "is missing"
        return missing_weights_error(
            missing=f"The weights file of your model {entry.name} ({where.filename}) {state} in "
            f"{where.path.parent}",
            how="train and save it again in the Playground (or with `python -m attnviz train`), or delete "
            f"{name!r}",
            summary=f"The weights file of your model {entry.name} ({where.filename}) {state}: train and "
            "save it again in the Playground, or delete it.",
            filename=where.filename,
            path=where.path,
            cause=cause,
            alternatives="or use weights='random'",
        )

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        from torchvision import transforms as T

        placement, classes = _architecture(entry)
        module = PlaygroundNet(placement, num_classes=classes)
        if pretrained_file is not None:
            if pretrained_file.suffix != ".safetensors" or pretrained_file.is_symlink():
                raise self.missing_weights(
                    entry, self.weights_location(entry), ValueError("not a safetensors file")
                )
            try:
                apply_checkpoint(module, load_checkpoint(pretrained_file), pretrained_file.name)
            except CheckpointError as err:
                raise self.missing_weights(entry, self.weights_location(entry), err) from err
        transform = T.Compose(
            [T.Resize(INPUT_SIZE), T.CenterCrop(INPUT_SIZE), T.ToTensor(), T.Normalize(MEAN, STD)]
        )
        return Built(module, transform, MEAN, STD, CLASSES[:classes])


BACKEND = UserBackend()
