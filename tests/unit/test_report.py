"""The PDF report as a reader sees it: its text (identifier, units, no category under a "not
meaningful" warning, nothing outside the reference table) and, where poppler is installed, a
rendered page."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest

pypdf = pytest.importorskip("pypdf")
pytest.importorskip("torch")

from boneage.inference.api import BoneAgeResult, load_model  # noqa: E402
from boneage.inference.report import pdf_report, report_filename, years_months  # noqa: E402


def text_of(pdf: bytes) -> str:
    return " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def test_years_months_and_file_names():
    assert years_months(155.2) == "12 y 11 m" and years_months(11.6) == "1 y 0 m"
    assert report_filename("ACC 12/34") == "bone-age-ACC_12_34.pdf"
    assert report_filename(None, "film 3.png") == "bone-age-film_3.png.pdf"
    assert report_filename("../..") == "bone-age-film.pdf"


def _result(**kw) -> BoneAgeResult:
    base = {"file": "hand-017.png", "sex": "F", "bone_age_months": 155.2,
            "bone_age_years": 12.93, "interval_low_months": 138.0, "interval_high_months": 172.0}
    return BoneAgeResult(**{**base, **kw})


def test_report_text_with_and_without_chronological_age(model_path, tmp_path):
    model = load_model(str(model_path))
    film = np.full((900, 600), 60, np.uint8)
    full = _result(chronological_age_months=150.0, difference_months=5.2, sds=0.45,
                   category="normal")
    text = text_of(pdf_report(model, full, film, None, identifier="ACC-4711",
                              study_date="2026-11-02"))
    for words in ("ACC-4711", "2026-11-02", "12 y 11 m", "155.2 months", "12 y 6 m", "+5.2",
                  "+0.45", "normal", "90% interval", "SDS:"):
        assert words in text, words
    bare = text_of(pdf_report(model, _result(), film, None))
    assert "hand-017.png" in bare and "No chronological age was given" in bare
    assert "Category" not in bare and "SDS:" not in bare


def test_no_category_under_a_not_meaningful_warning(model_path):
    """A blank picture is flagged "not a hand": its comparison stops at the difference."""
    model = load_model(str(model_path))
    r = model.predict(np.full((600, 500), 90, np.uint8), sex="M", chronological_age_months=100)
    assert any("not meaningful" in w for w in r.warnings)
    assert r.sds is None and r.category is None and r.difference_months is not None
    text = text_of(pdf_report(model, r, np.full((600, 500), 90, np.uint8), None))
    assert "not meaningful" in text and "Category" not in text
    for cat in ("delayed", "advanced"):
        assert cat not in text


def test_no_sds_outside_the_reference_table(model_path):
    model = load_model(str(model_path))
    from boneage.data.synthetic import synthetic_film

    film, _ = synthetic_film(height=500, width=400, seed=1)
    r = model.predict(film, sex="F", chronological_age_months=0)
    assert r.sds is None and r.category is None
    assert any("outside the reference range" in w for w in r.warnings)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_report_renders_with_the_film_at_its_shape(model_path, tmp_path):
    """The page as a picture (saved for a person to look at): the film panel keeps the film's
    tall shape, so a dark column runs down the page's left half."""
    from tests.conftest import ROOT

    model = load_model(str(model_path))
    film = np.zeros((1200, 500), np.uint8)
    film[:, :] = 230  # a bright, tall film (the page is white: look for it by its grey)
    long = "a warning long enough to need wrapping " * 6
    pdf = pdf_report(model, _result(warnings=[long]), film, None, identifier="tall")
    (tmp_path / "r.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-singlefile", str(tmp_path / "r.pdf"),
                    str(tmp_path / "page")], check=True)
    import cv2

    page = cv2.imread(str(tmp_path / "page.png"), cv2.IMREAD_GRAYSCALE)
    art = ROOT / "test-artifacts"
    art.mkdir(exist_ok=True)
    cv2.imwrite(str(art / "report.png"), page)
    bright = np.abs(page.astype(int) - 230) < 8  # the film's grey, not the white paper
    h, w = page.shape
    panel = bright[int(0.08 * h): int(0.40 * h)]  # below the title, above the results
    rows = np.where(panel.mean(axis=1) > 0.05)[0]
    cols = np.where(panel.mean(axis=0) > 0.05)[0]
    # the film's own proportions (1200:500) on the page, within 10%
    assert (rows.max() - rows.min()) / (cols.max() - cols.min()) == pytest.approx(2.4, rel=0.1)
    assert "wrapping" in text_of(pdf)


def test_every_field_at_its_longest_keeps_the_chart(model_path, tmp_path):
    """All heights, both adult heights, three long warnings, notes, a long identifier and a
    non-Latin name: the page still holds the bone age chart (its +/-2 SD band drawn beside the
    results) and every line of text, none of it under the foot."""
    if not shutil.which("pdftoppm"):
        pytest.skip("poppler-utils (pdftoppm) is not installed")
    import cv2

    from tests.conftest import ROOT

    model = load_model(str(model_path))
    film = np.full((1400, 1100), 90, np.uint8)
    warnings = [f"warning number {k}: " + "a long plain-language warning that wraps " * 5
                for k in (1, 2, 3)]
    r = _result(chronological_age_months=130.0, difference_months=25.2, sds=1.4,
                category="indeterminate", height_cm=140.0, height_sds=-0.39, weight_kg=33.0,
                target_height_cm=176.5, target_height_low_cm=167.2, target_height_high_cm=186.7,
                predicted_adult_height_cm=176.5, predicted_adult_height_low_cm=165.5,
                predicted_adult_height_high_cm=205.8, rwt_adult_height_cm=177.6,
                rwt_adult_height_low_cm=170.3, rwt_adult_height_high_cm=184.9,
                growth_reference="UK-WHO", warnings=warnings,
                notes=["category indeterminate: the 90% interval 138-172 months crosses the "
                       "+2 SD line (150 months)", "target range: " + "a convention " * 12])
    ident = "山田太郎 / Ærøskøbing-" + "X" * 90
    pdf = pdf_report(model, r, film, None, identifier=ident, study_date="2026-11-02")
    (tmp_path / "r.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", str(tmp_path / "r.pdf"),
                    str(tmp_path / "page")], check=True)
    page = cv2.imread(str(tmp_path / "page.png"))
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    cv2.imwrite(str(ROOT / "test-artifacts" / "report-longest.png"), page)
    h, w = page.shape[:2]
    b, g, rr = (page[..., k].astype(int) for k in range(3))
    band = (abs(rr - 206) < 14) & (abs(g - 228) < 14) & (abs(b - 240) < 14)  # #9ecae1, alpha .5
    assert band[:, w // 2:].sum() > 500, "no bone age chart on the page"
    assert band[:, : w // 2].sum() < band[:, w // 2:].sum() / 10  # beside the results
    text = " ".join(text_of(pdf).split())
    for words in ("Bone age chart", "Adult height (BP)", "Adult height (RWT)", "Target height",
                  "Weight", "warning number 1", "warning number 2", "warning number 3",
                  "category indeterminate", "For research use only", "2026-11-02"):
        assert words in text, words
    # the foot (model line, disclaimer) is alone below 9% of the page: the last text line
    # above it ends before it
    dark = (page.min(axis=2) < 160)
    foot = int(h * (1 - 0.09))
    gap = dark[foot - int(0.012 * h): foot].any(axis=1)
    assert not gap.all()
