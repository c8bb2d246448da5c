"""Compare page: run up to four attention models on the same images and show their attention side by side.

How state works here (the logic lives in :mod:`ui.compare`; this file lays the page out):

- Inputs (uploads, a camera photo, sample photos and scenes, the grouped model pills of
  :mod:`ui.picker`, the per-model random-weights override) are ordinary widgets with ``compare_*``
  keys; changing them only reruns this script, which re-renders from stored results. Models run only
  when the **Run** button is pressed.
- Weights are decided per model (:func:`ui.picker.weights_plan`): the zoo's own trained weights,
  cached pretrained weights, else random, or random on request. Models come from
  :func:`ui.cached_model`, shared by every session and keyed by ``(name, weights, device)``;
  :func:`attnviz.analyze` holds the model's own lock while it runs.
- Results are :class:`attnviz.Analysis` records (frozen dataclasses of numpy arrays, no tensors) in
  ``st.session_state["compare_results"]``, keyed by ``(image key, model, weights, device)``; the
  image key is a digest of the uploaded bytes. Per-model failures are kept next to them, so an
  error stays in its model's column until a later run of that model succeeds.
- Everything drawn is a pure function of the stored results, the page's colour scale and the
  sidebar's overlay settings. The columns are drawn one row per panel kind (header, notices,
  predictions, Grad-CAM, block choice, block maps, channel weights, expanders), so panels of the same
  kind line up; maps of one quantity share one colour scale across the columns. File downloads are
  generated only when their button is clicked.
"""

from __future__ import annotations

import streamlit as st

from ui import Settings, require_app, store
from ui import settings as read_settings
from ui.compare.columns import draw_columns
from ui.compare.deformable import deformable_views
from ui.compare.downloads import download_everything
from ui.compare.faithfulness import faithfulness_section
from ui.compare.gradcam import add_gradcams
from ui.compare.inputs import image_inputs, model_controls
from ui.compare.runs import run
from ui.compare.state import (
    IMAGE_KEY,
    LAST_RUN_KEY,
    RESULTS_KEY,
    SCALE_KEY,
    SORT_KEY,
    RunConfig,
    same_run,
)
from ui.compare.transformer import transformer_views
from ui.maps import md, scale_control
from ui.sidebar import device_or_error

__all__ = ["main", "results"]


def results(config: RunConfig, settings: Settings) -> None:
    """Draw the last run's results: image picker, page controls, one column per model, the sections
    below them (transformer, deformable, faithfulness), the ZIP."""
    if not config.images or not config.models:
        return
    by_key = {ref.key: ref for ref in config.images}
    left, middle, right = st.columns([3, 2, 1], vertical_alignment="bottom")
    with left:
        if len(config.images) > 1:
            picked = st.selectbox(
                "Image", list(by_key), format_func=lambda key: by_key[key].label, key=IMAGE_KEY
            )
            image = by_key.get(picked, config.images[0])
        else:
            image = config.images[0]
            st.markdown(f"**Image**: {md(image.label)}")
    with middle:
        mode = scale_control(SCALE_KEY)
    with right:
        sort = st.toggle("Sort channels", key=SORT_KEY, help="Order the channel bars by weight.")

    slots = draw_columns(config, image, settings, mode, sort)
    add_gradcams(config, image, slots, settings, mode)
    stored: dict = store(RESULTS_KEY)
    analyses = {m: stored.get(config.result_key(image, m)) for m in config.models}
    transformer_views(config, image, analyses, settings, mode)
    deformable_views(analyses, settings, mode)
    faithfulness_section(config, image)
    download_everything(config, settings, mode)


def main() -> None:
    """Draw the page."""
    st.title("Compare attention")
    st.caption(
        "What do the attention modules look at? Choose images and up to four models, then press Run. "
        "Grad-CAM is the baseline; the block maps come from the models' own attention modules, each with "
        "its colour bar."
    )
    settings = read_settings()
    inputs, controls = st.columns([1, 1], gap="large")
    with inputs:
        refs, decoded = image_inputs()
    with controls:
        plans, pressed = model_controls(refs)

    device = device_or_error(settings)
    if device is None:
        return
    models = [p.model for p in plans]
    current = RunConfig(tuple(refs), tuple(models), tuple(p.weights for p in plans), device)
    if pressed:
        run(current, decoded)
        st.session_state[LAST_RUN_KEY] = current

    last: RunConfig | None = st.session_state.get(LAST_RUN_KEY)
    if last is None:
        if not refs:
            st.info("Upload an image or pick a sample photo.")
        elif not models:
            st.info("Choose at least one model.")
        else:
            st.info("Press **Run** to analyse the chosen images.")
        return
    if not same_run(last, current):
        st.info("The inputs or settings changed since the last run: press **Run** to update the results.")
    results(last, settings)


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
