"""A real browser on the page: start `boneage serve` on a free loopback port, upload a real film
in headless Chromium, and check the rendered bone age, interval and growth chart. Skipped where
no Chromium (or Playwright, or the real films) is available."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RAW, ROOT, need

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("BONEAGE_ARTIFACTS", ROOT / "test-artifacts"))  # see conftest

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    pytest.importorskip("playwright")
    pytest.importorskip("torch")
    port = free_port()
    # the bundled default model, as a fresh install serves it
    proc = subprocess.Popen([sys.executable, "-m", "boneage.cli", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.25)
    else:
        proc.kill()
        pytest.fail("the server did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(10)


def test_upload_a_real_film_and_read_the_result(server):
    from playwright.sync_api import sync_playwright

    film = need(RAW / "rsna-fullres") / "1489.png"  # a boy, bone age 150 months
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(server + "/")
        # an error first: no film chosen
        page.click("#estimate")
        assert "Choose a film" in page.inner_text("#error")
        page.set_input_files("#file", str(film))
        page.check("input[name=sex][value=M]")
        page.fill("#age", "150")
        page.click("#estimate")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        months = float(page.inner_text("#ba-months"))
        assert 110 <= months <= 190  # the bundled model on a real film (held-out MAE ~9)
        assert re.fullmatch(r"\d+–\d+ months", page.inner_text("#interval"))
        assert page.inner_text("#category") in ("delayed", "normal", "advanced")
        assert page.locator("#chart svg .band").count() == 1
        assert page.locator("#patient-point").count() == 1
        assert page.get_attribute("#film-img", "src").startswith("data:image/png")
        shot = ARTIFACTS / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        browser.close()
