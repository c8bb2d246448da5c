"""The built-in zoo: committed weights load offline, reproduce their cards, and localise the object."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import attnviz
from attnviz.backends import zoo as zoo_cards
from attnviz.cli import main
from attnviz.layers import zoo_net
from attnviz.workflows import zoo_training

KINDS = list(zoo_net.ZOO_KINDS)
# Zoo models whose attention has a spatial reading (a map over positions).
SPATIAL = ["cbam", "ca", "gc", "nonlocal", "mhsa", "dat"]
BUDGET_BYTES = 15 * 1024 * 1024


def test_every_kind_has_small_committed_weights_and_a_card():
    total = 0
    for kind in KINDS:
        assert zoo_cards.weights_path(kind).is_file(), f"missing {zoo_cards.weights_path(kind)}"
        total += zoo_cards.weights_path(kind).stat().st_size
        card = json.loads(
            zoo_cards.card_path(kind).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in card")
        )
        assert card["name"] == zoo_net.zoo_name(kind) and card["kind"] == kind
        assert card["classes"] == list(attnviz.workflows.scenes.CLASSES)
        assert card["training"]["config"]["seed"] == zoo_training.TrainConfig().seed
        assert card["accuracy"] >= 0.9, f"{kind}: {card['accuracy']}"
        assert card["localization"], kind
        spec = attnviz.get_spec(zoo_net.zoo_name(kind))
        assert spec.source == "attnviz" and spec.pretrained_available
    assert total < BUDGET_BYTES


@pytest.mark.parametrize("kind", KINDS)
def test_committed_weights_reproduce_the_card_accuracy(kind):
    card = zoo_cards.read_card(kind)
    check = card["check_set"]
    images, labels, _, _ = zoo_training.held_out_set(check["n"], check["seed"], check["clutter"])
    model = attnviz.load_model(zoo_net.zoo_name(kind), weights="pretrained", device="cpu")
    assert not model.untrained and model.categories == attnviz.workflows.scenes.CLASSES
    assert zoo_training.parameter_count(model.module) == card["parameters"]
    got = zoo_training.accuracy(model.module, images, labels)
    assert got >= 0.9
    assert abs(got - check["accuracy"]) <= 1 / check["n"] + 1e-9


@pytest.mark.parametrize("kind", SPATIAL)
def test_spatial_attention_puts_more_mass_on_the_object_than_its_area(kind):
    images, labels, boxes, _ = zoo_training.held_out_set(200, seed=7)
    result = zoo_training.evaluate_zoo_model(kind, images, labels, boxes, gradcam=False, faithfulness=0)
    assert result["faithfulness"] is None
    maps = [s for s in result["localization"] if not s["name"].startswith("Grad-CAM")]
    assert maps, kind
    best = max(maps, key=lambda s: s["energy_ratio"])
    # a uniform map has energy == area share; the recorded metric is recomputed here
    assert best["energy"] > best["area_share"], best


def test_training_is_reproducible():
    config = zoo_training.TrainConfig(n_train=48, epochs=1, batch_size=16)
    images, labels, _, _ = zoo_training.held_out_set(48, seed=5)
    a, _ = zoo_training.train_zoo_model("cbam", config, data=(images, labels))
    b, _ = zoo_training.train_zoo_model("cbam", config, data=(images, labels))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=name)


def test_every_zoo_kind_builds_and_runs():
    for kind in KINDS:
        model = zoo_net.build_zoo_model(kind).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, zoo_net.INPUT_SIZE, zoo_net.INPUT_SIZE))
        assert out.shape == (2, len(attnviz.workflows.scenes.CLASSES))
    with pytest.raises(ValueError, match="Unknown zoo kind 'vit'"):
        zoo_net.ZooNet("vit")


def test_format_table_lists_every_map():
    rows = [
        {
            "model": "zoo_x",
            "accuracy": 0.95,
            "localization": [
                {
                    "name": "block 0 · a",
                    "pointing": 0.5,
                    "energy": 0.2,
                    "area_share": 0.05,
                    "energy_ratio": 4.0,
                },
                {
                    "name": "Grad-CAM · b",
                    "pointing": 0.7,
                    "energy": 0.3,
                    "area_share": 0.05,
                    "energy_ratio": 6.0,
                },
            ],
        }
    ]
    table = zoo_training.format_table(rows).splitlines()
    assert table[0].endswith("| energy ratio | deletion AUC ↓ | insertion AUC ↑ | ROAD ↑ |")
    assert table[2] == "| zoo_x | 95.0% | block 0 · a | 50.0% | 0.200 | 0.050 | 4.00 | – | – | – |"
    assert table[3] == "|  |  | Grad-CAM · b | 70.0% | 0.300 | 0.050 | 6.00 | – | – | – |"
    assert len(table) == 4
    figures = {"n": 4, "deletion_auc": 0.1, "insertion_auc": 0.6, "n_road": 2, "road_combined": 0.25}
    rows[0]["faithfulness"] = {
        "maps": {"block 0 · a": figures},
        "random": {"n": 4, "deletion_auc": 0.3, "insertion_auc": 0.35, "n_road": 2, "road_combined": -0.05},
        "object_box": {"n": 4, "deletion_auc": 0.05, "insertion_auc": 0.9},
    }
    table = zoo_training.format_table(rows).splitlines()
    assert (
        table[2] == "| zoo_x | 95.0% | block 0 · a | 50.0% | 0.200 | 0.050 | 4.00 | 0.100 | 0.600 | +0.250 |"
    )
    assert table[3] == "|  |  | Grad-CAM · b | 70.0% | 0.300 | 0.050 | 6.00 | – | – | – |"
    assert table[4] == "|  |  | random map (floor) | – | – | – | – | 0.300 | 0.350 | -0.050 |"
    assert table[5] == "|  |  | object box (reference) | – | – | – | – | 0.050 | 0.900 | – |"


def test_cli_zoo_eval(capsys):
    assert main(["zoo", "eval", "--kind", "gc", "--n", "2", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert row["model"] == "zoo_gc" and row["n"] == 2 and 0 <= row["accuracy"] <= 1
    names = [s["name"] for s in row["localization"]]
    assert any("gc_context" in n for n in names) and names[-1].startswith("Grad-CAM")
    faithful = row["faithfulness"]
    assert faithful["n"] == 2 and faithful["target"] == "true class"
    assert list(faithful["maps"]) == names  # every map the localisation scores
    for figures in [*faithful["maps"].values(), faithful["random"], faithful["object_box"]]:
        assert figures["n"] == 2 and figures["n_road"] == 2
        assert 0 <= figures["deletion_auc"] <= 1 and 0 <= figures["insertion_auc"] <= 1
        assert -1 <= figures["road_combined"] <= 1


def test_cli_zoo_eval_writes_the_faithfulness_into_the_card(monkeypatch, tmp_path, capsys):
    """``--write-cards`` stores the eval's faithfulness in the card; nothing else of it changes."""
    real = zoo_cards.card_path("gc")
    card = json.loads(real.read_text())
    copy = tmp_path / "zoo_gc.json"
    copy.write_text(json.dumps({k: v for k, v in card.items() if k != "faithfulness"}))
    monkeypatch.setattr(zoo_training, "card_path", lambda kind: copy)
    monkeypatch.setattr(zoo_cards, "card_path", lambda kind: copy)
    figures = {"n": 1, "maps": {"m": {"deletion_auc": 0.1}}}
    monkeypatch.setattr(
        zoo_training, "evaluate_zoo_model", lambda kind, *a, **k: {"model": "zoo_gc", "faithfulness": figures}
    )
    monkeypatch.setattr(zoo_training, "format_table", lambda rows: "table")
    monkeypatch.setattr(zoo_training, "held_out_set", lambda n, seed, clutter: (None, None, None, None))
    assert main(["zoo", "eval", "--kind", "gc", "--write-cards"]) == 0
    written = json.loads(copy.read_text())
    assert written["faithfulness"] == figures
    assert {k: v for k, v in written.items() if k != "faithfulness"} == {
        k: v for k, v in card.items() if k != "faithfulness"
    }
    assert main(["zoo", "eval", "--kind", "gc", "--write-cards", "--n", "5"]) == 2
    assert "leave out --n" in capsys.readouterr().err


def test_eval_faithfulness_equals_measure_on_each_scene():
    """The eval's means are the means of :func:`measure` run on each scene by hand."""
    from attnviz.analysis.faithfulness import measure
    from attnviz.core.faithfulness_records import InputMap
    from attnviz.views.faithfulness import input_maps

    images, labels, boxes, _ = zoo_training.held_out_set(8, 2)
    got = zoo_training.evaluate_faithfulness("cbam", images, labels, boxes, n=3, n_road=1)
    model = attnviz.load_model("zoo_cbam", weights="pretrained", device="cpu")
    expected: dict[str, list] = {}
    for i, analysis in enumerate(attnviz.analyze(model, list(images[:3]), gradcam=True)):
        maps = input_maps(analysis, with_rollout=False)
        box = np.zeros((96, 96))
        y0, x0, y1, x1 = boxes[i]
        box[y0:y1, x0:x1] = 1
        maps.append(InputMap("box", "box", "box", box))
        found = measure(
            model, analysis, maps, target=int(labels[i]), road=i == 0, road_percentiles=(20, 50, 80), seed=i
        )
        for score in found.scores:
            expected.setdefault("random" if score.kind == "random" else score.name, []).append(score)
    assert got["n"] == 3 and got["n_road"] == 1 and got["road_percentiles"] == [20, 50, 80]
    assert list(got["maps"]) == [
        "block 0 · attn2 (cbam_spatial)",
        "block 1 · attn3 (cbam_spatial)",
        "Grad-CAM · stage3",
    ]
    pairs = [(got["maps"][name], expected[name]) for name in got["maps"]]
    pairs += [(got["random"], expected["random"]), (got["object_box"], expected["box"])]
    for figures, scores in pairs:
        assert figures["n"] == 3 and figures["n_road"] == 1
        assert figures["deletion_auc"] == pytest.approx(np.mean([s.deletion.auc for s in scores]), abs=1e-9)
        assert figures["insertion_auc"] == pytest.approx(np.mean([s.insertion.auc for s in scores]), abs=1e-9)
        assert figures["road_combined"] == pytest.approx(scores[0].road.combined, abs=1e-7)
    # the object's box is a faithful map; the random one is the floor
    assert got["object_box"]["insertion_auc"] > got["random"]["insertion_auc"]


def test_committed_cards_carry_finite_faithfulness_of_every_map():
    for kind in KINDS:
        text = zoo_cards.card_path(kind).read_text()
        card = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in a card"))
        assert json.loads(json.dumps(card, indent=2, allow_nan=False)) == card  # round-trips, finite
        faithful = card["faithfulness"]
        assert faithful["n"] == zoo_training.N_FAITHFULNESS and faithful["target"] == "true class"
        assert faithful["n_road"] == zoo_training.N_ROAD
        assert faithful["road_percentiles"] == list(zoo_training.ROAD_EVAL_PERCENTILES)
        assert list(faithful["maps"]) == [s["name"] for s in card["localization"]], kind
        for figures in [*faithful["maps"].values(), faithful["random"], faithful["object_box"]]:
            assert set(figures) == {"n", "deletion_auc", "insertion_auc", "n_road", "road_combined"}
            assert 0 <= figures["deletion_auc"] <= 1 and 0 <= figures["insertion_auc"] <= 1
            assert -1 <= figures["road_combined"] <= 1
        # the sanity reference: the object's box beats the random floor on every figure
        box, floor = faithful["object_box"], faithful["random"]
        assert box["insertion_auc"] > floor["insertion_auc"] and box["deletion_auc"] < floor["deletion_auc"]


def test_write_card_faithfulness_keeps_the_other_figures(monkeypatch, tmp_path):
    import shutil

    for suffix in (".json", ".safetensors"):
        shutil.copy(zoo_cards.card_path("none").with_suffix(suffix), tmp_path / f"zoo_none{suffix}")
    monkeypatch.setattr(zoo_cards, "ZOO_DIR", tmp_path)
    before = json.loads((tmp_path / "zoo_none.json").read_text())
    before["eval_set"]["n"] = 6  # a small held-out set: the first 2 of its scenes are scored
    (tmp_path / "zoo_none.json").write_text(json.dumps(before))
    lines = []
    card = zoo_training.write_card_faithfulness("none", n=2, log_line=lines.append)
    after = json.loads(
        (tmp_path / "zoo_none.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in card")
    )
    assert after == card
    assert {k: v for k, v in after.items() if k != "faithfulness"} == {
        k: v for k, v in before.items() if k != "faithfulness"
    }
    assert after["faithfulness"]["n"] == 2 and list(after["faithfulness"]["maps"]) == ["Grad-CAM · stage3"]
    assert lines == ["zoo_none: faithfulness of 1 map(s) on 2 scenes"]


def test_cli_zoo_rejects_unknown_kind(capsys):
    assert main(["zoo", "eval", "--kind", "nope"]) == 2
    assert "Unknown zoo kind 'nope'" in capsys.readouterr().err


def test_zoo_analyze_through_the_cli(tmp_path, capsys):
    image = tmp_path / "scene.png"
    from PIL import Image

    Image.fromarray(attnviz.workflows.scenes.make_scene(4).image).save(image)
    assert (
        main(["analyze", str(image), "--model", "zoo_ca", "--model", "zoo_dat", "--out", str(tmp_path / "o")])
        == 0
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    kinds = {r["type"] for res in summary["results"] for r in res["records"]}
    assert {"AxisGates", "TokenAttention", "SamplingPoints"} <= kinds
    assert not any(res["untrained"] for res in summary["results"])


def test_missing_zoo_weights_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo_cards, "ZOO_DIR", tmp_path)
    with pytest.raises(
        attnviz.WeightsUnavailableError, match=r"zoo_se\.safetensors.*zoo train --kind se"
    ) as info:
        attnviz.load_model("zoo_se", weights="pretrained")
    assert info.value.summary == (
        "The trained weights of zoo_se are missing from this copy of attnviz: restore "
        "assets/zoo/zoo_se.safetensors from the repository, or retrain them with "
        "`python -m attnviz zoo train --kind se`."
    )
    assert np.isfinite(attnviz.load_model("zoo_se", weights="random").module.fc.weight.sum().item())


def test_best_block_is_the_best_pointing_map_of_the_card():
    card = {
        "localization": [
            {"name": "block 0 · attn2 (mhsa)", "pointing": 0.7, "energy_ratio": 2.0},
            {"name": "block 1 · attn2.1 (mhsa)", "pointing": 0.8, "energy_ratio": 1.5},
            {"name": "block 2 · attn3 (mhsa)", "pointing": 0.8, "energy_ratio": 3.0},  # the tie-break
            {"name": "Grad-CAM · stage3", "pointing": 0.99, "energy_ratio": 9.0},  # not a block
        ]
    }
    best = zoo_cards.best_block(card)
    assert (best.block, best.name, best.pointing, best.energy_ratio) == (
        2,
        "block 2 · attn3 (mhsa)",
        0.8,
        3.0,
    )
    assert best.text == (
        "block 2 finds the object best on the held-out scenes: pointing game 80%, "
        "energy in the box 3.0x uniform"
    )
    assert zoo_cards.best_block({"localization": card["localization"][3:]}) is None
    assert zoo_cards.best_block(None) is None and zoo_cards.best_block({}) is None


def test_best_blocks_of_the_committed_cards():
    """The cards say GC and DAT find the object in their first block, non-local in its second."""
    best = {kind: zoo_cards.best_block(kind) for kind in zoo_net.ZOO_KINDS}
    assert {k for k, b in best.items() if b is None} == {"none", "se", "eca", "sk"}  # no spatial map
    for kind, b in best.items():
        if b is None:
            continue
        rows = [r for r in zoo_cards.read_card(kind)["localization"] if r["name"].startswith("block ")]
        assert b.pointing == max(r["pointing"] for r in rows)
    assert best["gc"].block == 0 and best["gc"].pointing == 1.0
    assert best["dat"].block == 0 and best["nonlocal"].block == 1


@pytest.mark.slow
def test_cli_zoo_train_writes_weights_and_a_scored_card(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(zoo_cards, "ZOO_DIR", tmp_path)
    assert main(["zoo", "train", "--kind", "se", "--epochs", "1", "--n-train", "64"]) == 0
    card = json.loads((tmp_path / "zoo_se.json").read_text())
    assert card["training"]["config"]["epochs"] == 1 and card["training"]["config"]["n_train"] == 64
    assert 0 <= card["accuracy"] <= 1 and card["check_set"]["n"] == zoo_training.CHECK_SET["n"]
    assert any("Grad-CAM" in s["name"] for s in card["localization"])
    model = attnviz.load_model("zoo_se", weights="pretrained")  # loads what was just written
    assert not model.untrained
    assert "| zoo_se |" in capsys.readouterr().out


def test_read_card_reads_each_version_of_the_file_once_and_hands_out_copies(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo_cards, "ZOO_DIR", tmp_path)
    path = zoo_cards.card_path("se")
    path.write_text('{"accuracy": 0.5}')
    first = zoo_cards.read_card("se")
    first["accuracy"] = 0.0  # a caller's change stays its own
    assert zoo_cards.read_card("se") == {"accuracy": 0.5}
    path.write_text('{"accuracy": 0.75}')
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))  # a new version
    assert zoo_cards.read_card("se") == {"accuracy": 0.75}
    path.unlink()
    assert zoo_cards.read_card("se") is None
