"""The app with its models on Ray Serve (the session's local Serve application, ``served_app``).

Pointed at the cluster (``ATTNVIZ_RAY_ADDRESS``), the app holds no model: a comparison runs end to
end on the served models, Grad-CAM and a re-targeted Grad-CAM included, and gives the same results
as the app running the models in its own process. A cluster that cannot be reached is one sentence
at start, and the page runs nothing."""

from __future__ import annotations

import numpy as np
import pytest
import streamlit as st
from conftest import SERVED_MODELS, assert_same
from test_app import model_column, open_app, plain

import attnviz
from ui import backend

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def on_ray(served_app: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app's backend set to the session's local Ray cluster (its GCS address)."""
    import ray

    address = ray.get_runtime_context().gcs_address
    monkeypatch.setenv(backend.RAY_ADDRESS_ENV, address)
    return address


def pick(at, models: list[str]) -> None:
    """``choose`` for a page that offers only some groups (a cluster serving only some models)."""
    groups = {s.name: s.group for s in attnviz.list_models()}
    if list(at.session_state["compare_models"]) != list(models):
        for p in at.pills:
            if p.value:
                p.set_value([]).run()
        for model in models:
            pills = at.pills(key=f"compare_models_{groups[model]}")
            pills.set_value([*pills.value, model]).run()
    assert at.session_state["compare_models"] == list(models)


def run_comparison(models: list[str], random: list[str]):
    at = open_app()
    pick(at, models)
    at.multiselect(key="compare_random").set_value(random).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_a_comparison_runs_on_the_cluster_and_matches_in_process(
    on_ray: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = ["zoo_cbam", "deit_tiny_patch16_224"]
    loads: list[str] = []
    real_load = attnviz.load_model
    monkeypatch.setattr(attnviz, "load_model", lambda name, **kw: loads.append(name) or real_load(name, **kw))
    at = run_comparison(models, ["deit_tiny_patch16_224"])
    assert loads == []  # the app process loaded no model: the cluster ran them
    # the sidebar says where the models run; the device is the cluster's
    assert at.sidebar.selectbox(key="sidebar_device").value == "Ray"
    assert any(f"Models run on the Ray cluster at {on_ray}" in c.value for c in at.sidebar.caption)
    # only what the cluster serves is offered
    offered = {name for p in at.pills for name in p.options}
    assert offered == set(SERVED_MODELS)
    served = dict(at.session_state["compare_results"])
    assert {a.model for a in served.values()} == set(models)
    assert all(a.gradcam is not None for a in served.values())  # the Grad-CAM row came from Ray too
    cbam = model_column(at, "zoo_cbam")
    assert any("Grad-CAM at" in plain(img.caption) for el in cbam.image for img in el.proto.imgs)

    # the same comparison in the app's own process gives the same results
    monkeypatch.delenv(backend.RAY_ADDRESS_ENV)
    st.cache_resource.clear()
    local = run_comparison(models, ["deit_tiny_patch16_224"])
    assert loads  # this time the app loaded the models itself
    # keyed by (image, model, weights, device): the device is "Ray" there, the CPU here
    here = {key[:-1]: a for key, a in local.session_state["compare_results"].items()}
    assert {key[-1] for key in served} == {"Ray"} and set(here) == {key[:-1] for key in served}
    for key, result in served.items():
        assert_same(result, here[key[:-1]], atol=1e-5)


def test_retargeting_grad_cam_runs_on_the_cluster(on_ray: str) -> None:
    at = run_comparison(["zoo_cbam"], [])
    [key] = at.session_state["compare_results"]
    result = at.session_state["compare_results"][key]
    picker = next(s for s in at.selectbox if s.label == "Grad-CAM explains")
    other = result.top5[1].index
    picker.set_value(other).run()
    assert not at.exception, at.exception
    updated = at.session_state["compare_results"][key]
    assert updated.gradcam.target == other
    loaded = attnviz.load_model("zoo_cbam", device="cpu")
    [ref] = attnviz.add_gradcam(loaded, [result], [result.input_image], targets=[other])
    assert ref.gradcam is not None
    assert updated.gradcam.values.shape == ref.gradcam.values.shape
    np.testing.assert_allclose(updated.gradcam.values, ref.gradcam.values, atol=1e-5)  # the cluster's map


def test_an_unreachable_cluster_is_one_message_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backend.RAY_ADDRESS_ENV, "127.0.0.1:1")
    at = open_app()
    assert [e.value for e in at.error] == [
        "Cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused): start it with `ray start --head` "
        "and `python -m attnviz serve`, or run the models in this process (no Ray address)."
    ]
    assert not at.exception and not at.button  # no page ran: nothing to press
    assert at.sidebar.selectbox(key="sidebar_device").value == "Ray"


def test_the_address_comes_from_the_command_line_the_environment_or_secrets() -> None:
    assert backend.ray_address(["--ray", "head:6379"], {}) == "head:6379"
    assert (
        backend.ray_address(["--ray=ray://head:10001"], {backend.RAY_ADDRESS_ENV: "x:1"})
        == "ray://head:10001"
    )
    assert backend.ray_address([], {backend.RAY_ADDRESS_ENV: " auto "}) == "auto"
    assert backend.ray_address([], {backend.RAY_ADDRESS_ENV: "in-process"}) is None
    assert backend.ray_address([], {}) is None  # no secrets file here: in this process


def test_grad_cam_values_on_the_cluster_equal_in_process(served_app, on_ray: str) -> None:
    """The re-targeted Grad-CAM map itself, value for value (the page test checks it arrives)."""
    from conftest import make_image

    image = make_image(31)
    [first] = served_app.analyze("zoo_cbam", [image], gradcam=False)
    [served] = backend.backend().add_gradcam("zoo_cbam", "pretrained", "Ray", [first], [image], [3])
    loaded = attnviz.load_model("zoo_cbam", device="cpu")
    [ref] = attnviz.add_gradcam(loaded, [first], [image], targets=[3])
    np.testing.assert_allclose(served.gradcam.values, ref.gradcam.values, atol=1e-5)
