"""The playground network: the zoo's backbone with one attention module placed where a person chooses.

The three ways of adding attention to a backbone (:mod:`attnviz.layers.insertion`) are one
choice each, made at stage 2 (12x12 cells at the zoo's 96 px input) or stage 3 (6x6):

* ``serial``: the module reweights the stage's output (``attn{k}`` after ``stage{k}``);
* ``parallel``: a 3x3 convolution block and the module run side by side on the stage's output
  and are fused by a sum or by concatenation and a 1x1 convolution
  (``attn{k}`` = :class:`~attnviz.layers.insertion.ParallelBranch`, its module at
  ``attn{k}.attention``);
* ``core``: the stage's second convolution is replaced by ``depth`` transformer blocks of
  ``heads`` heads (``stage{k}.1`` = :class:`~attnviz.layers.insertion.AttentionCore`).

``kind="none"`` is the plain backbone (the baseline every choice is compared with). Any kind of
:func:`attnviz.layers.create_attention` can go serial or parallel; the core is self-attention
(the transformer block's multi-head attention), whatever ``kind`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from attnviz.layers import ATTENTION_REGISTRY, create_attention
from attnviz.layers.insertion import AttentionCore, ParallelBranch
from attnviz.layers.zoo_net import CLASSES, INPUT_SIZE, WIDTHS, Backbone, Residual, conv_bn_act

__all__ = ["FUSIONS", "PATTERNS", "STAGES", "Placement", "PlaygroundNet", "attention_kinds"]

#: Insertion patterns, in the order the playground offers them.
PATTERNS: tuple[str, ...] = ("serial", "parallel", "core")

#: How a parallel branch is fused with the convolution path.
FUSIONS: tuple[str, ...] = ("sum", "concat")

#: Backbone stages an attention module can be placed at: stage -> (channels, stride to pixels).
STAGES: dict[int, tuple[int, int]] = {2: (WIDTHS[2], 8), 3: (WIDTHS[3], 16)}

# Kinds that change what they are given more than a gate does: as a serial module they go in a
# residual branch (x + norm(module(x))), as the zoo places them.
_RESIDUAL_KINDS = frozenset({"sk", "deform", "dat"})


def attention_kinds() -> tuple[str, ...]:
    """Every kind a :class:`Placement` accepts: ``"none"`` then the kinds of ``create_attention``."""
    return ("none", *ATTENTION_REGISTRY)


@dataclass(frozen=True)
class Placement:
    """Where and how one attention module goes into the playground network.

    Attributes:
        kind: ``"none"`` or a kind of :func:`attnviz.layers.create_attention`.
        pattern: ``"serial"``, ``"parallel"`` or ``"core"`` (:data:`PATTERNS`).
        stage: 2 or 3, the backbone stage it is placed at (:data:`STAGES`).
        fuse: ``"sum"`` or ``"concat"``, for ``parallel``.
        depth: transformer blocks, for ``core`` (1 to 4).
        heads: attention heads per block, for ``core`` (1, 2, 4 or 8; it must divide the
            stage's channels).

    Raises:
        ValueError: on any value outside these (the message names the field).
    """

    kind: str = "cbam"
    pattern: Literal["serial", "parallel", "core"] = "serial"
    stage: int = 3
    fuse: Literal["sum", "concat"] = "sum"
    depth: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        if self.kind not in attention_kinds():
            raise ValueError(f"kind must be one of {', '.join(attention_kinds())}, got {self.kind!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if not isinstance(self.stage, int) or isinstance(self.stage, bool) or self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(map(str, STAGES))}, got {self.stage!r}")
        if self.fuse not in FUSIONS:
            raise ValueError(f"fuse must be one of {', '.join(FUSIONS)}, got {self.fuse!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or not 1 <= self.depth <= 4:
            raise ValueError(f"depth must be an integer from 1 to 4, got {self.depth!r}")
        channels = STAGES[self.stage][0]
        if not isinstance(self.heads, int) or isinstance(self.heads, bool) or self.heads not in (1, 2, 4, 8):
            raise ValueError(f"heads must be 1, 2, 4 or 8 and divide {channels} channels, got {self.heads!r}")
        if channels % self.heads:
            raise ValueError(f"heads must be 1, 2, 4 or 8 and divide {channels} channels, got {self.heads!r}")

    @property
    def attention_kind(self) -> str:
        """The kind that actually attends: ``"mhsa"`` for the core, else :attr:`kind`."""
        return "mhsa" if self.pattern == "core" and self.kind != "none" else self.kind

    @property
    def text(self) -> str:
        """One line for a page or a card: ``"CBAM, parallel (sum) at stage 3"``."""
        if self.kind == "none":
            return "no attention (the baseline backbone)"
        if self.pattern == "core":
            return f"self-attention core at stage {self.stage}: {self.depth} block(s) x {self.heads} heads"
        how = f"parallel ({self.fuse})" if self.pattern == "parallel" else "serial"
        return f"{self.kind}, {how} at stage {self.stage}"


def _module(kind: str, channels: int, grid: int) -> nn.Module:
    """``create_attention(kind, channels)`` with the arguments the zoo uses for a ``grid`` x ``grid`` map."""
    if kind == "dat":
        return create_attention("dat", channels, num_heads=4, n_groups=2, q_size=(grid, grid))
    if kind == "mhsa":
        return create_attention("mhsa", channels, max_tokens=grid * grid)
    return create_attention(kind, channels)


class PlaygroundNet(Backbone):
    """The zoo's backbone with one attention module placed by a :class:`Placement`.

    Args:
        placement: where and how the module goes.
        num_classes: number of scene classes (2 to 10).
        input_size: square input side (96 by default, as the zoo).

    Shapes:
        input ``[B, 3, S, S]`` normalised like the zoo; output logits ``[B, num_classes]``.
    """

    def __init__(
        self, placement: Placement, num_classes: int = len(CLASSES), input_size: int = INPUT_SIZE
    ) -> None:
        if not isinstance(placement, Placement):
            raise TypeError(f"placement must be a Placement, got {type(placement).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 10:
            raise ValueError(f"num_classes must be an integer from 2 to 10, got {num_classes!r}")
        sized = isinstance(input_size, int) and not isinstance(input_size, bool)
        if not sized or input_size % 16 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 16 of at least 32, got {input_size!r}")
        super().__init__(num_classes, input_size, lambda stage, channels, grid: nn.Identity())
        self.placement = placement
        if placement.kind != "none":
            self._place(placement, input_size)

    def _place(self, p: Placement, input_size: int) -> None:
        channels, stride = STAGES[p.stage]
        grid = input_size // stride
        stage: nn.Sequential = getattr(self, f"stage{p.stage}")
        if p.pattern == "core":
            stage[1] = AttentionCore(channels, p.depth, num_heads=p.heads, max_tokens=grid * grid)
            return
        module = _module(p.kind, channels, grid)
        if p.pattern == "serial":
            placed = Residual(module, channels) if p.kind in _RESIDUAL_KINDS else module
        else:
            # concat: a 1x1 convolution of known width (no lazy weights: counted, saved and loaded as built)
            out, width = (channels, 2 * channels) if p.fuse == "concat" else (None, None)
            placed = ParallelBranch(
                conv_bn_act(channels, channels), module, fuse=p.fuse, out_channels=out, in_channels=width
            )
        setattr(self, f"attn{p.stage}", placed)
