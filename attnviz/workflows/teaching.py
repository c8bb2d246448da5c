"""Teaching material for attnviz's attention modules: what each computes, how attnviz reads it, its cost.

* :data:`MODULE_GUIDE`: one :class:`ModuleGuide` per kind of :data:`attnviz.layers.ATTENTION_REGISTRY`
  (paper, formula in LaTeX, a data-flow graph in Graphviz DOT, what the module computes, what its
  heat map means in attnviz, and the zoo model that uses it).
* :func:`module_cost`: parameters and FLOPs of ``create_attention(kind, channels)`` on one
  ``[1, C, H, W]`` feature map, counted by ``torch.utils.flop_counter.FlopCounterMode``.
* :data:`INSERTION_PATTERNS`: the three ways of adding attention to a backbone (serial after a
  stage, parallel branch, attention as the core), each with a runnable snippet that uses
  :mod:`attnviz.layers.insertion`.

Nothing here imports streamlit; the Modules page renders it (``st.latex``, ``st.graphviz_chart``).

FLOP convention: **FLOPs = 2 x multiply-adds** of the convolutions and matrix products (what
``FlopCounterMode`` counts: ``aten.convolution``, ``mm``, ``addmm``, ``bmm``, ...). Element-wise
work (activations, gates' products, pooling, softmax, normalisation, bias) is not counted. Two
operations that ``FlopCounterMode`` does not know are counted here with an analytic formula, in
the same convention, when the installed torch has no formula of its own for them:

* ``aten.grid_sampler_2d`` (DAT's key sampling and its relative-position bias lookup): every output
  value is a weighted sum of 4 input values (bilinear), ``2 * 4 * N * C * Ho * Wo``; 16 values for
  bicubic, and 0 for nearest (a copy).
* ``torchvision.deform_conv2d`` (deformable convolution): the convolution itself,
  ``2 * N * C_out * (C_in / weight_groups) * kh * kw * Ho * Wo``, plus the bilinear sampling of
  every input column, ``2 * 4 * N * C_in * kh * kw * Ho * Wo``, plus, when modulated, one multiply
  by the mask per sampled value, ``N * C_in * kh * kw * Ho * Wo``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision.deform_conv2d)
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from attnviz.layers import ATTENTION_REGISTRY, create_attention
from attnviz.layers.zoo_net import zoo_name

__all__ = [
    "INSERTION_PATTERNS",
    "MODULE_GUIDE",
    "InsertionPattern",
    "ModuleGuide",
    "Paper",
    "analytic_flop_ops",
    "deform_conv2d_flops",
    "flops_text",
    "grid_sample_flops",
    "module_cost",
]


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paper:
    """The paper a module comes from."""

    title: str
    year: int
    link: str


@dataclass(frozen=True)
class ModuleGuide:
    """What one attention kind is, for a reader.

    Attributes:
        kind: the key in :data:`attnviz.layers.ATTENTION_REGISTRY`.
        short: a short name for tabs and tables (``"SE"``).
        title: the module's name as people say it (``"Squeeze-and-Excitation (SE)"``).
        paper: title, year and link of the paper.
        formula: LaTeX for ``st.latex`` (no surrounding ``$``).
        what_it_computes: 2-4 sentences.
        what_the_map_means: which submodule attnviz reads, its shape, and how
            :mod:`attnviz.views.maps` turns it into a heat map (or that it has none).
        data_flow: a Graphviz DOT ``digraph`` of the module's data flow; the nodes attnviz reads
            are filled in red.
        zoo_model: the zoo model that uses this module (``attnviz.load_model(zoo_model)``).
    """

    kind: str
    short: str
    title: str
    paper: Paper
    formula: str
    what_it_computes: str
    what_the_map_means: str
    data_flow: str
    zoo_model: str


@dataclass(frozen=True)
class InsertionPattern:
    """One way of adding attention to a backbone, with a runnable snippet."""

    key: str
    title: str
    explanation: str
    code: str


# --------------------------------------------------------------------------------------------------
# Data-flow graphs (DOT)
# --------------------------------------------------------------------------------------------------

# Node styles: tensors, operations, the submodules attnviz reads (red, as the app's primary
# colour), and the two element-wise combinations drawn as small circles.
_STYLES = {
    "tensor": 'shape=box, style="rounded", color="#888888", fillcolor="white"',
    "op": 'shape=box, style="filled", color="#7a8fb0", fillcolor="#e8eef7"',
    "tap": 'shape=box, style="filled,bold", color="#9e2a3a", fillcolor="#d1495b", fontcolor="white"',
    "mul": 'shape=circle, style="filled", fillcolor="#f4f4f4", width=0.3, fixedsize=true, label="×"',
    "add": 'shape=circle, style="filled", fillcolor="#f4f4f4", width=0.3, fixedsize=true, label="+"',
}

Node = tuple[str, str, str]  # (id, style, label)
Edge = tuple[str, str] | tuple[str, str, str]  # (from, to) or (from, to, label)


def _dot(name: str, nodes: Sequence[Node], edges: Sequence[Edge]) -> str:
    """A left-to-right DOT digraph from ``(id, style, label)`` nodes and ``(a, b[, label])`` edges."""
    lines = [
        f"digraph {name} {{",
        '  graph [rankdir=LR, bgcolor="transparent", nodesep=0.25, ranksep=0.3, fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=11, margin="0.08,0.04"];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555", arrowsize=0.7];',
    ]
    for node_id, style, label in nodes:
        text = "" if style in ("mul", "add") else f', label="{label}"'
        lines.append(f"  {node_id} [{_STYLES[style]}{text}];")
    for edge in edges:
        a, b = edge[0], edge[1]
        attrs = f' [label="{edge[2]}"]' if len(edge) == 3 else ""
        lines.append(f"  {a} -> {b}{attrs};")
    lines.append("}")
    return "\n".join(lines)


_SE_DOT = _dot(
    "se",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("gap", "op", "global avg pool\\n[C, 1, 1]"),
        ("fc1", "op", "fc1: 1x1 conv C→C/r\\n+ ReLU"),
        ("fc2", "op", "fc2: 1x1 conv C/r→C"),
        ("gate", "tap", "gate: sigmoid\\n[C, 1, 1]"),
        ("m", "mul", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [("x", "gap"), ("gap", "fc1"), ("fc1", "fc2"), ("fc2", "gate"), ("gate", "m"), ("x", "m"), ("m", "y")],
)

_ECA_DOT = _dot(
    "eca",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("gap", "op", "global avg pool\\n[1, C]"),
        ("conv", "op", "conv1d over channels\\nkernel k(C), no bias"),
        ("gate", "tap", "gate: sigmoid\\n[1, C]"),
        ("m", "mul", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [("x", "gap"), ("gap", "conv"), ("conv", "gate"), ("gate", "m"), ("x", "m"), ("m", "y")],
)

_CBAM_DOT = _dot(
    "cbam",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("avg", "op", "avg pool\\n[C, 1, 1]"),
        ("max", "op", "max pool\\n[C, 1, 1]"),
        ("mlp", "op", "shared MLP\\n(1x1 convs C→C/r→C)"),
        ("s1", "add", ""),
        ("cg", "tap", "channel.gate: sigmoid\\n[C, 1, 1]"),
        ("m1", "mul", ""),
        ("xc", "tensor", "X'\\n[C, H, W]"),
        ("pool", "op", "mean and max\\nover channels [2, H, W]"),
        ("conv", "op", "7x7 conv 2→1"),
        ("sg", "tap", "spatial.gate: sigmoid\\n[1, H, W]"),
        ("m2", "mul", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "avg"),
        ("x", "max"),
        ("avg", "mlp"),
        ("max", "mlp"),
        ("mlp", "s1", "both"),
        ("s1", "cg"),
        ("cg", "m1"),
        ("x", "m1"),
        ("m1", "xc"),
        ("xc", "pool"),
        ("pool", "conv"),
        ("conv", "sg"),
        ("sg", "m2"),
        ("xc", "m2"),
        ("m2", "y"),
    ],
)

_CA_DOT = _dot(
    "ca",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("ph", "op", "avg over W\\nz^h [C, H, 1]"),
        ("pw", "op", "avg over H\\nz^w [C, 1, W]"),
        ("shared", "op", "concat, 1x1 conv C→mip\\n+ BN + h-swish"),
        ("ch", "op", "conv_h 1x1 mip→C"),
        ("cw", "op", "conv_w 1x1 mip→C"),
        ("gh", "tap", "gate_h: sigmoid\\n[C, H, 1]"),
        ("gw", "tap", "gate_w: sigmoid\\n[C, 1, W]"),
        ("m", "mul", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "ph"),
        ("x", "pw"),
        ("ph", "shared"),
        ("pw", "shared"),
        ("shared", "ch", "rows"),
        ("shared", "cw", "columns"),
        ("ch", "gh"),
        ("cw", "gw"),
        ("gh", "m"),
        ("gw", "m"),
        ("x", "m"),
        ("m", "y"),
    ],
)

_GC_DOT = _dot(
    "gc",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("conv", "op", "conv_attn: 1x1 conv C→1\\n[1, H, W]"),
        ("soft", "tap", "context_softmax\\nsoftmax over H·W\\n[1, H, W]"),
        ("pool", "op", "weighted sum of X\\ncontext c [C, 1, 1]"),
        ("mlp", "tap", "mlp_add: 1x1 C→C/r, LN,\\nReLU, 1x1 C/r→C  [C, 1, 1]"),
        ("a", "add", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "conv"),
        ("conv", "soft"),
        ("soft", "pool", "weights"),
        ("x", "pool"),
        ("pool", "mlp"),
        ("mlp", "a", "every position"),
        ("x", "a"),
        ("a", "y"),
    ],
)

_SK_DOT = _dot(
    "sk",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("p1", "op", "path 3x3\\nconv + BN + ReLU"),
        ("p2", "op", "path '5x5'\\n3x3 dilation 2 + BN + ReLU"),
        ("u", "add", ""),
        ("gap", "op", "global avg pool\\n[C, 1, 1]"),
        ("fc", "op", "fc_reduce 1x1 C→d\\n+ BN + ReLU"),
        ("sel", "op", "fc_select 1x1 d→2C"),
        ("soft", "tap", "select: softmax\\nover paths [2, C]"),
        ("mix", "op", "Σ_paths weight · path"),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "p1"),
        ("x", "p2"),
        ("p1", "u"),
        ("p2", "u"),
        ("u", "gap"),
        ("gap", "fc"),
        ("fc", "sel"),
        ("sel", "soft"),
        ("soft", "mix"),
        ("p1", "mix"),
        ("p2", "mix"),
        ("mix", "y"),
    ],
)

_NONLOCAL_DOT = _dot(
    "nonlocal",
    [
        ("x", "tensor", "X\\n[C, H, W] = N tokens"),
        ("q", "op", "query 1x1 C→C/8\\nq [C/8, N]"),
        ("k", "op", "key 1x1 C→C/8\\nk [C/8, N]"),
        ("v", "op", "value 1x1 C→C\\nv [C, N]"),
        ("qk", "op", "qᵀk\\n[N, N]"),
        ("soft", "tap", "softmax over keys\\nA [N, N]"),
        ("av", "op", "v Aᵀ\\n[C, N]"),
        ("g", "mul", ""),
        ("a", "add", ""),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "q"),
        ("x", "k"),
        ("x", "v"),
        ("q", "qk"),
        ("k", "qk"),
        ("qk", "soft"),
        ("soft", "av"),
        ("v", "av"),
        ("av", "g", "γ (starts at 0)"),
        ("g", "a"),
        ("x", "a"),
        ("a", "y"),
    ],
)

_MHSA_DOT = _dot(
    "mhsa",
    [
        ("x", "tensor", "X\\n[C, H, W] = N tokens"),
        ("pos", "op", "+ positional embedding"),
        ("qkv", "op", "qkv: Linear C→3C\\nsplit into heads"),
        ("qk", "op", "Q Kᵀ / √d\\n[heads, N, N]"),
        ("soft", "tap", "attn_softmax\\n[heads, N, N]"),
        ("av", "op", "· V, concat heads"),
        ("proj", "op", "proj: Linear C→C"),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "pos"),
        ("pos", "qkv"),
        ("qkv", "qk", "Q, K"),
        ("qk", "soft"),
        ("soft", "av"),
        ("qkv", "av", "V"),
        ("av", "proj"),
        ("proj", "y"),
    ],
)

_DAT_DOT = _dot(
    "dat",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("q", "op", "proj_q 1x1\\nq [C, H·W]"),
        ("off", "op", "conv_offset per group:\\ndw conv, LN, GELU, 1x1 → Δp"),
        ("ref", "tap", "reference grid\\n[G, Hk, Wk, 2]"),
        ("pts", "tap", "points = ref + s·tanh(Δp)\\n[G, Hk, Wk, 2]"),
        ("gs", "op", "bilinear sampling\\nof X at the points"),
        ("kv", "op", "proj_k, proj_v\\nk, v [C, Hk·Wk]"),
        ("logit", "op", "q kᵀ / √d + relative\\nposition bias"),
        ("soft", "tap", "attn_softmax\\n[heads, H·W, Hk·Wk]"),
        ("out", "op", "· v, proj_out"),
        ("y", "tensor", "Y\\n[C, H, W]"),
    ],
    [
        ("x", "q"),
        ("q", "off"),
        ("off", "pts"),
        ("ref", "pts"),
        ("pts", "gs"),
        ("x", "gs"),
        ("gs", "kv"),
        ("q", "logit"),
        ("kv", "logit", "k"),
        ("pts", "logit", "bias at q − p"),
        ("logit", "soft"),
        ("soft", "out"),
        ("kv", "out", "v"),
        ("out", "y"),
    ],
)

_DEFORM_DOT = _dot(
    "deform",
    [
        ("x", "tensor", "X\\n[C, H, W]"),
        ("oc", "op", "offset_conv 3x3\\nC→2·9"),
        ("offs", "tap", "offsets (dy, dx)\\n[2·9, Ho, Wo]"),
        ("mc", "op", "mask_conv 3x3\\nC→9"),
        ("mask", "tap", "mask_gate: sigmoid\\n[9, Ho, Wo]"),
        ("dc", "op", "deform_conv2d: sample X at\\np0 + p_k + Δp_k, × mask, × w_k"),
        ("y", "tensor", "Y\\n[C_out, Ho, Wo]"),
    ],
    [
        ("x", "oc"),
        ("oc", "offs"),
        ("x", "mc"),
        ("mc", "mask"),
        ("x", "dc"),
        ("offs", "dc"),
        ("mask", "dc"),
        ("dc", "y"),
    ],
)


# --------------------------------------------------------------------------------------------------
# The guide
# --------------------------------------------------------------------------------------------------

_NO_MAP = (
    " These are channel weights only: `attnviz.views.maps.attention_maps` gives no heat map for "
    "them, so the Scene lab and the Leaderboard show this model's Grad-CAM only; the Compare page "
    "draws the weights as bars."
)

_GUIDES: tuple[ModuleGuide, ...] = (
    ModuleGuide(
        kind="se",
        short="SE",
        title="Squeeze-and-Excitation (SE)",
        paper=Paper("Squeeze-and-Excitation Networks", 2018, "https://arxiv.org/abs/1709.01507"),
        formula=(
            r"\mathbf{s} = \sigma\big(W_2\,\delta(W_1\,\mathrm{GAP}(X))\big) \in (0,1)^{C},"
            r"\qquad Y_c = s_c\,X_c"
        ),
        what_it_computes=(
            "Global average pooling squeezes each channel to one number; a bottleneck MLP "
            "(C → C/16 → C, ReLU in between) and a sigmoid turn that descriptor into one gate per "
            "channel, and every channel of the input is rescaled by its gate. It decides *which* "
            "features matter for this image, never *where*."
        ),
        what_the_map_means=(
            "attnviz hooks the submodule `gate` (output `[B, C, 1, 1]`) and records a "
            "`ChannelWeights` of kind `se`: values `[C]` in (0, 1)." + _NO_MAP
        ),
        data_flow=_SE_DOT,
        zoo_model=zoo_name("se"),
    ),
    ModuleGuide(
        kind="eca",
        short="ECA",
        title="Efficient Channel Attention (ECA)",
        paper=Paper(
            "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
            2020,
            "https://arxiv.org/abs/1910.03151",
        ),
        formula=(
            r"\mathbf{s} = \sigma\big(\mathrm{conv1d}_k(\mathrm{GAP}(X))\big),\quad "
            r"k = \Big|\tfrac{\log_2 C + b}{\gamma}\Big|_{\mathrm{odd}},\qquad Y_c = s_c\,X_c"
        ),
        what_it_computes=(
            "SE without the bottleneck: the pooled channel descriptor is read as a 1-D signal over "
            "the channels and filtered by one small 1-D convolution (k = 3 for 64 channels), so each "
            "gate depends only on its k neighbouring channels. It costs a handful of parameters."
        ),
        what_the_map_means=(
            "attnviz hooks `gate` (output `[B, 1, C]`, channels on the last axis) and records "
            "`ChannelWeights` of kind `eca`: values `[C]` in (0, 1)." + _NO_MAP
        ),
        data_flow=_ECA_DOT,
        zoo_model=zoo_name("eca"),
    ),
    ModuleGuide(
        kind="cbam",
        short="CBAM",
        title="Convolutional Block Attention Module (CBAM)",
        paper=Paper("CBAM: Convolutional Block Attention Module", 2018, "https://arxiv.org/abs/1807.06521"),
        formula=(
            r"\begin{gathered}"
            r"M_c = \sigma\big(\mathrm{MLP}(\mathrm{AvgPool}(X)) + \mathrm{MLP}(\mathrm{MaxPool}(X))\big),"
            r"\quad X' = M_c \odot X \\ "
            r"M_s = \sigma\big(f^{7\times 7}([\mathrm{mean}_c X';\,\max_c X'])\big),\quad Y = M_s \odot X'"
            r"\end{gathered}"
        ),
        what_it_computes=(
            "Two gates in a row. The channel gate is SE with both average- and max-pooled "
            "descriptors through one shared MLP. The spatial gate then summarises the gated "
            "features by their mean and maximum over channels, convolves these two maps with a "
            "7x7 kernel and applies a sigmoid: one factor per position, shared by all channels."
        ),
        what_the_map_means=(
            "attnviz hooks `channel.gate` (`[B, C, 1, 1]` → `ChannelWeights` `cbam_channel`) and "
            "`spatial.gate` (`[B, 1, H, W]` → `SpatialMap` `cbam_spatial`, values in (0, 1), one "
            "per feature cell). The heat map is the spatial gate itself: how strongly the block "
            "keeps each position, upsampled from the feature grid (12x12 and 6x6 in the zoo) to "
            "the image."
        ),
        data_flow=_CBAM_DOT,
        zoo_model=zoo_name("cbam"),
    ),
    ModuleGuide(
        kind="ca",
        short="CA",
        title="Coordinate Attention (CA)",
        paper=Paper(
            "Coordinate Attention for Efficient Mobile Network Design",
            2021,
            "https://arxiv.org/abs/2103.02907",
        ),
        formula=(
            r"\begin{gathered}"
            r"z^h_c(i) = \tfrac{1}{W}\textstyle\sum_j X_c(i,j),\quad z^w_c(j) = \tfrac{1}{H}\sum_i X_c(i,j),"
            r"\quad f = \delta(\mathrm{BN}(F_1[z^h; z^w])) \\ "
            r"g^h = \sigma(F_h f^h),\quad g^w = \sigma(F_w f^w),\quad "
            r"Y_c(i,j) = X_c(i,j)\, g^h_c(i)\, g^w_c(j)"
            r"\end{gathered}"
        ),
        what_it_computes=(
            "Channel attention that keeps one coordinate: the input is averaged along each row and "
            "along each column, both strips go through a shared 1x1 convolution, and two 1x1 "
            "convolutions turn them into a row gate and a column gate per channel. Position "
            "(i, j) of channel c is scaled by the product of its row's and its column's gate."
        ),
        what_the_map_means=(
            "attnviz hooks `gate_h` (`[B, C, H, 1]`) and `gate_w` (`[B, C, 1, W]`) and records "
            "`AxisGates` (`h [C, H]`, `w [C, W]`). The heat map is the channel mean of "
            "`h[c, i] * w[c, j]`: the factor the block multiplies position (i, j) by, on average "
            "over channels. Being a product of a row and a column profile, it draws crosses and "
            "rectangles, not arbitrary shapes."
        ),
        data_flow=_CA_DOT,
        zoo_model=zoo_name("ca"),
    ),
    ModuleGuide(
        kind="gc",
        short="GC",
        title="Global Context block (GC)",
        paper=Paper(
            "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
            2019,
            "https://arxiv.org/abs/1904.11492",
        ),
        formula=(
            r"\alpha_p = \frac{e^{w_k^\top x_p}}{\sum_q e^{w_k^\top x_q}},\quad "
            r"\mathbf{c} = \sum_p \alpha_p\, x_p,\quad "
            r"y_p = x_p + W_{v2}\,\mathrm{ReLU}\big(\mathrm{LN}(W_{v1}\,\mathbf{c})\big)"
        ),
        what_it_computes=(
            "A simplified non-local block: one attention map shared by all queries. A 1x1 "
            "convolution scores every position, a softmax over all positions turns the scores "
            "into weights, and the weighted sum of the features is one global context vector. A "
            "bottleneck MLP transforms it and the result is added to every position."
        ),
        what_the_map_means=(
            "attnviz hooks `context_softmax` (`[B, 1, H, W]`, sums to 1 over the positions) → "
            "`SpatialMap` `gc_context`, and `mlp_add` (`[B, C, 1, 1]`) → `ChannelWeights` "
            "`gc_add`. The heat map is the context softmax itself: where the block pools its "
            "global context from."
        ),
        data_flow=_GC_DOT,
        zoo_model=zoo_name("gc"),
    ),
    ModuleGuide(
        kind="sk",
        short="SK",
        title="Selective Kernel (SK)",
        paper=Paper("Selective Kernel Networks", 2019, "https://arxiv.org/abs/1903.06586"),
        formula=(
            r"U = \textstyle\sum_m U_m,\; \mathbf{z} = \delta(\mathrm{BN}(W_z\,\mathrm{GAP}(U))),\; "
            r"a_{m,c} = \frac{e^{A_{m,c}\mathbf{z}}}{\sum_{m'} e^{A_{m',c}\mathbf{z}}},\; "
            r"Y_c = \sum_m a_{m,c}\, U_{m,c}"
        ),
        what_it_computes=(
            "Two convolution paths with different receptive fields (3x3 and a dilated 3x3 that "
            "sees 5x5) run on the same input. Their sum is pooled and squeezed, and a softmax over "
            "the paths gives every channel its own mix of the two: a per-image choice of the "
            "receptive field."
        ),
        what_the_map_means=(
            "attnviz hooks `select` (`[B, paths, C]`, each column sums to 1) and records "
            "`ChannelWeights` of kind `sk` with values `[2, C]` and path labels `3x3`, `5x5`." + _NO_MAP
        ),
        data_flow=_SK_DOT,
        zoo_model=zoo_name("sk"),
    ),
    ModuleGuide(
        kind="nonlocal",
        short="Non-local",
        title="Non-local block (SAGAN self-attention)",
        paper=Paper(
            "Self-Attention Generative Adversarial Networks", 2019, "https://arxiv.org/abs/1805.08318"
        ),
        formula=(
            r"A_{ij} = \frac{e^{q_i^\top k_j}}{\sum_{j'} e^{q_i^\top k_{j'}}},\quad "
            r"q = W_q x,\; k = W_k x,\; v = W_v x,\quad "
            r"y_i = x_i + \gamma \textstyle\sum_j A_{ij}\, v_j"
        ),
        what_it_computes=(
            "Every position attends to every other (Non-local Neural Networks, Wang et al. 2018, "
            "in the SAGAN form): 1x1 convolutions give queries and keys of C/8 channels and values "
            "of C channels, a softmax over keys gives an N x N attention matrix (N = H·W), and "
            "each position receives the attention-weighted sum of the values, scaled by a learned "
            "γ that starts at 0 and added back."
        ),
        what_the_map_means=(
            "attnviz hooks `softmax` (`[B, N, N]`, row = query) and records `TokenAttention` of "
            "kind `nonlocal` (one head). The heat map is the attention each position *receives*: "
            "the column mean of the matrix over all queries, reshaped to `[H, W]`."
        ),
        data_flow=_NONLOCAL_DOT,
        zoo_model=zoo_name("nonlocal"),
    ),
    ModuleGuide(
        kind="mhsa",
        short="MHSA",
        title="Multi-head self-attention (MHSA)",
        paper=Paper("Attention Is All You Need", 2017, "https://arxiv.org/abs/1706.03762"),
        formula=(
            r"\mathrm{head}_h = \mathrm{softmax}\Big(\frac{Q_h K_h^\top}{\sqrt{d}}\Big)\, V_h,\quad "
            r"\mathrm{MHSA}(X) = W_o\,[\mathrm{head}_1;\dots;\mathrm{head}_{n}],\quad "
            r"X \leftarrow X + \mathrm{MHSA}(\mathrm{LN}(X))"
        ),
        what_it_computes=(
            "Each position of the feature map is a token (as in ViT); a linear layer gives "
            "queries, keys and values, split into heads; each head's softmax over the keys mixes "
            "the values of all positions. In the zoo it is the core of the stages: pre-norm "
            "transformer blocks (attention, then an MLP, each with a residual)."
        ),
        what_the_map_means=(
            "attnviz hooks `attn_softmax` (`[B, heads, N, N]`, N = H·W) and records "
            "`TokenAttention` of kind `mhsa`, one per transformer block. The heat map is the "
            "attention each position receives, averaged over heads and queries."
        ),
        data_flow=_MHSA_DOT,
        zoo_model=zoo_name("mhsa"),
    ),
    ModuleGuide(
        kind="dat",
        short="DAT",
        title="Deformable Attention (DAT)",
        paper=Paper("Vision Transformer with Deformable Attention", 2022, "https://arxiv.org/abs/2201.00520"),
        formula=(
            r"\begin{gathered}"
            r"p = p_{\mathrm{ref}} + s\tanh(\theta_{\mathrm{off}}(q)),\quad \tilde{x} = \phi(x;\,p),\quad "
            r"k = W_k \tilde{x},\quad v = W_v \tilde{x} \\ "
            r"z_h = \mathrm{softmax}\Big(\frac{q_h k_h^\top}{\sqrt{d}} + \phi(\hat{B};\,q - p)\Big)\, v_h"
            r"\end{gathered}"
        ),
        what_it_computes=(
            "Instead of attending to every position, each group of heads attends to a grid of "
            "keys sampled at learned points. The points start on a regular reference grid; a small "
            "offset network shifts them from the queries, the features are sampled bilinearly (φ) "
            "at the shifted points to form keys and values, and a relative position bias read at "
            "the query-to-key displacement is added to the logits."
        ),
        what_the_map_means=(
            "attnviz hooks `points` and `reference` (`[B, G, Hk, Wk, 2]`, normalised (y, x)) and "
            "`attn_softmax` (`[B, heads, H·W, Hk·Wk]`) and records `SamplingPoints` (pixel "
            "positions, weighted by the attention each sampled key receives, averaged over queries "
            "and the group's heads) plus `TokenAttention`. The heat map splats the weighted points "
            "bilinearly onto the feature grid: where the module reads from."
        ),
        data_flow=_DAT_DOT,
        zoo_model=zoo_name("dat"),
    ),
    ModuleGuide(
        kind="deform",
        short="Deformable conv",
        title="Deformable convolution (DCNv2)",
        paper=Paper(
            "Deformable ConvNets v2: More Deformable, Better Results",
            2019,
            "https://arxiv.org/abs/1811.11168",
        ),
        formula=(
            r"y(p_0) = \sum_{k=1}^{K} w_k \cdot x(p_0 + p_k + \Delta p_k) \cdot \Delta m_k,\quad "
            r"\Delta m_k = \sigma(\cdot) \in (0, 1)"
        ),
        what_it_computes=(
            "A convolution whose kernel points move: a side convolution predicts, for every output "
            "position, a (dy, dx) shift of each of the 9 points of the 3x3 kernel, and the input is "
            "sampled bilinearly at the shifted points. The modulated version (v2, Dai et al. 2017 "
            "for v1) also predicts a weight in (0, 1) per point, so a point can be switched off."
        ),
        what_the_map_means=(
            "attnviz hooks `offsets` (`[B, 2·9, Ho, Wo]`, pixels) and `mask_gate` "
            "(`[B, 9, Ho, Wo]`) and records `SamplingPoints`: for each output position its 9 "
            "sampled pixel positions and their mask weights. The heat map splats every point, "
            "weighted by its mask, onto the feature grid: where the convolution reads from (a "
            "fresh block reads a regular grid, so its map is flat)."
        ),
        data_flow=_DEFORM_DOT,
        zoo_model=zoo_name("deform"),
    ),
)

#: Attention kind -> its guide, in the registry's order.
MODULE_GUIDE: dict[str, ModuleGuide] = {g.kind: g for g in _GUIDES}


# --------------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------------


def grid_sample_flops(
    input_shape: Sequence[int],
    grid_shape: Sequence[int],
    interpolation_mode: int = 0,
    *args: object,
    out_shape: Sequence[int] | None = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``aten.grid_sampler_2d`` (2 x multiply-adds).

    Args:
        input_shape: ``[N, C, H_in, W_in]``.
        grid_shape: ``[N, H_out, W_out, 2]``.
        interpolation_mode: 0 bilinear (4 input values per output value), 1 nearest (a copy: 0),
            2 bicubic (16).

    Returns:
        ``2 * taps * N * C * H_out * W_out``.
    """
    taps = {0: 4, 1: 0, 2: 16}.get(int(interpolation_mode), 4)
    n, c = input_shape[0], input_shape[1]
    return 2 * taps * n * c * grid_shape[1] * grid_shape[2]


def deform_conv2d_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    offset_shape: Sequence[int],
    mask_shape: Sequence[int] | None,
    bias_shape: Sequence[int] | None,
    *args: object,
    out_shape: Sequence[int] | None = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``torchvision.deform_conv2d`` (2 x multiply-adds; see the module docstring).

    Args:
        input_shape: ``[N, C_in, H, W]``.
        weight_shape: ``[C_out, C_in / weight_groups, kh, kw]``.
        offset_shape: ``[N, 2 * offset_groups * kh * kw, Ho, Wo]``.
        mask_shape: ``[N, offset_groups * kh * kw, Ho, Wo]`` (ignored unless ``use_mask``, the
            last positional argument of the op).
        bias_shape: ``[C_out]`` (bias additions are not counted).

    Returns:
        Convolution ``2 * N * C_out * C_in/g * kh * kw * Ho * Wo`` plus bilinear sampling
        ``8 * N * C_in * kh * kw * Ho * Wo`` plus, when modulated, ``N * C_in * kh * kw * Ho * Wo``.
    """
    n, c_in = input_shape[0], input_shape[1]
    c_out, c_per_group, kh, kw = weight_shape
    ho, wo = offset_shape[2], offset_shape[3]
    use_mask = bool(args[-1]) if args else mask_shape is not None
    columns = n * c_in * kh * kw * ho * wo  # sampled input values
    conv = 2 * n * c_out * c_per_group * kh * kw * ho * wo
    return conv + 2 * 4 * columns + (columns if use_mask and mask_shape is not None else 0)


def analytic_flop_ops() -> dict[object, Callable[..., int]]:
    """The ops that :func:`module_cost` counts analytically: those the installed torch does not know.

    Returns:
        ``{op: formula}`` for ``FlopCounterMode(custom_mapping=...)``; empty once torch counts both.
    """
    extra: dict[object, Callable[..., int]] = {
        torch.ops.aten.grid_sampler_2d: grid_sample_flops,
        torch.ops.torchvision.deform_conv2d: deform_conv2d_flops,
    }
    return {op: fn for op, fn in extra.items() if op not in flop_registry}


def module_cost(kind: str, channels: int, size: tuple[int, int]) -> tuple[int, int]:
    """Parameters and FLOPs of ``create_attention(kind, channels)`` on a ``[1, channels, H, W]`` input.

    FLOPs are 2 x multiply-adds of convolutions and matrix products, counted by
    ``FlopCounterMode`` during one forward pass in eval mode on the CPU; grid sampling and
    deformable convolution are added analytically when torch has no formula for them (see the
    module docstring). Element-wise work is not counted.

    Args:
        kind: a key of :data:`attnviz.layers.ATTENTION_REGISTRY`.
        channels: C (some kinds need a multiple of their heads or groups: mhsa and dat of 4).
        size: (H, W) of the feature map (mhsa accepts at most 1024 positions at its defaults).

    Returns:
        ``(parameters, flops)``: ``sum(p.numel())`` of the module's parameters, and the FLOPs.

    Raises:
        ValueError: unknown kind, non-positive channels or size, or a combination the module
            refuses (its own message).
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    if kind not in ATTENTION_REGISTRY:
        raise ValueError(f"unknown attention kind {kind!r}; known kinds: {', '.join(ATTENTION_REGISTRY)}")
    module = create_attention(kind, channels).eval()
    params = sum(p.numel() for p in module.parameters())
    x = torch.zeros(1, channels, *size)
    counter = FlopCounterMode(display=False, custom_mapping=analytic_flop_ops())
    with torch.no_grad(), counter:
        module(x)
    return int(params), int(counter.get_total_flops())


def flops_text(flops: int) -> str:
    """``1234567`` -> ``"1.23 MFLOPs"`` (k, M, G)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}FLOPs"
    return f"{flops} FLOPs"


# --------------------------------------------------------------------------------------------------
# Insertion patterns
# --------------------------------------------------------------------------------------------------

_SERIAL_CODE = """\
import torch
import torchvision
from attnviz.layers import create_attention
from attnviz.layers.insertion import insert_after

model = torchvision.models.resnet18(weights=None, num_classes=10)
# layer3 outputs 256 channels; CBAM reweights them before layer4 sees them.
insert_after(model, "layer3", create_attention("cbam", 256))
print(type(model.layer3[1]).__name__)       # CBAM, named "layer3.1"
logits = model(torch.randn(2, 3, 64, 64))   # [2, 10]
"""

_PARALLEL_CODE = """\
import torch
from torch import nn
from attnviz.layers import create_attention
from attnviz.layers.insertion import ParallelBranch

x = torch.randn(2, 64, 14, 14)
body = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
# sum: conv(x) + non-local(x); shapes must match
added = ParallelBranch(body, create_attention("nonlocal", 64), fuse="sum")
# concat: [conv(x), gc(x)] along channels, then a 1x1 convolution to 64 channels
fused = ParallelBranch(body, create_attention("gc", 64), fuse="concat", out_channels=64)
print(added(x).shape, fused(x).shape)       # both [2, 64, 14, 14]
"""

_CORE_CODE = """\
import torch
from torch import nn
from attnviz.layers.insertion import AttentionCore

stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=4, padding=3), nn.BatchNorm2d(64), nn.ReLU())
model = nn.Sequential(
    stem,  # [B, 64, 16, 16]: 256 tokens
    AttentionCore(64, depth=2, num_heads=4),  # transformer blocks over the positions
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
)
logits = model(torch.randn(2, 3, 64, 64))   # [2, 10]
# each block's attention: model[1].blocks[i].attn.attn_softmax -> [B, 4, 256, 256]
"""

INSERTION_PATTERNS: tuple[InsertionPattern, ...] = (
    InsertionPattern(
        key="serial",
        title="Serial: after a stage",
        explanation=(
            "The attention module reweights a stage's output before the next stage sees it; "
            "`insert_after` replaces the stage by `Sequential(stage, attention)`, so the module is "
            "named `<stage>.1`. SE, ECA, CBAM, coordinate attention, GC and non-local blocks are "
            "used this way (the zoo puts them after stages 2 and 3)."
        ),
        code=_SERIAL_CODE,
    ),
    InsertionPattern(
        key="parallel",
        title="Parallel: a branch fused by sum or concatenation",
        explanation=(
            "The attention runs beside a body on the same input and the two outputs are fused, "
            "by a sum (equal shapes) or by concatenating the channels and a 1x1 convolution. A "
            "residual branch `x + f(x)` is the simplest case: the zoo adds SK, deformable "
            "convolution and DAT this way."
        ),
        code=_PARALLEL_CODE,
    ),
    InsertionPattern(
        key="core",
        title="Core: attention is the computation",
        explanation=(
            "Instead of decorating convolutions, a stack of transformer blocks (multi-head "
            "self-attention and an MLP, each with a residual) processes the feature map's "
            "positions as tokens, as in ViT or in hybrid CNN-transformers; the zoo's `mhsa` model "
            "uses two blocks as the core of stages 2 and 3."
        ),
        code=_CORE_CODE,
    ),
)
