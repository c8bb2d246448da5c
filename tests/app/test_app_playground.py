"""The Playground page, driven headless with ``streamlit.testing.v1.AppTest`` (no browser, no network).

Runs train for real on the CPU with tiny budgets (a few steps on 500 scenes). AppTest does not
fire ``st.fragment(run_every=...)`` on a timer, so a test waits for a run with its ``join`` and then
reruns the page, as the poll would. Saved models go to a temporary folder (``ATTNVIZ_USER_MODELS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import attnviz
from attnviz.workflows import playground as pg
from ui import DEVICE_KEY
from ui import playground as pw

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 180
JOIN_S = 180


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user-models folder for the test (never the real one)."""
    folder = tmp_path / "user_models"
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(folder))
    return folder


@pytest.fixture
def at(models_dir: Path) -> Iterator[AppTest]:
    """The app on the Playground page; any run it started is stopped and joined afterwards."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    app.switch_page("pages/playground.py").run()
    # Without this, AppTest's reruns after a widget change do not see the sidebar's device in
    # st.session_state, so ui.require_app sends them back to the default page.
    app.session_state[DEVICE_KEY] = "cpu"
    assert not app.exception, app.exception
    yield app
    for run in app.session_state.get(pw.RUNS_KEY, {}).values():
        run.stop()
        run.join(JOIN_S)


def _tiny(at: AppTest, steps: int = 6) -> None:
    """A tiny budget: a few steps of small batches on the smallest set of scenes."""
    at.number_input(key="playground_steps").set_value(steps).run()
    at.select_slider(key="playground_batch").set_value(16).run()
    at.select_slider(key="playground_n_train").set_value(500).run()
    assert not at.exception, at.exception


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def _wait(at: AppTest, slot: str) -> pg.RunState:
    """Wait for ``slot``'s run to end, then rerun the page (what the poll does)."""
    state = at.session_state[pw.RUNS_KEY][slot].join(JOIN_S)
    at.run()
    assert not at.exception, at.exception
    return state


def test_the_page_shows_the_choices_and_their_cost_before_training(at: AppTest) -> None:
    assert at.title[0].value == "Attention playground"
    assert not at.button(key="playground_train").disabled
    assert at.button(key="playground_stop").disabled
    captions = [c.value for c in at.caption if "parameters" in c.value]
    assert len(captions) == 1 and "MFLOPs" in captions[0]

    at.toggle(key=pw.SECOND_KEY).set_value(True).run()
    assert len([c for c in at.caption if "parameters" in c.value]) == 2

    at.segmented_control(key="playground_b_pattern").set_value("core").run()
    assert at.slider(key="playground_b_depth").value == 2
    assert at.select_slider(key="playground_b_heads").value == 4
    assert any("self-attention core" in c.value for c in at.caption)
    at.segmented_control(key="playground_b_pattern").set_value("parallel").run()
    assert at.segmented_control(key="playground_b_fuse").value == "sum"
    assert not at.exception, at.exception


def test_two_tiny_runs_train_one_after_the_other_and_a_model_is_saved_and_deleted(
    at: AppTest, models_dir: Path
) -> None:
    _tiny(at)
    at.toggle(key=pw.SECOND_KEY).set_value(True).run()
    at.selectbox(key="playground_b_kind").set_value("se").run()
    at.button(key="playground_train").click().run()
    assert not at.exception, at.exception
    assert at.button(key="playground_train").disabled  # one training per session at a time
    assert [slot for slot, _ in at.session_state[pw.QUEUE_KEY]] == ["B"]

    a = _wait(at, "A")  # the rerun starts B
    assert a.status == "done" and a.step == a.steps == 6
    assert "B" in at.session_state[pw.RUNS_KEY]
    b = _wait(at, "B")
    assert b.status == "done"
    assert a.snapshots and b.snapshots
    assert at.session_state[pw.QUEUE_KEY] == []

    text = _markdown(at)
    assert "**A** · done" in text and "**B** · done" in text
    assert "no spatial attention map" in text  # SE gates channels only
    assert len(at.get("plotly_chart")) == 1
    assert len(at.main.image) == 6 * 4  # the probes, then A: map and Grad-CAM, B: Grad-CAM only
    assert not at.button(key="playground_train").disabled

    # Save A under a bad name, then a good one; it appears among attnviz's models, then is deleted.
    at.segmented_control(key="playground_save_slot").set_value("A").run()
    at.text_input(key="playground_save_name").set_value("../evil").run()
    at.button(key="playground_save").click().run()
    assert any("lower-case" in w.value for w in at.warning)
    assert not models_dir.exists() or not any(models_dir.iterdir())
    at.text_input(key="playground_save_name").set_value("tiny-cbam").run()
    at.button(key="playground_save").click().run()
    assert not at.exception, at.exception
    assert any("user\\_tiny-cbam" in s.value for s in at.success), [w.value for w in at.warning]
    assert (models_dir / "tiny-cbam.safetensors").is_file()
    assert "user_tiny-cbam" in [s.name for s in attnviz.list_models()]

    at.run()
    at.button(key="playground_delete_tiny-cbam").click().run()
    assert not at.exception, at.exception
    assert not (models_dir / "tiny-cbam.safetensors").exists()
    assert "user_tiny-cbam" not in [s.name for s in attnviz.list_models()]


def test_stop_ends_the_run_and_drops_the_queue(at: AppTest) -> None:
    _tiny(at, steps=2000)
    at.toggle(key=pw.SECOND_KEY).set_value(True).run()
    at.button(key="playground_train").click().run()
    assert not at.button(key="playground_stop").disabled
    at.button(key="playground_stop").click().run()
    state = _wait(at, "A")
    assert state.status == "stopped" and state.step < 2000
    assert at.session_state[pw.QUEUE_KEY] == []
    assert "B" not in at.session_state[pw.RUNS_KEY]
    assert "**A** · stopped" in _markdown(at)
    assert not [b for b in at.button if b.key == "playground_save"]  # a stopped run is not offered


def test_the_cap_message_shows_when_the_server_is_busy(at: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(config: pg.PlaygroundConfig) -> pg.PlaygroundRun:
        raise pg.PlaygroundBusy("The server already runs 1 training (its limit): try again when it ends.")

    monkeypatch.setattr(pg, "start_run", busy)
    at.button(key="playground_train").click().run()
    assert not at.exception, at.exception
    assert any("already runs 1 training" in w.value for w in at.warning)
    assert not at.button(key="playground_train").disabled


@pytest.mark.slow
def test_a_saved_model_joins_the_zoo_in_the_scene_lab(models_dir: Path) -> None:
    """A model saved from the Playground (here straight through the store) gets its own column in
    the Scene lab, next to the zoo's, and runs on the scene like them."""
    import torch

    from attnviz.backends import save_user_model
    from attnviz.layers.playground_net import Placement, PlaygroundNet

    torch.manual_seed(0)
    save_user_model("lab-gc", PlaygroundNet(Placement("gc", "serial", 2)).eval())
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    app.switch_page("pages/scene.py").run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    headers = [s.value for col in app.columns for s in col.subheader]
    assert "user_lab-gc" in headers and "zoo_gc" in headers
    [result] = [a for k, a in app.session_state["scene_results"].items() if k[0] == "user_lab-gc"]
    assert [r.kind for r in result.records if r.kind.startswith("gc")] == ["gc_context", "gc_add"]


def test_the_readme_shows_the_playground_learning() -> None:
    """The README's picture of the default run (made once from the app, committed small)."""
    from PIL import Image

    path = ROOT / "assets" / "screenshots" / "playground.jpg"
    assert "(assets/screenshots/playground.jpg)" in (ROOT / "README.md").read_text()
    assert path.stat().st_size <= 200_000
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.width >= 600
