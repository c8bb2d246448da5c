"""The zoo network: one small CNN backbone per attention module (architecture only).

Pretrained ImageNet weights do not exist for most classic attention modules (CBAM, coordinate
attention, non-local, DAT, deformable convolution), so attnviz trains its own small models on
:mod:`attnviz.workflows.scenes`, where the object's box is known, and ships their weights in
``assets/zoo/``. Every model shares one backbone; only the attention differs::

    stem 3->16 /2 -> stage1 16->32 /2 -> stage2 32->64 /2 -> attn2 -> stage3 64->96 /2 -> attn3
    -> global average pool -> linear (10 scene classes)

At the zoo's 96x96 input, ``attn2`` sees a 12x12 feature map (stride 8) and ``attn3`` a 6x6 one
(stride 16). The three insertion patterns of :mod:`attnviz.layers.insertion` all appear:
serial modules after a stage (SE, ECA, CBAM, CA, GC, non-local), residual conv branches (SK,
deformable conv, DAT) and attention as the model's core (``mhsa``: transformer blocks).

Its weights and cards are read by :mod:`attnviz.backends.zoo`; ``python -m attnviz zoo train``
(:mod:`attnviz.workflows.zoo_training`) reproduces the weights (seeded); ``python -m attnviz zoo eval``
prints accuracy and localisation (pointing game, energy in box) per model and attention layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attnviz.layers import create_attention
from attnviz.layers.mhsa import TransformerBlock

__all__ = [
    "CLASSES",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "WIDTHS",
    "ZOO_KINDS",
    "Backbone",
    "Residual",
    "ZooNet",
    "build_zoo_model",
    "conv_bn_act",
    "zoo_name",
]

#: The K = 10 scene classes the zoo predicts, in logit order (the shapes of
#: :mod:`attnviz.workflows.scenes`, which draws them under these names).
CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon", "arrow", "letter_h",
)  # fmt: skip

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


def conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """A 3x3 convolution, batch norm and ReLU: ``[B, cin, H, W]`` -> ``[B, cout, H/stride, W/stride]``."""
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


class Backbone(nn.Module):
    """The zoo's small CNN with an attention slot after stages 2 and 3 (``attn2``, ``attn3``).

    Args:
        num_classes: number of scene classes.
        input_size: square input side (the zoo trains at 96).
        attention: ``attention(stage, channels, grid)`` builds the module of each slot, in
            construction order (stem, stage 1, stage 2, ``attn2``, stage 3, ``attn3``, head).

    Shapes:
        input ``[B, 3, S, S]`` normalised with :data:`MEAN`/:data:`STD`; output logits
        ``[B, num_classes]``.
    """

    def __init__(
        self, num_classes: int, input_size: int, attention: Callable[[int, int, int], nn.Module]
    ) -> None:
        super().__init__()
        w0, w1, w2, w3 = WIDTHS
        self.num_classes = num_classes
        self.stem = conv_bn_act(3, w0, 2)
        self.stage1 = nn.Sequential(conv_bn_act(w0, w1, 2), conv_bn_act(w1, w1))
        self.stage2 = nn.Sequential(conv_bn_act(w1, w2, 2), conv_bn_act(w2, w2))
        self.attn2 = attention(2, w2, input_size // 8)
        self.stage3 = nn.Sequential(conv_bn_act(w2, w3, 2), conv_bn_act(w3, w3))
        self.attn3 = attention(3, w3, input_size // 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> the last feature map ``[B, 96, S/16, S/16]``."""
        x = self.stage1(self.stem(x))
        x = self.attn2(self.stage2(x))
        return self.attn3(self.stage3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> logits ``[B, num_classes]``."""
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


class ZooNet(Backbone):
    """The zoo's backbone with one attention kind after stages 2 and 3.

    Args:
        kind: a key of :data:`ZOO_KINDS`.
        num_classes: number of scene classes.
        input_size: square input side (the zoo trains at 96).
    """

    def __init__(self, kind: str, num_classes: int = len(CLASSES), input_size: int = INPUT_SIZE) -> None:
        if kind not in ZOO_KINDS:
            raise ValueError(f"Unknown zoo kind {kind!r}: choose one of {', '.join(ZOO_KINDS)}.")
        super().__init__(
            num_classes, input_size, lambda stage, channels, grid: _attention(kind, channels, grid)
        )
        self.kind = kind


def build_zoo_model(kind: str) -> ZooNet:
    """A fresh (untrained) zoo model of ``kind``, seeded for reproducibility by the caller."""
    return ZooNet(kind)
