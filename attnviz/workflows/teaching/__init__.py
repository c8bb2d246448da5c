"""Teaching material for attnviz's attention modules: what each computes, how attnviz reads it, its cost.

* :data:`MODULE_GUIDE`: one :class:`ModuleGuide` per kind of :data:`attnviz.layers.ATTENTION_REGISTRY`
  (paper, formula in LaTeX, a data-flow graph in Graphviz DOT, what the module computes, what its
  heat map means in attnviz, and the zoo model that uses it).
* :func:`module_cost`: parameters and FLOPs of ``create_attention(kind, channels)`` on one
  ``[1, C, H, W]`` feature map, counted by ``torch.utils.flop_counter.FlopCounterMode`` (the FLOP
  convention is in :mod:`.cost`).
* :data:`INSERTION_PATTERNS`: the three ways of adding attention to a backbone (serial after a
  stage, parallel branch, attention as the core), each with a runnable snippet that uses
  :mod:`attnviz.layers.insertion`.

Owns the records (:mod:`.records`), the cost counter (:mod:`.cost`), and the content: TOML files
beside the code (``guides/<kind>.toml``, ``diagrams.toml``, ``insertion_patterns.toml``; their
format is in ``README.md``), read and checked once by :mod:`.loader`. It may import
:mod:`attnviz.layers` (the registry, ``create_attention``, the zoo's model names), torch and
torchvision; nothing here imports streamlit: the Modules page renders it (``st.latex``,
``st.graphviz_chart``).
"""

from __future__ import annotations

from attnviz.workflows.teaching.cost import (
    analytic_flop_ops,
    deform_conv2d_flops,
    flops_text,
    grid_sample_flops,
    module_cost,
)
from attnviz.workflows.teaching.loader import load_insertion_patterns, load_module_guides
from attnviz.workflows.teaching.records import InsertionPattern, ModuleGuide, Paper

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

#: Attention kind -> its guide, in the registry's order.
MODULE_GUIDE: dict[str, ModuleGuide] = load_module_guides()

#: The three ways of adding attention to a backbone: serial, parallel, core.
INSERTION_PATTERNS: tuple[InsertionPattern, ...] = load_insertion_patterns()
