"""The Compare page's Faithfulness section, driven headless with AppTest.

The numbers on the page are checked against :func:`attnviz.analysis.faithfulness.measure` run in the
test for the same stored result and the class the column's Grad-CAM explains.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_app import compare, plain

import attnviz
from attnviz.analysis.faithfulness import measure
from attnviz.core.faithfulness_records import RANDOM_NAME
from attnviz.views.faithfulness import input_maps
from ui.backend import Backend
from ui.compare import faithfulness

MODEL = "zoo_cbam"
MEASURE = "compare_faith_measure"


def _figure(at, key: str) -> dict:
    [chart] = [c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id]
    return json.loads(chart.proto.spec)


def _charts(at, kind: str) -> list:
    return [c for c in at.get("plotly_chart") if f"compare_faith_{kind}_" in c.proto.id]


def _table(at):
    [table] = [t.value for t in at.table if "deletion AUC ↓" in t.value.columns]
    return table


def _result_and_target(at):
    [result] = at.session_state["compare_results"].values()
    return result, result.gradcam.target


def _direct(at, road: bool = False):
    """``measure`` of the stored result's maps for its Grad-CAM's class, outside the page."""
    result, target = _result_and_target(at)
    last = at.session_state["compare_last_run"]
    model = attnviz.load_model(MODEL, weights=last.weights_of(MODEL), device=last.device)
    return measure(model, result, input_maps(result), target=target, road=road)


def _assert_table_is(at, expected, road: bool = False) -> None:
    table = _table(at)
    assert list(table.index) == [s.name for s in expected.scores]
    assert table.index[-1] == RANDOM_NAME
    np.testing.assert_allclose(table["deletion AUC ↓"], [s.deletion.auc for s in expected.scores])
    np.testing.assert_allclose(table["insertion AUC ↑"], [s.insertion.auc for s in expected.scores])
    if road:
        np.testing.assert_allclose(table["ROAD combined ↑"], [s.road.combined for s in expected.scores],
                                   rtol=1e-5)  # fmt: skip
    else:
        assert "ROAD combined ↑" not in table.columns


def _measure(at) -> None:
    """Press **Measure faithfulness**. AppTest loses the first click on a widget that first appeared
    in the run of **Run**, so the page is rerun once before (the browser test clicks it directly)."""
    at.run()
    at.button(key=MEASURE).click().run()
    assert not at.exception, at.exception


def _followed(at) -> str:
    return next(plain(c.value) for c in at.caption if plain(c.value).startswith("Following “"))


@pytest.mark.slow
def test_measure_faithfulness_of_a_zoo_model_follows_the_gradcam_class_and_adds_road() -> None:
    at = compare([MODEL])
    assert any(s.value == faithfulness.TITLE for s in at.subheader)
    assert not _charts(at, "deletion")  # on demand only
    assert any("press **Measure faithfulness**" in c.value for c in at.caption)

    _measure(at)
    expected = _direct(at)
    result, target = _result_and_target(at)
    names = [m.name for m in input_maps(result)]
    for kind in ("deletion", "insertion"):
        fig = _figure(at, f"compare_faith_{kind}_{MODEL}")
        traces = fig["data"]
        assert [t["name"].rsplit(" (AUC", 1)[0] for t in traces] == [*names, RANDOM_NAME]
        assert traces[-1]["line"]["dash"] == "dash" and traces[-1]["line"]["color"] == "#8c8c8c"
        auc = {s.name: getattr(s, kind).auc for s in expected.scores}
        assert [t["name"] for t in traces] == [f"{n} (AUC {auc[n]:.3f})" for n in [*names, RANDOM_NAME]]
        assert fig["layout"]["yaxis"]["range"] == [0.0, 1.02]
        assert fig["layout"]["yaxis"]["title"]["text"] == f"probability of “{expected.target_label}”"
        assert fig["layout"]["xaxis"]["title"]["text"].startswith("fraction of pixels")
    assert not _charts(at, "road")
    _assert_table_is(at, expected)
    assert _followed(at).startswith(f"Following “{result.gradcam.target_label}” (class {target})")

    # another class for Grad-CAM: the section follows it (measured again by itself)
    picker = at.selectbox(key=next(k for k in at.session_state if str(k).startswith("compare_cam_target_")))
    other = next(i for i in range(len(picker.options)) if i != target)
    picker.set_value(other).run()
    assert not at.exception, at.exception
    result, target = _result_and_target(at)
    assert target == other
    _measure(at)  # pressing again changes nothing
    expected = _direct(at)
    assert expected.target == other
    _assert_table_is(at, expected)
    assert _followed(at).startswith(f"Following “{expected.target_label}” (class {other})")

    # ROAD adds its chart and its column
    at.checkbox(key="compare_faith_road").check().run()
    assert not _charts(at, "road")
    _measure(at)
    expected = _direct(at, road=True)
    fig = _figure(at, f"compare_faith_road_{MODEL}")
    assert len(fig["data"]) == 2 * (len(names) + 1)  # MoRF and LeRF per map
    _assert_table_is(at, expected, road=True)


@pytest.mark.slow
def test_a_model_whose_measure_fails_says_so_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, model, *args):
        if model == "zoo_gc":
            raise RuntimeError("internal detail that must not reach the page")
        return real(self, model, *args)

    real = Backend.faithfulness
    monkeypatch.setattr(Backend, "faithfulness", broken)
    at = compare([MODEL, "zoo_gc"])
    _measure(at)
    [error] = at.error
    assert plain(error.value) == "zoo_gc failed unexpectedly; the details are in the server log."
    assert len(_charts(at, "deletion")) == 1  # the other model is measured


def test_faithfulness_is_never_measured_on_ray() -> None:
    with pytest.raises(attnviz.ServingError, match="measured in the app's own process"):
        Backend(client=object()).faithfulness(MODEL, "pretrained", "cpu", None, [], None, False)


def test_default_maps_of_a_transformer_are_its_last_block_rollout_and_gradcam() -> None:
    model = attnviz.load_model("deit_tiny_patch16_224", weights="random", device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    [result] = attnviz.analyze(model, [image])
    maps = input_maps(result)
    chosen = faithfulness.default_maps(result, maps)
    assert len(maps) > faithfulness.DEFAULT_MODULE_MAPS + 2
    assert chosen[-2].startswith("rollout") and chosen[-1].startswith("Grad-CAM")
    assert len(chosen) < len(maps) and chosen[0] == next(
        m.name for m in maps if m.name.startswith("block 11")
    )
