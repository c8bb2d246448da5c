"""The Compare page's Grad-CAM row: the baseline map, the class it explains, and computing it late.

The native maps are shown first; the Grad-CAM baselines still due for the last run (every image,
batched per model) are computed once the columns are drawn and drawn into their column's slot
(:func:`add_gradcams`). A teacher can make Grad-CAM explain any class (:func:`gradcam_row`): the new
map replaces the stored one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import streamlit as st

import attnviz
from attnviz.core.scales import GRADCAM, map_scale
from ui import Settings, store
from ui.backend import backend
from ui.compare.downloads import download, map_png
from ui.compare.inputs import decode_all
from ui.compare.state import PENDING_CAM_KEY, RESULTS_KEY, TARGET_KEY, Column, ImageRef, RunConfig, digest
from ui.maps import md, show_map

__all__ = ["add_gradcams", "gradcam_row", "gradcam_view", "target_key"]

log = logging.getLogger("attnviz.app.compare")


def target_key(model: str, image: ImageRef) -> str:
    """The session-state key of the class ``model``'s Grad-CAM explains on ``image``."""
    return f"{TARGET_KEY}_{model}_{digest(image.key)}"


def _categories(col: Column, device: str) -> tuple[str, ...]:
    """The model's class names (the model is loaded: it produced the result)."""
    try:
        return backend().categories(col.model, col.weights, device)
    except Exception:  # the model cannot be loaded any more (weights removed): no re-targeting
        log.exception("cannot reload %s for its class names", col.model)
        return ()


def _target_picker(col: Column, image: ImageRef, device: str) -> int | None:
    """The class Grad-CAM explains: one of the top-5, or any class by name (searchable)."""
    analysis = col.analysis
    loaded_categories = _categories(col, device)
    if analysis is None or not analysis.top5 or not loaded_categories:
        return None
    top = {p.index: p for p in analysis.top5}
    options = [p.index for p in analysis.top5] + [i for i in range(len(loaded_categories)) if i not in top]

    def label(i: int) -> str:
        if i in top:
            return f"{loaded_categories[i]} ({top[i].probability:.1%}, top-{list(top).index(i) + 1})"
        return loaded_categories[i]

    return st.selectbox(
        "Grad-CAM explains",
        options,
        format_func=label,
        key=target_key(col.model, image),
        help="Which class Grad-CAM explains: the top-5 predictions first, then every class of the model "
        "(type to search). Why did it not say 'cat'? Pick 'cat' and see where the evidence for it is.",
    )


def gradcam_view(analysis: attnviz.Analysis, settings: Settings, mode: str, stem: str) -> None:
    """The Grad-CAM map of ``analysis`` with its colour bar, and its download."""
    cam, img = analysis.gradcam, analysis.input_image
    if cam is None:
        return
    scale = map_scale(cam.values, GRADCAM, mode)
    show_map(
        img,
        cam.values,
        scale,
        settings.cmap,
        settings.alpha,
        f"Grad-CAM at {cam.layer} for “{cam.target_label}”",
    )
    png = functools.partial(map_png, img, cam.values, scale, settings.cmap, settings.alpha)
    download(
        "Grad-CAM (PNG)", png, f"{stem}_gradcam.png", "image/png", f"compare_dl_gradcam_{analysis.model}"
    )


def _retarget(config: RunConfig, image: ImageRef, col: Column, target: int) -> attnviz.Analysis | None:
    """Grad-CAM of ``target`` for the shown result (stored in place of the old map)."""
    images, failed = decode_all([image], {})
    if failed or col.analysis is None:
        return None
    try:
        models = backend()
        label = models.categories(col.model, col.weights, config.device)[target]
        with st.spinner(f"Grad-CAM of {label} for {col.model}"):
            [done] = models.add_gradcam(
                col.model, col.weights, config.device, [col.analysis], [images[image.key]], [target]
            )
    except attnviz.AttnvizError as err:
        st.warning(f"The Grad-CAM of that class could not be computed: {err}", icon=":material/warning:")
        return None
    store(RESULTS_KEY)[config.result_key(image, col.model)] = done
    return done


def gradcam_row(
    col: Column, config: RunConfig, image: ImageRef, settings: Settings, mode: str, slots: dict
) -> None:
    """A column's Grad-CAM cell: the class picker and the map, or a slot for a map still due."""
    analysis = col.analysis
    if analysis is None or not analysis.top5:
        return
    target = _target_picker(col, image, config.device)
    if analysis.gradcam is not None:
        if target is not None and target != analysis.gradcam.target:
            analysis = _retarget(config, image, col, target) or analysis
            col.analysis = analysis
        gradcam_view(analysis, settings, mode, f"{image.stem}_{col.model}")
    elif config.result_key(image, col.model) in store(PENDING_CAM_KEY):
        slots[col.model] = st.empty()
        slots[col.model].caption("Grad-CAM baseline: computing…")


def add_gradcams(config: RunConfig, image: ImageRef, slots: dict, settings: Settings, mode: str) -> None:
    """Compute the Grad-CAM baselines still due for ``config`` (every image, batched per model) and
    draw the shown image's into its column's slot."""
    results: dict = store(RESULTS_KEY)
    pending: dict = store(PENDING_CAM_KEY)
    for key in [k for k in pending if k not in results]:  # dropped from the store meanwhile
        del pending[key]
    for model in config.models:
        refs = [ref for ref in config.images if config.result_key(ref, model) in pending]
        keys = [config.result_key(ref, model) for ref in refs]
        if not keys:
            continue
        targets = [st.session_state.get(target_key(model, ref)) for ref in refs]
        try:
            done = backend().add_gradcam(
                model,
                config.weights_of(model),
                config.device,
                [results[k] for k in keys],
                [pending[k] for k in keys],
                targets,
            )
        except Exception as err:
            if isinstance(err, attnviz.AttnvizError):
                log.warning("Grad-CAM of %s failed: %s", model, err)
                why = str(err)
            else:
                log.exception("Grad-CAM of %s failed", model)
                why = "an unexpected error; the details are in the server log"
            note = f"The Grad-CAM baseline could not be computed: {why}"
            done = [dataclasses.replace(results[k], notes=(*results[k].notes, note)) for k in keys]
        finally:
            for k in keys:
                pending.pop(k, None)
        for k, analysis in zip(keys, done, strict=True):
            results[k] = analysis
        slot = slots.get(model)
        shown = results.get(config.result_key(image, model))
        if slot is not None and shown is not None:
            with slot.container():
                if shown.gradcam is not None:
                    gradcam_view(shown, settings, mode, f"{image.stem}_{model}")
                else:
                    st.warning(md(shown.notes[-1]), icon=":material/warning:")
