"""End to end in a real browser: Playwright drives Debian's Chromium against ``streamlit run app.py``.

The server runs from the repository root on a free loopback port (its own ``.streamlit/config.toml``
applies); the browser is ``/usr/bin/chromium`` from apt, since Playwright's own browser download
cannot work here (``playwright install`` is never run). Without Playwright or Chromium the test
skips, except under ``CI=true``, where it fails: CI installs both and must run it.
"""

from __future__ import annotations

import contextlib
import os
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

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = ROOT / "assets" / "samples" / "cat.jpg"
MODELS = ("zoo_cbam", "zoo_gc")  # the Compare page's defaults; their weights ship in assets/zoo/
# The server's first script run imports torch, timm and plotly: minutes on 2 busy cores, not seconds.
START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 180_000
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
HOSTILE_MESSAGE = "evil.png is not a supported image: JPEG, PNG, WebP or GIF expected"

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
RAN_AND_IDLE = f"() => window.__attnvizRan === true && document.querySelector({IDLE!r}) !== null"


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
    """Debian's Chromium launched through Playwright (headless)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<pytest's base temp>/browser``: screenshots, the downloaded ZIP and the server's log."""
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
    with log_path.open("wb") as log:
        # A session of its own: the whole group is killed at the end, so no server is left behind.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


def _rerun(page: Any, action: Callable[[], object], timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Do ``action`` and wait until the script it triggers has run and the app is idle again."""
    page.evaluate(ARM_RUN_FLAG)
    action()
    page.wait_for_function(RAN_AND_IDLE, timeout=timeout_ms)


def _screenshot(page: Any, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the viewport grows to fit it."""
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 8000)})
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)


def test_compare_two_models_then_hostile_upload(
    chromium: Any, app_url: str, out_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    """Upload a photo, compare the two default zoo models, download the ZIP, then upload a fake PNG."""
    from playwright.sync_api import expect

    # Playwright's 5 s defaults are short for a busy 2-core CI machine.
    expect.set_options(timeout=30_000)
    page = chromium.new_page(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(app_url)
        # The key's container also holds a hidden copy of the button: the role query skips it.
        run_button = page.locator(".st-key-compare_run").get_by_role("button", name="Run")
        expect(run_button).to_be_visible(timeout=RUN_TIMEOUT_MS)
        page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
        expect(page.get_by_role("heading", name="Compare attention")).to_be_visible()
        # The defaults are the two zoo models; nothing else is chosen.
        for model in MODELS:
            expect(page.get_by_test_id("stMultiSelect").get_by_text(model, exact=True)).to_be_visible()

        uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
        _rerun(page, lambda: uploader.set_input_files(str(SAMPLE)))
        expect(page.get_by_text("cat.jpg", exact=True)).to_be_visible()
        expect(run_button).to_be_enabled()

        _rerun(page, run_button.click)
        zip_button = page.get_by_test_id("stDownloadButton").filter(has_text="Download everything (ZIP")
        expect(zip_button).to_be_visible(timeout=RUN_TIMEOUT_MS)
        # One uploaded image (it replaces the default sample) times two models.
        expect(zip_button).to_contain_text("2 result(s)")
        for model in MODELS:
            heading = page.get_by_role("heading", name=model, exact=True)
            expect(heading).to_be_visible()
            column = page.get_by_test_id("stColumn").filter(has=heading)
            expect(column).to_have_count(1)
            # Grad-CAM plus the block's spatial map, each with its PNG download (the expects retry:
            # images may arrive just after the script has finished).
            expect(column.get_by_text("Grad-CAM at ")).to_be_visible()
            expect(column.get_by_test_id("stImage").nth(1)).to_be_visible()
            expect(column.get_by_test_id("stDownloadButton").nth(1)).to_be_visible()
        expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)

        screenshot = out_dir / "compare.png"
        _screenshot(page, screenshot)
        record_property("screenshot", str(screenshot))
        print(f"\nbrowser screenshot: {screenshot}")

        with page.expect_download(timeout=RUN_TIMEOUT_MS) as info:
            zip_button.locator("button").click()
        bundle = out_dir / "attnviz_results.zip"
        info.value.save_as(bundle)
        with zipfile.ZipFile(bundle) as zf:
            names = zf.namelist()
        assert "summary.json" in names
        for model in MODELS:
            # One folder per image stem and model: the upload's own name, not a sample's.
            assert f"cat/{model}/gradcam.png" in names, (model, names[:20])

        hostile = out_dir / "evil.png"
        hostile.write_text("<script>alert(1)</script>\n")
        _rerun(page, lambda: uploader.set_input_files(str(hostile)))
        error = page.get_by_test_id("stAlertContentError").filter(has_text=HOSTILE_MESSAGE)
        expect(error).to_have_count(1)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        # the results still belong to the inputs: no "press Run to update" for a refused upload
        expect(page.get_by_test_id("stAlertContentInfo")).to_have_count(0)
        _screenshot(page, out_dir / "hostile.png")

        # The app keeps serving: the last results are still there and another run completes.
        expect(run_button).to_be_enabled()
        _rerun(page, run_button.click)
        expect(zip_button).to_be_visible()
        for model in MODELS:
            expect(page.get_by_role("heading", name=model, exact=True)).to_be_visible()
        expect(page.get_by_test_id("stException")).to_have_count(0)
        assert dialogs == [], f"the page opened dialogs: {dialogs}"
    except Exception:
        with contextlib.suppress(Exception):
            _screenshot(page, out_dir / "failure.png")
        print(f"\nbrowser failure screenshot and server log in {out_dir}")
        raise
    finally:
        page.close()
