"""Follow-up across visits (issue #30, second part): a child's films as a series in date
order, the change in bone age per year of age with its interval, the follow-up table and the
one-page PDF; the bad inputs of a series, one line each, nothing half-written."""

from __future__ import annotations

import csv
import io
import math
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from boneage.cli import main
from boneage.clinical.followup import Visit, build_series
from boneage.data.synthetic import synthetic_film
from boneage.errors import BoneAgeError


def visit(date: str, ca: float, ba: float, lo: float | None = None, hi: float | None = None,
          height: float | None = None, ident: str = "C-1") -> Visit:
    return Visit(ident, date, f"{date}.png", "F", ca, ba, lo, hi, height)


def test_series_in_date_order_with_velocity_and_interval():
    series = build_series([visit("2024-06-01", 120, 130, 110, 150, 140.0),
                           visit("2022-06-01", 96, 100, 80, 120, 128.0),
                           visit("2023-06-01", 108, 118, None, None),
                           visit("2023-01-01", 100, 100, ident="other")])
    assert len(series) == 1  # one visit is no series
    s = series[0]
    assert [v.study_date for v in s.visits] == ["2022-06-01", "2023-06-01", "2024-06-01"]
    first, second = s.steps
    assert first.years == 1.0 and first.bone_age_change_months == 18.0
    assert first.bone_age_per_year == 1.5
    assert first.bone_age_per_year_low is None  # the second visit has no interval
    assert first.height_velocity_cm_per_year is None
    # 96 -> 120 months over 2 steps: the last step from 108 to 120 (1 year), 118 -> 130
    assert second.bone_age_per_year == 1.0 and second.height_velocity_cm_per_year is None
    both = build_series([visit("2022-06-01", 96, 100, 80, 120, 128.0),
                         visit("2024-06-01", 120, 130, 110, 150, 140.0)])[0].steps[0]
    sd = 20 / 1.645  # each interval half-width is 20 months
    half = 1.645 * math.hypot(sd, sd) / 12 / 2
    assert both.bone_age_per_year == 1.25
    assert both.bone_age_per_year_low == pytest.approx(1.25 - half, abs=0.01)
    assert both.bone_age_per_year_high == pytest.approx(1.25 + half, abs=0.01)
    assert both.height_velocity_cm_per_year == 6.0


def test_two_visits_on_one_date_and_ages_against_the_dates_are_refused():
    with pytest.raises(BoneAgeError, match="two visits on 2023-01-01"):
        build_series([visit("2023-01-01", 100, 100), visit("2023-01-01", 101, 100)])
    with pytest.raises(BoneAgeError, match="not after"):
        build_series([visit("2023-01-01", 110, 100), visit("2024-01-01", 100, 100)])


def three_visits(folder) -> list:
    """Three films of one child with dates, heights and the parents' heights."""
    folder.mkdir(exist_ok=True)
    rows = [("v1", "2019-03-01", "95.0"), ("v2", "2022-04-12", "116.5"),
            ("v3", "2026-01-20", "138.0")]
    for i, (name, _, _) in enumerate(rows):
        film, _ = synthetic_film(height=400, width=320, seed=30 + i)
        cv2.imwrite(str(folder / f"{name}.png"), film)
    lines = ["id,male,identifier,study_date,birth_date,height_cm,mother_height_cm,"
             "father_height_cm"]
    # listed out of date order: the series sorts them
    for name, when, h in (rows[2], rows[0], rows[1]):
        lines.append(f"{name},F,CHILD-7,{when},2016-05-10,{h},165,178")
    (folder / "visits.csv").write_text("\n".join(lines) + "\n")
    return [str(folder / f"{n}.png") for n, _, _ in rows]


def test_three_visits_give_the_table_and_the_one_page_pdf(tmp_path):
    """With the bundled (calibrated) model: the intervals give the velocity's interval."""
    pytest.importorskip("rcpchgrowth")
    pypdf = pytest.importorskip("pypdf")
    films = three_visits(tmp_path / "films")
    assert main(["predict", *films, "--labels", str(tmp_path / "films" / "visits.csv"),
                 "--followup", str(tmp_path / "fu.csv"),
                 "--report", str(tmp_path / "pdf"), "--format", "csv", "--out",
                 str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "fu.csv").read_text())))
    assert [r["study_date"] for r in rows] == ["2019-03-01", "2022-04-12", "2026-01-20"]
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["v1.png", "v2.png", "v3.png"]
    assert rows[0]["since_last_bone_age_per_year"] == ""
    for prev, r in zip(rows, rows[1:], strict=False):
        ba = (float(r["bone_age_months"]) - float(prev["bone_age_months"])) / 12
        years = (float(r["chronological_age_months"])
                 - float(prev["chronological_age_months"])) / 12
        assert float(r["since_last_bone_age_per_year"]) == pytest.approx(ba / years, abs=0.01)
        assert (float(r["since_last_bone_age_per_year_low"])
                < float(r["since_last_bone_age_per_year"])
                < float(r["since_last_bone_age_per_year_high"]))
        assert float(r["since_last_height_velocity_cm_per_year"]) > 0
    pdf = (tmp_path / "pdf" / "bone-age-CHILD-7.followup.pdf").read_bytes()
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    places = [text.index(d) for d in ("2019-03-01", "2022-04-12", "2026-01-20")]
    assert places == sorted(places) and "CHILD-7" in text and "cm per year" in text
    if shutil.which("pdftoppm"):
        (tmp_path / "f.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", str(tmp_path / "f.pdf"),
                        str(tmp_path / "page")], check=True)
        page = cv2.imread(str(tmp_path / "page.png"))
        # the visits are drawn in the sex's colour on both charts
        assert np.count_nonzero(np.all(np.abs(page.astype(int) - [140, 71, 201]) < 40, axis=2))
        from tests.conftest import ROOT

        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "page.png", ROOT / "test-artifacts" / "followup.png")


def test_bad_series_inputs_are_one_line_and_write_nothing(model_path, tmp_path, capsys):
    films = three_visits(tmp_path / "films")
    labels = tmp_path / "films" / "visits.csv"
    text = labels.read_text()
    labels.write_text(text.replace("2022-04-12,2016-05-10", "2015-04-12,2016-05-10"))
    assert main(["predict", *films, "--labels", str(labels), "--model", str(model_path),
                 "--followup", str(tmp_path / "fu.csv"), "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study date is before the birth date" in err[0]
    assert not (tmp_path / "fu.csv").exists() and not (tmp_path / "r.csv").exists()
    labels.write_text(text.replace("2022-04-12", "2019-03-01"))  # two visits, one date
    assert main(["predict", *films, "--labels", str(labels), "--model", str(model_path),
                 "--followup", str(tmp_path / "fu.csv"), "--out", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "CHILD-7: two visits on 2019-03-01" in err and not (tmp_path / "fu.csv").exists()
    assert main(["predict", *films, "--labels", str(labels), "--model", str(model_path),
                 "--followup", str(tmp_path / "fu.txt")]) == 2
    assert "a .csv or .json file" in capsys.readouterr().err


def test_dicom_films_of_one_patient_make_a_series(model_path, tmp_path, capsys):
    import pydicom

    from tests.helpers import write_dicom

    paths = []
    for i, study in enumerate(("20200101", "20210301")):
        film, _ = synthetic_film(height=400, width=320, seed=50 + i)
        p = write_dicom(tmp_path / f"d{i}.dcm", film.astype(np.uint16) * 16, sex="M",
                        age=None, birth="20120101", study=study)
        ds = pydicom.dcmread(p)
        ds.PatientID = "PID-9"
        ds.save_as(p)
        paths.append(str(p))
    assert main(["predict", *paths, "--model", str(model_path), "--followup",
                 str(tmp_path / "fu.json"), "--format", "json"]) == 0
    import json

    series = json.loads((tmp_path / "fu.json").read_text())
    assert [s["identifier"] for s in series] == ["PID-9"]
    # without --followup, beside --out in its format
    assert main(["predict", *paths, "--model", str(model_path), "--format", "json", "--out",
                 str(tmp_path / "r.jsonl")]) == 0
    assert json.loads((tmp_path / "r.followup.json").read_text()) == series
    assert [v["study_date"] for v in series[0]["visits"]] == ["2020-01-01", "2021-03-01"]
    assert series[0]["visits"][1]["since_last_years"] == pytest.approx(14 / 12, abs=0.01)


def test_the_tempo_is_said_only_where_its_interval_allows():
    """An interval that contains 1.0 cannot tell slow from fast: it is said as such."""
    from boneage.clinical.followup import KEEPING_PACE

    wide = build_series([visit("2022-06-01", 96, 96, 76, 116),
                         visit("2023-06-01", 108, 111, 91, 131)])[0].steps[0]
    assert wide.bone_age_per_year_low < 1.0 < wide.bone_age_per_year_high
    assert wide.tempo == KEEPING_PACE
    fast = build_series([visit("2020-06-01", 96, 90, 88, 92),
                         visit("2024-06-01", 144, 160, 158, 162)])[0].steps[0]
    assert fast.bone_age_per_year_low > 1.0 and fast.tempo == "faster than age"
    slow = build_series([visit("2020-06-01", 96, 100, 98, 102),
                         visit("2024-06-01", 144, 120, 118, 122)])[0].steps[0]
    assert slow.bone_age_per_year_high < 1.0 and slow.tempo == "slower than age"
    none = build_series([visit("2020-06-01", 96, 100), visit("2024-06-01", 144, 120)])
    assert none[0].steps[0].tempo is None


def test_the_followup_table_carries_the_target_the_sds_and_the_adult_height(tmp_path):
    """With both parents' heights: the target and its range, the bone age SDS and the adult
    height on every visit of the follow-up table, and the target on its PDF."""
    pytest.importorskip("rcpchgrowth")
    pypdf = pytest.importorskip("pypdf")
    films = three_visits(tmp_path / "films")
    assert main(["predict", *films, "--labels", str(tmp_path / "films" / "visits.csv"),
                 "--followup", str(tmp_path / "fu.csv"), "--report", str(tmp_path / "pdf"),
                 "--format", "csv", "--out", str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "fu.csv").read_text())))
    per_film = {r["file"]: r for r in csv.DictReader(io.StringIO(
        (tmp_path / "r.csv").read_text()))}
    for r in rows:
        assert float(r["target_height_cm"]) == pytest.approx(165.0)  # (165 + 178 - 13) / 2
        assert float(r["target_height_low_cm"]) < 165 < float(r["target_height_high_cm"])
        assert r["sds"] == per_film[r["file"]]["sds"] and r["category"]
        assert r["predicted_adult_height_cm"] == per_film[r["file"]]["predicted_adult_height_cm"]
    assert any(r["predicted_adult_height_cm"] for r in rows)
    assert all(r["since_last_tempo"] for r in rows[1:])
    text = pypdf.PdfReader(str(tmp_path / "pdf" / "bone-age-CHILD-7.followup.pdf")).pages[0]
    text = " ".join(text.extract_text().split())
    assert "Target height (mid-parental): 165.0 cm" in text
    assert "Height chart" in text and "off by" in text


def test_visits_given_by_dates_alone_make_a_series():
    """No chronological ages (a PNG with only study dates): the time between visits is the
    days between the dates, counted forwards, in years of 365.25 days."""
    from datetime import date

    s = build_series([visit("2023-09-01", None, 130), visit("2021-03-01", None, 100)])[0]
    assert [v.study_date for v in s.visits] == ["2021-03-01", "2023-09-01"]
    years = (date(2023, 9, 1) - date(2021, 3, 1)).days / 365.25
    assert s.steps[0].years == pytest.approx(years, abs=0.001)
    assert s.steps[0].bone_age_per_year == pytest.approx(30 / 12 / years, abs=0.01)
