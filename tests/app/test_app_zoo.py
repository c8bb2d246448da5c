"""The zoo pages (Scene lab, Leaderboard, Modules) and the compare page's zoo defaults, with AppTest.

Like ``test_app.py`` (whose ``navigation_only`` fixture is reused here), the app runs headless from
``app.py``; pages are reached with ``at.switch_page``. Models run with random weights on the CPU;
tests that run every zoo model are marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_app import TIMEOUT, UNTRAINED, model_column, open_app, plain  # noqa: F401

import attnviz
from attnviz import render
from attnviz.backends import zoo
from attnviz.core.scales import GATE, map_scale
from attnviz.layers.zoo_net import ZOO_KINDS, zoo_name
from attnviz.views.maps import AttentionMap
from attnviz.workflows.scenes import CLASSES
from attnviz.workflows.teaching import INSERTION_PATTERNS, MODULE_GUIDE
from ui import leaderboard, scene
from ui import maps as ui_maps

ROOT = Path(__file__).resolve().parents[2]
ZOO_MODELS = [zoo_name(kind) for kind in ZOO_KINDS]


def open_page(page: str) -> AppTest:
    """The app switched to ``pages/<page>.py``."""
    at = open_app()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def zoo_columns(at: AppTest) -> dict[str, object]:
    """The header columns of the scene lab's grid (a zoo model's name as subheader), by name."""
    found = {}
    for col in at.columns:
        heads = [s.value for s in col.subheader]
        if len(heads) == 1 and heads[0] in ZOO_MODELS:
            found[heads[0]] = col
    return found


def zoo_sections(at: AppTest, model: str) -> tuple[object, ...]:
    """(header, attention maps, Grad-CAM) columns of ``model`` in the scene lab's grid.

    Each row of models is three ``st.columns(PER_ROW)`` rows: headers, attention maps, Grad-CAM
    (the last only when Grad-CAM is on), so a model's sections lie PER_ROW columns apart.
    """
    columns = list(at.columns)
    [index] = [i for i, col in enumerate(columns) if [s.value for s in col.subheader] == [model]]
    per_row = 4
    gradcam = at.toggle(key="scene_gradcam").value
    count = 3 if gradcam else 2
    return tuple(columns[index + per_row * k] for k in range(count))


def image_captions(block) -> list[str]:
    return [plain(caption) for image in block.image for caption in image.captions]


def fake_card(kind: str, accuracy: float, maps: list[tuple[str, float, float, float]]) -> dict:
    """A card as ``attnviz.workflows.zoo_training`` writes it; maps: (name, pointing, energy, area share)."""
    return {
        "name": zoo_name(kind),
        "kind": kind,
        "accuracy": accuracy,
        "eval_set": {"n": 1000, "seed": 2, "clutter": 0.5},
        "localization": [
            {"name": n, "n": 1000, "pointing": p, "energy": e, "area_share": a, "energy_ratio": e / a}
            for n, p, e, a in maps
        ],
    }


FAKE_CARDS = {
    "cbam": fake_card(
        "cbam",
        0.9,
        [
            ("block 0 · attn2 (cbam_spatial)", 0.6, 0.2, 0.05),
            ("block 1 · attn3 (cbam_spatial)", 0.7, 0.25, 0.05),
            ("Grad-CAM · stage3", 0.8, 0.3, 0.05),
        ],
    ),
    "gc": fake_card(
        "gc", 0.85, [("block 1 · attn3 (gc_context)", 0.5, 0.1, 0.05), ("Grad-CAM · stage3", 0.7, 0.2, 0.05)]
    ),
    "none": fake_card("none", 0.8, [("Grad-CAM · stage3", 0.75, 0.22, 0.05)]),
}


# --------------------------------------------------------------------------------------------------
# Navigation
# --------------------------------------------------------------------------------------------------


def test_navigation_lists_the_new_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(name, **kwargs):  # the pages render without running any model
        raise attnviz.WeightsUnavailableError(f"no weights for {name}", weights_file="x", expected_path="y")

    monkeypatch.setattr(attnviz, "load_model", no_model)
    at = open_app()
    assert at.title[0].value == "Compare attention"  # still the default page
    for page, title in (("scene", "Scene lab"), ("leaderboard", "Leaderboard"), ("modules", "Modules")):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        assert at.title[0].value == title
        assert at.sidebar.selectbox(key="sidebar_cmap")  # app.py still runs around the page
        assert not any(UNTRAINED in w.value for w in at.warning)  # no app-wide banner any more


# --------------------------------------------------------------------------------------------------
# Scene lab
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_scene_page_shows_every_zoo_model_with_box_scores() -> None:
    at = open_page("scene")
    assert at.title[0].value == "Scene lab"
    assert not at.error, [e.value for e in at.error]
    columns = zoo_columns(at)
    assert sorted(columns) == sorted(ZOO_MODELS)
    # The scene itself, with its box, next to the controls.
    assert any("box (y0, x0, y1, x1)" in c for c in image_captions(at.main))

    # Default: each model's best block according to its card, then Grad-CAM; every overlay is scored
    # against the box and carries its colour scale.
    header, attention, cam = zoo_sections(at, "zoo_cbam")
    cbam = image_captions(attention) + image_captions(cam)
    assert len(cbam) == 2 and cbam[0].startswith("block 0 · attn2 (cbam_spatial)")
    assert cbam[1].startswith("Grad-CAM")
    for caption in cbam:
        assert "energy in box" in caption and "uniform" in caption and "pointing: " in caption
        assert "scale: absolute, natural range 0.0–1.0" in caption  # a gate, Grad-CAM: 0 to 1
    _, attention, cam = zoo_sections(at, "zoo_mhsa")
    assert image_captions(attention)[0].startswith("block 0") and len(cam.image) == 1
    _, attention, _ = zoo_sections(at, "zoo_nonlocal")
    assert image_captions(attention)[0].startswith("block 1")
    # the probabilities of GC, non-local, MHSA share one scale across the page
    probabilities = [
        c for m in ("zoo_gc", "zoo_nonlocal", "zoo_mhsa") for c in image_captions(zoo_sections(at, m)[1])
    ]
    assert all("(0 to the largest value of the 3 maps shown)" in c for c in probabilities), probabilities
    at.segmented_control(key="scene_scale").set_value("stretched").run()
    assert all(
        "stretched to this map's own range" in c for c in image_captions(zoo_sections(at, "zoo_gc")[1])
    )
    at.radio(key="scene_blocks").set_value("last").run()
    _, attention, _ = zoo_sections(at, "zoo_mhsa")
    assert image_captions(attention)[0].startswith("block 3")
    header, attention, cam = zoo_sections(at, "zoo_se")
    assert len(attention.image) == 0 and len(cam.image) == 1
    assert any("channels only" in c.value for c in attention.caption)
    assert any("true:" in m.value or "check_circle" in m.value for m in header.markdown)  # prediction
    header = zoo_sections(at, "zoo_cbam")[0]
    assert [c.value for c in header.caption] == [scene.card_figures("zoo_cbam")]  # the card's figures
    assert "Faithfulness on 24 held-out scenes" in header.caption[0].value

    at.radio(key="scene_blocks").set_value("all").run()
    assert len(zoo_sections(at, "zoo_cbam")[1].image) == 2
    assert len(zoo_sections(at, "zoo_mhsa")[1].image) == 4
    at.toggle(key="scene_gradcam").set_value(False).run()
    assert not at.exception
    assert len(zoo_sections(at, "zoo_se")[1].image) == 0
    assert sum(len(col.image) for col in zoo_columns(at).values()) == 0
    assert not any(c.startswith("Grad-CAM") for c in image_captions(at.main))

    # A new scene runs the models again; results are kept per scene and device.
    stored = len(at.session_state["scene_results"])
    at.selectbox(key="scene_class").set_value("star").run()
    assert not at.exception
    assert len(at.session_state["scene_results"]) == stored + len(ZOO_MODELS)
    assert any("star" in c for c in image_captions(at.main))


def test_scene_page_without_committed_weights_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)  # a copy of attnviz without its zoo weights
    st.cache_resource.clear()  # models that earlier tests loaded would be served from the shared cache
    at = open_page("scene")
    columns = zoo_columns(at)
    assert sorted(columns) == sorted(ZOO_MODELS)
    for model, col in columns.items():
        [error] = [plain(e.value) for e in col.error]
        assert error.startswith(f"The trained weights of {model} are missing from this copy of attnviz")
        assert f"assets/zoo/{model}.safetensors" in error and "zoo train --kind" in error
        [details] = [x for x in col.expander if x.label == "Details"]
        assert str(tmp_path) in details.code[0].value  # where it looked, for the one who fixes it
    assert any("own trained weights" in c.value for c in at.caption)  # says which weights


def test_pick_maps() -> None:
    def amap(block: int) -> AttentionMap:
        return AttentionMap(f"l{block}", "k", block, np.ones((2, 2)), "")

    maps = [amap(0), amap(1), amap(2), amap(-1)]
    assert [m.block for m in scene.pick_maps(maps, "best", True, best=1)] == [1, -1]
    assert [m.block for m in scene.pick_maps(maps, "best", False, best=None)] == [2]  # no card: last
    assert [m.block for m in scene.pick_maps(maps, "last", True)] == [2, -1]
    assert [m.block for m in scene.pick_maps(maps, "first", False)] == [0]
    assert [m.block for m in scene.pick_maps(maps, "all", True)] == [0, 1, 2, -1]
    assert [m.block for m in scene.pick_maps([amap(-1)], "last", True)] == [-1]


def test_boxed_map_is_enlarged_with_the_box_and_its_colour_bar() -> None:
    image = np.zeros((96, 96, 3), np.uint8)
    heat = np.random.default_rng(0).random((6, 6))
    out = np.asarray(ui_maps.boxed_map(image, (10, 20, 30, 40), heat, cmap="jet", alpha=0.5))
    scale = 5  # the zoo's 96 px enlarged by a whole factor to at least DISPLAY_WIDTH (448)
    assert ui_maps.DISPLAY_WIDTH == 448
    assert out.shape == (96 * scale, 96 * scale, 3)
    # the outline lies just outside the scaled box
    assert tuple(out[10 * scale - 1, 30 * scale]) == ui_maps.BOX_COLOUR
    assert tuple(out[20 * scale, 40 * scale]) == ui_maps.BOX_COLOUR
    with_bar = np.asarray(ui_maps.boxed_map(image, (10, 20, 30, 40), heat, map_scale(heat, GATE)))
    assert with_bar.shape[1] == 96 * scale and with_bar.shape[0] > 96 * scale + 30  # the strip below
    # the overlay under the box is the gate on its natural range, as render.overlay draws it
    expected = render.overlay(render.enlarge(image, 448), heat, value_range=(0.0, 1.0))
    np.testing.assert_array_equal(with_bar[: 10 * scale - 2], np.asarray(expected)[: 10 * scale - 2])


# --------------------------------------------------------------------------------------------------
# Leaderboard
# --------------------------------------------------------------------------------------------------


def test_leaderboard_with_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "read_card", lambda kind: FAKE_CARDS.get(kind))
    at = open_page("leaderboard")
    assert at.title[0].value == "Leaderboard"
    table = at.dataframe[0].value
    assert len(table) == 6
    assert list(table.columns[:8]) == [
        "model",
        "kind",
        "accuracy",
        "map",
        "pointing game",
        "energy in box",
        "box area share",
        "energy ratio",
    ]
    assert table["energy ratio"].max() == pytest.approx(6.0)
    assert len(at.get("plotly_chart")) == 3  # energy ratio, pointing game, localisation vs faithfulness
    assert any("uniform" in m.value for m in at.markdown)  # the metrics are explained
    assert any("zoo_ca" in c.value for c in at.caption)  # kinds without a card are named

    at.radio(key="leaderboard_maps").set_value("attention maps only").run()
    table = at.dataframe[0].value
    assert len(table) == 3 and not table["map"].str.startswith("Grad-CAM").any()
    at.multiselect(key="leaderboard_kinds").set_value(["gc"]).run()
    assert list(at.dataframe[0].value["model"]) == ["zoo_gc"]
    at.multiselect(key="leaderboard_kinds").set_value(["none"]).run()
    assert not at.exception and len(at.dataframe) == 0
    assert any("No rows" in i.value for i in at.info)


def test_leaderboard_without_cards_says_how_to_make_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "read_card", lambda kind: None)
    at = open_page("leaderboard")
    assert len(at.dataframe) == 0
    assert any("python -m attnviz zoo train" in i.value for i in at.info)


def test_leaderboard_with_a_trained_but_unscored_card(monkeypatch: pytest.MonkeyPatch) -> None:
    cards = {"none": {**FAKE_CARDS["none"], "localization": []}}
    monkeypatch.setattr(zoo, "read_card", lambda kind: cards.get(kind))
    at = open_page("leaderboard")
    assert len(at.dataframe) == 0
    assert any("not scored yet" in c.value and "zoo_none" in c.value for c in at.caption)
    assert any("zoo eval" in i.value for i in at.info)


def test_leaderboard_helpers() -> None:
    rows = leaderboard.leaderboard_rows(FAKE_CARDS)
    assert [r["model"] for r in rows] == ["zoo_cbam"] * 3 + ["zoo_gc"] * 2 + ["zoo_none"]
    assert rows[0]["accuracy"] == 0.9 and rows[0]["n"] == 1000
    only = leaderboard.filter_rows(rows, ["cbam", "none"], gradcam=False)
    assert [r["map"] for r in only] == ["block 0 · attn2 (cbam_spatial)", "block 1 · attn3 (cbam_spatial)"]
    fig = leaderboard.metric_figure(rows, "energy ratio", 1.0, "uniform", "t")
    assert list(fig.data[0].x) == sorted(r["energy ratio"] for r in rows)  # best on top
    assert fig.layout.shapes[0].x0 == 1.0


def committed_cards() -> dict[str, dict]:
    return {kind: json.loads(zoo.card_path(kind).read_text()) for kind in ZOO_KINDS}


def test_leaderboard_shows_the_cards_faithfulness_and_a_point_per_map() -> None:
    cards = committed_cards()
    at = open_page("leaderboard")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    expected = [(c["name"], s["name"]) for c in cards.values() for s in c["localization"]]
    assert list(zip(table["model"], table["map"], strict=True)) == expected
    for _, row in table.iterrows():
        faithful = cards[row["kind"]]["faithfulness"]
        figures = faithful["maps"][row["map"]]
        assert row["deletion AUC"] == figures["deletion_auc"]
        assert row["insertion AUC"] == figures["insertion_auc"]
        assert row["ROAD"] == figures["road_combined"]
        assert row["insertion − random"] == pytest.approx(
            figures["insertion_auc"] - faithful["random"]["insertion_auc"]
        )
    # the floor and the reference of every model, in their own table
    references = at.dataframe[1].value
    assert len(references) == 2 * len(cards)
    floor = references[references["map"] == "random map (floor)"].set_index("kind")
    for kind, card in cards.items():
        assert floor.loc[kind, "insertion AUC"] == card["faithfulness"]["random"]["insertion_auc"]
    assert any("lower deletion AUC is better" in c.value for c in at.caption)
    assert any("random map is the floor" in c.value or "the floor" in c.value for c in at.caption)
    # the scatter: one point per map, one trace per module kind, Grad-CAM as crosses
    spec = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert sum(len(trace["x"]) for trace in spec["data"]) == len(table)
    assert [trace["name"] for trace in spec["data"]] == list(cards)
    symbols = [s for trace in spec["data"] for s in trace["marker"]["symbol"]]
    assert symbols.count("x") == len(cards)  # every model's Grad-CAM
    assert "insertion AUC − random" in spec["layout"]["yaxis"]["title"]["text"]
    assert "× uniform" in spec["layout"]["xaxis"]["title"]["text"]
    at.radio(key="leaderboard_scatter_x").set_value("pointing game").run()
    spec = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert [x for trace in spec["data"] for x in trace["x"]] == pytest.approx(
        [s["pointing"] for c in cards.values() for s in c["localization"]]
    )


def test_leaderboard_faithfulness_helpers() -> None:
    cards = {k: dict(v) for k, v in FAKE_CARDS.items()}
    cards["gc"]["faithfulness"] = {
        "n": 4,
        "n_road": 2,
        "steps": 20,
        "road_percentiles": [20, 50, 80],
        "maps": {"Grad-CAM · stage3": {"deletion_auc": 0.1, "insertion_auc": 0.7, "road_combined": 0.2}},
        "random": {"n": 4, "deletion_auc": 0.3, "insertion_auc": 0.4, "road_combined": 0.0},
        "object_box": {"n": 4, "deletion_auc": 0.05, "insertion_auc": 0.9, "road_combined": 0.3},
    }
    rows = leaderboard.leaderboard_rows(cards)
    gc = [r for r in rows if r["kind"] == "gc"]
    assert gc[0]["deletion AUC"] is None and gc[0]["insertion − random"] is None  # no figures: None
    assert (gc[1]["deletion AUC"], gc[1]["insertion AUC"], gc[1]["ROAD"]) == (0.1, 0.7, 0.2)
    assert gc[1]["insertion − random"] == pytest.approx(0.3)
    assert [r["map"] for r in leaderboard.reference_rows(cards)] == [
        "random map (floor)",
        "object box (reference)",
    ]
    fig = leaderboard.faithfulness_figure(rows)
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [("gc", [4.0], [pytest.approx(0.3)])]
    assert list(fig.data[0].marker.symbol) == ["x"]
    notes = leaderboard.faithfulness_notes(cards)
    assert "zoo_cbam" in notes[0] and "zoo eval" in notes[0]
    assert "first 4 held-out scenes" in notes[1] and "20, 50, 80" in notes[1]
    with pytest.raises(ValueError, match="x must be one of"):
        leaderboard.faithfulness_figure(rows, "accuracy")


def test_scene_card_figures_are_the_cards() -> None:
    card = json.loads(zoo.card_path("cbam").read_text())
    best = zoo.best_block(card)
    faithful = card["faithfulness"]
    block, cam, floor = faithful["maps"][best.name], faithful["maps"]["Grad-CAM · stage3"], faithful["random"]

    def cells(f: dict) -> str:
        return f"{f['deletion_auc']:.3f} / {f['insertion_auc']:.3f} / {f['road_combined']:+.3f}"

    assert scene.card_figures("zoo_cbam") == (
        f"Card: {best.text}. Faithfulness on {faithful['n']} held-out scenes, ROAD on {faithful['n_road']} "
        f"(deletion ↓ / insertion ↑ / ROAD ↑): block {best.block} {cells(block)} · "
        f"Grad-CAM {cells(cam)} · random {cells(floor)}"
    )
    se = scene.card_figures("zoo_se")  # channel-only attention: no block, Grad-CAM and the floor
    assert se.startswith("Faithfulness on") and "Grad-CAM" in se and "block" not in se
    assert scene.card_figures("my_playground_net") is None


# --------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------


def test_modules_page_teaches_every_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Formulas, graphs, costs and code, with the live examples failing fast (no model runs)."""

    def no_model(name, **kwargs):
        raise attnviz.WeightsUnavailableError(f"no weights for {name}", weights_file="x", expected_path="y")

    monkeypatch.setattr(attnviz, "load_model", no_model)
    at = open_page("modules")
    assert at.title[0].value == "Modules"
    assert [t.label for t in at.tabs] == [g.short for g in MODULE_GUIDE.values()]
    latex = [element.value for element in at.latex]
    assert len(latex) == len(MODULE_GUIDE)
    for guide, value in zip(MODULE_GUIDE.values(), latex, strict=True):
        assert guide.formula in value
    assert len(at.get("graphviz_chart")) == len(MODULE_GUIDE)
    assert [c.value for c in at.code] == [p.code.strip() for p in INSERTION_PATTERNS]
    assert len(at.table) == len(MODULE_GUIDE)  # one cost table per tab
    costs = at.dataframe[0].value
    assert list(costs["kind"]) == list(MODULE_GUIDE) and (costs["FLOPs"] > 0).all()
    assert [plain(e.value) for e in at.tabs[0].error] == ["no weights for zoo_se"]

    # A size MHSA refuses: that module's cost is an error, the others are still counted.
    at.number_input(key="modules_side").set_value(32).run()
    assert not at.exception
    at.number_input(key="modules_channels").set_value(8).run()
    assert not at.exception and len(at.dataframe[0].value) == len(MODULE_GUIDE)


@pytest.mark.slow
def test_modules_page_live_examples() -> None:
    at = open_page("modules")
    assert not at.error, [e.value for e in at.error]
    cbam = at.tabs[list(MODULE_GUIDE).index("cbam")]
    captions = [plain(c.value) for c in cbam.caption]
    assert any(c.startswith("scene: ") for c in captions)
    assert any("cbam_spatial" in c for c in captions) and any(c.startswith("Grad-CAM") for c in captions)
    assert len(cbam.image) == 3  # the scene, the best block's spatial gate, Grad-CAM (with colour bars)
    assert any(c.startswith("block 0 · attn2 (cbam_spatial)") and "scale: absolute" in c for c in captions)
    assert any(c.startswith("Shown: block 0 finds the object best") for c in captions)
    se = at.tabs[list(MODULE_GUIDE).index("se")]
    assert len(se.get("plotly_chart")) == 1  # channel weights instead of a map
    assert len(at.session_state["modules_results"]) == len(MODULE_GUIDE)


# --------------------------------------------------------------------------------------------------
# Compare page: zoo defaults and generated scenes
# --------------------------------------------------------------------------------------------------


def test_compare_defaults_to_zoo_models_and_offers_scenes() -> None:
    at = open_app()
    assert at.session_state["compare_models"] == ["zoo_cbam", "zoo_gc"]
    options = at.multiselect(key="compare_samples").options
    scenes = [o for o in options if o.startswith("scene: ")]
    assert len(scenes) == 3 and all(o.split()[1] in CLASSES for o in scenes)


@pytest.mark.slow
def test_compare_runs_zoo_models_on_a_generated_scene() -> None:
    at = open_app()
    at.multiselect(key="compare_samples").set_value(["scene_star_1.png"]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    for model in ("zoo_cbam", "zoo_gc"):
        assert len(model_column(at, model).image) == 2  # Grad-CAM and the block's spatial map
