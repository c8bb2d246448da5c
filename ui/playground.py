"""The Playground page's controls and runs: choose where attention goes, train, stop, save.

A person chooses one placement of an attention module (run A) and, optionally, a second one (run B);
both train on the same task with the same budget and seed, so that their curves and attention
snapshots differ only by that choice. *Train* starts run A with
:func:`attnviz.workflows.playground.start_run` (a background thread, bounded server-side); run B
waits in this session's queue and starts when A ends, because the server runs a limited number of
trainings at a time (one on a CPU-only server). The page polls the runs (:mod:`ui.playground_live`).

Session state (keys ``playground_*``): the widgets, :data:`RUNS_KEY` (slot -> the session's
:class:`~attnviz.workflows.playground.PlaygroundRun`, which owns its thread and, once done, its
trained model: the only model this page keeps, one per slot, replaced by the next *Train*),
:data:`QUEUE_KEY` (slots waiting for a training slot, with their configs), :data:`MESSAGE_KEY` (why
the last start was refused).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import streamlit as st

import attnviz
from attnviz.backends.user_models import delete_user_model, list_user_models, save_user_model, user_models_dir
from attnviz.layers.playground_net import FUSIONS, PATTERNS, STAGES, Placement, attention_kinds
from attnviz.workflows import playground as pg
from attnviz.workflows.training import TrainSettings
from ui.maps import error_with_details, md

__all__ = [
    "MESSAGE_KEY",
    "QUEUE_KEY",
    "RUNS_KEY",
    "SLOTS",
    "Choices",
    "busy",
    "card_for",
    "choices",
    "configs",
    "cost_line",
    "poll_queue",
    "save_controls",
    "saved_models",
    "start",
    "stop",
]

log = logging.getLogger(__name__)

SLOTS = ("A", "B")
RUNS_KEY = "playground_runs"
QUEUE_KEY = "playground_queue"
MESSAGE_KEY = "playground_message"
SECOND_KEY = "playground_second"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

KIND_HELP = {
    "none": "no attention: the plain backbone, the baseline every module is compared with",
    "se": "Squeeze-and-Excitation: one gate per channel (no spatial map)",
    "eca": "Efficient Channel Attention: channel gates from a 1-D convolution (no spatial map)",
    "cbam": "CBAM: channel gates, then a spatial gate over positions",
    "ca": "Coordinate Attention: row and column gates",
    "gc": "Global Context: one softmax map pools the context added to every position",
    "sk": "Selective Kernel: a softmax choice between two kernel sizes per channel",
    "nonlocal": "Non-local block: every position attends to every other (softmax)",
    "mhsa": "multi-head self-attention over the positions",
    "dat": "Deformable Attention Transformer: attention at learned, shifted sampling points",
    "deform": "deformable convolution v2: learned offsets and modulation",
}
PATTERN_HELP = (
    "serial: the module reweights the stage's output. parallel: an attention branch runs beside a "
    "convolution and the two are fused (sum or concatenation + 1x1 convolution). core: the stage's "
    "second convolution is replaced by blocks of self-attention."
)


@dataclass(frozen=True)
class Choices:
    """What the widgets ask for: one or two placements, the task, the budget."""

    placements: tuple[Placement, ...]
    task: pg.Task
    train: TrainSettings


def _placement(slot: str, default_kind: str, default_stage: int) -> Placement:
    """One slot's placement widgets (module, pattern, stage, fusion or depth and heads)."""
    key = f"playground_{slot.lower()}_"
    pattern = st.segmented_control(
        "Pattern", PATTERNS, default="serial", key=key + "pattern", help=PATTERN_HELP
    )
    pattern = pattern or "serial"
    left, right = st.columns(2)
    with left:
        if pattern == "core":
            kinds = ("mhsa", "none")
            label = "Core"
        else:
            kinds = attention_kinds()
            label = "Module"
        kind = st.selectbox(
            label,
            kinds,
            index=kinds.index(default_kind) if default_kind in kinds else 0,
            key=key + ("core_kind" if pattern == "core" else "kind"),
            format_func=lambda k: f"{k}: {KIND_HELP.get(k, '')}",
        )
    with right:
        stage = st.segmented_control(
            "Stage",
            list(STAGES),
            default=default_stage,
            key=key + "stage",
            format_func=lambda s: f"{s} ({96 // STAGES[s][1]}x{96 // STAGES[s][1]} cells)",
            help="Where the module goes: after stage 2 (12x12 positions) or stage 3 (6x6).",
        )
    fuse, depth, heads = "sum", 2, 4
    if pattern == "parallel":
        fuse = st.segmented_control("Fusion", FUSIONS, default="sum", key=key + "fuse") or "sum"
    elif pattern == "core":
        left, right = st.columns(2)
        depth = left.slider("Depth (blocks)", 1, 4, 2, key=key + "depth")
        heads = right.select_slider("Heads", [1, 2, 4, 8], value=4, key=key + "heads")
    return Placement(
        kind=kind, pattern=pattern, stage=int(stage or default_stage), fuse=fuse, depth=depth, heads=heads
    )


def _task_and_budget() -> tuple[pg.Task, TrainSettings]:
    """The task and budget widgets, shared by both runs."""
    task, budget = pg.Task(), TrainSettings()
    limits = pg.LIMITS
    left, right = st.columns(2)
    with left:
        st.markdown("**Task**: generated scenes, one shape per scene")
        classes = st.slider("Classes", 2, 10, task.classes, key="playground_classes")
        clutter = st.slider("Clutter", 0.0, 1.0, float(task.clutter), 0.05, key="playground_clutter")
        size = st.slider(
            "Object size (fraction of the image side)",
            0.1,
            0.3,
            float(task.object_size),
            0.01,
            key="playground_object_size",
        )
    with right:
        st.markdown("**Budget**")
        steps = st.number_input("Steps", 1, int(limits["steps"]), budget.steps, 50, key="playground_steps")
        batch = st.select_slider(
            "Batch size",
            [b for b in (8, 16, 32, 64, 128, 256) if b <= limits["batch_size"]],
            value=budget.batch_size,
            key="playground_batch",
        )
        lr = st.select_slider(
            "Learning rate",
            sorted({3e-4, 1e-3, 2e-3, 3e-3, 1e-2, budget.lr}),  # the default always among them
            value=budget.lr,
            key="playground_lr",
            format_func=lambda v: f"{v:g}",
        )
        sizes = [n for n in (500, 1000, 2000, 4000, 8000, 20000) if n <= limits["n_train"]]
        n_train = st.select_slider(
            "Training scenes",
            sorted({*sizes, task.n_train}),
            value=task.n_train,
            key="playground_n_train",
            help="Generated once per run; more scenes take longer to make but overfit less.",
        )
        seed = st.number_input(
            "Seed",
            0,
            10_000,
            budget.seed,
            key="playground_seed",
            help="The initial weights and the order of the batches; the scenes are the same for every seed.",
        )
    task = pg.Task(
        classes=int(classes),
        clutter=float(clutter),
        object_size=float(size),
        n_train=int(n_train),
        seed=task.seed,
    )
    budget = TrainSettings(steps=int(steps), batch_size=int(batch), lr=float(lr), seed=int(seed))
    return task, budget


def choices() -> Choices:
    """Draw the choice widgets: run A, run B when asked for, the task and the budget."""
    second = st.toggle(
        "Compare two choices (A and B)",
        key=SECOND_KEY,
        help="Run B trains after run A on the same scenes, with the same budget and seed; the curves are "
        "overlaid and the snapshot strips aligned.",
    )
    columns = st.columns(2 if second else 1, gap="large")
    placements = []
    # run A opens on the bench's default run (a module whose map learns to find the object), B on CBAM
    default = pg.default_config().placement
    for slot, col, kind in zip(SLOTS, columns, (default.kind, "cbam"), strict=False):
        with col:
            st.markdown(f"**Run {slot}**")
            placement = _placement(slot, kind, default.stage)
            st.caption(md(cost_line(placement)))
            placements.append(placement)
    with st.expander("Task and budget (shared by the runs)", expanded=False):
        task, budget = _task_and_budget()
    return Choices(tuple(placements), task, budget)


@functools.lru_cache(maxsize=256)
def _cost(placement: Placement, classes: int) -> tuple[int, int]:
    return pg.model_cost(placement, classes)


def cost_line(placement: Placement, classes: int = 10) -> str:
    """``"CBAM, serial at stage 3 · 81,234 parameters · 22.1 MFLOPs per 96 px image"``."""
    params, flops = _cost(placement, classes)
    return f"{placement.text} · {params:,} parameters · {flops / 1e6:.1f} MFLOPs per 96 px image"


def configs(picked: Choices, device: str, autocast: str | None) -> dict[str, pg.PlaygroundConfig]:
    """slot -> the run's config (validated by the library, whatever the widgets sent)."""
    return {
        slot: pg.PlaygroundConfig(
            placement=p, task=picked.task, train=picked.train, device=device, autocast=autocast
        )
        for slot, p in zip(SLOTS, picked.placements, strict=False)
    }


def runs() -> dict[str, pg.PlaygroundRun]:
    """This session's runs, slot -> run (the last one started in each slot)."""
    return st.session_state.setdefault(RUNS_KEY, {})


def busy() -> bool:
    """True while one of this session's runs trains or waits in the queue."""
    active = any(r.state().status == "running" for r in runs().values())
    return active or bool(st.session_state.get(QUEUE_KEY))


def _start_one(slot: str, config: pg.PlaygroundConfig) -> bool:
    """Start ``slot``'s run; False (and the reason in :data:`MESSAGE_KEY`) when the server is busy."""
    try:
        runs()[slot] = pg.start_run(config)
    except pg.PlaygroundBusy as err:
        st.session_state[MESSAGE_KEY] = str(err)
        return False
    st.session_state[MESSAGE_KEY] = None
    return True


def start(planned: dict[str, pg.PlaygroundConfig]) -> None:
    """Forget the previous runs and start run A; run B waits in the queue until A ends."""
    if busy():
        return
    st.session_state[RUNS_KEY] = {}
    st.session_state[QUEUE_KEY] = []
    st.session_state.pop("playground_replay", None)
    first, *rest = planned.items()
    if _start_one(*first):
        st.session_state[QUEUE_KEY] = list(rest)


def poll_queue() -> None:
    """Start the next queued run once none of this session's runs is training."""
    queue = st.session_state.get(QUEUE_KEY) or []
    if not queue or any(r.state().status == "running" for r in runs().values()):
        return
    slot, config = queue[0]
    if _start_one(slot, config):
        st.session_state[QUEUE_KEY] = queue[1:]


def stop() -> None:
    """Stop the running run and drop the queued ones (the stopped run keeps what it recorded)."""
    st.session_state[QUEUE_KEY] = []
    for run in runs().values():
        run.stop()


def card_for(config: pg.PlaygroundConfig, state: pg.RunState) -> dict:
    """The card a saved model carries: its config, training curve and last localisation figures."""
    last = state.snapshots[-1] if state.snapshots else None
    return {
        "placement": dict(vars(config.placement)),
        "classes": config.task.classes,
        "task": dict(vars(config.task)),
        "train": dict(vars(config.train)),
        "curve": {
            "steps": [int(s) for s in state.losses[:, 0]],
            "loss": [float(v) for v in state.losses[:, 1]],
            "accuracy_steps": [int(s) for s in state.accuracy[:, 0]],
            "accuracy": [float(v) for v in state.accuracy[:, 1]],
        },
        "accuracy": float(state.accuracy[-1, 1]) if len(state.accuracy) else None,
        "localisation": {
            "energy_ratio": None if last is None else last.energy_ratio,
            "pointing": None if last is None else last.pointing,
            "at_step": None if last is None else last.step,
        },
    }


def save_controls() -> None:
    """A name field and *Save* for each finished run (a stopped run is not offered: no half-trained model)."""
    done = {slot: r for slot, r in runs().items() if r.state().status == "done" and r.model is not None}
    if not done:
        return
    st.markdown("**Keep a trained model**")
    left, middle, right = st.columns([1, 2, 1], vertical_alignment="bottom")
    slot = left.segmented_control("Run", list(done), default=next(iter(done)), key="playground_save_slot")
    name = middle.text_input(
        "Name",
        key="playground_save_name",
        max_chars=40,
        placeholder="e.g. cbam-parallel-sum",
        help="Lower-case letters, digits, - and _ (up to 40, starting with a letter or digit). The model "
        "appears in Compare and the Scene lab as user_<name>.",
    )
    pressed = right.button("Save", key="playground_save", icon=":material/save:")
    if not pressed:
        return
    run = done.get(slot or "")
    if run is None:
        st.warning("Choose the run to save.")
    elif not NAME_PATTERN.fullmatch(name or ""):
        st.warning("A name is 1 to 40 lower-case letters, digits, - or _, starting with a letter or digit.")
    else:
        try:
            path = save_user_model(name, run.model, card_for(run.config, run.state()))
        except (ValueError, TypeError, OSError, attnviz.AttnvizError) as err:
            st.warning(md(str(err)))
        else:
            log.info("saved playground model %s to %s", name, path)
            st.success(
                md(f"Saved as user_{name}: pick it in Compare (group 'Your models') or the Scene lab.")
            )


def saved_models() -> None:
    """The saved models, each with its accuracy and a *Delete* button."""
    models = list_user_models()
    with st.expander(f"Your saved models ({len(models)})", expanded=False):
        st.caption(md(f"Kept in {user_models_dir()} on the server."))
        if not models:
            st.caption("None yet: train a model, then save it.")
        for m in models:
            left, right = st.columns([5, 1], vertical_alignment="center")
            accuracy = "" if m.accuracy is None else f" · held-out accuracy {m.accuracy:.0%}"
            problem = f" · cannot be used: {m.problem}" if m.problem else ""
            left.markdown(md(f"{m.model_name} · {m.placement}{accuracy} · saved {m.created}{problem}"))
            if right.button("Delete", key=f"playground_delete_{m.name}", icon=":material/delete:"):
                try:
                    delete_user_model(m.name)
                except (ValueError, OSError, attnviz.AttnvizError) as err:
                    error_with_details(f"Could not delete {m.name}.", (str(err),))
                else:
                    st.rerun()
