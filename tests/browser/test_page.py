"""A real browser on the page, asserting what a person sees: start `boneage serve` on a free
loopback port, upload real films in headless Chromium, and check what is visible (no result card
before there is a result, no broken image, the film at its own shape, the chart's legend), with
and without an API key; screenshots go to test-artifacts/. Skipped where no Chromium (or
Playwright, or the real films) is available."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import pytest

from tests.conftest import RAW, ROOT, need

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("BONEAGE_ARTIFACTS", ROOT / "test-artifacts"))  # see conftest

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")

BROKEN_IMAGES = """() => Array.from(document.images).filter(
    i => i.offsetParent !== null && (!i.complete || i.naturalWidth === 0)).length"""


def _serve(*args: str):
    pytest.importorskip("playwright")
    pytest.importorskip("torch")
    from contextlib import ExitStack

    from tools.local_server import local_server

    from boneage.errors import BoneAgeError

    stack = ExitStack()
    try:  # the bundled default model, as a fresh install serves it
        url, _ = stack.enter_context(local_server(*args))
    except BoneAgeError as e:
        pytest.fail(str(e))
    return stack, url


@pytest.fixture
def server():
    stack, url = _serve()
    with stack:
        yield url


@pytest.fixture
def keyed_server():
    stack, url = _serve("--api-key", "s3cret-key")
    with stack:
        yield url


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def wait_until(page, expression: str, timeout: float = 60.0) -> None:
    """Poll a JavaScript expression until it is true. Playwright's wait_for_function compiles
    its string inside the page, which the page's Content-Security-Policy (no eval) forbids, as
    it should; page.evaluate runs through the debugging protocol instead."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _aspect(path: Path) -> float:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return img.shape[1] / img.shape[0]


def test_upload_a_real_film_and_see_the_result(server, browser):
    film = need(RAW / "rsna-fullres") / "1489.png"  # a boy, bone age 150 months
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    refused: list[str] = []  # what the page's Content-Security-Policy blocked, if anything
    page.on("console", lambda m: refused.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.goto(server + "/")
    # nothing of a result before there is one; Estimate waits for a film and a sex
    assert not page.is_visible("#result") and not page.is_visible("#error")
    assert page.is_disabled("#estimate")
    assert page.inner_text("#hint") == "Choose a film and the child's sex."
    page.screenshot(path=str(ARTIFACTS / "page-empty.png"), full_page=True)
    page.set_input_files("#file", str(film))
    wait_until(page, "document.getElementById('hint').textContent.includes('sex')")
    assert page.inner_text("#hint") == "Choose the child's sex."
    assert page.is_disabled("input[name=sex][value='']")  # a PNG has no DICOM header
    page.check("input[name=sex][value=M]")
    assert page.is_enabled("#estimate")
    page.fill("#age", "150")
    page.click("#estimate")
    page.wait_for_selector("#result", state="visible", timeout=90_000)
    wait_until(page, "document.getElementById('film-img').complete")
    months = float(page.inner_text("#ba-months"))
    assert 110 <= months <= 190  # the bundled model on a real film
    assert re.fullmatch(r"\d+ y \d+ m", page.inner_text("#ba-ym"))
    assert re.fullmatch(r"\d+–\d+ months", page.inner_text("#interval"))
    assert page.inner_text("#category") in ("delayed", "normal", "advanced", "indeterminate")
    assert page.locator("#chart svg .band").count() == 1
    assert page.locator("#patient-point").count() == 1
    assert "Greulich & Pyle / Brush (boys)" in page.inner_text("#chart")
    assert page.evaluate(BROKEN_IMAGES) == 0
    w, h = page.evaluate("[document.getElementById('film-img').naturalWidth, "
                         "document.getElementById('film-img').naturalHeight]")
    assert w / h == pytest.approx(_aspect(film), rel=0.1)  # the film at its own shape
    box = page.locator("#film-img").bounding_box()
    assert box["width"] / box["height"] == pytest.approx(_aspect(film), rel=0.1)
    assert page.is_visible("#heatmap-toggle")  # the torch backend makes heatmaps
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
    # the report carries the identifier in its file name
    page.fill("#identifier", "ACC-1489")
    with page.expect_download() as dl:
        page.click("#report")
    assert dl.value.suggested_filename == "bone-age-ACC-1489.pdf"
    print(f"screenshots: {ARTIFACTS}")
    assert refused == [], refused  # the page needs no inline script or style


def test_several_films_give_a_table(server, browser):
    folder = need(RAW / "rsna-fullres")
    films = [str(folder / f"{i}.png") for i in (1489, 1513, 1515)]
    page = browser.new_page(viewport={"width": 1100, "height": 1200})
    page.goto(server + "/")
    page.set_input_files("#file", films)
    page.check("input[name=sex][value=F]")
    wait_until(page, "!document.getElementById('estimate').disabled")
    assert page.is_visible("#age-note")
    page.click("#estimate")
    wait_until(page, "document.querySelectorAll('#batch tbody tr').length === 3", 120)
    assert page.is_visible("#batch") and page.is_visible("#result")
    page.click("#batch tbody tr:nth-child(2)")
    assert page.inner_text("#which") == "1513.png"
    assert page.evaluate(BROKEN_IMAGES) == 0
    assert not page.is_visible("#chart svg")  # no chronological age: no bare chart
    assert page.is_visible("#no-age")
    page.screenshot(path=str(ARTIFACTS / "page-batch.png"), full_page=True)
    # the table as a CSV file, one row per film, the numbers the table shows
    import csv

    with page.expect_download() as dl:
        page.click("#csv")
    assert dl.value.suggested_filename == "bone-age-results.csv"
    with open(dl.value.path(), newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["file"] for r in table] == ["1489.png", "1513.png", "1515.png"]
    shown = page.inner_text("#batch tbody tr:nth-child(2) td:nth-child(3)")
    assert f"({float(table[1]['bone_age_months']):.1f} mo)" in shown
    assert all(r["sex"] == "F" and r["error"] == "" and r["sds"] == "" for r in table)


def test_a_server_with_an_api_key(keyed_server, browser):
    film = need(RAW / "rsna-fullres") / "1513.png"
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.goto(keyed_server + "/")
    page.wait_for_selector("#key-row", state="visible")
    page.set_input_files("#file", str(film))
    page.check("input[name=sex][value=F]")
    page.click("#estimate")  # no key yet: one clear line
    page.wait_for_selector("#error", state="visible", timeout=60_000)
    assert "API key" in page.inner_text("#error") and not page.is_visible("#result")
    page.fill("#api-key", "s3cret-key")
    page.click("#estimate")
    page.wait_for_selector("#result", state="visible", timeout=90_000)
    assert not page.is_visible("#error")
    assert page.evaluate("sessionStorage.getItem('boneage-api-key')") == "s3cret-key"
    assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab
    page.screenshot(path=str(ARTIFACTS / "page-api-key.png"), full_page=True)


def test_several_films_of_one_child_show_the_follow_up(server, browser, tmp_path):
    """Three DICOM films of one child (birth and study dates in the header) with the
    identifier typed: the visits in date order in a table and joined on the chart."""
    from boneage.data.dicom import film_dataset

    folder = need(RAW / "rsna-fullres")
    dates = {1489: "20250110", 1513: "20190301", 1515: "20220412"}  # not in date order
    films = []
    for i, study in dates.items():
        img = cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
        ds = film_dataset(img.astype("uint16") * 16, 12, PatientSex="F",
                          PatientBirthDate="20120515", StudyDate=study)
        path = tmp_path / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        films.append(str(path))
    page = browser.new_page(viewport={"width": 1100, "height": 1500})
    page.goto(server + "/")
    page.set_input_files("#file", films)
    page.check("input[name=sex][value=F]")
    page.fill("#identifier", "CHILD-7")
    wait_until(page, "!document.getElementById('estimate').disabled")
    page.click("#estimate")
    wait_until(page, "document.querySelectorAll('#batch tbody tr').length === 3", 120)
    assert page.is_visible("#followup")
    shown = [page.inner_text(f"#followup tbody tr:nth-child({k}) td:nth-child(1)")
             for k in (1, 2, 3)]
    assert shown == ["2019-03-01", "2022-04-12", "2025-01-10"]
    assert "bone age per year" in page.inner_text("#followup tbody tr:nth-child(2)")
    assert page.evaluate("document.querySelectorAll('#chart .visit-point').length") == 3
    assert page.is_visible("#visits-line")
    page.screenshot(path=str(ARTIFACTS / "page-followup.png"), full_page=True)
