"""Models page: every model attnviz knows, whether its pretrained weights are cached, and where they go."""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

import attnviz
from ui import require_app

_OFFLINE_HELP = """
**Getting pretrained weights onto an offline machine.** attnviz never downloads anything unless
the sidebar asks for pretrained weights, and then only through the libraries' own caches. On a
machine without internet access, copy the files in from a connected one:

- **torchvision models**: the checkpoint is a single file. Download it on a connected machine (or
  run the app there once with pretrained weights) and copy it to the path in the table, the torch
  hub cache (`$TORCH_HOME/hub/checkpoints/`).
- **timm models**: the weights live in the Hugging Face cache. On a connected machine run
  `hf download <repo>` (or open the app there once with pretrained weights), then copy the whole
  `models--timm--...` folder named in the table into the same Hugging Face cache folder here
  (`$HF_HOME/hub/`). Copying only the file is not enough: the cache also records the revision.

Restart nothing: the table and the sidebar pick the files up on the next rerun. Until then, switch
the sidebar's weights to **random** to try every architecture untrained.
"""


def _cache_folder(spec: attnviz.ModelSpec) -> str:
    """The folder to copy for ``spec``: the checkpoint's folder, or the Hugging Face repo folder."""
    path = PurePath(spec.weights_path)
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return str(parent)
    return str(path.parent)


def _rows(specs: list[attnviz.ModelSpec]) -> list[dict[str, object]]:
    """One table row per model."""
    return [
        {
            "model": spec.name,
            "source": spec.source,
            "attention": ", ".join(spec.attention) or "none (baseline)",
            "input size": f"{spec.input_size[0]}x{spec.input_size[1]}",
            "pretrained cached": spec.pretrained_available,
            "weights file": spec.weights_file,
            "goes to": spec.weights_path,
            "folder to copy": _cache_folder(spec),
            "description": spec.description,
        }
        for spec in specs
    ]


def main() -> None:
    """Draw the page."""
    st.title("Models")
    specs = attnviz.list_models()
    cached = sum(spec.pretrained_available for spec in specs)
    st.caption(f"{len(specs)} models, {cached} with pretrained weights cached on this machine.")
    st.dataframe(
        _rows(specs),
        hide_index=True,
        column_config={
            "pretrained cached": st.column_config.CheckboxColumn("pretrained cached"),
            "goes to": st.column_config.TextColumn("goes to", width="large"),
            "description": st.column_config.TextColumn("description", width="large"),
        },
    )
    st.markdown(_OFFLINE_HELP)


require_app()
main()
