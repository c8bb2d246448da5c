"""The model picker, grouped, and the weights each chosen model runs with.

Models are offered as pills in the groups of :data:`attnviz.backends.MODEL_GROUPS` (built-in zoo,
ImageNet CNNs, transformers, detectors); each group's help lists its models with one line each.
The comparison keeps the models in the order they were picked and holds at most :data:`MAX_MODELS`:
a pick beyond that is refused with a message that says so, instead of being dropped silently.

Weights are decided per model (:func:`weights_plan`): the zoo always runs its own trained weights,
other models their pretrained weights when these are on this machine, else random weights; a
person can ask for random weights for any chosen model. When the models run on a Ray cluster
(:mod:`ui.backend`) the groups offer only the models it serves, and each runs the pretrained weights
of the cluster (a replica without them says so in the model's column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

import attnviz
from attnviz.backends import MODEL_GROUPS, default_weights
from ui.backend import backend, ray_address
from ui.maps import md

__all__ = ["MAX_MODELS", "WeightsPlan", "group_key", "model_picker", "random_override", "weights_plan"]

MAX_MODELS = 4
"""Models compared side by side at most: beyond four, the columns get too narrow to read."""


@dataclass(frozen=True)
class WeightsPlan:
    """Which weights one model runs with, and why.

    Attributes:
        model: the model's name.
        weights: ``"pretrained"`` or ``"random"``.
        why: a short phrase for people (``"trained weights (built-in zoo)"``).
        missing: True when it runs random only because its pretrained weights are not on this machine.
    """

    model: str
    weights: str
    why: str
    missing: bool = False


def weights_plan(model: str, random: Sequence[str] = ()) -> WeightsPlan:
    """The weights ``model`` runs with: random when asked (``model in random``), else
    :func:`attnviz.backends.default_weights`."""
    spec = attnviz.get_spec(model)
    if model in random:
        return WeightsPlan(model, "random", "random weights, as asked (untrained)")
    if ray_address() is not None:
        return WeightsPlan(model, "pretrained", f"pretrained weights ({spec.trained_on}), on the Ray cluster")
    if default_weights(spec) == "random":
        return WeightsPlan(
            model, "random", "random weights: its pretrained weights are not on this machine", True
        )
    if spec.source == "attnviz":
        return WeightsPlan(model, "pretrained", "trained weights (built-in zoo, generated shapes)")
    return WeightsPlan(model, "pretrained", f"pretrained weights ({spec.trained_on})")


def group_key(prefix: str, group: str) -> str:
    """The session-state key of one group's pills."""
    return f"{prefix}_models_{group}"


def _groups() -> dict[str, list[attnviz.ModelSpec]]:
    specs = attnviz.list_models()
    if ray_address() is not None:  # only what the cluster serves
        served = backend().served() or set()
        specs = [s for s in specs if s.name in served]
    return {g: [s for s in specs if s.group == g] for g in MODEL_GROUPS}


def _on_pick(prefix: str, group: str) -> None:
    """Keep the pick order; refuse picks beyond :data:`MAX_MODELS` with a message."""
    state = st.session_state
    order: list[str] = list(state.get(prefix + "_models", []))
    picked = list(state.get(group_key(prefix, group)) or [])
    others = [m for g in MODEL_GROUPS if g != group for m in (state.get(group_key(prefix, g)) or [])]
    added = [m for m in picked if m not in order]
    refused: list[str] = []
    while added and len(others) + len(picked) > MAX_MODELS:
        refused.insert(0, added.pop())
        picked.remove(refused[0])
    if refused:
        state[group_key(prefix, group)] = picked
        state[prefix + "_cap_message"] = (
            f"A comparison holds at most {MAX_MODELS} models side by side (more columns get too narrow to "
            f"read): {', '.join(refused)} {'was' if len(refused) == 1 else 'were'} not added. Remove a model "
            "to make room."
        )
    else:
        state[prefix + "_cap_message"] = None
    chosen = set(others) | set(picked)
    state[prefix + "_models"] = [m for m in order if m in chosen] + [m for m in picked if m not in order]


def model_picker(prefix: str, default: Sequence[str]) -> list[str]:
    """Draw the grouped pills; return the chosen models in the order they were picked.

    Session state: ``<prefix>_models`` (the ordered choice), ``<prefix>_models_<group>`` (each
    group's pills), ``<prefix>_cap_message``.
    """
    state = st.session_state
    groups = _groups()
    order_key = prefix + "_models"
    if order_key not in state:
        state[order_key] = [m for m in default if any(m == s.name for g in groups.values() for s in g)]
    for group, specs in groups.items():
        key = group_key(prefix, group)
        names = [s.name for s in specs]
        if not names and ray_address() is not None:  # a Ray cluster that serves none of this group
            continue
        if key not in state:  # first visit, or the widget was not drawn on the last page
            state[key] = [m for m in state[order_key] if m in names]
        described = "\n".join(f"- **{md(s.name)}**: {md(s.description)}" for s in specs)
        st.pills(
            MODEL_GROUPS[group],
            names,
            selection_mode="multi",
            wrap=True,
            key=key,
            on_change=_on_pick,
            args=(prefix, group),
            help=f"Trained on: {specs[0].trained_on if specs else ''}.\n\n{described}",
        )
    chosen = {m for g in MODEL_GROUPS for m in (state.get(group_key(prefix, g)) or [])}
    order = [m for m in state[order_key] if m in chosen]
    order += sorted(chosen - set(order), key=[s.name for g in groups.values() for s in g].index)
    state[order_key] = order
    if state.get(prefix + "_cap_message"):
        st.warning(state[prefix + "_cap_message"], icon=":material/filter_4:")
    return order


def random_override(prefix: str, models: Sequence[str]) -> list[str]:
    """The chosen models to run with random weights instead of their own (a per-model override)."""
    key = prefix + "_random"
    if key in st.session_state:  # keep only models still chosen (a multiselect refuses unknown values)
        st.session_state[key] = [m for m in st.session_state[key] if m in models]
    return st.multiselect(
        "Run untrained (random weights)",
        list(models),
        key=key,
        placeholder="none: every model runs its trained weights where they are available",
        help="To compare a trained module with the same architecture untrained. Results from random weights "
        "carry an 'untrained' banner in their column.",
    )
