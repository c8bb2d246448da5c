"""The Scene lab's logic (``pages/scene.py`` lays the page out): the scene controls, running every
zoo model on the scene, and the grid of their maps with the true box and localisation scores.

- The controls (``scene_*`` keys) describe a :class:`attnviz.workflows.scenes.SceneParams` at the zoo's
  input size (96 px), so the image the models see is the scene itself and the true box needs no
  rescaling.
- Results are :class:`attnviz.Analysis` records in ``st.session_state["scene_results"]``, keyed by
  ``(model, device, scene)``, so moving the block choice, the colour scale or the overlay settings
  only re-renders. Models that cannot load keep their :class:`ui.runner.Failure` in ``scene_failures``.
- Each overlay carries the true box, its colour bar (maps of one quantity share one scale across
  the models, :mod:`attnviz.core.scales`) and its localisation on this one scene
  (:func:`attnviz.views.localisation.score_maps` with n = 1): the energy in the box, its ratio to the
  box's share of the image, and whether the map's maximum falls inside the box (pointing game).
- Under each zoo model's prediction, its card's figures on the held-out scenes (:func:`card_figures`):
  the best block's localisation and the faithfulness (deletion and insertion AUCs, ROAD) of that
  block's map, of Grad-CAM and of a random map (the floor).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import numpy as np
import streamlit as st

import attnviz
from attnviz.backends.zoo import best_block, read_card
from attnviz.core.scales import MapScale, Quantity, shared_scales
from attnviz.layers.zoo_net import INPUT_SIZE, ZOO_KINDS, zoo_name
from attnviz.views.localisation import score_maps
from attnviz.views.maps import AttentionMap, attention_maps
from attnviz.workflows.scenes import CLASSES, Scene, SceneParams
from ui import Settings, store
from ui.maps import boxed_map, md
from ui.runner import Failure, run_model, show_failure

__all__ = [
    "BLOCK_CHOICES",
    "card_figures",
    "controls",
    "draw_grid",
    "map_caption",
    "map_scales",
    "pick_maps",
    "run_all",
    "scene_key",
    "score_table",
    "shown_maps",
    "stored",
]

log = logging.getLogger("attnviz.app.scene")

# Columns per row of the model grid.
PER_ROW = 4

# Analyses kept per session (11 models per scene).
MAX_STORED = 132

BLOCK_CHOICES = ("best", "first", "last", "all")

# The zoo's own trained weights: the scenes are what these models were trained on.
WEIGHTS = "pretrained"

CLASS_KEY = "scene_class"
X_KEY = "scene_x"
Y_KEY = "scene_y"
SIZE_KEY = "scene_size"
CLUTTER_KEY = "scene_clutter"
ROTATION_KEY = "scene_rotation"
SEED_KEY = "scene_seed"
BLOCKS_KEY = "scene_blocks"
GRADCAM_KEY = "scene_gradcam"
SCALE_KEY = "scene_scale"
RESULTS_KEY = "scene_results"
FAILURES_KEY = "scene_failures"


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def scene_key(scene: Scene) -> tuple:
    """A hashable key of a scene: its seed and resolved parameters."""
    p = scene.params
    return (scene.seed, p.size, p.label, p.center, p.scale, p.clutter, p.rotation, p.colour)


def pick_maps(
    maps: list[AttentionMap], which: str, gradcam: bool, best: int | None = None
) -> list[AttentionMap]:
    """The maps to show: the best, the first, the last or all attention blocks, then Grad-CAM when asked.

    Args:
        maps: ``attention_maps(analysis)`` (forward order, Grad-CAM last).
        which: ``"best"``, ``"first"``, ``"last"`` or ``"all"``.
        gradcam: append the Grad-CAM map(s).
        best: the block the model's card says localises best (``"best"`` falls back to the last
            block without one).
    """
    attention = [m for m in maps if m.block >= 0]
    blocks = sorted({m.block for m in attention})
    if blocks and which != "all":
        ends = {"first": blocks[0], "last": blocks[-1]}
        chosen = best if which == "best" and best in blocks else ends.get(which, blocks[-1])
        attention = [m for m in attention if m.block == chosen]
    cams = [m for m in maps if m.block < 0] if gradcam else []
    return attention + cams


def map_caption(amap: AttentionMap, box: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    """``"<label> · energy in box 41% (2.9x uniform) · pointing: hit"``.

    ``2.9x uniform``: the energy in the box divided by the box's share of the image, what a uniform
    map would put there.
    """
    score = score_maps([amap.values], [box], size, amap.label)
    hit = "hit" if score.pointing >= 0.5 else "miss"
    ratio = f"{score.energy_ratio:.1f}x uniform"
    return f"{amap.label} · energy in box {score.energy:.0%} ({ratio}) · pointing: {hit}"


def _faithful_text(name: str, figures: dict) -> str:
    road = figures.get("road_combined")
    road_text = f" / {road:+.3f}" if road is not None else ""
    return f"{name} {figures['deletion_auc']:.3f} / {figures['insertion_auc']:.3f}{road_text}"


def card_figures(model: str) -> str | None:
    """What a zoo model's card says about its maps on the held-out scenes, as one Markdown line:
    the best block's localisation (:func:`attnviz.backends.zoo.best_block`), then the faithfulness
    (deletion ↓ / insertion ↑ / ROAD ↑) of that block's map, of Grad-CAM and of the random map.

    Returns:
        None for a model without a card (a user model) or a card without either figure.
    """
    card = read_card(model.removeprefix("zoo_")) if model.startswith("zoo_") else None
    if card is None:
        return None
    parts = []
    best = best_block(card)
    if best is not None:
        parts.append(f"Card: {best.text}.")
    faithful = card.get("faithfulness") or {}
    maps = faithful.get("maps") or {}
    shown = []
    if best is not None and best.name in maps:
        shown.append(_faithful_text(f"block {best.block}", maps[best.name]))
    cams = [name for name in maps if name.startswith("Grad-CAM")]
    if cams:
        shown.append(_faithful_text("Grad-CAM", maps[cams[0]]))
    if shown and faithful.get("random"):
        shown.append(_faithful_text("random", faithful["random"]))
        road = "ROAD ↑" if any("road_combined" in maps[n] for n in maps) else ""
        heading = " / ".join(x for x in ("deletion ↓", "insertion ↑", road) if x)
        scenes = f"{faithful.get('n')} held-out scenes"
        if road and faithful.get("n_road") is not None:
            scenes += f", ROAD on {faithful['n_road']}"
        parts.append(f"Faithfulness on {scenes} ({heading}): " + " · ".join(shown))
    return " ".join(parts) or None


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def run_all(models: list[str], scene: Scene, device: str) -> None:
    """Analyse ``scene`` with every model that has no stored result for it yet."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    key = scene_key(scene)
    todo = [m for m in models if (m, device, key) not in results]
    if not todo:
        return
    with st.spinner(f"Running {len(todo)} zoo model(s) on the scene"):
        for model in todo:
            outcome = run_model(
                model, WEIGHTS, device, [scene.image], log, "analysing the scene with {model}"
            )
            if isinstance(outcome, Failure):
                failures[(model, device)] = outcome
                continue
            failures.pop((model, device), None)
            [results[(model, device, key)]] = outcome
    for old in list(results)[: max(0, len(results) - MAX_STORED)]:
        if old[2] != key:
            del results[old]


def stored(
    models: list[str], scene: Scene, device: str
) -> tuple[dict[str, attnviz.Analysis | None], dict[str, Failure | None]]:
    """Per model, its stored result for ``scene`` on ``device`` and its failure (None when there is none)."""
    results: dict = store(RESULTS_KEY)
    failures: dict = store(FAILURES_KEY)
    key = scene_key(scene)
    return {m: results.get((m, device, key)) for m in models}, {m: failures.get((m, device)) for m in models}


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def controls() -> tuple[SceneParams, int]:
    """Draw the scene controls; return the parameters and the seed they describe."""
    st.selectbox("Class", CLASSES, key=CLASS_KEY, help="The shape drawn in the scene.")
    left, right = st.columns(2)
    with left:
        x = st.slider("Position across (x)", 0.0, 1.0, 0.5, 0.01, key=X_KEY, help="0 = left, 1 = right.")
        size = st.slider(
            "Size",
            0.1,
            0.4,
            0.2,
            0.01,
            key=SIZE_KEY,
            help="Object size as a fraction of the image side (the square root of its area).",
        )
        rotation = st.slider("Rotation (degrees)", 0, 359, 0, key=ROTATION_KEY)
    with right:
        y = st.slider("Position down (y)", 0.0, 1.0, 0.5, 0.01, key=Y_KEY, help="0 = top, 1 = bottom.")
        clutter = st.slider(
            "Clutter",
            0.0,
            1.0,
            0.5,
            0.05,
            key=CLUTTER_KEY,
            help="Background texture and distractors (lines, dots, blobs, outlines).",
        )
        seed = st.number_input(
            "Seed",
            min_value=0,
            max_value=2**31 - 1,
            value=1,
            step=1,
            key=SEED_KEY,
            help="Draws the colours, the background and the distractors.",
        )
    label = CLASSES.index(st.session_state[CLASS_KEY])
    return SceneParams(
        size=INPUT_SIZE,
        label=label,
        center=(float(y), float(x)),
        scale=float(size),
        clutter=float(clutter),
        rotation=float(rotation),
    ), int(seed)


def _no_map_text(model: str) -> str:
    """Why a model's column has no attention overlay."""
    if model == zoo_name("none"):
        return "No spatial attention map: the baseline has no attention."
    return "No spatial attention map: this model's attention weighs channels only."


def _header(model: str, analysis: attnviz.Analysis | None, failure: Failure | None, scene: Scene) -> None:
    """A model's name (its description as help), its prediction, or why it has no result."""
    kind = model.removeprefix("zoo_")
    st.subheader(model, help=ZOO_KINDS.get(kind))
    if analysis is None:
        show_failure(model, failure)
        return
    top = analysis.top5[0]
    if top.index == scene.label:
        st.markdown(f":green[:material/check_circle: **{top.label}** · {top.probability:.0%}]")
    else:
        st.markdown(
            f":red[:material/cancel: **{top.label}** · {top.probability:.0%}] (true: {scene.class_name})"
        )
    figures = card_figures(model)
    if figures is not None:
        st.caption(figures)


def _maps(
    analysis: attnviz.Analysis,
    maps: list[AttentionMap],
    scene: Scene,
    settings: Settings,
    scales: dict[Hashable, MapScale],
) -> None:
    """Overlays of ``maps`` on what the model saw, each with the true box, its colour bar and scores."""
    size = analysis.input_image.shape[:2]
    for amap in maps:
        scale = scales[(analysis.model, amap.block, amap.layer)]
        st.image(
            boxed_map(
                analysis.input_image, scene.box, amap.values, scale, cmap=settings.cmap, alpha=settings.alpha
            ),
            caption=md(f"{map_caption(amap, scene.box, size)} · {scale.caption(amap.values)}"),
            width="stretch",
        )


def _best(model: str) -> int | None:
    best = best_block(model.removeprefix("zoo_"))
    return best.block if best is not None else None


def shown_maps(
    analyses: dict[str, attnviz.Analysis | None], which: str, gradcam: bool
) -> dict[str, list[AttentionMap]]:
    """Per model, the maps the grid shows (:func:`pick_maps`, each model's best block from its card)."""
    return {
        m: pick_maps(attention_maps(a), which, gradcam, _best(m))
        for m, a in analyses.items()
        if a is not None
    }


def map_scales(shown: dict[str, list[AttentionMap]], mode: str) -> dict[Hashable, MapScale]:
    """One scale per shown map, shared by the maps of one quantity across every model on the page."""
    maps: dict[Hashable, tuple[np.ndarray, Quantity]] = {
        (m, a.block, a.layer): (a.values, a.quantity) for m, amaps in shown.items() for a in amaps
    }
    return shared_scales(maps, mode)


def draw_grid(
    models: list[str],
    analyses: dict[str, attnviz.Analysis | None],
    failures: dict[str, Failure | None],
    scene: Scene,
    settings: Settings,
    shown: dict[str, list[AttentionMap]],
    scales: dict[Hashable, MapScale],
) -> None:
    """The models in rows of :data:`PER_ROW` columns.

    Each row of models is drawn as three rows of columns, headers, attention maps, Grad-CAM, so that
    the Grad-CAM overlays line up whatever the number of attention maps above them.
    """
    for start in range(0, len(models), PER_ROW):
        row = models[start : start + PER_ROW]
        for col, model in zip(st.columns(PER_ROW), row, strict=False):
            with col:
                _header(model, analyses[model], failures[model], scene)
        for col, model in zip(st.columns(PER_ROW), row, strict=False):
            analysis = analyses[model]
            if analysis is None:
                continue
            with col:
                native = [m for m in shown[model] if m.block >= 0]
                if not native:
                    st.caption(_no_map_text(model))
                _maps(analysis, native, scene, settings, scales)
        cams = {m: [a for a in shown.get(m, []) if a.block < 0] for m in row}
        if any(cams.values()):
            for col, model in zip(st.columns(PER_ROW), row, strict=False):
                analysis = analyses[model]
                if analysis is not None:
                    with col:
                        _maps(analysis, cams[model], scene, settings, scales)


def score_table(analyses: dict[str, attnviz.Analysis], scene: Scene) -> list[dict[str, object]]:
    """One row per model and map (every block), for the table under the grid."""
    rows = []
    for model, analysis in analyses.items():
        top = analysis.top5[0]
        size = analysis.input_image.shape[:2]
        for amap in attention_maps(analysis):
            score = score_maps([amap.values], [scene.box], size, amap.label)
            rows.append(
                {
                    "model": model,
                    "prediction": top.label,
                    "correct": top.index == scene.label,
                    "map": amap.label,
                    "energy in box": score.energy,
                    "energy ratio": score.energy_ratio,
                    "pointing": score.pointing >= 0.5,
                }
            )
    return rows
