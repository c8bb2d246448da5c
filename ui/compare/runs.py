"""Running the Compare page's models: a run when **Run** is pressed, and fetching pretrained weights.

A run analyses, one model at a time, every image that has no stored result yet, with the native
maps only (one forward); each classifier's results are marked as waiting for their Grad-CAM
baseline (:data:`ui.compare.state.PENDING_CAM_KEY`), which :func:`ui.compare.gradcam.add_gradcams`
adds once the columns are drawn. A model that fails keeps its :class:`ui.runner.Failure` in the
session until a later run of it succeeds.
"""

from __future__ import annotations

import logging

import streamlit as st
from PIL import Image

import attnviz
from ui import cached_model, store
from ui.compare.inputs import decode_all
from ui.compare.state import (
    DOWNLOADED_KEY,
    FAILURES_KEY,
    MAX_STORED,
    MAX_STORED_BYTES,
    PENDING_CAM_KEY,
    RESULTS_KEY,
    RunConfig,
    trim,
    trim_bytes,
)
from ui.runner import Failure, attempt, run_model, show_failure

__all__ = ["download_weights", "run"]

log = logging.getLogger("attnviz.app.compare")


def run(config: RunConfig, decoded: dict[str, Image.Image]) -> None:
    """Analyse every image of ``config`` that has no stored result yet, one model at a time."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    pending: dict = store(PENDING_CAM_KEY)
    todo = {
        model: [ref for ref in config.images if config.result_key(ref, model) not in results]
        for model in config.models
    }
    needed = [ref for ref in config.images if any(ref in refs for refs in todo.values())]
    images, broken = decode_all(needed, decoded)
    todo = {model: [ref for ref in refs if ref not in broken] for model, refs in todo.items()}
    n = len(config.models)
    with st.status(f"Analysing {len(config.images)} image(s) with {n} model(s)", expanded=True) as status:
        bar = st.progress(0.0, text="Starting")
        failed = 0
        for i, model in enumerate(config.models):
            missing = todo[model]
            if not missing:
                st.write(f"{model}: nothing new to analyse.")
                continue

            def progress(message: str, fraction: float | None, i: int = i) -> None:
                # Loading is the first half of each model's share of the bar, analysing the second.
                bar.progress(min(1.0, (i + 0.5 * (fraction or 0.0)) / n), text=message)

            def loaded(i: int = i, model: str = model, count: int = len(missing)) -> None:
                bar.progress((i + 0.5) / n, text=f"Analysing {count} image(s) with {model}")

            # Native maps first (one forward); Grad-CAM (a forward and a backward more) is added
            # once the columns are drawn, so the page shows the modules' own maps sooner.
            analyses = run_model(
                model,
                config.weights_of(model),
                config.device,
                [images[ref.key] for ref in missing],
                log,
                "analysing images with {model}",
                progress=progress,
                on_loaded=loaded,
                gradcam=False,
            )
            if isinstance(analyses, Failure):
                failures[config.model_key(model)] = analyses
                st.write(f"{model}: failed.")
                failed += 1
                continue
            failures.pop(config.model_key(model), None)
            for ref, analysis in zip(missing, analyses, strict=True):
                # attention probabilities kept as float16: half the memory, the same pictures
                results[config.result_key(ref, model)] = attnviz.compact(analysis)
                if analysis.top5:  # a classifier: Grad-CAM follows
                    pending[config.result_key(ref, model)] = images[ref.key]
            st.write(f"{model}: {len(missing)} image(s) analysed.")
        bar.progress(1.0, text="Done")
        label = f"Done: {n - failed} of {n} model(s) ran" if failed else "Done"
        status.update(label=label, state="error" if failed == n else "complete", expanded=False)
    keep = [config.result_key(ref, m) for ref in config.images for m in config.models]
    trim(results, MAX_STORED, keep=keep)
    trim_bytes(results, MAX_STORED_BYTES, keep=keep)


def download_weights(model: str, device: str) -> None:
    """Fetch a model's pretrained weights through its library's hub, with progress (a button)."""
    bar = st.progress(0.0, text=f"Getting the pretrained weights of {model}")

    def progress(message: str, fraction: float | None) -> None:
        bar.progress(min(1.0, fraction or 0.0), text=message)

    outcome = attempt(
        model,
        lambda: cached_model(model, "pretrained", device, progress),
        log,
        "getting the pretrained weights of {model}",
    )
    bar.empty()
    if isinstance(outcome, Failure):
        show_failure(model, outcome)
        return
    st.session_state[DOWNLOADED_KEY] = model
    st.rerun()
