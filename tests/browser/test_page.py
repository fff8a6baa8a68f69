"""A real browser on the page: start `boneage serve` on a free loopback port, upload a real film
in headless Chromium, and check the rendered bone age, interval and growth chart. Skipped where
no Chromium (or Playwright, or the real films) is available."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import RAW, ROOT, need

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("BONEAGE_ARTIFACTS", ROOT / "test-artifacts"))  # see conftest

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")


@pytest.fixture
def server():
    pytest.importorskip("playwright")
    pytest.importorskip("torch")
    from contextlib import ExitStack

    from boneage.errors import BoneAgeError
    from boneage.service.local import local_server

    with ExitStack() as stack:
        try:  # the bundled default model, as a fresh install serves it
            url, _ = stack.enter_context(local_server())
        except BoneAgeError as e:
            pytest.fail(str(e))
        yield url


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
