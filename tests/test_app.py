"""The Streamlit app, driven headless with ``streamlit.testing.v1.AppTest`` (no browser, no network).

AppTest runs ``app.py``, which builds the navigation; ``at.switch_page`` reaches the Models page.
Tests that run real models (random weights, CPU, a few seconds each) are marked ``slow``; the
``st.cache_resource`` models are shared by the tests of one process, as by the sessions of a server.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import streamlit as st
from conftest import load_page
from PIL import Image
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

import attnviz

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
# The first run imports torch, timm and plotly: far beyond AppTest's default of 3 s on 2 cores.
TIMEOUT = 180
BANNER = "Results come from untrained (random) weights"


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


def open_app(weights: str | None = "random") -> AppTest:
    """Run the app once; ``weights`` preset in session state like the sidebar radio would set it."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if weights is not None:
        at.session_state["sidebar_weights"] = weights
    at.run()
    assert not at.exception, at.exception
    return at


def open_view(at: AppTest, view: str) -> None:
    """Switch the transformer section's tabs to ``view`` (only the open tab is computed)."""
    at.session_state["compare_vit_view"] = view
    at.run()
    assert not at.exception, at.exception


def model_column(at: AppTest, model: str):
    """The results column whose header is ``model``."""
    matches = [col for col in at.columns if [s.value for s in col.subheader] == [model]]
    assert len(matches) == 1, f"no single column for {model}: {[s.value for s in at.subheader]}"
    return matches[0]


def block_caption(at: AppTest, model: str) -> str:
    """The caption naming the block that ``model``'s column shows."""
    [text] = [m.value for m in model_column(at, model).markdown if m.value.startswith("**Block")]
    return text


def warning_texts(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


@pytest.fixture(autouse=True)
def navigation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep AppTest from running a page file without app.py (Streamlit 1.67 AppTest quirk).

    Before every run AppTest resets ``PagesManager.uses_pages_directory``, which then turns True
    because ``pages/`` exists; from the second run on, the script runner then runs the current
    page's file alone (the old ``pages/`` auto-discovery) and app.py, its sidebar and banner never
    run. A real server clears the flag for good on the first ``st.navigation`` call; do it here.
    """
    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def fresh_model_cache() -> Iterator[None]:
    """Clear the shared model cache around a test that puts fakes in it."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def compare_page() -> Iterator[ModuleType]:
    """``pages/compare.py`` imported as a module: its helpers without drawing the page."""
    yield from load_page("compare")


# --------------------------------------------------------------------------------------------------
# App shell and sidebar
# --------------------------------------------------------------------------------------------------


def test_app_opens_with_banner_while_weights_are_random() -> None:
    at = open_app(weights=None)
    assert [s.value for s in at.subheader] == [] and at.title[0].value == "Compare attention"
    for key in ("sidebar_device", "sidebar_weights", "sidebar_cmap", "sidebar_alpha"):
        assert key in at.session_state, key
    at.radio(key="sidebar_weights").set_value("random").run()
    assert not at.exception
    assert sum(BANNER in text for text in warning_texts(at)) == 1
    at.radio(key="sidebar_weights").set_value("pretrained").run()
    assert not at.exception
    assert not any(BANNER in text for text in warning_texts(at))


@pytest.mark.parametrize("cached", [False, True])
def test_default_weights_follow_the_local_cache(monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    specs = [dataclasses.replace(s, pretrained_available=cached) for s in attnviz.list_models()]
    monkeypatch.setattr(attnviz, "list_models", lambda: specs)
    at = open_app(weights=None)
    assert at.session_state["sidebar_weights"] == ("pretrained" if cached else "random")
    assert any(BANNER in text for text in warning_texts(at)) is not cached


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
    assert all(m.startswith("zoo_") for m in at.multiselect(key="compare_models").value)
    assert not at.button(key="compare_run").disabled
    assert any("Press **Run**" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0  # nothing runs before the button is pressed


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
    at.multiselect(key="compare_models").set_value(models).run()
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
        assert block_caption(at, model).startswith("**Block 8 of 8**")
        labels = [b.label for b in col.download_button]
        assert "Grad-CAM (PNG)" in labels and "Channel weights (CSV)" in labels
        assert any("untrained" in m.value for m in col.markdown)  # the badge
    # Grad-CAM in both columns, the global-context map in gcresnext26ts's only.
    assert len(model_column(at, "gcresnext26ts").image) == 2
    assert len(model_column(at, "mobilenet_v3_large").image) == 1
    assert any("no spatial attention map" in c.value for c in model_column(at, "mobilenet_v3_large").caption)
    assert at.download_button(key="compare_dl_zip")

    # Same number of blocks: the slider is over the block index; moving it re-renders only.
    at.slider(key="compare_block").set_value(2).run()
    at.toggle(key="compare_sort").set_value(True).run()
    assert not at.exception
    # nothing that a run depends on changed: no "press Run to update" (the page's classes are
    # re-created on every rerun, so the stored config is compared by value)
    assert not any("press **Run** to update" in i.value for i in at.info)
    assert sorted(calls) == sorted(models)
    assert block_caption(at, "gcresnext26ts").startswith("**Block 3 of 8**")

    # A third model with 16 blocks: relative depth; the first two reuse their stored results.
    at.multiselect(key="compare_models").set_value([*models, "regnet_y_400mf"]).run()
    assert any("press **Run** to update" in i.value for i in at.info)
    at.button(key="compare_run").click().run()
    assert not at.exception
    assert sorted(calls) == sorted([*models, "regnet_y_400mf"])
    labels = {s.label for s in at.main.slider}
    assert "Relative depth (%)" in labels and "Block" not in labels
    at.slider(key="compare_depth").set_value(50).run()
    assert block_caption(at, "mobilenet_v3_large").startswith("**Block 5 of 8**")
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
def test_zip_of_stored_results(compare_page: ModuleType) -> None:
    """What the "Download everything" button produces when clicked (AppTest cannot click downloads)."""
    model = attnviz.load_model("mobilenet_v3_large", weights="random", device="cpu")
    image = Image.open(io.BytesIO(png_bytes(3)))
    [analysis] = attnviz.analyze(model, [image])
    data = compare_page.bundle_zip([("photo.png", analysis)], "viridis", 0.4)
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
                "Pretrained weights for skresnet18 (model.safetensors) are not cached.",
                weights_file="model.safetensors",
                expected_path="/nowhere/model.safetensors",
            )
        if name == "resnest14d":
            raise RuntimeError("internal detail that must not reach the page")
        return real_load(name, weights="random", device=device, progress=progress)

    monkeypatch.setattr(attnviz, "load_model", flaky_load)
    at = open_app(weights="pretrained")
    at.multiselect(key="compare_models").set_value(["mobilenet_v3_large", "skresnet18", "resnest14d"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception

    good = model_column(at, "mobilenet_v3_large")
    assert not good.error and len(good.get("plotly_chart")) == 2  # top-5, channels (expanders closed)
    missing = model_column(at, "skresnet18")
    assert [e.value for e in missing.error] == [
        "Pretrained weights for skresnet18 (model.safetensors) are not cached."
    ]
    assert any("random" in i.value for i in missing.info)
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
    assert {"source", "attention", "input size", "pretrained cached", "goes to"} <= set(table.columns)
    assert list(table["goes to"]) == [s.weights_path for s in specs]
    assert any("offline" in m.value for m in at.markdown)
    assert any(BANNER in text for text in warning_texts(at))  # the banner is on every page


# --------------------------------------------------------------------------------------------------
# Page helpers (pure functions)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "blocks", "expected"),
    [(0, 8, 0), (100, 8, 7), (50, 8, 4), (50, 16, 8), (100, 1, 0), (-5, 4, 0), (250, 4, 3), (49, 3, 1)],
)
def test_depth_to_block(compare_page: ModuleType, depth: float, blocks: int, expected: int) -> None:
    assert compare_page.depth_to_block(depth, blocks) == expected


def test_depth_to_block_needs_a_block(compare_page: ModuleType) -> None:
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        compare_page.depth_to_block(50, 0)


def test_channel_csv(compare_page: ModuleType) -> None:
    gate = attnviz.ChannelWeights("layer1.0.se", "se", np.array([0.25, 0.5, 1.0], np.float32), 0)
    assert compare_page.channel_csv(gate).decode() == "channel,gate\n0,0.25\n1,0.5\n2,1.0\n"
    paths = attnviz.ChannelWeights(
        "layer1.0.attn", "sk", np.array([[0.75, 0.5], [0.25, 0.5]]), 1, path_labels=("3x3", "5x5")
    )
    assert compare_page.channel_csv(paths).decode() == "channel,3x3,5x5\n0,0.75,0.25\n1,0.5,0.5\n"


def test_upload_key_depends_on_content_only(compare_page: ModuleType) -> None:
    assert compare_page.upload_key(b"abc") == compare_page.upload_key(b"abc")
    assert compare_page.upload_key(b"abc") != compare_page.upload_key(b"abd")


# --------------------------------------------------------------------------------------------------
# Transformers next to CNNs
# --------------------------------------------------------------------------------------------------


def markdown_texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def all_image_captions(element) -> list[str]:
    """Captions of every picture under ``element`` (st.image with a list gives several)."""
    return [img.caption for el in element.image for img in el.proto.imgs]


@pytest.mark.slow
def test_vit_and_cnn_side_by_side_with_query_point() -> None:
    at = open_app()
    models = ["deit_tiny_distilled_patch16_224", "mobilenet_v3_large"]
    at.multiselect(key="compare_models").set_value(models).run()
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
    assert rollout and "mean of rows 0 (cls), 1 (dist)" in rollout[0], captions
    assert not any(c.startswith("Every layer (rows") for c in captions)
    open_view(at, "Query point")
    at.slider(key="compare_query_y").set_value(40)
    at.slider(key="compare_query_x").set_value(70).run()
    assert not at.exception, at.exception
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query and query[0].startswith("**Query token (2, 4)** of layer 11:"), query
    assert "pixel (40, 70)" in query[0] and "dist" in query[0]  # prefix shares named

    # Another layer: the picker answers for it.
    at.select_slider(key="compare_vit_layer_12").set_value(0).run()
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query[0].startswith("**Query token (2, 4)** of layer 0: blocks.0")

    open_view(at, "Head statistics")
    assert "compare_vit_stats_deit_tiny_distilled_patch16_224" in [c.key for c in at.get("plotly_chart")]
    assert any(c.value.startswith("distance: per grid query") for c in at.caption)
    assert not [t for t in markdown_texts(at) if t.startswith("**Query token")]  # closed: not computed


@pytest.mark.slow
def test_swin_query_point_in_window_coordinates() -> None:
    at = open_app()
    at.multiselect(key="compare_models").set_value(["swin_t"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    at.select_slider(key="compare_vit_layer_12").set_value(0).run()
    open_view(at, "Query point")
    at.slider(key="compare_query_y").set_value(10)
    at.slider(key="compare_query_x").set_value(201).run()
    assert not at.exception, at.exception
    query = [t for t in markdown_texts(at) if t.startswith("**Query token")]
    assert query[0].startswith("**Query token (2, 50)** of layer 0: features.1.0"), query  # stride 4
    open_view(at, "Rollout")
    infos = [i.value for i in at.info]
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
    at = open_app()
    at.multiselect(key="compare_models").set_value([model]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    [analysis] = at.session_state["compare_results"].values()
    layers = attnviz.vit.self_attention_records(analysis)
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
def test_a_model_loaded_by_one_session_serves_the_next() -> None:
    """The shared model cache replays nothing: a second session gets the first one's model, and the
    progress bar the first session drew while loading is not replayed into the second's page."""
    st.cache_resource.clear()
    sessions = []
    for _ in range(2):
        at = open_app()
        at.multiselect(key="compare_models").set_value(["deit_tiny_patch16_224"]).run()
        at.button(key="compare_run").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        sessions.append(at)
    import ui

    [model] = ui._model_cache().models.values()
    assert model.name == "deit_tiny_patch16_224"


@pytest.mark.slow
def test_deformable_sampling_views_answer_a_query_point() -> None:
    at = open_app(weights="pretrained")  # the zoo's own weights: shipped with the repository
    at.multiselect(key="compare_models").set_value(["zoo_deform", "zoo_dat"]).run()
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
    assert "`attn2.body`" in query and "1 groups × 9 points" in query
    assert any(c.startswith("Offset length (12x12)") for c in all_image_captions(at))
    # DAT: every query shares its sampled keys; no query picker
    at.segmented_control(key="compare_deform_model").set_value("zoo_dat").run()
    assert not at.exception, at.exception
    assert any("every query shares these 144 sampled keys per group" in c.value for c in at.caption)
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith("**Query 0** of `attn2.body`: 2 groups × 144 points")


@pytest.mark.slow
def test_deformable_detr_detections_and_decoder_queries_in_the_app() -> None:
    at = open_app()
    at.multiselect(key="compare_models").set_value(["deformable_detr", "zoo_deform"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    detr = model_column(at, "deformable_detr")
    assert any("detection(s) with score > 50 %" in c for c in all_image_captions(detr))
    [analysis] = [a for k, a in at.session_state["compare_results"].items() if k[1] == "deformable_detr"]
    records = analysis.sampling_points
    # the deformable section: DETR first; its last layer is a decoder layer
    at.select_slider(key=f"compare_deform_layer_{len(records)}").set_value(len(records) - 1).run()
    assert not at.exception, at.exception
    det = analysis.detections
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    if len(det.labels):  # a detected object picks the query
        assert query.startswith(f"**Query {int(det.query_index[0])}**")
        assert at.selectbox(key="compare_deform_object").options[0].startswith(det.labels[0])
    assert "8 heads × 16 points" in query and "decoder.layers.5" in query
    # an encoder layer: the query comes from the pixel sliders
    at.select_slider(key=f"compare_deform_layer_{len(records)}").set_value(0).run()
    at.slider(key="compare_deform_y").set_value(100)
    at.slider(key="compare_deform_x").set_value(200).run()
    assert not at.exception, at.exception
    [query] = [t for t in markdown_texts(at) if t.startswith("**Query")]
    assert query.startswith(
        f"**Query {attnviz.sampling.nearest_query(records[0], (100, 200), analysis.input_image.shape[:2])}**"
    )


def test_stored_results_are_trimmed_by_bytes_keeping_the_current_run(compare_page: ModuleType) -> None:
    def result(mb: int) -> attnviz.Analysis:
        image = np.zeros((mb * 512, 683, 3), np.uint8)  # ~1 MB per 512 rows
        return attnviz.Analysis("m", "random", True, image, ())

    store = {f"old{i}": result(2) for i in range(4)} | {"current": result(3)}
    sizes = {k: a.nbytes for k, a in store.items()}
    assert sizes["current"] == 3 * 512 * 683 * 3
    compare_page._trim_bytes(store, sizes["current"] + 2 * sizes["old0"], keep=["current"])
    assert list(store) == ["old2", "old3", "current"]  # the oldest go first
    compare_page._trim_bytes(store, 1, keep=["current"])
    assert list(store) == ["current"]  # never the current run's
