"""The built-in zoo: one small CNN per attention module, trained by attnviz on generated scenes.

Pretrained ImageNet weights do not exist for most classic attention modules (CBAM, coordinate
attention, non-local, DAT, deformable convolution), so attnviz trains its own small models on
:mod:`attnviz.scenes`, where the object's box is known, and ships their weights in
``assets/zoo/``. Every model shares one backbone; only the attention differs::

    stem 3->16 /2 -> stage1 16->32 /2 -> stage2 32->64 /2 -> attn2 -> stage3 64->96 /2 -> attn3
    -> global average pool -> linear (10 scene classes)

At the zoo's 96x96 input, ``attn2`` sees a 12x12 feature map (stride 8) and ``attn3`` a 6x6 one
(stride 16). The three insertion patterns of :mod:`attnviz.modules.insertion` all appear:
serial modules after a stage (SE, ECA, CBAM, CA, GC, non-local), residual conv branches (SK,
deformable conv, DAT) and attention as the model's core (``mhsa``: transformer blocks).

``python -m attnviz zoo train`` reproduces the weights (seeded); ``python -m attnviz zoo eval``
prints accuracy and localisation (pointing game, energy in box) per model and attention layer.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .scenes import CLASSES, SceneParams, make_dataset

__all__ = [
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "ZOO_DIR",
    "ZOO_KINDS",
    "BestBlock",
    "TrainConfig",
    "ZooNet",
    "best_block",
    "build_zoo_model",
    "card_path",
    "held_out_set",
    "read_card",
    "train_zoo_model",
    "weights_path",
    "zoo_name",
]

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parent.parent / "assets" / "zoo"
INPUT_SIZE = 96
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
WIDTHS = (16, 32, 64, 96)

#: Zoo kinds: attention kind -> one-line description. ``none`` is the baseline.
ZOO_KINDS: dict[str, str] = {
    "none": "baseline: the same backbone without attention (Grad-CAM only)",
    "se": "squeeze-and-excitation after stages 2 and 3",
    "eca": "efficient channel attention after stages 2 and 3",
    "cbam": "CBAM (channel then spatial gate) after stages 2 and 3",
    "ca": "coordinate attention after stages 2 and 3",
    "gc": "global context block after stages 2 and 3",
    "sk": "selective-kernel residual branch after stages 2 and 3",
    "nonlocal": "non-local self-attention (SAGAN) after stages 2 and 3",
    "mhsa": "transformer blocks (multi-head self-attention) as the core of stages 2 and 3",
    "dat": "DAT deformable attention residual branch after stages 2 and 3",
    "deform": "modulated deformable convolution residual branch after stages 2 and 3",
}


def zoo_name(kind: str) -> str:
    """The model name of a zoo kind, as listed by ``attnviz.list_models``."""
    return f"zoo_{kind}"


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


def _conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Residual(nn.Module):
    """``x + norm(body(x))``: a branch added to the backbone (the parallel insertion pattern)."""

    def __init__(self, body: nn.Module, channels: int) -> None:
        super().__init__()
        self.body = body
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.body(x))


def _attention(kind: str, channels: int, grid: int) -> nn.Module:
    """The attention stage inserted after a backbone stage of ``channels`` x ``grid`` x ``grid``."""
    from .modules import create_attention
    from .modules.mhsa import TransformerBlock

    if kind == "none":
        return nn.Identity()
    if kind == "mhsa":
        return nn.Sequential(
            *(TransformerBlock(channels, num_heads=4, max_tokens=grid * grid) for _ in range(2))
        )
    if kind == "dat":
        return Residual(
            create_attention("dat", channels, num_heads=4, n_groups=2, q_size=(grid, grid)), channels
        )
    if kind in ("sk", "deform"):
        return Residual(create_attention(kind, channels), channels)
    return create_attention(kind, channels)


class ZooNet(nn.Module):
    """The zoo's backbone with one attention kind after stages 2 and 3.

    Args:
        kind: a key of :data:`ZOO_KINDS`.
        num_classes: number of scene classes.
        input_size: square input side (the zoo trains at 96).

    Shapes:
        input ``[B, 3, S, S]`` normalised with :data:`MEAN`/:data:`STD`; output logits
        ``[B, num_classes]``.
    """

    def __init__(self, kind: str, num_classes: int = len(CLASSES), input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if kind not in ZOO_KINDS:
            raise ValueError(f"Unknown zoo kind {kind!r}: choose one of {', '.join(ZOO_KINDS)}.")
        w0, w1, w2, w3 = WIDTHS
        self.kind = kind
        self.num_classes = num_classes
        self.stem = _conv_bn_act(3, w0, 2)
        self.stage1 = nn.Sequential(_conv_bn_act(w0, w1, 2), _conv_bn_act(w1, w1))
        self.stage2 = nn.Sequential(_conv_bn_act(w1, w2, 2), _conv_bn_act(w2, w2))
        self.attn2 = _attention(kind, w2, input_size // 8)
        self.stage3 = nn.Sequential(_conv_bn_act(w2, w3, 2), _conv_bn_act(w3, w3))
        self.attn3 = _attention(kind, w3, input_size // 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> the last feature map ``[B, 96, S/16, S/16]``."""
        x = self.stage1(self.stem(x))
        x = self.attn2(self.stage2(x))
        return self.attn3(self.stage3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


def build_zoo_model(kind: str) -> ZooNet:
    """A fresh (untrained) zoo model of ``kind``, seeded for reproducibility by the caller."""
    return ZooNet(kind)


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
    rng = np.random.default_rng(config.seed)
    if data is None:
        images, labels, _, _ = make_dataset(config.n_train, config.data_seed, SceneParams(size=INPUT_SIZE))
    else:
        images, labels = data
    model = build_zoo_model(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(images) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    losses = []
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(images))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = _to_tensor(images[idx])
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.from_numpy(labels[idx]).long()
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(images))
        if progress is not None:
            progress(f"{zoo_name(kind)} epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.3f}")
    model.eval()
    summary = {
        "config": asdict(config),
        "losses": losses,
        "train_seconds": round(time.perf_counter() - start, 1),
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

    ZOO_DIR.mkdir(parents=True, exist_ok=True)
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
) -> dict:
    """Accuracy and localisation of one zoo model on held-out scenes, through ``attnviz.analyze``.

    Every attention map of every block (see :mod:`attnviz.maps`) and the Grad-CAM map are
    scored against the object boxes: the pointing game (the map's maximum falls in the box) and
    the energy in the box (the map's share of mass inside it, next to the box's area share).

    Returns:
        ``{"model", "kind", "n", "accuracy", "localization": [LocalizationScore as dict, ...]}``.
    """
    from .analysis import analyze
    from .localization import score_maps
    from .maps import attention_maps
    from .models import load_model

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
    return {
        "model": zoo_name(kind),
        "kind": kind,
        "n": len(images),
        "accuracy": correct / len(images),
        "localization": scores,
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
    from .models import load_model

    card = read_card(kind)
    if card is None:
        raise FileNotFoundError(f"{card_path(kind)} does not exist: train the model first")
    ev = card["eval_set"]
    images, labels, boxes, _ = held_out_set(ev["n"], ev["seed"], ev["clutter"])
    result = evaluate_zoo_model(kind, images, labels, boxes)
    card["accuracy"] = result["accuracy"]
    card["localization"] = result["localization"]
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


def format_table(rows: Sequence[dict]) -> str:
    """The evaluation table (Markdown): one row per model and attention map.

    Args:
        rows: results of :func:`evaluate_zoo_model` or model cards (``"model"`` or ``"name"``).
    """
    lines = [
        "| model | accuracy | map | pointing game | energy in box | box area share | energy ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        first = True
        for score in row["localization"] or [None]:
            acc = f"{row['accuracy']:.1%}" if first else ""
            name = row.get("model", row.get("name")) if first else ""
            first = False
            if score is None:
                lines.append(f"| {name} | {acc} | – | – | – | – | – |")
                continue
            lines.append(
                f"| {name} | {acc} | {score['name']} | {score['pointing']:.1%} | {score['energy']:.3f} | "
                f"{score['area_share']:.3f} | {score['energy_ratio']:.2f} |"
            )
    return "\n".join(lines)
