"""What a person does, in a real browser: Playwright drives Debian's Chromium against the app.

One server and one browser serve every test of this module; the comparison the tests share (a zoo
CNN, a deformable zoo model and a vision transformer on a photo) is run once and its page is used by
the tests that follow, in file order. Every control a person can touch is used, including clicks
inside the Plotly query pickers (which AppTest cannot do), with assertions on what changes on
screen; after every step no exception box may be on the page, and at the end the server's log may
hold no traceback. Screenshots go to ``<pytest's base temp>/browser``.

The server runs from the repository root on a free loopback port (its own ``.streamlit/config.toml``
applies); the browser is ``/usr/bin/chromium`` from apt, since Playwright's own browser download
cannot work here (``playwright install`` is never run), started with a fake camera. Without
Playwright or Chromium the tests skip, except under ``CI=true``, where they fail: CI installs both and
must run them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = ROOT / "assets" / "samples" / "cat.jpg"
ZOO, DEFORMABLE, TRANSFORMER = "zoo_cbam", "zoo_deform", "deit_tiny_patch16_224"
MODELS = (ZOO, DEFORMABLE, TRANSFORMER)
PAGES = {"Compare": "Compare attention", "Scene lab": "Scene lab", "Playground": "Attention playground",
         "Leaderboard": "Leaderboard", "Modules": "Modules", "Models": "Models"}  # fmt: skip
# The server's first script run imports torch, timm and plotly: minutes on 2 busy cores, not seconds.
START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 180_000
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
HOSTILE_MESSAGE = "evil.png is not a supported image: JPEG, PNG, WebP or GIF expected"
# The screenshot of a comparison that the README shows (made here, copied into assets/ small).
README_SHOT = "readme_compare.jpg"
PLAYGROUND_SHOT = "readme_playground.jpg"

# Arms a flag that is set once the script state leaves "notRunning" (the old value is recorded, so
# a run shorter than one observer callback is still seen).
ARM_RUN_FLAG = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (window.__attnvizObserver) window.__attnvizObserver.disconnect();
  window.__attnvizRan = false;
  window.__attnvizObserver = new MutationObserver((records) => {
    for (const r of records) {
      if (r.oldValue !== "notRunning" || app.getAttribute(r.attributeName) !== "notRunning") {
        window.__attnvizRan = true;
      }
    }
  });
  window.__attnvizObserver.observe(app, {
    attributes: true, attributeOldValue: true, attributeFilter: ["data-test-script-state"],
  });
}"""

# Where a data point (x, y) of the Plotly chart under a selector is on the screen (viewport pixels).
DATA_TO_SCREEN = """([selector, x, y]) => {
  const gd = document.querySelector(selector + " .js-plotly-plot");
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.d2p(x), box.top + ya._offset + ya.d2p(y)];
}"""


def _unavailable(reason: str) -> None:
    """Skip locally, but fail under ``CI=true``: CI installs Chromium and Playwright, so it must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL after 10 s)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium launched through Playwright (headless), with a fake camera."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    # Playwright's 5 s defaults are short for a busy 2-core CI machine.
    expect.set_options(timeout=60_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<pytest's base temp>/browser``: screenshots, downloads and the server's log."""
    return tmp_path_factory.mktemp("browser", numbered=False)


@pytest.fixture(scope="module")
def app_url(out_dir: Path) -> Iterator[str]:
    """``streamlit run app.py`` on a free loopback port; yields its URL, stops its process group."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = out_dir / "server.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]  # fmt: skip
    # No hub is reached, whatever the machine's network: "Download pretrained weights" must then
    # answer with its plain message (empty caches, so that no model finds pretrained weights either).
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(out_dir / "hf"),
        "TORCH_HOME": str(out_dir / "torch"),
        "ATTNVIZ_USER_MODELS": str(out_dir / "user_models"),  # models saved in the Playground
    }
    with log_path.open("wb") as log:
        # A session of its own: the whole group is killed at the end, so no server is left behind.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"streamlit did not become healthy at {url} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


def _new_page(chromium: Any, app_url: str) -> Any:
    """A fresh session (its own context: cookies, camera permission, downloads) on the app."""
    context = chromium.new_context(
        viewport={"width": 1600, "height": 1000}, accept_downloads=True, permissions=["camera"]
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("dialog", lambda d: d.dismiss())
    page.goto(app_url)
    page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
    return page


def _rerun(page: Any, action: Callable[[], object], timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Do ``action`` and wait until the script it triggers has run and the app is idle again.

    A run that starts and ends between two observer callbacks is still seen (the old state is
    recorded). Should none be seen within 20 s (a run too quick to catch, or an action that needs
    none), the wait falls back to the app being idle: the expectations that follow retry anyway.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate(ARM_RUN_FLAG)
    action()
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("() => window.__attnvizRan === true", timeout=20_000)
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    time.sleep(0.2)  # the last delta messages of the run get applied


def _no_exception(page: Any) -> None:
    """No exception box anywhere on the page (the app shows one when a script run raises)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stException")).to_have_count(0)


def _screenshot(page: Any, path: Path, start: str | None = None, height: int | None = None) -> None:
    """The whole page, or ``height`` pixels of it from the element ``start`` on (the main block's
    width): Streamlit scrolls inside its main block, so the viewport grows to fit it."""
    size = page.viewport_size
    full = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(full, size["height"]), 16000)})
    try:
        time.sleep(0.5)  # images that arrived with the last message get painted
        page.screenshot(path=str(path), full_page=True)
        if start is not None:
            main = page.get_by_test_id("stMainBlockContainer").bounding_box()
            top = page.locator(start).first.bounding_box()["y"] - 16
            with Image.open(path) as img:
                box = (int(main["x"]), int(top), int(main["x"] + main["width"]), int(top + (height or full)))
                img.crop(box).save(path)
    finally:
        page.set_viewport_size(size)


def _key(key: str) -> str:
    """The CSS selector of the element Streamlit drew for a widget or chart with this key."""
    return f".st-key-{key}"


def _slider_value(page: Any, key: str) -> str:
    return page.locator(f"{_key(key)} [data-testid='stSliderThumbValue']").inner_text()


def _pill(page: Any, name: str) -> Any:
    return page.get_by_test_id("stButtonGroup").get_by_role("button", name=name, exact=True)


def _image_srcs(page: Any, caption: str) -> list[str]:
    """The ``src`` of every picture whose caption contains ``caption``."""
    figures = page.get_by_test_id("stImage").filter(has_text=caption)
    return [img.get_attribute("src") for img in figures.locator("img").all()]


def _click_data_point(page: Any, chart_key: str, x: float, y: float) -> None:
    """Click the Plotly chart with key ``chart_key`` where its data point (x, y) is drawn."""
    chart = page.locator(_key(chart_key))
    chart.scroll_into_view_if_needed()
    time.sleep(0.3)
    px, py = page.evaluate(DATA_TO_SCREEN, [_key(chart_key), x, y])
    _rerun(page, lambda: page.mouse.click(px, py))


def _click_token(page: Any, chart_key: str, sliders: str, token: tuple[int, int], stride: int) -> None:
    """Click the centre of token (row, col) in a query picker; its pixel sliders must then show it."""
    from playwright.sync_api import expect

    y, x = ((v + 0.5) * stride - 0.5 for v in token)
    _click_data_point(page, chart_key, x, y)
    _no_exception(page)
    for axis, value in (("y", y), ("x", x)):
        thumb = page.locator(_key(f"{sliders}_{axis}")).get_by_test_id("stSliderThumbValue")
        expect(thumb).to_have_text(str(round(value)))


def _label(button: Any) -> str:
    """A button's text, without its icon's name."""
    return button.get_by_test_id("stMarkdownContainer").inner_text().strip()


def _download(page: Any, button: Any, out_dir: Path, name: str) -> Path:
    with page.expect_download(timeout=RUN_TIMEOUT_MS) as info:
        button.locator("button").click()
    path = out_dir / name
    info.value.save_as(path)
    return path


@pytest.fixture(scope="module")
def comparison(chromium: Any, app_url: str, out_dir: Path) -> Iterator[Any]:
    """A page that compared the zoo CNN, the deformable zoo model and the transformer on a photo."""
    from playwright.sync_api import expect

    page = _new_page(chromium, app_url)
    try:
        uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
        _rerun(page, lambda: uploader.set_input_files(str(SAMPLE)))
        expect(page.get_by_text("cat.jpg", exact=True)).to_be_visible()
        _rerun(page, lambda: _pill(page, "zoo_gc").click())  # a default: not in this comparison
        for model in (DEFORMABLE, TRANSFORMER):
            _rerun(page, lambda m=model: _pill(page, m).click())
        run = page.locator(_key("compare_run")).get_by_role("button", name="Run")
        _rerun(page, run.click)
        expect(
            page.get_by_test_id("stDownloadButton").filter(has_text="Download everything (ZIP")
        ).to_be_visible(timeout=RUN_TIMEOUT_MS)
        _no_exception(page)
        yield page
    except Exception:
        with contextlib.suppress(Exception):
            _screenshot(page, out_dir / "failure_comparison.png")
        raise
    finally:
        page.context.close()


@contextlib.contextmanager
def _shot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """Leave a screenshot of ``page`` at ``path`` when the block fails."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            _screenshot(page, path)
        raise


@pytest.fixture
def page(comparison: Any, request: pytest.FixtureRequest, out_dir: Path) -> Iterator[Any]:
    """The shared comparison's page; a test that fails on it leaves ``failure_<test>.png``."""
    yield comparison
    report = getattr(request.node, "rep_call", None)  # set by conftest's pytest_runtest_makereport
    if report is not None and report.failed:
        with contextlib.suppress(Exception):
            _screenshot(comparison, out_dir / f"failure_{request.node.name}.png")


@contextlib.contextmanager
def _session(chromium: Any, app_url: str, out_dir: Path, name: str) -> Iterator[Any]:
    """A fresh session's page; a screenshot ``failure_<name>.png`` when the block fails; closed after."""
    page = _new_page(chromium, app_url)
    try:
        with _shot_on_failure(page, out_dir / f"failure_{name}.png"):
            yield page
    finally:
        page.context.close()


# --------------------------------------------------------------------------------------------------
# Navigation
# --------------------------------------------------------------------------------------------------


def _go(page: Any, link: str) -> None:
    """Open a page from the sidebar's navigation."""
    nav = page.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True)
    _rerun(page, nav.click)
    page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)


def _press_key(page: Any, key: str, press: str) -> None:
    """Focus the slider of widget ``key`` and press a key on it (Home, End, ArrowRight...)."""
    page.locator(_key(key)).get_by_role("slider").focus()
    _rerun(page, lambda: page.keyboard.press(press))


def _pick(page: Any, where: str, option: str | re.Pattern) -> None:
    """Open the selectbox or multiselect under the CSS selector ``where`` and choose ``option``.

    The list is opened again when it did not show (a click that landed while a rerun redrew the
    widget closes it at once).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    choice = page.get_by_role("option", name=option).first
    for _ in range(3):
        page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
        page.locator(where).get_by_role("combobox").click()
        try:
            choice.wait_for(state="visible", timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    _rerun(page, choice.click)
    page.keyboard.press("Escape")  # a multiselect keeps its list open (and the rest of the page hidden)


def test_every_page_of_the_navigation_opens(chromium: Any, app_url: str, out_dir: Path) -> None:
    from playwright.sync_api import expect

    with _session(chromium, app_url, out_dir, "navigation") as page:
        for link, title in PAGES.items():
            _go(page, link)
            expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
            _no_exception(page)
            expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
            _screenshot(page, out_dir / f"page_{link.lower().replace(' ', '_')}.png")
        expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # the Models page's tables


def test_scene_lab_controls(chromium: Any, app_url: str, out_dir: Path) -> None:
    """Every control of the Scene lab changes what it shows; every map keeps its colour bar."""
    from playwright.sync_api import expect

    with _session(chromium, app_url, out_dir, "scene_lab") as page:
        _go(page, "Scene lab")
        expect(page.get_by_role("heading", name="zoo_gc", exact=True)).to_be_visible()
        captions = page.get_by_test_id("stImageCaption")
        scene = captions.filter(has_text="box (y0, x0, y1, x1)")
        expect(scene).to_contain_text("circle")
        _pick(page, _key("scene_class"), "star")
        expect(scene).to_contain_text("star")
        before = scene.inner_text()
        for key in ("scene_x", "scene_y", "scene_size", "scene_rotation", "scene_clutter"):
            _press_key(page, key, "End")
            _no_exception(page)
        assert scene.inner_text() != before  # the box moved with the object
        seed = page.locator(_key("scene_seed")).get_by_role("spinbutton")
        seed.fill("7")
        _rerun(page, lambda: seed.press("Enter"))
        _no_exception(page)
        maps = page.get_by_test_id("stImage")
        count = maps.count()
        _rerun(page, lambda: page.locator(_key("scene_blocks")).get_by_text("all", exact=True).click())
        expect(maps).not_to_have_count(count)  # every block's map: more pictures
        _rerun(page, lambda: page.locator(_key("scene_gradcam")).get_by_text("Grad-CAM").click())
        expect(captions.filter(has_text="Grad-CAM ·")).to_have_count(0)
        expect(captions.filter(has_text="scale: absolute")).not_to_have_count(0)
        _rerun(page, lambda: page.locator(_key("scene_scale")).get_by_role("radio", name="stretched").click())
        expect(captions.filter(has_text="scale: stretched")).not_to_have_count(0)
        expect(captions.filter(has_text="scale: absolute")).to_have_count(0)
        _no_exception(page)
        _screenshot(page, out_dir / "scene_lab.png")


def test_leaderboard_and_modules_controls(chromium: Any, app_url: str, out_dir: Path) -> None:
    from playwright.sync_api import expect

    with _session(chromium, app_url, out_dir, "leaderboard_modules") as page:
        _go(page, "Leaderboard")
        _rerun(
            page,
            lambda: page.locator(_key("leaderboard_maps")).get_by_text("attention maps only").click(),
        )
        _no_exception(page)
        chips = page.locator(_key("leaderboard_kinds")).get_by_role("button", name=re.compile("Remove"))
        count = chips.count()
        _rerun(page, lambda: chips.first.click())
        expect(chips).to_have_count(count - 1)
        page.get_by_role("tab", name="Pointing game").click()  # tabs switch in the browser: no rerun
        expect(page.locator(_key("leaderboard_pointing_chart"))).to_be_visible()
        page.get_by_role("tab", name="Localisation vs faithfulness").click()
        scatter = page.locator(_key("leaderboard_faithfulness_chart"))
        expect(scatter).to_contain_text("energy in box")
        x_axis = page.locator(_key("leaderboard_scatter_x"))
        _rerun(page, lambda: x_axis.get_by_text("pointing game", exact=True).click())
        expect(scatter).to_contain_text("pointing game (share of scenes")
        _screenshot(page, out_dir / "leaderboard_faithfulness.png")
        _no_exception(page)

        _go(page, "Modules")
        page.get_by_role("tab", name="CBAM", exact=True).click()
        expect(page.get_by_role("heading", name=re.compile("CBAM"))).to_be_visible()
        channels = page.locator(_key("modules_channels")).get_by_role("spinbutton")
        channels.fill("32")
        _rerun(page, lambda: channels.press("Enter"))
        expect(page.get_by_text("Cost at C = 32, 12x12").filter(visible=True)).to_have_count(1)
        side = page.locator(_key("modules_side")).get_by_role("spinbutton")
        side.fill("6")
        _rerun(page, lambda: side.press("Enter"))
        expect(page.get_by_text("Cost at C = 32, 6x6").filter(visible=True)).to_have_count(1)
        # the live examples' captions (st.caption under each map) say which scale they use
        stretched = page.get_by_text(re.compile("scale: stretched"))
        expect(stretched).to_have_count(0)
        _rerun(
            page,
            lambda: page.locator(_key("modules_scale")).get_by_role("radio", name="stretched").click(),
        )
        expect(stretched).not_to_have_count(0)
        _no_exception(page)


# --------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------


def test_comparison_shows_each_column_with_its_scales_and_notices(page: Any, out_dir: Path) -> None:
    from playwright.sync_api import expect

    for model in MODELS:
        expect(page.get_by_role("heading", name=model[:15] if len(model) > 15 else model)).to_be_visible()
    # the zoo models say the photo is not their ground; the random transformer says it is untrained
    expect(
        page.get_by_test_id("stAlertContentInfo").filter(has_text="Trained on generated shapes only")
    ).to_have_count(2)
    expect(page.get_by_test_id("stAlertContentWarning").filter(has_text="Untrained")).to_have_count(1)
    # every map carries its scale: the caption names the quantity, the values and the scale
    captions = page.get_by_test_id("stImageCaption")
    expect(captions.filter(has_text="gate value · values")).to_have_count(1)  # CBAM's spatial gate
    expect(captions.filter(has_text="share of sampling weight · values")).to_have_count(1)
    expect(captions.filter(has_text="attention probability · values")).not_to_have_count(0)
    expect(captions.filter(has_text="Grad-CAM relevance · values")).to_have_count(3)
    # the zoo columns open on the block their card names
    expect(page.get_by_text(re.compile(r"^★ block 0 finds the object best"))).to_have_count(2)
    _no_exception(page)
    _screenshot(page, out_dir / "compare.png")
    # the README's picture of a comparison: the columns, scaled down
    _screenshot(page, out_dir / "compare_columns.png", start=_key("compare_scale"), height=2350)
    with Image.open(out_dir / "compare_columns.png") as img:
        small = img.convert("RGB").resize((img.width * 3 // 5, img.height * 3 // 5), Image.Resampling.LANCZOS)
        small.save(out_dir / README_SHOT, quality=85, optimize=True)


def test_clicks_in_the_query_pickers_move_the_query_every_time(page: Any, out_dir: Path) -> None:
    """The click that used to crash the page (KeyError in _point_of_click): each click moves the query."""
    from playwright.sync_api import expect

    # the transformer's query point: 14 x 14 tokens of 16 px
    _rerun(page, lambda: page.get_by_role("tab", name="Query point").click())
    chart = f"compare_query_click_{TRANSFORMER}"
    expect(page.locator(_key(chart))).to_be_visible()
    before = _image_srcs(page, "mean of heads")
    for row, col in ((3, 10), (12, 1), (3, 10)):  # and back: every click counts, not only the first
        _click_token(page, chart, "compare_query", (row, col), 16)
        expect(page.get_by_text(re.compile(rf"^Query token \({row}, {col}\)"))).to_be_visible()
    after = _image_srcs(page, "mean of heads")
    assert before and after and before != after  # the query map was drawn again for the new point
    # a slider moves the point too, and a click after it still counts
    page.locator(_key("compare_query_x")).get_by_role("slider").focus()
    _rerun(page, lambda: page.keyboard.press("Home"))
    expect(page.get_by_text(re.compile(r"^Query token \(3, 0\)"))).to_be_visible()
    _click_data_point(page, chart, 10.5 * 16 - 0.5, 3.5 * 16 - 0.5)
    expect(page.get_by_text(re.compile(r"^Query token \(3, 10\)"))).to_be_visible()
    _screenshot(page, out_dir / "query_point.png")

    # the deformable convolution's query: a 12 x 12 grid of 8 px over the zoo's 96 px input
    chart = f"compare_deform_click_{DEFORMABLE}"
    page.locator(_key(chart)).scroll_into_view_if_needed()
    for row, col in ((2, 9), (10, 3)):
        _click_token(page, chart, "compare_deform", (row, col), 8)
        expect(page.get_by_text(re.compile(rf"^Query {row * 12 + col} at pixel"))).to_be_visible()
    _screenshot(page, out_dir / "deformable.png")


def test_every_tab_and_expander_opens(page: Any, out_dir: Path) -> None:
    from playwright.sync_api import expect

    for tab, shows in (
        ("Heads × layers", re.compile(r"^Every layer \(rows L0")),
        ("Query point", re.compile(r"^Query token")),
        ("Rollout", re.compile(r"^Rollout through 12 layers")),
        ("Head statistics", re.compile(r"^distance: per grid query")),
    ):
        _rerun(page, lambda tab=tab: page.get_by_role("tab", name=tab).click())
        expect(page.get_by_text(shows).first).to_be_visible()
        _no_exception(page)
        layer = page.locator(_key("compare_vit_layer_12"))
        # the layer picker is where a layer is read (heads, query point), not on rollout or statistics
        expect(layer).to_have_count(1 if tab in ("Heads × layers", "Query point") else 0)
        if tab == "Heads × layers":  # the layer, the head fusion and one head
            _press_key(page, "compare_vit_layer_12", "Home")
            _rerun(
                page,
                lambda: page.locator(_key("compare_vit_fusion")).get_by_role("radio", name="max").click(),
            )
            expect(page.get_by_test_id("stImageCaption").filter(has_text="max over 3 heads")).to_have_count(1)
            _pick(page, _key("compare_vit_head_3"), "head 1")
            expect(
                page.get_by_test_id("stImageCaption").filter(has_text="Layer 0: blocks.0, head 1")
            ).to_have_count(1)
        if tab == "Rollout":  # its formula typeset; the head fusion and the discard ratio
            expect(page.locator(".katex").first).to_be_visible()
            _pick(page, _key("compare_rollout_fusion"), "max")
            _press_key(page, "compare_rollout_discard", "ArrowRight")
            expect(
                page.get_by_text(re.compile(r"max over heads, lowest 0.05 of grid columns discarded"))
            ).to_be_visible()
        if tab == "Head statistics":  # a legend says what the dots and the line are
            legend = page.locator(_key(f"compare_vit_stats_{TRANSFORMER}")).locator(".legendtext")
            expect(legend).to_have_text(["one head", "mean over the layer's heads"])
    for label in ("All blocks × channels", "Gate statistics per block"):
        expander = page.get_by_test_id("stExpander").filter(has_text=label)
        expect(expander).to_have_count(1)  # the zoo CNN's channels (the others have none)
        _rerun(page, lambda e=expander: e.locator("summary").click())
        expect(expander.locator(".js-plotly-plot")).to_have_count(1)
        _no_exception(page)
    # the deformable section's layer
    _press_key(page, "compare_deform_layer_2", "End")
    expect(page.get_by_text(re.compile(r"of attn3\.body: 1 group × 9 points"))).to_be_visible()
    _no_exception(page)
    _screenshot(page, out_dir / "tabs_and_expanders.png")


def test_every_download(page: Any, out_dir: Path) -> None:
    buttons = page.get_by_test_id("stDownloadButton")
    names = {_label(b) for b in buttons.all()}
    assert {"Top-5 (CSV)", "Grad-CAM (PNG)", "Attention map (PNG)", "Channel weights (CSV)"} <= names, names
    seen = 0
    for k, button in enumerate(buttons.all()):
        label = _label(button)
        path = _download(page, button, out_dir, f"download_{k}")
        data = path.read_bytes()
        if label.endswith("(PNG)"):
            with Image.open(io.BytesIO(data)) as img:
                assert (
                    img.format == "PNG" and img.width >= 448 and img.height > img.width
                )  # with its colour bar
        elif label == "Top-5 (CSV)":
            rows = list(csv.reader(io.StringIO(data.decode())))
            assert rows[0] == ["rank", "class", "label", "probability"] and len(rows) == 6
        elif label == "Channel weights (CSV)":  # the export bundle's table, that block's rows
            rows = list(csv.reader(io.StringIO(data.decode())))
            assert rows[0][:5] == ["block", "layer", "kind", "path", "c0"] and len(rows) >= 2, rows[:2]
            assert all(len(row) == len(rows[0]) for row in rows[1:]), rows
        else:
            assert label.startswith("Download everything (ZIP, 3 result(s))"), label
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                summary = json.loads(zf.read("summary.json"))
                assert {f"cat/{m}/gradcam.png" for m in MODELS} <= set(zf.namelist())
            assert [r["model"] for r in summary["results"]] == list(MODELS)
            assert all(r["overlay_scale"]["mode"] == "absolute" for r in summary["results"])
        seen += 1
        _no_exception(page)
    assert seen == buttons.count() >= 10


def test_page_controls_change_what_is_shown(page: Any, out_dir: Path) -> None:
    from playwright.sync_api import expect

    captions = page.get_by_test_id("stImageCaption")
    # the colour scale: absolute by default, stretched on request, and the captions say which
    _rerun(page, lambda: page.locator(_key("compare_scale")).get_by_role("radio", name="stretched").click())
    expect(captions.filter(has_text="scale: stretched to this map's own range")).not_to_have_count(0)
    _rerun(page, lambda: page.locator(_key("compare_scale")).get_by_role("radio", name="absolute").click())
    expect(captions.filter(has_text="scale: stretched")).to_have_count(0)
    # sorting the channel bars
    _rerun(page, lambda: page.locator(_key("compare_sort")).get_by_text("Sort channels").click())
    _no_exception(page)
    # a column's block: the zoo CNN's second block; its card's best block stays marked
    slider = page.locator(_key(f"compare_block_{ZOO}_2")).get_by_role("slider")
    slider.focus()
    _rerun(page, lambda: page.keyboard.press("End"))
    # zoo_cbam moved to its second block; zoo_deform stays on its card's first
    expect(page.get_by_text("Block 2 of 2", exact=False)).to_have_count(1)
    expect(page.get_by_text("Block 1 of 2", exact=False)).to_have_count(1)
    expect(page.get_by_text("The card's best block is 0 ★.")).to_be_visible()
    # Grad-CAM of another class: the zoo CNN explains "circle"
    _pick(page, f"[class*='st-key-compare_cam_target_{ZOO}_']", re.compile("^circle"))
    expect(captions.filter(has_text="for “circle”")).to_have_count(1)
    _no_exception(page)
    # a model more than four: refused with a message where it bites
    for model in ("zoo_se", "zoo_eca"):
        _rerun(page, lambda m=model: _pill(page, m).click())
    expect(page.get_by_test_id("stAlertContentWarning").filter(has_text="at most 4 models")).to_have_count(1)
    expect(
        page.get_by_test_id("stAlertContentWarning").filter(has_text="zoo_eca was not added")
    ).to_have_count(1)
    _rerun(page, lambda: _pill(page, "zoo_se").click())  # back to the three
    _no_exception(page)
    # random weights for the zoo CNN on request: its column says untrained after the run
    _pick(page, _key("compare_random"), ZOO)
    expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="press Run to update")).to_have_count(1)
    run = page.locator(_key("compare_run")).get_by_role("button", name="Run")
    _rerun(page, run.click)
    expect(page.get_by_test_id("stAlertContentWarning").filter(has_text="Untrained")).to_have_count(2)
    _rerun(
        page,
        lambda: (
            page.locator(_key("compare_random"))
            .get_by_role("button", name=re.compile("Remove"))
            .first.click()
        ),
    )
    _rerun(page, run.click)
    expect(page.get_by_test_id("stAlertContentWarning").filter(has_text="Untrained")).to_have_count(1)
    # the transformer's missing weights: the hub cannot be reached, and the page says so plainly
    get = page.locator(_key(f"compare_get_{TRANSFORMER}")).get_by_role("button")
    _rerun(page, get.click)
    failure = page.get_by_test_id("stAlertContentError").filter(has_text="could not be downloaded")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text(f"The pretrained weights of {TRANSFORMER} are not on this machine")
    expect(failure).not_to_contain_text("Error")  # no exception names in the sentence ...
    details = page.get_by_test_id("stExpander").filter(has_text="Details")
    _rerun(page, lambda: details.locator("summary").click())
    expect(details.get_by_test_id("stCode")).to_contain_text("HF_HUB_OFFLINE")  # ... they are here
    _no_exception(page)
    _screenshot(page, out_dir / "controls.png")


def test_every_sidebar_setting_redraws_the_maps(page: Any, out_dir: Path) -> None:
    from playwright.sync_api import expect

    sidebar = page.get_by_test_id("stSidebar")
    before = _image_srcs(page, "Grad-CAM relevance")
    _pick(page, f"[data-testid='stSidebar'] {_key('sidebar_cmap')}", "viridis")
    after = _image_srcs(page, "Grad-CAM relevance")
    assert before and after and set(before).isdisjoint(after)  # every map redrawn in the new colours
    slider = sidebar.locator(_key("sidebar_alpha")).get_by_role("slider")
    slider.focus()
    _rerun(page, lambda: page.keyboard.press("End"))
    expect(sidebar.locator(_key("sidebar_alpha")).get_by_test_id("stSliderThumbValue")).to_have_text("1.00")
    assert set(_image_srcs(page, "Grad-CAM relevance")).isdisjoint(after)
    _pick(page, f"[data-testid='stSidebar'] {_key('sidebar_device')}", "cpu")
    # auto and cpu are the same device here: the results stand, nothing asks for a new run
    expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="press Run to update")).to_have_count(0)
    _no_exception(page)


def test_a_camera_photo_and_a_hostile_upload(chromium: Any, app_url: str, out_dir: Path) -> None:
    from playwright.sync_api import expect

    with _session(chromium, app_url, out_dir, "camera") as page:
        _rerun(page, lambda: page.locator(_key("compare_camera_on")).get_by_text("Camera").click())
        camera = page.get_by_test_id("stCameraInput")
        expect(camera.locator("video")).to_be_visible()
        page.wait_for_function(  # the fake camera is streaming
            "() => { const v = document.querySelector(\"[data-testid='stCameraInput'] video\");"
            " return v && v.readyState >= 2 && v.videoWidth > 0; }"
        )
        camera.get_by_role("button", name="Take Photo").click()
        expect(camera.locator("img")).to_be_visible()  # the photo taken, uploaded, and the page rerun
        page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
        _no_exception(page)
        _rerun(page, lambda: _pill(page, "zoo_gc").click())  # zoo_cbam alone
        run = page.locator(_key("compare_run")).get_by_role("button", name="Run")
        _rerun(page, run.click)
        # the photo comes first among the images (then the default sample scene); the image picker
        # switches the columns to the scene's results
        picker = page.locator(_key("compare_image")).get_by_role("combobox")
        expect(picker).to_have_value(re.compile(r"^camera_[0-9a-f]{8}\.jpg$"))
        expect(
            page.get_by_test_id("stAlertContentInfo").filter(has_text="Trained on generated shapes")
        ).to_have_count(1)
        _pick(page, _key("compare_image"), "scene_star_1.png")
        expect(picker).to_have_value("scene_star_1.png")
        expect(
            page.get_by_test_id("stAlertContentInfo").filter(has_text="Trained on generated shapes")
        ).to_have_count(0)
        _pick(page, _key("compare_samples"), "scene: arrow #2")
        expect(
            page.get_by_test_id("stAlertContentInfo").filter(has_text="press Run to update")
        ).to_have_count(1)
        expect(page.get_by_role("heading", name="zoo_cbam", exact=True)).to_be_visible()
        _no_exception(page)
        _screenshot(page, out_dir / "camera.png")

        hostile = out_dir / "evil.png"
        hostile.write_text("<script>alert(1)</script>\n")
        uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
        _rerun(page, lambda: uploader.set_input_files(str(hostile)))
        expect(page.get_by_test_id("stAlertContentError").filter(has_text=HOSTILE_MESSAGE)).to_have_count(1)
        _no_exception(page)
        # the app keeps serving: another run completes
        _rerun(page, run.click)
        expect(page.get_by_role("heading", name="zoo_cbam", exact=True)).to_be_visible()
        _no_exception(page)
        _screenshot(page, out_dir / "hostile.png")


CURVE_POINTS = """() => {
  const gd = document.querySelector(".st-key-playground_curves .js-plotly-plot");
  return gd && gd._fullData && gd._fullData.length ? gd._fullData[0]._length : 0;
}"""


def test_playground_trains_saves_and_the_model_appears_in_compare(
    chromium: Any, app_url: str, out_dir: Path
) -> None:
    """Train with a tiny budget, see the curve grow and the snapshot strip, save, find it in Compare."""
    from playwright.sync_api import expect

    with _session(chromium, app_url, out_dir, "playground") as page:
        _go(page, "Playground")
        _rerun(page, lambda: page.get_by_text("Task and budget (shared by the runs)").click())
        steps = page.locator(_key("playground_steps")).locator("input")
        steps.fill("80")
        _rerun(page, lambda: steps.press("Enter"))
        _press_key(page, "playground_n_train", "Home")  # 500 scenes
        _press_key(page, "playground_batch", "Home")  # 8
        _rerun(page, lambda: page.get_by_role("button", name="Train", exact=True).click())
        expect(page.get_by_text(re.compile(r"^A · training · step"))).to_be_visible(timeout=60_000)
        # the live curve grows while the run trains (the fragment polls)
        page.wait_for_function(f"({CURVE_POINTS})() > 2", timeout=120_000)
        early = page.evaluate(CURVE_POINTS)
        expect(page.get_by_text(re.compile(r"^A · done"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
        page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
        assert page.evaluate(CURVE_POINTS) > early
        expect(page.get_by_text("Probe scenes (white: the object's box)")).to_be_visible()
        assert page.get_by_test_id("stImage").count() >= 18  # probes, module maps, Grad-CAM
        expect(page.locator(_key("playground_replay"))).to_be_visible()
        _no_exception(page)
        _screenshot(page, out_dir / "playground.png")
        _screenshot(page, out_dir / "playground_live.png", start=_key("playground_curves"), height=1250)
        with Image.open(out_dir / "playground_live.png") as img:
            small = img.convert("RGB").resize(
                (img.width * 3 // 5, img.height * 3 // 5), Image.Resampling.LANCZOS
            )
            small.save(out_dir / PLAYGROUND_SHOT, quality=85, optimize=True)

        name = page.locator(_key("playground_save_name")).locator("input")
        name.fill("browser-cbam")
        _rerun(page, lambda: name.press("Enter"))
        _rerun(page, lambda: page.get_by_role("button", name="Save", exact=True).click())
        expect(page.get_by_text(re.compile(r"Saved as user_browser-cbam"))).to_be_visible()
        assert (out_dir / "user_models" / "browser-cbam.safetensors").is_file()

        _go(page, "Compare")
        expect(_pill(page, "user_browser-cbam")).to_be_visible()
        _no_exception(page)


def test_the_server_logged_no_exception(app_url: str, out_dir: Path) -> None:
    """Whatever the browser did, no script run raised: the server's log holds no traceback."""
    log = (out_dir / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def test_faithfulness_is_measured_on_demand_below_the_columns(page: Any, out_dir: Path) -> None:
    """**Measure faithfulness** draws, per model, deletion and insertion curves and a table of AUCs."""
    from playwright.sync_api import expect

    section = page.get_by_role(
        "heading", name="Faithfulness: does the decision depend on what the map shows?"
    )
    expect(section).to_be_visible()
    button = page.locator(_key("compare_faith_measure")).get_by_role("button", name="Measure faithfulness")
    button.scroll_into_view_if_needed()
    _rerun(page, button.click)
    _no_exception(page)
    for model in MODELS:
        for kind in ("deletion", "insertion"):
            chart = page.locator(_key(f"compare_faith_{kind}_{model}"))
            expect(chart.locator(".js-plotly-plot")).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(chart).to_contain_text("random map (baseline)")
            expect(chart).to_contain_text(
                f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}"
            )
    expect(page.get_by_text(re.compile(r"^Following “.+” \(class \d+\)"))).to_have_count(len(MODELS))
    expect(page.get_by_test_id("stTable")).to_have_count(len(MODELS))
    _screenshot(page, out_dir / "faithfulness.png", start=_key("compare_faith_measure"), height=1500)

    # fewer maps for the transformer (its Grad-CAM only), then ROAD: a ROAD chart per model
    deit_maps = page.locator(f"[class*='st-key-compare_faith_maps_{TRANSFORMER}_']")
    chips = deit_maps.get_by_role("button", name=re.compile("Remove"))
    while chips.count() > 1:
        _rerun(page, chips.first.click)
    expect(deit_maps).to_contain_text("Grad-CAM")
    _rerun(page, page.locator(_key("compare_faith_road")).get_by_text(re.compile("also ROAD")).click)
    _rerun(page, button.click)
    _no_exception(page)
    for model in MODELS:
        road = page.locator(_key(f"compare_faith_road_{model}"))
        expect(road.locator(".js-plotly-plot")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(road).to_contain_text("percentile")
    insertion = page.locator(_key(f"compare_faith_insertion_{TRANSFORMER}"))
    expect(insertion).not_to_contain_text("rollout")  # the removed maps are not scored
    expect(page.get_by_text("ROAD combined").first).to_be_visible()
    _screenshot(page, out_dir / "faithfulness_road.png", start=_key("compare_faith_measure"), height=1500)
    log = (out_dir / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
