"""The store of your models: playground networks kept in a folder outside the repository.

Each saved model is two files side by side in :func:`user_models_dir`: ``<name>.safetensors`` (the
weights, read with safetensors only) and ``<name>.json`` (its card: placement, classes, task and
training settings, training curve, held-out accuracy, localisation). Names are checked
(:data:`NAME_PATTERN`), so a name can never steer a file out of the folder; a save writes
temporary files in the folder and renames them, so a failed save leaves nothing. The backend that
lists and loads them is :mod:`attnviz.backends.user_models`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnviz.core.errors import AttnvizError
from attnviz.core.version import __version__
from attnviz.layers.playground_net import Placement, PlaygroundNet
from attnviz.layers.zoo_net import CLASSES

__all__ = [
    "ENV_VAR",
    "MODEL_PREFIX",
    "NAME_PATTERN",
    "Card",
    "UserModel",
    "UserModelError",
    "card_of",
    "check_user_model_name",
    "delete_user_model",
    "is_weights_file",
    "list_user_models",
    "model_paths",
    "read_user_card",
    "save_user_model",
    "saved_names",
    "user_models_dir",
]

log = logging.getLogger(__name__)

#: The environment variable that sets the folder (default ``~/.cache/attnviz/user_models``).
ENV_VAR = "ATTNVIZ_USER_MODELS"

#: A saved model's name: 1 to 40 characters, lowercase letters, digits, ``-`` and ``_``.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

#: What goes before a saved model's name in :func:`attnviz.list_models`.
MODEL_PREFIX = "user_"

_MAX_CARD_BYTES = 1 << 20  # a card is a few kB; anything this big was not written by attnviz
_SAVE_LOCK = threading.Lock()


class UserModelError(AttnvizError, ValueError):
    """A name that is not allowed or already taken, a card that cannot be written or read, or a
    saved model that does not exist."""


def user_models_dir() -> Path:
    """The folder of saved models: ``$ATTNVIZ_USER_MODELS``, else ``~/.cache/attnviz/user_models``
    (``$XDG_CACHE_HOME/attnviz/user_models`` when that is set). Created on the first save."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache").absolute() / "attnviz" / "user_models"


def check_user_model_name(name: object) -> str:
    """``name`` when it may name a saved model (:data:`NAME_PATTERN`).

    Raises:
        UserModelError: anything else (path separators, dots, upper case, too long, empty).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserModelError(
            f"A model name is 1 to 40 characters: lowercase letters, digits, '-' and '_', starting with a "
            f"letter or digit; got {name!r}."
        )
    return name


def _folder(folder: str | os.PathLike | None) -> Path:
    return Path(folder).absolute() if folder is not None else user_models_dir()


def model_paths(name: str, folder: Path) -> tuple[Path, Path]:
    """(weights, card) of a checked name: always directly inside ``folder``."""
    return folder / f"{name}.safetensors", folder / f"{name}.json"


# ---------------------------------------------------------------------------------------------------
# cards


@dataclass(frozen=True)
class Card:
    """What a valid card says that the backend and the list need."""

    name: str
    placement: Placement
    classes: int
    accuracy: float | None
    created: str


def _validate(raw: object, name: str) -> Card:
    """The card ``raw`` (parsed JSON) of the saved model ``name``, or ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("it is not a JSON object")
    if raw.get("name") != name:
        raise ValueError(f"it names the model {raw.get('name')!r}, not {name!r}")
    placement = raw.get("placement")
    if not isinstance(placement, dict):
        raise ValueError("it has no placement")
    for field in ("stage", "depth", "heads"):  # 3.0 would pass Placement's checks and name no stage
        if field in placement and type(placement[field]) is not int:
            raise ValueError(
                f"its placement is not valid: {field} must be an integer, got {placement[field]!r}"
            )
    try:
        where = Placement(**placement)
    except TypeError as err:
        raise ValueError(f"its placement has unknown fields ({err})") from err
    except ValueError as err:
        raise ValueError(f"its placement is not valid: {err}") from err
    classes = raw.get("classes")
    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= len(CLASSES):
        raise ValueError(f"its classes must be an integer from 2 to {len(CLASSES)}, got {classes!r}")
    accuracy = raw.get("accuracy")
    if accuracy is not None and (
        isinstance(accuracy, bool) or not isinstance(accuracy, int | float) or not 0 <= accuracy <= 1
    ):
        raise ValueError(f"its accuracy must be a fraction from 0 to 1, got {accuracy!r}")
    created = raw.get("created", "")
    if not isinstance(created, str):
        raise ValueError(f"its created time must be text, got {created!r}")
    return Card(name, where, classes, None if accuracy is None else float(accuracy), created)


def _read_json(path: Path) -> Any:
    """The parsed card file; ValueError for anything that is not a small, regular JSON file."""
    if path.is_symlink() or not path.is_file():
        raise ValueError("the card is not a regular file")
    if path.stat().st_size > _MAX_CARD_BYTES:
        raise ValueError(f"the card is larger than {_MAX_CARD_BYTES // 1024} kB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"the card is not valid JSON ({type(err).__name__})") from err


@functools.lru_cache(maxsize=256)
def _parsed(path: str, name: str, mtime_ns: int, size: int) -> Card | str:
    """The card at ``path`` or why it is broken, once per version of the file."""
    try:
        return _validate(_read_json(Path(path)), name)
    except (OSError, ValueError) as err:
        return str(err)


def card_of(card_path: Path, name: str) -> Card | str:
    try:
        stat = card_path.stat()
    except OSError as err:
        return f"the card cannot be read ({type(err).__name__})"
    return _parsed(str(card_path), name, stat.st_mtime_ns, stat.st_size)


def read_user_card(name: str, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole card of the saved model ``name`` (a fresh dict: the curve, task, settings...).

    Raises:
        UserModelError: a bad name, no such model, or a card that does not parse or validate.
    """
    check_user_model_name(name)
    _, card_path = model_paths(name, _folder(folder))
    if not card_path.exists():
        raise UserModelError(f"There is no saved model {name!r} in {card_path.parent}.")
    try:
        raw = _read_json(card_path)
        _validate(raw, name)
    except (OSError, ValueError) as err:
        raise UserModelError(f"The card of the saved model {name!r} ({card_path}) is broken: {err}.") from err
    return raw


# ---------------------------------------------------------------------------------------------------
# the list


@dataclass(frozen=True)
class UserModel:
    """One saved model, as a page lists it.

    Attributes:
        name: its name in the folder (what :func:`delete_user_model` takes).
        model_name: the name :func:`attnviz.load_model` takes (``"user_<name>"``).
        placement: where its attention module is, in words (empty when the card is broken).
        classes: its number of scene classes (None when the card is broken).
        accuracy: its held-out accuracy from the card, or None.
        created: when it was saved (ISO 8601), or empty.
        weights_path: its ``.safetensors`` file.
        card_path: its ``.json`` card.
        problem: why it cannot be loaded (a broken or missing card, missing weights); empty when fine.
    """

    name: str
    model_name: str
    placement: str
    classes: int | None
    accuracy: float | None
    created: str
    weights_path: Path
    card_path: Path
    problem: str = ""

    @property
    def broken(self) -> bool:
        """True when it cannot be loaded (see :attr:`problem`)."""
        return bool(self.problem)


def is_weights_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def saved_names(folder: Path) -> list[str]:
    """Names with a card or a weights file in ``folder`` (files with other names are ignored)."""
    try:
        files = [entry.name for entry in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    stems = {f.rsplit(".", 1)[0] for f in files if f.endswith((".json", ".safetensors"))}
    return sorted(s for s in stems if NAME_PATTERN.fullmatch(s))


def list_user_models(folder: str | os.PathLike | None = None) -> list[UserModel]:
    """Every saved model in the folder, by name, broken ones included (with their :attr:`~UserModel.problem`).

    Args:
        folder: the folder to list; :func:`user_models_dir` by default.
    """
    where = _folder(folder)
    listed = []
    for name in saved_names(where):
        weights, card_path = model_paths(name, where)
        card = card_of(card_path, name) if card_path.exists() else "it has no card"
        problem = card if isinstance(card, str) else ""
        if not problem and not is_weights_file(weights):
            problem = f"its weights file {weights.name} is missing"
        ok = card if isinstance(card, Card) else None
        listed.append(
            UserModel(
                name=name,
                model_name=MODEL_PREFIX + name,
                placement=ok.placement.text if ok else "",
                classes=ok.classes if ok else None,
                accuracy=ok.accuracy if ok else None,
                created=ok.created if ok else "",
                weights_path=weights,
                card_path=card_path,
                problem=problem,
            )
        )
    return listed


# ---------------------------------------------------------------------------------------------------
# save and delete


def _plain(value: Any) -> Any:
    """JSON for what a card may hold besides plain values: numpy and torch numbers and arrays,
    dataclasses (settings), paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _card_text(name: str, module: PlaygroundNet, card: Mapping[str, Any] | None) -> str:
    full = dict(card or {})
    full.update(
        name=name,
        placement=dataclasses.asdict(module.placement),
        classes=module.num_classes,
        attnviz_version=__version__,
    )
    full.setdefault("created", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    try:
        text = json.dumps(full, indent=2, default=_plain)
        _validate(json.loads(text), name)
    except (TypeError, ValueError) as err:
        raise UserModelError(f"The card of {name!r} cannot be saved: {err}.") from err
    return text + "\n"


def _temp(folder: Path, name: str, suffix: str) -> Path:
    # a hidden name that the list ignores, in the folder itself so that the rename is atomic
    fd, path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f"{suffix}.tmp")
    os.close(fd)
    return Path(path)


def _write_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "attnviz": __version__})


def _write_text(text: str, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def save_user_model(
    name: str,
    model: nn.Module,
    card: Mapping[str, Any] | None = None,
    folder: str | os.PathLike | None = None,
    *,
    replace: bool = False,
) -> Path:
    """Keep a trained playground network: its weights and card in the folder, as ``user_<name>``.

    The card gets the model's ``name``, ``placement`` and ``classes`` (from the model, whatever
    ``card`` says), ``attnviz_version``, and ``created`` (now, unless given); everything else in
    ``card`` (task, train, curve, accuracy, localisation...) is kept as given. Numpy and torch
    values and dataclasses in it are written as plain JSON.

    Args:
        name: the name (:data:`NAME_PATTERN`); the model is listed as ``user_<name>``.
        model: a :class:`~attnviz.layers.playground_net.PlaygroundNet` (a ``torch.compile``d one
            too), on any device.
        card: the rest of the card.
        folder: where to save; :func:`user_models_dir` by default (created when missing).
        replace: overwrite a saved model of the same name.

    Returns:
        The path of the weights file.

    Raises:
        UserModelError: a bad name, a name already taken (unless ``replace``), or a card that
            is not JSON or not valid.
        TypeError: ``model`` is not a playground network.
        OSError: the folder cannot be written (nothing is left behind).
    """
    check_user_model_name(name)
    module = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    if not isinstance(module, PlaygroundNet):
        raise TypeError(f"model must be a PlaygroundNet, got {type(model).__name__}")
    text = _card_text(name, module, card)
    where = _folder(folder)
    where.mkdir(parents=True, exist_ok=True)
    weights, card_path = model_paths(name, where)
    with _SAVE_LOCK:
        taken = [p for p in (weights, card_path) if p.exists() or p.is_symlink()]
        if taken and not replace:
            raise UserModelError(
                f"A model named {name!r} is saved already ({taken[0]}): choose another name, or replace it."
            )
        new_weights, new_card = _temp(where, name, ".safetensors"), _temp(where, name, ".json")
        old = {p: _temp(where, name, ".old") for p in taken}
        moved: list[Path] = []
        placed: list[Path] = []
        try:
            _write_weights(module, new_weights)
            _write_text(text, new_card)
            for p, aside in old.items():
                os.replace(p, aside)
                moved.append(p)
            for tmp, final in ((new_weights, weights), (new_card, card_path)):
                os.replace(tmp, final)
                placed.append(final)
        except BaseException:
            for final in placed:  # undo: the new files out, the old ones back
                final.unlink(missing_ok=True)
            for p in moved:
                os.replace(old[p], p)
            raise
        finally:
            for tmp in (new_weights, new_card, *old.values()):
                tmp.unlink(missing_ok=True)
    log.info("saved %s%s to %s", MODEL_PREFIX, name, weights)
    return weights


def delete_user_model(name: str, folder: str | os.PathLike | None = None) -> bool:
    """Delete the saved model ``name`` (its weights and card, broken or not).

    Returns:
        True when there was something to delete.

    Raises:
        UserModelError: a bad name.
    """
    check_user_model_name(name)
    found = False
    with _SAVE_LOCK:
        for path in model_paths(name, _folder(folder)):
            if path.exists() or path.is_symlink():
                path.unlink()
                found = True
    if found:
        log.info("deleted %s%s", MODEL_PREFIX, name)
    return found


# ---------------------------------------------------------------------------------------------------
# the backend
