"""The Streamlit app, driven headless with ``streamlit.testing.v1.AppTest`` (no browser, no network).

AppTest runs ``app.py``, which builds the navigation; ``at.switch_page`` reaches the Models page.
Tests that run real models (random weights, CPU, a few seconds each) are marked ``slow``; the
``st.cache_resource`` models are shared by the tests of one process, as by the sessions of a server.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

import attnviz
from attnviz.backends import MODEL_GROUPS
from attnviz.backends.zoo import best_block
from attnviz.core.records import Detections
from attnviz.core.scales import format_range
from attnviz.views import deformable
from attnviz.views.maps import attention_maps
from attnviz.workflows.scenes import CLASSES
from ui import runner
from ui.compare import clicks, columns, downloads, state

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
# The first run imports torch, timm and plotly: far beyond AppTest's default of 3 s on 2 cores.
TIMEOUT = 180
# The banner of a column whose results come from random weights.
UNTRAINED = "**Untrained** (random weights)"


def png_bytes(seed: int = 0, size: tuple[int, int] = (180, 240)) -> bytes:
    """A small seeded PNG with some structure."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * xx), np.cos(5 * yy), np.sin(3 * (xx + yy))], axis=-1)
    pixels = np.clip(127 + 90 * base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def open_app() -> AppTest:
    """Run the app once (the Compare page)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def choose(at: AppTest, models: list[str]) -> None:
    """Pick ``models`` in the grouped model pills (in this order, one group at a time) and rerun."""
    groups = {s.name: s.group for s in attnviz.list_models()}
    if list(at.session_state["compare_models"]) == list(models):
        return
    for group in MODEL_GROUPS:  # start from nothing, so that the pick order is the order given
        pills = at.pills(key=f"compare_models_{group}")
        if pills.value:
            pills.set_value([]).run()
    for model in models:
        pills = at.pills(key=f"compare_models_{groups[model]}")
        if model not in pills.value:
            pills.set_value([*pills.value, model]).run()
    assert not at.exception, at.exception
    assert at.session_state["compare_models"] == list(models)


def open_view(at: AppTest, view: str) -> None:
    """Switch the transformer section's tabs to ``view`` (only the open tab is computed)."""
    at.session_state["compare_vit_view"] = view
    at.run()
    assert not at.exception, at.exception


class _Column:
    """Every cell of one model's column: the page draws one row of columns per panel kind."""

    def __init__(self, cells: list) -> None:
        self.cells = cells

    def __getattr__(self, name: str) -> list:
        return [x for cell in self.cells for x in getattr(cell, name)]

    def get(self, kind: str) -> list:
        return [x for cell in self.cells for x in cell.get(kind)]


def compare(models: list[str]) -> AppTest:
    """A fresh session that picked ``models`` and pressed Run (on the default sample scene)."""
    at = open_app()
    choose(at, models)
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    return at


def model_column(at: AppTest, model: str) -> _Column:
    """The cells of ``model``'s column: the same position in each of the grid's rows of columns."""
    models = list(at.session_state["compare_last_run"].models)
    columns = list(at.columns)
    heads = [i for i, col in enumerate(columns) if [s.value for s in col.subheader] == [models[0]]]
    assert len(heads) == 1, f"no single column for {models[0]}: {[s.value for s in at.subheader]}"
    n, first = len(models), heads[0]
    rows = [columns[first + k * n : first + (k + 1) * n] for k in range(GRID_ROWS)]
    return _Column([row[models.index(model)] for row in rows])


# The compare page's grid: header, notices, predictions, Grad-CAM, block picker, block maps, channel
# weights, expanders (one st.columns row each).
GRID_ROWS = 8


def plain(text: str) -> str:
    """Markdown text as a person reads it: the page escapes ``*``, ``_``, ``(``... in its captions."""
    return re.sub(r"\\([\\`*_{}\[\]<>()#+!|~$.-])", r"\1", text)


def all_image_captions(element) -> list[str]:
    """Captions of every picture under ``element`` (st.image with a list gives several), as read."""
    return [plain(img.caption) for el in element.image for img in el.proto.imgs]


def block_caption(at: AppTest, model: str) -> str:
    """The caption naming the block that ``model``'s column shows."""
    [text] = [m.value for m in model_column(at, model).markdown if m.value.startswith("**Block")]
    return text


def warning_texts(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


@pytest.fixture
def fresh_model_cache() -> Iterator[None]:
    """Clear the shared model cache around a test that puts fakes in it."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


# --------------------------------------------------------------------------------------------------
# App shell and sidebar
# --------------------------------------------------------------------------------------------------


def test_app_opens_with_its_sidebar_and_no_banner() -> None:
    at = open_app()
    assert [s.value for s in at.subheader] == [] and at.title[0].value == "Compare attention"
    for key in ("sidebar_device", "sidebar_cmap", "sidebar_alpha"):
        assert key in at.session_state, key
    # weights are per model now: no app-wide switch, and no banner before anything ran
    assert "sidebar_weights" not in at.session_state and not at.sidebar.radio
    assert not any(UNTRAINED in text for text in warning_texts(at))
    at.selectbox(key="sidebar_cmap").set_value("viridis").run()
    at.slider(key="sidebar_alpha").set_value(0.8).run()
    assert not at.exception


def test_device_choices_match_the_machine() -> None:
    import torch

    at = open_app()
    options = at.selectbox(key="sidebar_device").options
    assert options[:2] == ["auto", "cpu"]
    assert ("cuda" in options) is torch.cuda.is_available()


# --------------------------------------------------------------------------------------------------
# Compare page
# --------------------------------------------------------------------------------------------------


def test_compare_page_waits_for_run_with_the_first_sample() -> None:
    at = open_app()
    samples = at.multiselect(key="compare_samples")
    # the default models are zoo models, so the default image is the first generated scene
    assert samples.value == ["scene_star_1.png"] and samples.options[0] == "scene: star #1"
    assert at.session_state["compare_models"] == ["zoo_cbam", "zoo_gc"]
    assert at.pills(key="compare_models_zoo").value == ["zoo_cbam", "zoo_gc"]
    assert not at.button(key="compare_run").disabled
    assert any("Press **Run**" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0  # nothing runs before the button is pressed


def test_model_picker_groups_models_and_describes_them() -> None:
    at = open_app()
    pills = {p.key: p for p in at.pills}
    assert list(pills) == [f"compare_models_{g}" for g in MODEL_GROUPS]
    for group, heading in MODEL_GROUPS.items():
        specs = [s for s in attnviz.list_models() if s.group == group]
        picker = pills[f"compare_models_{group}"]
        assert picker.label == heading and picker.options == [s.name for s in specs]
        shown = picker.help.replace("\\", "")  # Markdown escapes removed
        for spec in specs:  # each group's help lists its models, one line each
            assert f"- **{spec.name}**: {spec.description}" in shown
    # what each chosen model will run with, before Run
    choose(at, ["zoo_cbam", "deit_tiny_patch16_224"])
    [plan] = [plain(c.value) for c in at.caption if c.value.startswith("**zoo")]
    cbam, deit = plan.split("  \n")
    described = attnviz.get_spec("zoo_cbam").description
    assert cbam == f"**zoo_cbam**: {described} · trained weights (built-in zoo, generated shapes)"
    assert deit.startswith("**deit_tiny_patch16_224**: DeiT-Tiny: ViT, 12 layers x 3 heads, class token · ")
    assert deit.endswith("random weights: its pretrained weights are not on this machine")


def test_a_fifth_model_is_refused_with_a_message_where_it_bites() -> None:
    at = open_app()
    choose(at, ["zoo_cbam", "zoo_gc", "zoo_se", "zoo_eca"])
    assert at.session_state["compare_models"] == ["zoo_cbam", "zoo_gc", "zoo_se", "zoo_eca"]
    at.pills(key="compare_models_zoo").set_value(["zoo_cbam", "zoo_gc", "zoo_se", "zoo_eca", "zoo_dat"]).run()
    assert not at.exception
    assert at.session_state["compare_models"] == ["zoo_cbam", "zoo_gc", "zoo_se", "zoo_eca"]
    assert at.pills(key="compare_models_zoo").value == ["zoo_cbam", "zoo_gc", "zoo_se", "zoo_eca"]
    [warning] = [w for w in warning_texts(at) if "at most 4 models" in w]
    assert "zoo_dat was not added" in warning and "Remove a model" in warning
    # removing one makes room: the warning goes, the new pick is kept, in pick order
    at.pills(key="compare_models_zoo").set_value(["zoo_gc", "zoo_se", "zoo_eca"]).run()
    at.pills(key="compare_models_cnn").set_value(["resnet50"]).run()
    assert at.session_state["compare_models"] == ["zoo_gc", "zoo_se", "zoo_eca", "resnet50"]
    assert not any("at most 4 models" in w for w in warning_texts(at))


def test_bad_upload_shows_one_error_and_the_rest_carry_on() -> None:
    bad = b"these are my notes, not a picture\n"
    with pytest.raises(attnviz.ImageLoadError) as info:
        attnviz.load_image(bad, name="notes.png")
    at = open_app()
    at.file_uploader[0].set_value([("notes.png", bad, "image/png"), ("ok.png", png_bytes(), "image/png")])
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [str(info.value)]
    # The default sample is dropped once images are uploaded; the good upload is ready to run.
    assert at.multiselect(key="compare_samples").value == []
    assert not at.button(key="compare_run").disabled


def test_more_than_eight_images_are_capped_with_a_message() -> None:
    at = open_app()
    files = [(f"img{i}.png", png_bytes(seed=i, size=(40, 40)), "image/png") for i in range(9)]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    assert any("at most 8" in text for text in warning_texts(at))


@pytest.mark.slow
def test_a_camera_photo_is_analysed_like_an_upload() -> None:
    at = open_app()
    at.toggle(key="compare_camera_on").set_value(True).run()
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(5))).save(buf, format="JPEG")
    at.camera_input(key="compare_camera").set_value(("photo.jpg", buf.getvalue(), "image/jpeg")).run()
    at.multiselect(key="compare_samples").set_value([]).run()
    choose(at, ["zoo_se"])
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    [key] = at.session_state["compare_results"]
    assert key[0].startswith("camera:") and key[1:] == ("zoo_se", "pretrained", "cpu")
    assert any("Trained on generated shapes only" in i.value for i in at.info)  # a photo, not a scene


@pytest.mark.slow
def test_compare_two_models_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_analyze = attnviz.analyze

    def counting_analyze(model, images, **kwargs):
        calls.append(model.name)
        return real_analyze(model, images, **kwargs)

    monkeypatch.setattr(attnviz, "analyze", counting_analyze)
    at = open_app()
    uploads = [("x.png", png_bytes(1), "image/png"), ("y.png", png_bytes(2, (200, 150)), "image/png")]
    at.file_uploader[0].set_value(uploads).run()
    models = ["mobilenet_v3_large", "gcresnext26ts"]  # small; both have 8 attention blocks
    choose(at, models)
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert sorted(calls) == sorted(models)
    # The native maps come first (analyze without Grad-CAM); the Grad-CAM baselines of every image
    # were added in the same run, once the columns were drawn.
    assert not at.session_state["compare_pending_gradcam"]
    assert all(a.gradcam is not None for a in at.session_state["compare_results"].values())

    for model in models:
        # top-5 and this block's channels; the closed expanders draw nothing (lazy) ...
        assert len(model_column(at, model).get("plotly_chart")) == 2, model
        at.session_state[f"compare_open_heatmap_{model}"] = True
        at.session_state[f"compare_open_stats_{model}"] = True
    at.run()
    for model in models:
        # ... and their charts once open: the blocks x channels heatmap and the gate statistics
        col = model_column(at, model)
        assert len(col.get("plotly_chart")) == 4, model
        assert block_caption(at, model).startswith("**Block 8 of 8**")  # not zoo: the last block
        labels = [b.label for b in col.download_button]
        assert "Grad-CAM (PNG)" in labels and "Channel weights (CSV)" in labels
        # random weights (nothing cached here): the banner is in the column that is untrained
        assert any(UNTRAINED in w.value for w in col.warning)
    # Grad-CAM in both columns, the global-context map in gcresnext26ts's only, each with its scale
    assert len(model_column(at, "gcresnext26ts").image) == 2
    assert len(model_column(at, "mobilenet_v3_large").image) == 1
    [gc_caption] = [c for c in all_image_captions(model_column(at, "gcresnext26ts")) if "gc_context" in c]
    assert "attention probability · values" in gc_caption and "scale: absolute" in gc_caption
    assert any("no spatial attention map" in c.value for c in model_column(at, "mobilenet_v3_large").caption)
    assert at.download_button(key="compare_dl_zip")

    # Each column has its own block picker; moving it re-renders only.
    at.select_slider(key="compare_block_gcresnext26ts_8").set_value(2).run()
    at.toggle(key="compare_sort").set_value(True).run()
    assert not at.exception
    # nothing that a run depends on changed: no "press Run to update" (the page's classes are
    # re-created on every rerun, so the stored config is compared by value)
    assert not any("press **Run** to update" in i.value for i in at.info)
    assert sorted(calls) == sorted(models)
    assert block_caption(at, "gcresnext26ts").startswith("**Block 3 of 8**")
    assert block_caption(at, "mobilenet_v3_large").startswith("**Block 8 of 8**")

    # A third model with 16 blocks; the first two reuse their stored results.
    choose(at, [*models, "regnet_y_400mf"])
    assert any("press **Run** to update" in i.value for i in at.info)
    at.button(key="compare_run").click().run()
    assert not at.exception
    assert sorted(calls) == sorted([*models, "regnet_y_400mf"])
    assert block_caption(at, "regnet_y_400mf").startswith("**Block 16 of 16**")
    at.select_slider(key="compare_block_regnet_y_400mf_16").set_value(8).run()
    assert block_caption(at, "regnet_y_400mf").startswith("**Block 9 of 16**")

    # Two images: the picker switches the columns to the other image's stored results.
    assert at.selectbox(key="compare_image").options == ["x.png", "y.png"]
    at.selectbox(key="compare_image").select_index(1).run()
    assert at.selectbox(key="compare_image").value.startswith("upload:")
    assert not at.exception and len(at.get("plotly_chart")) == 4 + 4 + 2  # regnet's expanders closed
    assert len(calls) == 3

    # Session state holds small frozen records only, keyed by (image, model, weights, device).
    stored = at.session_state["compare_results"]
    assert len(stored) == 6
    assert all(isinstance(a, attnviz.Analysis) for a in stored.values())
    assert {key[1:] for key in stored} == {(m, "random", "cpu") for m in [*models, "regnet_y_400mf"]}


@pytest.mark.slow
def test_a_trained_zoo_model_beside_an_untrained_transformer_and_a_random_override() -> None:
    at = compare(["zoo_gc", "deit_tiny_patch16_224"])
    # the zoo runs its trained weights, the transformer random ones (not on this machine): one banner
    keys = {k[1]: k[2] for k in at.session_state["compare_results"]}
    assert keys == {"zoo_gc": "pretrained", "deit_tiny_patch16_224": "random"}
    assert not any(UNTRAINED in w.value for w in model_column(at, "zoo_gc").warning)
    [banner] = [w.value for w in model_column(at, "deit_tiny_patch16_224").warning]
    assert UNTRAINED in banner and "pretrained weights are not on this machine" in banner
    assert "Download pretrained weights" in [
        b.label for b in model_column(at, "deit_tiny_patch16_224").button
    ]
    # a scene is the zoo's own ground: no out-of-domain notice
    assert not any("Trained on generated shapes only" in i.value for i in at.info)
    # the zoo column opens on the block its card says localises best
    assert block_caption(at, "zoo_gc").startswith("**Block 1 of 2** (index 0)")
    assert any(
        c.value.startswith("★ block 0 finds the object best") for c in model_column(at, "zoo_gc").caption
    )

    # random weights on request, for the zoo model too: stored under its own key, and it says so
    at.multiselect(key="compare_random").set_value(["zoo_gc"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert ("zoo_gc", "random") in {(k[1], k[2]) for k in at.session_state["compare_results"]}
    [banner] = [w.value for w in model_column(at, "zoo_gc").warning]
    assert UNTRAINED in banner and "not on this machine" not in banner


@pytest.mark.slow
def test_zoo_models_on_a_photo_say_they_are_out_of_their_domain() -> None:
    at = open_app()
    at.file_uploader[0].set_value([("cat.png", png_bytes(4), "image/png")]).run()
    choose(at, ["zoo_cbam", "zoo_nonlocal"])
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    for model in ("zoo_cbam", "zoo_nonlocal"):
        assert any("Trained on generated shapes only" in i.value for i in model_column(at, model).info)
    # each opens on its card's best block: CBAM's first, non-local's second
    assert block_caption(at, "zoo_cbam").startswith("**Block 1 of 2**")
    assert block_caption(at, "zoo_nonlocal").startswith("**Block 2 of 2**")
    # ... and the choice stays changeable
    at.select_slider(key="compare_block_zoo_nonlocal_2").set_value(0).run()
    assert block_caption(at, "zoo_nonlocal").startswith("**Block 1 of 2**")
    assert any("best block is 1 ★" in c.value for c in model_column(at, "zoo_nonlocal").caption)


@pytest.mark.slow
def test_maps_of_one_kind_share_a_scale_across_columns_and_stretched_says_so() -> None:
    at = compare(["zoo_gc", "zoo_nonlocal", "zoo_cbam"])
    at.select_slider(key="compare_block_zoo_gc_2").set_value(1).run()  # both on their 6x6 block
    captions = {
        m: all_image_captions(model_column(at, m))[-1] for m in ("zoo_gc", "zoo_nonlocal", "zoo_cbam")
    }
    # GC's softmax and the attention non-local positions receive are both probabilities: one scale
    results = {k[1]: a for k, a in at.session_state["compare_results"].items()}
    top = max(
        float(m.values.max())
        for name in ("zoo_gc", "zoo_nonlocal")
        for m in attention_maps(results[name])
        if m.block == 1
    )
    lo, hi = format_range(0.0, top)
    shared = f"scale: absolute {lo}–{hi} (0 to the largest value of the 2 maps shown)"
    assert shared in captions["zoo_gc"] and shared in captions["zoo_nonlocal"], captions
    # CBAM's spatial gate: its natural range
    assert (
        "gate value · values" in captions["zoo_cbam"]
        and "absolute, natural range 0.0–1.0" in captions["zoo_cbam"]
    )
    at.segmented_control(key="compare_scale").set_value("stretched").run()
    assert not at.exception
    for model in ("zoo_gc", "zoo_nonlocal", "zoo_cbam"):
        caption = all_image_captions(model_column(at, model))[-1]
        assert "scale: stretched to this map's own range" in caption, caption


@pytest.mark.slow
def test_gradcam_explains_the_class_a_teacher_picks() -> None:
    at = compare(["zoo_cbam"])
    [result] = at.session_state["compare_results"].values()
    picker = at.selectbox(key=next(k for k in at.session_state if str(k).startswith("compare_cam_target_")))
    # the top-5 first, then every other class of the model
    assert picker.options[:5] == [
        f"{p.label} ({p.probability:.1%}, top-{i})" for i, p in enumerate(result.top5, 1)
    ]
    assert len(picker.options) == len(CLASSES)
    other = next(c for c in CLASSES if c not in {p.label for p in result.top5[:1]})
    picker.set_value(CLASSES.index(other)).run()
    assert not at.exception, at.exception
    [updated] = at.session_state["compare_results"].values()
    assert updated.gradcam.target == CLASSES.index(other) and updated.gradcam.target_label == other
    assert any(f"for “{other}”" in c for c in all_image_captions(model_column(at, "zoo_cbam")))


@pytest.mark.slow
def test_zip_of_stored_results() -> None:
    """What the "Download everything" button produces when clicked (AppTest cannot click downloads)."""
    model = attnviz.load_model("mobilenet_v3_large", weights="random", device="cpu")
    image = Image.open(io.BytesIO(png_bytes(3)))
    [analysis] = attnviz.analyze(model, [image])
    data = downloads.bundle_zip([("photo.png", analysis)], "viridis", 0.4, "stretched")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "summary.json" in names and "photo/mobilenet_v3_large/gradcam.png" in names


@pytest.mark.slow
def test_a_failing_model_errs_in_its_own_column(
    monkeypatch: pytest.MonkeyPatch, fresh_model_cache: None
) -> None:
    real_load = attnviz.load_model

    def flaky_load(name, *, weights="pretrained", device="auto", progress=None):
        if name == "skresnet18":
            raise attnviz.WeightsUnavailableError(
                "Pretrained weights for skresnet18 (model.safetensors) are not cached (gaierror): ...",
                weights_file="model.safetensors",
                expected_path="/nowhere/model.safetensors",
                summary="The pretrained weights of skresnet18 are not on this machine.",
                details=("goes to: /nowhere/model.safetensors", "why: gaierror"),
            )
        if name == "resnest14d":
            raise RuntimeError("internal detail that must not reach the page")
        return real_load(name, weights="random", device=device, progress=progress)

    monkeypatch.setattr(attnviz, "load_model", flaky_load)
    # pretend every model's weights are cached, so that the page asks for them
    monkeypatch.syspath_prepend(str(ROOT))
    import ui.picker

    monkeypatch.setattr(ui.picker, "default_weights", lambda spec: "pretrained")
    at = compare(["mobilenet_v3_large", "skresnet18", "resnest14d"])

    good = model_column(at, "mobilenet_v3_large")
    assert not good.error and len(good.get("plotly_chart")) == 2  # top-5, channels (expanders closed)
    missing = model_column(at, "skresnet18")
    # one plain sentence; the exception name, the paths and the rest behind "Details"
    assert [plain(e.value) for e in missing.error] == [
        "The pretrained weights of skresnet18 are not on this machine."
    ]
    [details] = [x for x in missing.expander if x.label == "Details"]
    assert "/nowhere/model.safetensors" in details.code[0].value and "gaierror" in details.code[0].value
    assert any("Run untrained (random weights)" in i.value for i in missing.info)
    broken = model_column(at, "resnest14d")
    assert len(broken.error) == 1 and "internal detail" not in broken.error[0].value
    assert "server log" in broken.error[0].value


# --------------------------------------------------------------------------------------------------
# Models page
# --------------------------------------------------------------------------------------------------


def test_models_page_lists_every_model() -> None:
    at = open_app()
    at.switch_page("pages/models.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Models"
    table = at.dataframe[0].value
    specs = attnviz.list_models()
    assert list(table["model"]) == [s.name for s in specs]
    assert {"group", "attention", "description", "input", "trained on", "weights here"} <= set(table.columns)
    assert list(table["description"]) == [s.description for s in specs]
    assert list(table["weights here"]) == [s.source == "attnviz" or s.pretrained_available for s in specs]
    where = at.dataframe[1].value
    hub = [s for s in specs if s.source != "attnviz"]
    assert list(where["model"]) == [s.name for s in hub]
    assert list(where["goes to"]) == [s.weights_path for s in hub]
    assert any("offline" in m.value for m in at.markdown)
    assert not any(UNTRAINED in text for text in warning_texts(at))  # nothing untrained on this page


# --------------------------------------------------------------------------------------------------
# Page helpers (pure functions)
# --------------------------------------------------------------------------------------------------


def test_default_block_is_the_card_s_best_for_the_zoo_and_the_last_otherwise() -> None:
    assert columns.default_block("zoo_gc", 2) == best_block("gc").block == 0
    assert columns.default_block("zoo_nonlocal", 2) == best_block("nonlocal").block == 1
    assert columns.default_block("zoo_se", 2) == 1  # channel attention: no best block
    assert columns.default_block("seresnet50", 16) == 15


@pytest.mark.parametrize(
    "event",
    [
        {"selection": {"points": [{"x": 23.5, "y": 7.5, "customdata": {"0": 0, "1": 2}}]}},
        {"selection": {"points": [{"customdata": [0, 2, 7.5, 23.5]}]}},
        {"selection": {"points": [{"customdata": {"0": 0, "1": 2, "2": 7.5, "3": 23.5}}]}},
        {
            "selection": {
                "points": [
                    {"customdata": {"dtype": "f8", "bdata": "AAAAAAAAAAAAAAAAAAAAQAAAAAAAAB5AAAAAAACAN0A="}}
                ]
            }
        },
    ],
    ids=["x-y", "list", "dict", "typed-array"],
)
def test_point_of_click_reads_every_shape_plotly_sends(event: dict) -> None:
    """A click on the query picker (Plotly 6 sends customdata in other shapes than a list)."""
    assert clicks.point_of_click(event) == (7.5, 23.5)


def test_point_of_click_without_a_point() -> None:
    assert clicks.point_of_click(None) is None
    assert clicks.point_of_click({"selection": {"points": []}}) is None
    assert (
        clicks.point_of_click({"selection": {"points": [{"customdata": {"dtype": "f8", "bdata": "!"}}]}})
        is None
    )


def test_channel_csv_is_the_export_bundle_s_table() -> None:
    """A block's channel weights download with the columns of the bundle's channel_weights.csv."""
    gate = attnviz.ChannelWeights("layer1.0.se", "se", np.array([0.25, 0.5, 1.0], np.float32), 0)
    assert downloads.channel_csv(gate).decode() == (
        "block,layer,kind,path,c0,c1,c2\n0,layer1.0.se,se,gate,0.25,0.5,1.0\n"
    )
    paths = attnviz.ChannelWeights(
        "layer1.0.attn", "sk", np.array([[0.75, 0.5], [0.25, 0.5]]), 1, path_labels=("3x3", "5x5")
    )
    assert downloads.channel_csv(paths).decode() == (
        "block,layer,kind,path,c0,c1\n1,layer1.0.attn,sk,3x3,0.75,0.5\n1,layer1.0.attn,sk,5x5,0.25,0.5\n"
    )
    unlabelled = attnviz.ChannelWeights("layer2.0.attn", "sk", np.array([[0.5], [0.5]]), 2)
    assert [row.split(",")[3] for row in downloads.channel_csv(unlabelled).decode().splitlines()[1:]] == [
        "path 0",
        "path 1",
    ]
    # each block's rows are that block's rows of the channel_weights.csv in the ZIP
    analysis = attnviz.Analysis("m", "random", True, np.zeros((16, 16, 3), np.uint8), (), (gate, paths))
    data = downloads.bundle_zip([("x.png", analysis)], "jet", 0.5, "absolute")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        bundle = zf.read("x/m/channel_weights.csv").decode().splitlines()
    assert bundle[0].startswith("block,layer,kind,path,c0,")
    assert downloads.channel_csv(gate).decode().splitlines()[1:] == bundle[1:2]
    assert downloads.channel_csv(paths).decode().splitlines()[1:] == bundle[2:]


def test_top5_csv() -> None:
    top5 = (attnviz.Prediction(3, "tabby", 0.75), attnviz.Prediction(1, "lynx, catamount", 0.125))
    analysis = attnviz.Analysis("m", "random", True, np.zeros((4, 4, 3), np.uint8), top5)
    assert downloads.top5_csv(analysis).decode() == (
        'rank,class,label,probability\n1,3,tabby,0.75\n2,1,"lynx, catamount",0.125\n'
    )


def test_run_model_turns_every_failure_into_one_sentence(
    monkeypatch: pytest.MonkeyPatch, fresh_model_cache: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper the Compare page, the Scene lab and the Modules page share to run a model."""
    log = logging.getLogger("attnviz.app.test")

    def broken(name, **kwargs):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(attnviz, "load_model", broken)
    with caplog.at_level(logging.WARNING, logger="attnviz.app.test"):
        failure = runner.run_model("zoo_cbam", "random", "cpu", [], log, "analysing the scene with {model}")
    assert failure == runner.Failure("zoo_cbam failed unexpectedly; the details are in the server log.")
    assert "analysing the scene with zoo_cbam failed" in caplog.text and "internal detail" in caplog.text

    missing = attnviz.WeightsUnavailableError(
        "no weights file", weights_file="w", expected_path="/nowhere", summary="Not here.", details=("at /x",)
    )

    def unavailable(name, **kwargs):
        raise missing

    monkeypatch.setattr(attnviz, "load_model", unavailable)
    failure = runner.run_model("zoo_cbam", "random", "cpu", [], log, "analysing the scene with {model}")
    assert failure == runner.Failure("Not here.", ("at /x", "no weights file"), weights_hint=True)


def test_upload_key_depends_on_content_only() -> None:
    assert state.upload_key(b"abc") == state.upload_key(b"abc")
    assert state.upload_key(b"abc") != state.upload_key(b"abd")


# --------------------------------------------------------------------------------------------------
# Transformers next to CNNs
# --------------------------------------------------------------------------------------------------


def markdown_texts(at: AppTest) -> list[str]:
    """Every Markdown text, as a person reads it (Markdown escapes removed)."""
    return [plain(m.value) for m in at.markdown]


@pytest.mark.slow
def test_vit_and_cnn_side_by_side_with_query_point() -> None:
    at = open_app()
    models = ["deit_tiny_distilled_patch16_224", "mobilenet_v3_large"]
    choose(at, models)
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    vit_col = model_column(at, models[0])
    stored = at.session_state["compare_results"].values()
    layers = [r for a in stored for r in a.token_attention]
    assert layers and all(r.values.dtype == np.float16 for r in layers)  # kept compact
    assert block_caption(at, models[0]).startswith("**Block 12 of 12**")
    # Grad-CAM (token layout) and the block's class+distillation attention map
    assert len(vit_col.image) == 2
    caption = all_image_captions(vit_col)[1]
    assert "class-token attention to the patches (mean with the distillation token)" in caption
    assert len(model_column(at, models[1]).image) == 1  # SE only: Grad-CAM

    # Below the columns: the layer x head views of the transformer only, the first tab open.
    assert any(s.value.startswith("Self-attention") for s in at.subheader)
    captions = all_image_captions(at)
    assert any(c.startswith("Every layer (rows") for c in captions)
    assert not any(c.startswith("Rollout") for c in captions)  # closed tabs are not computed
    open_view(at, "Rollout")
    captions = all_image_captions(at)
    rollout = [c for c in captions if c.startswith("Rollout through 12 layers")]
    assert rollout and "rollout weight" in rollout[0], captions
    assert any("mean of rows 0 (cls), 1 (dist)" in t for t in markdown_texts(at))
    assert at.latex and "0.5" in at.latex[0].value  # the formula, typeset
    assert not any(c.startswith("Every layer (rows") for c in captions)
    # the rollout does not read one layer: no layer slider on its tab
    assert not [s for s in at.select_slider if s.key == "compare_vit_layer_12"]
    open_view(at, "Query point")
    at.slider(key="compare_query_y").set_value(40)
    at.slider(key="compare_query_x").set_value(70).run()
    assert not at.exception, at.exception
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query and query[0].startswith("**Query token (2, 4)** of layer 11:"), query
    assert "pixel (40, 70)" in query[0] and "dist" in query[0]  # prefix shares named
    # every head's map and every layer's, each set on one scale, said in a caption
    assert any(c.value.startswith("This layer's heads, one scale: attention probability") for c in at.caption)

    # Another layer: the picker answers for it.
    at.select_slider(key="compare_vit_layer_12").set_value(0).run()
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query[0].startswith("**Query token (2, 4)** of layer 0: blocks.0")

    open_view(at, "Head statistics")
    assert not [s for s in at.select_slider if s.key == "compare_vit_layer_12"]
    assert "compare_vit_stats_deit_tiny_distilled_patch16_224" in [c.key for c in at.get("plotly_chart")]
    assert any(c.value.startswith("distance: per grid query") for c in at.caption)
    assert not [t for t in markdown_texts(at) if t.startswith("**Query token")]  # closed: not computed


@pytest.mark.slow
def test_swin_query_point_in_window_coordinates() -> None:
    at = compare(["swin_t"])
    open_view(at, "Query point")
    at.select_slider(key="compare_vit_layer_12").set_value(0).run()
    at.slider(key="compare_query_y").set_value(10)
    at.slider(key="compare_query_x").set_value(201).run()
    assert not at.exception, at.exception
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query[0].startswith("**Query token (2, 50)** of layer 0: features.1.0"), query  # stride 4
    open_view(at, "Rollout")
    infos = [plain(i.value) for i in at.info]
    assert any("Rollout does not apply to swin_t" in i for i in infos)


TRANSFORMERS = [
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_small_patch16_224.dino",
    "vit_small_patch14_reg4_dinov2",
    "swin_tiny_patch4_window7_224",
    "botnet26t_256",
    "halonet26t",
    "vit_b_16",
    "swin_t",
    "dat_tiny",  # local and shifted windows in stages 1-2, deformable attention after
]


@pytest.mark.slow
@pytest.mark.parametrize("model", TRANSFORMERS)
def test_every_transformer_is_browsable_in_the_app(model: str) -> None:
    at = compare([model])
    assert not at.error, [e.value for e in at.error]
    [analysis] = at.session_state["compare_results"].values()
    layers = attnviz.views.transformer.self_attention_records(analysis)
    assert layers, model
    # every layer through the layer picker, every head through the head picker of the last one
    open_view(at, "Query point")
    for index in (0, len(layers) // 2, len(layers) - 1):
        at.select_slider(key=f"compare_vit_layer_{len(layers)}").set_value(index).run()
        assert not at.exception, at.exception
        query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
        assert f"of layer {layers[index].block}:" in query[0]
    heads = layers[-1].heads
    open_view(at, "Heads × layers")
    at.select_slider(key=f"compare_vit_layer_{len(layers)}").set_value(len(layers) - 1).run()
    picker = at.selectbox(key=f"compare_vit_head_{heads}")
    assert picker.options == ["all heads", *(f"head {h}" for h in range(heads))]
    picker.set_value(f"head {heads - 1}").run()
    assert not at.exception, at.exception
    assert any(f"head {heads - 1}" in c for c in all_image_captions(at))
    grid = [c for c in all_image_captions(at) if c.startswith("Every layer")]
    assert len(grid) == 1
    # DAT-T: its deformable blocks in the sampling section, with their shared keys
    deformable = any(s.value.startswith("Deformable sampling") for s in at.subheader)
    assert deformable == (model == "dat_tiny")


@pytest.mark.slow
def test_a_model_loaded_by_one_session_serves_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared model cache replays nothing: the model is loaded once, by the first session, whose
    page alone gets the loading messages; the second session runs on the same model object and its
    page shows only its own run's progress bar."""
    st.cache_resource.clear()
    loads: list[attnviz.LoadedModel] = []
    messages: list[tuple[int, str]] = []  # (session, progress message) as the loader reports them
    real_load = attnviz.load_model

    def counting_load(name: str, **kwargs: object) -> attnviz.LoadedModel:
        page_progress = kwargs.pop("progress")

        def progress(message: str, fraction: float | None) -> None:
            messages.append((len(sessions), message))
            page_progress(message, fraction)  # type: ignore[operator]

        loads.append(real_load(name, progress=progress, **kwargs))  # type: ignore[arg-type]
        return loads[-1]

    monkeypatch.setattr(attnviz, "load_model", counting_load)
    sessions: list[AppTest] = []
    for _ in range(2):
        at = open_app()
        choose(at, ["deit_tiny_patch16_224"])
        at.button(key="compare_run").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        sessions.append(at)
    assert len(loads) == 1 and loads[0].name == "deit_tiny_patch16_224"
    assert messages and {session for session, _ in messages} == {0}  # only while the first one ran
    assert any(m.startswith("Building deit_tiny_patch16_224") for _, m in messages)
    for at in sessions:  # each page: its own run's bar, finished; no loader's bar replayed
        assert [(e.proto.value, e.proto.text) for e in at.get("progress")] == [(100, "Done")]
    results = [next(iter(at.session_state["compare_results"].values())) for at in sessions]
    assert [r.model for r in results] == ["deit_tiny_patch16_224"] * 2
    np.testing.assert_array_equal(results[0].token_attention[0].values, results[1].token_attention[0].values)
    import ui

    assert list(ui._model_cache().models.values()) == [loads[0]]  # the one object both sessions used


@pytest.mark.slow
def test_deformable_sampling_views_answer_a_query_point() -> None:
    at = open_app()  # the zoo runs its own weights, shipped with the repository
    choose(at, ["zoo_deform", "zoo_dat"])
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Deformable sampling") for s in at.subheader)
    # zoo_deform first: a 12x12 query grid over the 96 px input (stride 8) in its first layer
    at.slider(key="compare_deform_y").set_value(20)
    at.slider(key="compare_deform_x").set_value(50).run()
    assert not at.exception, at.exception
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    row, col = 20 // 8, 50 // 8
    assert query.startswith(f"**Query {row * 12 + col}** at pixel ({row * 8 + 3.5:.0f}, {col * 8 + 3.5:.0f})")
    assert "`attn2.body`" in query and "1 group × 9 points" in query
    assert any(c.startswith("Offset length (12x12)") for c in all_image_captions(at))
    # DAT: every query shares its sampled keys; no query picker
    at.segmented_control(key="compare_deform_model").set_value("zoo_dat").run()
    assert not at.exception, at.exception
    assert any("every query shares these 144 sampled keys per group" in c.value for c in at.caption)
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith("**Query 0** of `attn2.body`: 2 groups × 144 points")


@pytest.mark.slow
def test_deformable_detr_detections_and_decoder_queries_in_the_app() -> None:
    at = compare(["deformable_detr", "zoo_deform"])
    assert not at.error, [e.value for e in at.error]
    detr = model_column(at, "deformable_detr")
    assert any("detection(s) with score > 50 %" in c for c in all_image_captions(detr))
    [analysis] = [a for k, a in at.session_state["compare_results"].items() if k[1] == "deformable_detr"]
    records = analysis.sampling_points
    # the deformable section: DETR first; its last layer is a decoder layer
    at.select_slider(key=f"compare_deform_layer_{len(records)}").set_value(len(records) - 1).run()
    assert not at.exception, at.exception
    # the stored result gets known detections (random weights detect whatever they detect), so that
    # both paths are certain: with objects, the detected object picks the query; without, the sliders
    key = next(k for k in at.session_state["compare_results"] if k[1] == "deformable_detr")
    kept = tuple(r for r in analysis.records if not isinstance(r, Detections))

    def detected(labels: tuple[str, ...], scores: list[float], queries: list[int]) -> Detections:
        boxes = np.tile(np.array([[10, 20, 110, 140]], np.float32), (len(labels), 1))
        return Detections("class_embed.5", boxes, np.array(scores, np.float32),
                          np.arange(len(labels)), labels, np.array(queries, np.int64))  # fmt: skip

    found = detected(("cat", "dog"), [0.9, 0.6], [7, 3])
    at.session_state["compare_results"][key] = dataclasses.replace(analysis, records=(*kept, found))
    at.run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="compare_deform_object")
    assert picker.options == ["cat (90%), query 7", "dog (60%), query 3"]
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith("**Query 7**") and "8 heads × 16 points" in query and "decoder.layers.5" in query
    picker.set_value(1).run()
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith("**Query 3**")
    nothing = detected((), [], [])
    at.session_state["compare_results"][key] = dataclasses.replace(analysis, records=(*kept, nothing))
    at.run()
    at.slider(key="compare_deform_y").set_value(100)
    at.slider(key="compare_deform_x").set_value(200).run()
    assert not [s for s in at.selectbox if s.key == "compare_deform_object"]
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    decoder = records[-1]
    assert query.startswith(
        f"**Query {deformable.nearest_query(decoder, (100, 200), analysis.input_image.shape[:2])}**"
    )
    # an encoder layer: the query comes from the pixel sliders
    at.select_slider(key=f"compare_deform_layer_{len(records)}").set_value(0).run()
    at.slider(key="compare_deform_y").set_value(100)
    at.slider(key="compare_deform_x").set_value(200).run()
    assert not at.exception, at.exception
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith(
        f"**Query {deformable.nearest_query(records[0], (100, 200), analysis.input_image.shape[:2])}**"
    )


def test_stored_results_are_trimmed_by_bytes_keeping_the_current_run() -> None:
    def result(mb: int) -> attnviz.Analysis:
        image = np.zeros((mb * 512, 683, 3), np.uint8)  # ~1 MB per 512 rows
        return attnviz.Analysis("m", "random", True, image, ())

    store = {f"old{i}": result(2) for i in range(4)} | {"current": result(3)}
    sizes = {k: a.nbytes for k, a in store.items()}
    assert sizes["current"] == 3 * 512 * 683 * 3
    state.trim_bytes(store, sizes["current"] + 2 * sizes["old0"], keep=["current"])
    assert list(store) == ["old2", "old3", "current"]  # the oldest go first
    state.trim_bytes(store, 1, keep=["current"])
    assert list(store) == ["current"]  # never the current run's


def test_the_readme_shows_a_small_screenshot_of_a_comparison() -> None:
    """Made by the browser suite (``readme_compare.jpg``) and committed small under assets/."""
    path = ROOT / "assets" / "screenshots" / "compare.jpg"
    assert "(assets/screenshots/compare.jpg)" in (ROOT / "README.md").read_text()
    assert path.stat().st_size <= 300_000
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.width >= 600 and img.height >= img.width
