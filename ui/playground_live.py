"""The Playground page's live view: status, training curves, localisation over training, snapshot strip.

Everything here is drawn from :class:`attnviz.workflows.playground.RunState` records (frozen numpy
arrays the runs publish), so the same code draws a run while it trains (polled by
``st.fragment(run_every=...)``) and replays it afterwards. Run A and run B share the figures (one
colour per run) and the strip's columns (the same probe scenes, since both runs train on the same
task), and the module maps of one quantity share one colour scale across both runs
(:func:`attnviz.core.scales.shared_scales`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import pandas  # noqa: F401  # plotly imports it lazily: first in two threads at once, the import fails
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from attnviz.core import scales as sc
from attnviz.core.scales import MapScale, Quantity, shared_scales
from attnviz.workflows.playground import RunState, Snapshot
from ui import Settings, compact
from ui.maps import boxed_map, md

__all__ = ["COLOURS", "QUANTITIES", "curves_figure", "pick_snapshot", "status_line", "strip"]

COLOURS = {"A": "#1f77b4", "B": "#d62728"}
"""One colour per run, in every figure."""

QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        sc.GATE,
        sc.GATE_PRODUCT,
        sc.PROBABILITY,
        sc.ROLLOUT,
        sc.SAMPLING_SHARE,
        sc.GRADCAM,
        sc.OFFSET_LENGTH,
    )
}
"""A snapshot's ``quantity`` (a name) -> the :class:`~attnviz.core.scales.Quantity` its scale needs."""

REPLAY_KEY = "playground_replay"


def status_line(slot: str, state: RunState) -> str:
    """``"A · training · step 120 / 600 · 850 samples/s · 14 s"``."""
    word = {"running": "training", "done": "done", "stopped": "stopped", "failed": "failed"}[state.status]
    parts = [f"**{slot}** · {word} · step {state.step} / {state.steps}"]
    if state.samples_per_s:
        parts.append(f"{state.samples_per_s:,.0f} samples/s")
    parts.append(f"{state.seconds:.0f} s")
    if len(state.accuracy):
        parts.append(f"held-out accuracy {state.accuracy[-1, 1]:.0%}")
    return " · ".join(parts)


def curves_figure(states: Mapping[str, RunState], labels: Mapping[str, str], classes: int) -> go.Figure:
    """Loss, held-out accuracy and the module's attention on the object over training, one colour per run."""
    fig = make_subplots(
        rows=1,
        cols=4,
        subplot_titles=(
            "Training loss",
            "Held-out accuracy",
            "Module map: energy in box (1 = flat)",
            "Module map: pointing game",
        ),
        horizontal_spacing=0.06,
    )
    for slot, state in states.items():
        colour, name = COLOURS[slot], f"{slot}: {labels.get(slot, slot)}"
        snaps = [s for s in state.snapshots if s.energy_ratio is not None]
        steps = [s.step for s in snaps]
        # (panel, x, y, mode, trace name): one curve per panel, the legend only on the first
        panels = (
            (1, state.losses[:, 0], state.losses[:, 1], "lines", name),
            (2, state.accuracy[:, 0], state.accuracy[:, 1], "lines+markers", name),
            (3, steps, [s.energy_ratio for s in snaps], "lines+markers", f"{slot}: energy in box"),
            (4, steps, [s.pointing for s in snaps], "lines+markers", f"{slot}: pointing game"),
        )
        for col, x, y, mode, trace in panels:
            if len(x):
                fig.add_scatter(
                    x=x, y=y, mode=mode, line={"color": colour}, name=trace, legendgroup=slot,
                    showlegend=col == 1, row=1, col=col,
                )  # fmt: skip
    fig.add_hline(
        y=1 / classes,
        line={"color": "grey", "dash": "dash"},
        row=1,
        col=2,
        annotation_text="chance",
        annotation_position="bottom right",
    )
    fig.add_hline(
        y=1,
        line={"color": "grey", "dash": "dash"},
        row=1,
        col=3,
        annotation_text="flat map",
        annotation_position="bottom right",
    )
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=3)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=4)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    return compact(fig, 320, top=30, bottom=10)


def pick_snapshot(state: RunState, step: int | None) -> Snapshot | None:
    """The last snapshot of ``state`` at or before ``step`` (the latest when ``step`` is None)."""
    if not state.snapshots:
        return None
    if step is None:
        return state.snapshots[-1]
    earlier = [s for s in state.snapshots if s.step <= step]
    return earlier[-1] if earlier else state.snapshots[0]


def _replay_step(states: Mapping[str, RunState], live: bool) -> int | None:
    """The step whose snapshots the strip shows: the latest while training, else the replay slider's."""
    steps = sorted({s.step for state in states.values() for s in state.snapshots})
    if live or len(steps) < 2:
        return None
    if st.session_state.get(REPLAY_KEY) not in steps:
        st.session_state[REPLAY_KEY] = steps[-1]
    return st.select_slider(
        "Attention over time: the snapshot at step",
        steps,
        key=REPLAY_KEY,
        help="Replay the module's attention and Grad-CAM on the probe scenes, snapshot by snapshot.",
    )


def _scales(shown: Mapping[str, Snapshot], mode: str) -> dict[Hashable, MapScale]:
    maps: dict[Hashable, tuple[np.ndarray, Quantity]] = {}
    for slot, snap in shown.items():
        for i in range(len(snap.gradcam)):
            if snap.maps is not None:
                maps[(slot, "map", i)] = (snap.maps[i], QUANTITIES.get(snap.quantity, sc.PROBABILITY))
            maps[(slot, "gradcam", i)] = (snap.gradcam[i], sc.GRADCAM)
    return shared_scales(maps, mode) if maps else {}


def strip(
    states: Mapping[str, RunState], labels: Mapping[str, str], settings: Settings, mode: str, live: bool
) -> None:
    """The probe scenes with their boxes, and per run a row of module maps and a row of Grad-CAM."""
    step = _replay_step(states, live)
    shown = {slot: snap for slot, state in states.items() if (snap := pick_snapshot(state, step)) is not None}
    if not shown:
        st.caption("The snapshot strip appears with the first snapshot.")
        return
    scales = _scales(shown, mode)
    first = next(iter(states.values()))
    n = len(first.probes)
    head = st.columns([2] + [2] * n)
    head[0].caption("Probe scenes (white: the object's box)")
    for i, col in enumerate(head[1:]):
        col.image(boxed_map(first.probes[i], tuple(int(v) for v in first.boxes[i])), width="stretch")
    for slot, snap in shown.items():
        state = states[slot]
        rows = [("map", snap.maps, "module map"), ("gradcam", snap.gradcam, "Grad-CAM of the true class")]
        for kind, values, what in rows:
            cols = st.columns([2] + [2] * n)
            if kind == "map" and snap.map_label:
                what = f"module map: {snap.map_label}"
            title = f"**{slot}** · {md(labels.get(slot, slot))}  \n{md(what)} at step {snap.step}"
            if kind == "map" and values is None:
                cols[0].markdown(title)
                cols[1].caption("This choice has no spatial attention map (a channel gate or no module).")
                continue
            cols[0].markdown(title)
            if kind == "map" and snap.energy_ratio is not None:
                cols[0].caption(
                    f"energy in box {snap.energy_ratio:.2f} (1 = flat) · pointing {snap.pointing:.0%}"
                )
            for i, col in enumerate(cols[1:]):
                scale = scales[(slot, kind, i)]
                col.image(
                    boxed_map(
                        state.probes[i],
                        tuple(int(v) for v in state.boxes[i]),
                        values[i],
                        scale,
                        cmap=settings.cmap,
                        alpha=settings.alpha,
                    ),
                    width="stretch",
                )
            scale = scales[(slot, kind, 0)]
            cols[0].caption(md("each map on its own scale (its bar)" if scale.stretched else scale.caption()))
