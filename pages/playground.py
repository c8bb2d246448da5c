"""Playground page: put an attention module into a small network, train it live, watch its attention learn.

How state works here (the logic lives in :mod:`ui.playground` and :mod:`ui.playground_live`; this file
lays the page out):

- The choice widgets (``playground_*`` keys) describe run A and, optionally, run B (same task, budget
  and seed), with each model's parameter count and FLOPs before anything trains.
- *Train* starts run A in a background thread (:func:`attnviz.workflows.playground.start_run`,
  which enforces the server-wide cap and the budget limits); run B waits in the session's queue and
  starts when A ends. *Stop* stops the training run and drops the queue.
- While a run trains, the live part of the page is an ``st.fragment`` that reruns every
  :data:`POLL_S` seconds and draws from the runs' :class:`~attnviz.workflows.playground.RunState`
  (frozen numpy arrays); when the last run ends it reruns the whole page once, which brings the
  replay slider and *Save*.
"""

from __future__ import annotations

import streamlit as st

from ui import playground as pw
from ui import playground_live as live
from ui import require_app
from ui import settings as read_settings
from ui.maps import md, scale_control
from ui.sidebar import device_or_error

__all__ = ["POLL_S", "main"]

POLL_S = 1.5
"""Seconds between two redraws of the live view while a run trains."""

WAS_BUSY_KEY = "playground_was_busy"


def live_view(classes: int) -> None:
    """Status, curves and the snapshot strip of this session's runs."""
    pw.poll_queue()
    runs = pw.runs()
    busy = pw.busy()
    if st.session_state.get(WAS_BUSY_KEY) and not busy:
        st.session_state[WAS_BUSY_KEY] = False
        st.rerun()  # the whole page: Save and the replay slider appear
    if st.session_state.get(pw.MESSAGE_KEY):
        st.warning(md(st.session_state[pw.MESSAGE_KEY]), icon=":material/hourglass_top:")
    if not runs:
        st.info("Choose a module and where it goes, then press **Train**.")
        return
    states = {slot: run.state() for slot, run in runs.items()}
    labels = {slot: run.config.placement.text for slot, run in runs.items()}
    for slot, state in states.items():
        st.markdown(live.status_line(slot, state))
        if state.status == "running":
            st.progress(state.step / max(state.steps, 1))
        elif state.status == "failed":
            st.error(md(state.message or "The training failed; the details are in the server log."))
    for slot, _config in st.session_state.get(pw.QUEUE_KEY) or []:
        st.caption(f"**{slot}** waits: it starts when the run before it ends.")
    st.plotly_chart(live.curves_figure(states, labels, classes), key="playground_curves")
    left, _right = st.columns([1, 2])
    with left:
        mode = scale_control("playground_scale")
    live.strip(states, labels, read_settings(), mode, busy)


def main() -> None:
    """Draw the page."""
    st.title("Attention playground")
    st.caption(
        "How does attention go into a network, and what does it learn? Place a module after a stage "
        "(serial), beside a convolution (parallel) or as the stage itself (core), press Train, and watch "
        "the loss fall and the module's map move onto the object. Two choices train on the same scenes "
        "with the same budget, so that their difference is the choice."
    )
    settings = read_settings()
    device = device_or_error(settings)
    if device is None:
        return
    picked = pw.choices()
    autocast = None
    if device.startswith("cuda"):
        autocast = "bf16" if st.toggle("Mixed precision (bf16)", key="playground_autocast") else None
    planned = pw.configs(picked, device, autocast)
    busy = pw.busy()
    left, right, _rest = st.columns([1, 1, 6])
    train = left.button(
        "Train", key="playground_train", type="primary", icon=":material/play_arrow:", disabled=busy
    )
    if right.button("Stop", key="playground_stop", icon=":material/stop:", disabled=not busy):
        pw.stop()
        st.rerun()
    if train:
        pw.start(planned)
        st.rerun()  # the buttons change state: Train off, Stop on
    st.session_state[WAS_BUSY_KEY] = busy
    st.fragment(run_every=POLL_S if busy else None)(live_view)(picked.task.classes)
    pw.save_controls()
    pw.saved_models()


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
