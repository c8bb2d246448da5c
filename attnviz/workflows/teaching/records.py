"""The records of the teaching content: a module's guide, its paper, and an insertion pattern.

They are built by :mod:`attnviz.workflows.teaching.loader` from the data files beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InsertionPattern", "ModuleGuide", "Paper"]


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
