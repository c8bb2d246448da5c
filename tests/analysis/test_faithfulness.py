"""Faithfulness of maps (attnviz.analysis.faithfulness): deletion, insertion, ROAD, the random floor.

ROAD equals ``pytorch_grad_cam.metrics`` called directly on the same maps; the masks are nested and
remove exactly their share of pixels; the curves' end points are the model's own probabilities on
the unperturbed, blanked and blurred crops; on zoo scenes the object's own mask beats its inverse
and the random map for a trained zoo model (a property that must hold); every map kind the app
shows gets a score, or a stated reason why not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import make_image, wrap_module
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import attnviz
from attnviz.analysis import faithfulness as fa
from attnviz.core.faithfulness_records import RANDOM_NAME, InputMap
from attnviz.views.faithfulness import input_maps
from attnviz.workflows.scenes import SceneParams, make_scene


@pytest.fixture(scope="module")
def cbam() -> attnviz.LoadedModel:
    return attnviz.load_model("zoo_cbam", device="cpu")


@pytest.fixture(scope="module")
def cbam_result(cbam: attnviz.LoadedModel) -> attnviz.Analysis:
    [result] = attnviz.analyze(cbam, [make_scene(5).image])
    return result


def crop_tensor(model: attnviz.LoadedModel, analysis: attnviz.Analysis) -> torch.Tensor:
    """The crop the model saw, normalised: recomputed here, independently of the module."""
    x = torch.tensor(analysis.input_image, dtype=torch.float32).permute(2, 0, 1) / 255
    return (x - torch.tensor(model.mean).view(3, 1, 1)) / torch.tensor(model.std).view(3, 1, 1)


def probability(model: attnviz.LoadedModel, images: torch.Tensor, target: int) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.module(images), -1)[:, target].numpy()


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------


def test_masks_are_nested_and_remove_their_share_most_relevant_first() -> None:
    rng = np.random.default_rng(0)
    values = np.round(rng.random((13, 17)), 1)  # many ties
    masks = fa.perturbation_masks(values, 10, seed=4)
    n = values.size
    assert masks.shape == (11, 13, 17) and masks.dtype == bool
    assert [int(m.sum()) for m in masks] == [round(k / 10 * n) for k in range(11)]
    for a, b in itertools.pairwise(masks):
        assert not (a & ~b).any()  # every pixel removed at step k stays removed at k + 1
    for m in masks[1:-1]:  # nothing kept is more relevant than anything removed
        assert values[m].min() >= values[~m].max()
    # ties are broken by the seed, not by position
    assert not np.array_equal(fa.perturbation_masks(values, 10, seed=5), masks)
    np.testing.assert_array_equal(fa.perturbation_masks(values, 10, seed=4), masks)


def test_the_random_baseline_is_smooth_seeded_and_covers_the_input() -> None:
    a, b = fa.random_map((96, 128), 1), fa.random_map((96, 128), 2)
    assert a.shape == (96, 128) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, fa.random_map((96, 128), 1))
    assert np.abs(np.diff(a, axis=1)).max() < 0.1  # blobs, not salt and pepper


# --------------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------------


def test_curves_start_and_end_at_the_models_own_probabilities(
    cbam: attnviz.LoadedModel, cbam_result: attnviz.Analysis
) -> None:
    maps = input_maps(cbam_result)
    result = fa.measure(cbam, cbam_result, maps, steps=8, road=False)
    target = cbam_result.gradcam.target
    assert result.target == target and result.target_label == cbam.categories[target]
    x = crop_tensor(cbam, cbam_result)
    base = probability(cbam, x[None], target)[0]
    blank = probability(cbam, torch.zeros_like(x)[None], target)[0]
    assert result.probability == pytest.approx(base, abs=1e-5)
    assert [s.name for s in result.scores] == [m.name for m in maps] + [RANDOM_NAME]
    for score in result.scores:
        np.testing.assert_allclose(score.deletion.fractions, np.linspace(0, 1, 9))
        assert score.deletion.probabilities[0] == pytest.approx(base, abs=1e-5)  # nothing removed
        assert score.deletion.probabilities[-1] == pytest.approx(blank, abs=1e-5)  # all removed
        assert score.insertion.probabilities[-1] == pytest.approx(base, abs=1e-5)  # all back
        assert score.deletion.auc == pytest.approx(
            np.trapezoid(score.deletion.probabilities, np.linspace(0, 1, 9))
        )
        assert score.insertion.auc == pytest.approx(
            np.trapezoid(score.insertion.probabilities, np.linspace(0, 1, 9))
        )
        assert score.road is None
    # one intermediate deletion step, recomputed from the mask
    gradcam = maps[-1]
    mask = torch.from_numpy(fa.perturbation_masks(gradcam.values, 8)[3])
    direct = probability(cbam, torch.where(mask, torch.zeros_like(x), x)[None], target)[0]
    assert result.scores[-2].deletion.probabilities[3] == pytest.approx(direct, abs=1e-5)
    assert result.forwards == 1 + 2 * 9 * len(result.scores)


def test_road_equals_pytorch_grad_cam_on_the_same_maps(
    cbam: attnviz.LoadedModel, cbam_result: attnviz.Analysis
) -> None:
    """ROAD is pytorch_grad_cam's: ROADCombined on the same CAM (and the random map scored with it,
    in the same batch), the imputation noise drawn from the same seed."""
    gradcam = input_maps(cbam_result)[-1]
    assert gradcam.name.startswith("Grad-CAM")
    result = fa.measure(cbam, cbam_result, [gradcam], road=True, seed=7)
    hw = cbam_result.input_image.shape[:2]
    cams = np.stack([gradcam.values, fa.random_map(hw, 7)]).astype(np.float32)
    x = crop_tensor(cbam, cbam_result)
    target = cbam_result.gradcam.target
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = ROADCombined(list(fa.ROAD_PERCENTILES))(
            x[None].repeat(2, 1, 1, 1), cams, [ClassifierOutputSoftmaxTarget(target)] * 2, cbam.module
        )
    got = [s.road.combined for s in result.scores]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    road = result.scores[0].road
    np.testing.assert_array_equal(road.percentiles, fa.ROAD_PERCENTILES)
    combined = np.mean((road.least_relevant_first - road.most_relevant_first) / 2)
    assert road.combined == pytest.approx(combined, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# The property: the object's own mask is faithful
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_objects_mask_beats_its_inverse_and_the_random_map(cbam: attnviz.LoadedModel, seed: int) -> None:
    """For a trained zoo model on its own scenes: removing the object first destroys the decision
    faster than removing the background first or a random map does (deletion AUC lower), and
    putting the object back first restores it faster (insertion AUC higher) — means over 6 scenes."""
    deletion = {"object": [], "inverse": [], "random": []}
    insertion = {"object": [], "inverse": [], "random": []}
    for i in range(6):
        scene = make_scene(1000 * seed + i, SceneParams(size=96, clutter=0.5))
        [result] = attnviz.analyze(cbam, [scene.image], gradcam=False)
        np.testing.assert_array_equal(result.input_image, scene.image)  # the map lines up
        mask = scene.mask.astype(np.float64)
        maps = [
            InputMap("object", "object", "object", mask),
            InputMap("inverse", "inverse", "inverse", 1 - mask),
        ]
        scored = fa.measure(cbam, result, maps, target=scene.label, road=False, seed=seed)
        for name, score in zip(("object", "inverse", "random"), scored.scores, strict=True):
            deletion[name].append(score.deletion.auc)
            insertion[name].append(score.insertion.auc)
    mean = {k: float(np.mean(v)) for k, v in deletion.items()}
    assert mean["object"] < mean["inverse"] and mean["object"] < mean["random"], mean
    mean = {k: float(np.mean(v)) for k, v in insertion.items()}
    assert mean["object"] > mean["inverse"] and mean["object"] > mean["random"], mean


# --------------------------------------------------------------------------------------------------
# Every map kind gets a score, or a reason
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "weights", "kinds"),
    [
        ("zoo_cbam", "pretrained", {"cbam_spatial"}),
        ("zoo_gc", "pretrained", {"gc_context"}),
        ("zoo_deform", "pretrained", {"deform_conv"}),
        ("zoo_dat", "pretrained", {"dat"}),
        ("zoo_mhsa", "pretrained", {"mhsa"}),
        ("deit_tiny_patch16_224", "random", {"vit", "rollout"}),
        ("swin_t", "random", {"swin"}),
    ],
)
def test_every_map_kind_gets_a_score(model: str, weights: str, kinds: set[str]) -> None:
    loaded = attnviz.load_model(model, weights=weights, device="cpu")
    [result] = attnviz.analyze(loaded, [make_image(3)])
    maps = input_maps(result)
    hw = result.input_image.shape[:2]
    assert all(m.values.shape == hw for m in maps)
    assert kinds <= {m.kind for m in maps} and maps[-1].name.startswith("Grad-CAM")
    # the last two maps of the model and Grad-CAM are enough to show it works for the kind
    chosen = [*[m for m in maps if m.kind in kinds][-2:], maps[-1]]
    scored = fa.measure(loaded, result, chosen, steps=4, road=False)
    assert [s.name for s in scored.scores] == [m.name for m in chosen if np.ptp(m.values) > 0] + [RANDOM_NAME]
    assert {name for name, _ in scored.unscored} == {m.name for m in chosen if np.ptp(m.values) <= 0}
    for s in scored.scores:
        assert np.isfinite(s.deletion.probabilities).all() and 0 <= s.deletion.auc <= 1


def test_maps_that_cannot_be_scored_say_why(cbam: attnviz.LoadedModel, cbam_result: attnviz.Analysis) -> None:
    flat = InputMap("flat", "flat", "flat", np.full(cbam_result.input_image.shape[:2], 0.5))
    scored = fa.measure(cbam, cbam_result, [flat], steps=2, road=False)
    assert scored.unscored == (("flat", "a constant map orders no pixel"),)
    assert [s.kind for s in scored.scores] == ["random"]
    # a model without a classifier (DINO-like): nothing to follow
    extractor = wrap_module(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), 32, name="feat"
    )
    [features] = attnviz.analyze(extractor, [make_image(1)])
    grid = InputMap("m", "m", "m", np.random.default_rng(0).random(features.input_image.shape[:2]))
    none = fa.measure(extractor, features, [grid])
    assert none.scores == () and none.unscored == (
        ("m", "the model has no classifier: there is no class probability to follow"),
    )


def test_bad_arguments(cbam: attnviz.LoadedModel, cbam_result: attnviz.Analysis) -> None:
    maps = input_maps(cbam_result)
    with pytest.raises(ValueError, match="target must be a class index"):
        fa.measure(cbam, cbam_result, maps, target=99)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        fa.measure(cbam, cbam_result, maps, steps=0)
    with pytest.raises(ValueError, match="a map of"):
        fa.measure(cbam, cbam_result, [InputMap("small", "s", "s", np.ones((4, 4)))])
    other = attnviz.load_model("zoo_se", device="cpu")
    with pytest.raises(ValueError, match="cannot be measured with zoo_se"):
        fa.measure(other, cbam_result, maps)
