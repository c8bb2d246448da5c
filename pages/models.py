"""Models page: every model attnviz knows, whether its pretrained weights are cached, and where they go."""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

import attnviz
from attnviz.backends import MODEL_GROUPS
from ui import require_app

_OFFLINE_HELP = """
**Getting pretrained weights onto an offline machine.** attnviz never downloads anything unless
someone asks for it (the Compare page's **Download pretrained weights**, or the command line's
`--weights pretrained`), and then only through the libraries' own caches. On a machine without
internet access, copy the files in from a connected one:

- **torchvision models**: the checkpoint is a single file. Download it on a connected machine (or
  run the app there once with pretrained weights) and copy it to the path in the table, the torch
  hub cache (`$TORCH_HOME/hub/checkpoints/`).
- **timm models**: the weights live in the Hugging Face cache. On a connected machine run
  `hf download <repo>` (or open the app there once with pretrained weights), then copy the whole
  `models--timm--...` folder named in the table into the same Hugging Face cache folder here
  (`$HF_HOME/hub/`). Copying only the file is not enough: the cache also records the revision.

Restart nothing: the tables and the Compare page pick the files up on the next rerun. Until then,
those models run untrained (random weights), and their columns say so. On a connected machine,
the Compare page's **Download pretrained weights** button fetches them with progress.
"""


def _cache_folder(spec: attnviz.ModelSpec) -> str:
    """The folder to copy for ``spec``: the checkpoint's folder, or the Hugging Face repo folder."""
    path = PurePath(spec.weights_path)
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return str(parent)
    return str(path.parent)


# Short group names for the table (the Compare page's picker shows MODEL_GROUPS' headings).
_GROUP = {"zoo": "zoo", "cnn": "CNN", "transformer": "transformer", "detector": "detector"}


def _rows(specs: list[attnviz.ModelSpec]) -> list[dict[str, object]]:
    """One row per model: what it is."""
    return [
        {
            "model": spec.name,
            "group": _GROUP.get(spec.group, MODEL_GROUPS.get(spec.group, spec.group)),
            "attention": ", ".join(spec.attention) or "none (baseline)",
            "description": spec.description,
            "input": f"{spec.input_size[0]}x{spec.input_size[1]}",
            "trained on": spec.trained_on,
            "weights here": spec.source == "attnviz" or spec.pretrained_available,
        }
        for spec in specs
    ]


def _weight_rows(specs: list[attnviz.ModelSpec]) -> list[dict[str, object]]:
    """One row per model whose pretrained weights come from elsewhere: the file and where it goes."""
    return [
        {
            "model": spec.name,
            "on this machine": spec.pretrained_available,
            "weights file": spec.weights_file,
            "folder to copy": _cache_folder(spec),
            "goes to": spec.weights_path,
        }
        for spec in specs
        if spec.source != "attnviz"
    ]


def main() -> None:
    """Draw the page."""
    st.title("Models")
    specs = attnviz.list_models()
    cached = sum(spec.pretrained_available for spec in specs if spec.source != "attnviz")
    zoo = sum(spec.source == "attnviz" for spec in specs)
    st.caption(
        f"{len(specs)} models: {zoo} in the built-in zoo (their trained weights ship with attnviz) and "
        f"{len(specs) - zoo} with pretrained weights from their libraries, {cached} of them on this machine. "
        "Without its weights a model runs untrained (random weights), and its results say so."
    )
    st.dataframe(
        _rows(specs),
        hide_index=True,
        width="stretch",
        height="content",
        column_config={
            "model": st.column_config.TextColumn("model", width="medium", pinned=True),
            "group": st.column_config.TextColumn("group", width="small"),
            "attention": st.column_config.TextColumn("attention", width="small"),
            "description": st.column_config.TextColumn(
                "description", width="large", help="The attention module and where it sits."
            ),
            "input": st.column_config.TextColumn("input", width="small"),
            "trained on": st.column_config.TextColumn("trained on", width="small"),
            "weights here": st.column_config.CheckboxColumn(
                "weights here", help="Its trained or pretrained weights are on this machine."
            ),
        },
    )
    st.subheader("Where pretrained weights go")
    st.dataframe(
        _weight_rows(specs),
        hide_index=True,
        width="stretch",
        height="content",
        column_config={
            "model": st.column_config.TextColumn("model", width="medium", pinned=True),
            "on this machine": st.column_config.CheckboxColumn("on this machine"),
            "weights file": st.column_config.TextColumn("weights file", width="small"),
            "folder to copy": st.column_config.TextColumn("folder to copy", width="medium"),
            "goes to": st.column_config.TextColumn("goes to", width="large"),
        },
    )
    st.markdown(_OFFLINE_HELP)


require_app()
main()
