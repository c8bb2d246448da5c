"""Scene lab: compose a generated scene and see where every zoo model's attention goes.

How it works (the logic lives in :mod:`ui.scene`; this file lays the page out):

- The controls (``scene_*`` keys) describe a :class:`attnviz.workflows.scenes.SceneParams` at the zoo's input
  size (96 px), so the image the models see is the scene itself and the true box needs no
  rescaling. Every change reruns the page: the zoo models are small, so all of them run at once
  (no Run button).
- The zoo models always run their own trained weights (``assets/zoo/``): the scenes are what they
  were trained on. Models come from :func:`ui.cached_model`, an ``st.cache_resource`` shared by
  every session and keyed by ``(name, weights, device)``; :func:`attnviz.analyze` holds the model's
  lock while it runs.
- Results are :class:`attnviz.Analysis` records in ``st.session_state["scene_results"]``, keyed by
  ``(model, device, scene)``, so moving the block choice, the colour scale or the overlay settings
  only re-renders. Models that cannot load keep their message in ``scene_failures``.
- Each overlay carries the true box, its colour bar (maps of one quantity share one scale across
  the models, :mod:`attnviz.core.scales`) and its localisation on this one scene
  (:func:`attnviz.views.localisation.score_maps` with n = 1): the energy in the box, its ratio to the
  box's share of the image, and whether the map's maximum falls inside the box (pointing game).
  Each model opens on its best block according to its card.
"""

from __future__ import annotations

import streamlit as st

import attnviz
from attnviz.layers.zoo_net import INPUT_SIZE, ZOO_KINDS, zoo_name
from attnviz.workflows.scenes import make_scene
from ui import require_app
from ui import settings as read_settings
from ui.maps import boxed_map, scale_control
from ui.scene import (
    BLOCK_CHOICES,
    BLOCKS_KEY,
    GRADCAM_KEY,
    SCALE_KEY,
    controls,
    draw_grid,
    map_scales,
    run_all,
    score_table,
    shown_maps,
    stored,
)
from ui.sidebar import device_or_error


def main() -> None:
    """Draw the page."""
    st.title("Scene lab")
    st.caption(
        "Place a shape, add clutter, and see where each zoo model looks. Every model was trained on "
        "such scenes, so the true box (white) says where its attention should go."
    )
    settings = read_settings()
    device = device_or_error(settings)
    if device is None:
        return

    left, preview = st.columns([2, 1])
    with left:
        params, seed = controls()
    try:
        scene = make_scene(seed, params)
    except ValueError as err:
        st.error(str(err))
        return
    with preview:
        st.image(
            boxed_map(scene.image, scene.box),
            caption=f"{scene.class_name}, box (y0, x0, y1, x1) = {scene.box} on {INPUT_SIZE}x{INPUT_SIZE} px",
            width="stretch",
        )

    st.caption("Every zoo model runs its own trained weights (`assets/zoo/`), trained on such scenes.")
    left, middle, right = st.columns([3, 2, 1], vertical_alignment="bottom")
    with left:
        which = st.radio(
            "Attention block",
            BLOCK_CHOICES,
            horizontal=True,
            key=BLOCKS_KEY,
            help="Which attention block's map to show per model: the one its card says finds the object "
            "best on held-out scenes (best), the first, the deepest (last), or all.",
        )
    with middle:
        mode = scale_control(SCALE_KEY)
    with right:
        gradcam = st.toggle("Grad-CAM", value=True, key=GRADCAM_KEY, help="Add each model's Grad-CAM map.")

    # the zoo, then the models people trained in the Playground (the same scenes, the same input size)
    mine = [s.name for s in attnviz.list_models() if s.group == "user"]
    models = [zoo_name(kind) for kind in ZOO_KINDS] + mine
    run_all(models, scene, device)
    analyses, failures = stored(models, scene, device)
    shown = shown_maps(analyses, which, gradcam)
    draw_grid(models, analyses, failures, scene, settings, shown, map_scales(shown, mode))
    done = {m: a for m, a in analyses.items() if a is not None}
    if done:
        with st.expander("Every map's score on this scene"):
            st.dataframe(
                score_table(done, scene),
                hide_index=True,
                column_config={
                    "energy in box": st.column_config.NumberColumn(format="percent"),
                    "energy ratio": st.column_config.NumberColumn(format="%.2f"),
                },
            )
            st.caption(
                "Energy in box: the map's share of its total mass inside the true box. Energy ratio: "
                "that share divided by the box's share of the image (1 = a uniform map). Pointing: "
                "the map's maximum falls inside the box."
            )


if __name__ in {"__main__", "__page__"}:
    require_app()
    main()
