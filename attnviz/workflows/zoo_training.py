"""Training and evaluating the built-in zoo (``python -m attnviz zoo train|eval``).

Each zoo model is trained on CPU, seeded, on generated scenes (:mod:`attnviz.workflows.scenes`),
where the object's box is known; evaluation measures accuracy and how well each attention block
finds the object (pointing game, energy in the box) through the same :func:`attnviz.analyze` the
app uses, and whether the decision rests on what each map shows (deletion and insertion AUCs, ROAD:
:mod:`attnviz.analysis.faithfulness`, on the first :data:`N_FAITHFULNESS` held-out scenes, next to a
random map's floor and the object's box used as a map), and writes the numbers into the model's card.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnviz.analysis import analyze
from attnviz.analysis.faithfulness import DEFAULT_STEPS
from attnviz.backends.registry import load_model
from attnviz.backends.zoo import card_path, read_card, weights_path
from attnviz.layers.zoo_net import (
    CLASSES,
    INPUT_SIZE,
    MEAN,
    STD,
    WIDTHS,
    ZOO_KINDS,
    ZooNet,
    build_zoo_model,
    zoo_name,
)
from attnviz.views.localisation import score_maps
from attnviz.views.maps import attention_maps
from attnviz.workflows.scenes import SceneParams, make_dataset
from attnviz.workflows.training import TrainProgress, TrainSettings, train
from attnviz.workflows.zoo_faithfulness import (
    FAITHFULNESS_KEYS,
    N_FAITHFULNESS,
    N_ROAD,
    OBJECT_BOX,
    ROAD_EVAL_PERCENTILES,
    evaluate_faithfulness,
    score_faithfulness,
)

__all__ = [
    "CHECK_SET",
    "FAITHFULNESS_KEYS",
    "N_FAITHFULNESS",
    "N_ROAD",
    "OBJECT_BOX",
    "ROAD_EVAL_PERCENTILES",
    "TrainConfig",
    "accuracy",
    "evaluate_faithfulness",
    "evaluate_zoo_model",
    "format_table",
    "held_out_set",
    "parameter_count",
    "train_and_save",
    "train_zoo_model",
    "write_card_faithfulness",
    "write_card_metrics",
]

log = logging.getLogger(__name__)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, S, S, 3]`` -> normalised float ``[N, 3, S, S]``."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class TrainConfig:
    """Training settings, recorded in each model's card."""

    seed: int = 0
    n_train: int = 6000
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    data_seed: int = 1
    eval_seed: int = 2
    n_eval: int = 1000
    clutter: float = 0.5


def held_out_set(n: int, seed: int, clutter: float = 0.5) -> tuple[np.ndarray, ...]:
    """Held-out scenes (images, labels, boxes, masks) at the zoo's input size."""
    return make_dataset(n, seed, SceneParams(size=INPUT_SIZE, clutter=clutter))


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``model`` on uint8 scenes."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            logits = model(_to_tensor(images[i : i + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[i : i + batch_size]).sum())
    return correct / len(images)


def train_zoo_model(
    kind: str,
    config: TrainConfig = TrainConfig(),
    *,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[ZooNet, dict]:
    """Train one zoo model on CPU (seeded) and return it with its training summary.

    Args:
        kind: a key of :data:`ZOO_KINDS`.
        config: the settings; the same settings give the same weights on the same machine.
        data: pre-generated training (images, labels) to share between kinds.
        progress: called with one line per epoch.

    Returns:
        The trained model (eval mode) and a dict with the config, epochs' losses and time.
    """
    torch.manual_seed(config.seed)
    if data is None:
        images, labels, _, _ = make_dataset(config.n_train, config.data_seed, SceneParams(size=INPUT_SIZE))
    else:
        images, labels = data
    model = build_zoo_model(kind)
    per_epoch = math.ceil(len(images) / config.batch_size)
    settings = TrainSettings(
        steps=config.epochs * per_epoch,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        warmup=0.15,
        seed=config.seed,
    )

    def epoch_done(report: TrainProgress, _model: nn.Module) -> None:
        if progress is not None:
            epoch = report.step // per_epoch
            progress(f"{zoo_name(kind)} epoch {epoch}/{config.epochs}: loss {report.loss:.3f}")

    outcome = train(
        model, images, labels, settings, mean=MEAN, std=STD, every=per_epoch, on_progress=epoch_done
    )
    # the mean loss of each epoch (a pass over the data), weighted by batch size as before
    step_loss = np.asarray(outcome.losses) * np.asarray(outcome.batch_sizes)
    losses = [
        float(step_loss[i : i + per_epoch].sum() / len(images)) for i in range(0, len(step_loss), per_epoch)
    ]
    model.eval()
    summary = {
        "config": asdict(config),
        "losses": losses,
        "train_seconds": round(outcome.seconds, 1),
    }
    return model, summary


@dataclass
class ZooCard:
    """What a zoo model's JSON card holds."""

    name: str
    kind: str
    description: str
    architecture: str
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    parameters: int
    training: dict
    accuracy: float
    eval_set: dict
    localization: list[dict] = field(default_factory=list)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def describe(kind: str) -> str:
    """The one-line description of a zoo kind."""
    return ZOO_KINDS[kind]


def architecture_text(kind: str) -> str:
    """The architecture line written into the card."""
    return (
        f"ZooNet widths {WIDTHS}, input {INPUT_SIZE}x{INPUT_SIZE}; attention '{kind}' after stage2 "
        f"({INPUT_SIZE // 8}x{INPUT_SIZE // 8}) and stage3 ({INPUT_SIZE // 16}x{INPUT_SIZE // 16})"
    )


def kinds_from(names: Sequence[str] | None) -> list[str]:
    """Validate a list of zoo kinds (or all when None)."""
    if not names:
        return list(ZOO_KINDS)
    unknown = [k for k in names if k not in ZOO_KINDS]
    if unknown:
        raise ValueError(f"Unknown zoo kind {unknown[0]!r}: choose from {', '.join(ZOO_KINDS)}.")
    return list(names)


def save_zoo_model(kind: str, model: ZooNet, card: dict) -> tuple[Path, Path]:
    """Write the weights (safetensors) and the JSON card of a trained zoo model."""
    from safetensors.torch import save_file

    weights_path(kind).parent.mkdir(parents=True, exist_ok=True)
    # float16 on disk halves the zoo's size; the maps it changes are below what an overlay shows,
    # and every metric in the card is measured on the stored (rounded) weights.
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(weights_path(kind)), metadata={"kind": kind, "classes": ",".join(CLASSES)})
    card_path(kind).write_text(json.dumps(card, indent=2) + "\n")
    return weights_path(kind), card_path(kind)


def evaluate_zoo_model(
    kind: str,
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    *,
    weights: str = "pretrained",
    batch_size: int = 100,
    gradcam: bool = True,
    faithfulness: int = N_FAITHFULNESS,
) -> dict:
    """Accuracy, localisation and faithfulness of one zoo model on held-out scenes, through
    ``attnviz.analyze``.

    Every attention map of every block (see :mod:`attnviz.views.maps`) and the Grad-CAM map are
    scored against the object boxes: the pointing game (the map's maximum falls in the box) and
    the energy in the box (the map's share of mass inside it, next to the box's area share); on the
    first ``faithfulness`` scenes they are also scored for faithfulness (:func:`evaluate_faithfulness`).

    Returns:
        ``{"model", "kind", "n", "accuracy", "localization": [LocalizationScore as dict, ...],
        "faithfulness": evaluate_faithfulness's dict, or None when ``faithfulness`` is 0}``.
    """
    model = load_model(zoo_name(kind), weights=weights, device="cpu")
    correct = 0
    per_map: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch_size):
        chunk = list(images[i : i + batch_size])
        for j, result in enumerate(analyze(model, chunk, gradcam=gradcam)):
            correct += int(result.top5[0].index == int(labels[i + j]))
            for amap in attention_maps(result):
                per_map.setdefault(amap.label, []).append(amap.values)
    size = (images.shape[1], images.shape[2])
    scores = [asdict(score_maps(maps, list(boxes), size, label)) for label, maps in per_map.items()]
    faithful = None
    if faithfulness > 0:
        faithful = score_faithfulness(
            model,
            images,
            labels,
            boxes,
            n=faithfulness,
            n_road=N_ROAD,
            gradcam=gradcam,
            steps=DEFAULT_STEPS,
            road_percentiles=ROAD_EVAL_PERCENTILES,
        )
    return {
        "model": zoo_name(kind),
        "kind": kind,
        "n": len(images),
        "accuracy": correct / len(images),
        "localization": scores,
        "faithfulness": faithful,
    }


#: The small fixed held-out set whose accuracy each card records for the test suite to reproduce.
CHECK_SET = {"n": 200, "seed": 3}


def train_and_save(
    kinds: Sequence[str], config: TrainConfig = TrainConfig(), log_line: Callable[[str], None] = log.info
) -> list[dict]:
    """Train, save and evaluate each kind; the training scenes are generated once and shared.

    Returns:
        The cards written.
    """
    log_line(f"generating {config.n_train} training scenes (seed {config.data_seed})")
    images, labels, _, _ = make_dataset(
        config.n_train, config.data_seed, SceneParams(size=INPUT_SIZE, clutter=config.clutter)
    )
    for kind in kinds:
        model, summary = train_zoo_model(kind, config, data=(images, labels), progress=log_line)
        card = ZooCard(
            name=zoo_name(kind),
            kind=kind,
            description=describe(kind),
            architecture=architecture_text(kind),
            classes=list(CLASSES),
            input_size=INPUT_SIZE,
            mean=list(MEAN),
            std=list(STD),
            parameters=parameter_count(model),
            training=summary,
            accuracy=float("nan"),
            eval_set={"n": config.n_eval, "seed": config.eval_seed, "clutter": config.clutter},
        )
        save_zoo_model(kind, model, asdict(card))
        log_line(f"{zoo_name(kind)}: trained in {summary['train_seconds']} s")
    return [write_card_metrics(kind, log_line) for kind in kinds]


def write_card_metrics(kind: str, log_line: Callable[[str], None] = log.info) -> dict:
    """Measure the stored weights of ``kind`` on its card's held-out set and the check set; update the card.

    Every figure comes from the weights as stored (float16), loaded through ``load_model``.
    """
    card = read_card(kind)
    if card is None:
        raise FileNotFoundError(f"{card_path(kind)} does not exist: train the model first")
    ev = card["eval_set"]
    images, labels, boxes, _ = held_out_set(ev["n"], ev["seed"], ev["clutter"])
    result = evaluate_zoo_model(kind, images, labels, boxes)
    card["accuracy"] = result["accuracy"]
    card["localization"] = result["localization"]
    card["faithfulness"] = result["faithfulness"]
    ck_images, ck_labels, _, _ = held_out_set(CHECK_SET["n"], CHECK_SET["seed"], ev["clutter"])
    stored = load_model(zoo_name(kind), weights="pretrained", device="cpu").module
    card["check_set"] = {
        **CHECK_SET,
        "clutter": ev["clutter"],
        "accuracy": accuracy(stored, ck_images, ck_labels),
    }
    card_path(kind).write_text(json.dumps(card, indent=2) + "\n")
    log_line(f"{zoo_name(kind)}: accuracy {card['accuracy']:.3f} on {ev['n']} held-out scenes")
    return card


def write_card_faithfulness(
    kind: str,
    n: int = N_FAITHFULNESS,
    log_line: Callable[[str], None] = log.info,
    figures: dict | None = None,
) -> dict:
    """Write the card's ``"faithfulness"`` only (its other figures stay as they are): ``figures``
    when given (``zoo eval --write-cards`` measured them on the card's set already), else the stored
    weights of ``kind`` scored on the first ``n`` scenes of the card's held-out set.

    Raises:
        FileNotFoundError: the card does not exist.
    """
    card = read_card(kind)
    if card is None:
        raise FileNotFoundError(f"{card_path(kind)} does not exist: train the model first")
    if figures is None:
        ev = card["eval_set"]
        images, labels, boxes, _ = held_out_set(ev["n"], ev["seed"], ev["clutter"])
        figures = evaluate_faithfulness(kind, images, labels, boxes, n=n)
    card["faithfulness"] = figures
    card_path(kind).write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")
    log_line(
        f"{zoo_name(kind)}: faithfulness of {len(figures['maps'])} map(s) on {figures.get('n', n)} scenes"
    )
    return card


def _faithful_cells(figures: dict | None) -> str:
    """``deletion AUC | insertion AUC | ROAD`` cells of one map's faithfulness figures."""
    if not figures:
        return "– | – | –"
    road = figures.get("road_combined")
    road_text = f"{road:+.3f}" if road is not None else "–"
    return f"{figures['deletion_auc']:.3f} | {figures['insertion_auc']:.3f} | {road_text}"


def format_table(rows: Sequence[dict]) -> str:
    """The evaluation table (Markdown): one row per model and attention map, with its localisation
    and its faithfulness (deletion AUC: lower is better; insertion AUC and ROAD: higher), then the
    random map's (the floor) and the object box's (a reference) when the row has faithfulness.

    Args:
        rows: results of :func:`evaluate_zoo_model` or model cards (``"model"`` or ``"name"``).
    """
    lines = [
        "| model | accuracy | map | pointing game | energy in box | box area share | energy ratio "
        "| deletion AUC ↓ | insertion AUC ↑ | ROAD ↑ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        faithful = row.get("faithfulness") or {}
        first = True
        for score in row["localization"] or [None]:
            acc = f"{row['accuracy']:.1%}" if first else ""
            name = row.get("model", row.get("name")) if first else ""
            first = False
            if score is None:
                lines.append(f"| {name} | {acc} | – | – | – | – | – | – | – | – |")
                continue
            cells = _faithful_cells((faithful.get("maps") or {}).get(score["name"]))
            lines.append(
                f"| {name} | {acc} | {score['name']} | {score['pointing']:.1%} | {score['energy']:.3f} | "
                f"{score['area_share']:.3f} | {score['energy_ratio']:.2f} | {cells} |"
            )
        for key, label in (("random", "random map (floor)"), ("object_box", OBJECT_BOX)):
            if faithful.get(key):
                lines.append(f"|  |  | {label} | – | – | – | – | {_faithful_cells(faithful[key])} |")
    return "\n".join(lines)
