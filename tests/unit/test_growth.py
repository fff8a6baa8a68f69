"""Height, the parents' heights and what they give (issue #30, first part): the height SDS and
the mid-parental target height come from rcpchgrowth's own functions, the inputs are checked
for units on every surface, and a DICOM's PatientSize is read as the child's height."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

rc = pytest.importorskip("rcpchgrowth")

from boneage.cli import main  # noqa: E402
from boneage.clinical.growth import Heights, growth  # noqa: E402
from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402


def children(n: int = 20) -> list[dict]:
    """n generated children, both sexes, ages 2-17, heights from SDS -2.5..+2.5 on UK-WHO,
    and plausible parents."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        male = bool(i % 2)
        months = float(rng.uniform(24, 17 * 12))
        sex = "male" if male else "female"
        height = rc.measurement_from_sds("uk-who", float(rng.uniform(-2.5, 2.5)), "height", sex,
                                         months / 12)
        out.append({"male": male, "months": months, "height": round(float(height), 1),
                    "mother": round(float(rng.uniform(150, 180)), 1),
                    "father": round(float(rng.uniform(160, 195)), 1)})
    return out


@pytest.mark.parametrize("reference", ["uk-who", "cdc"])
def test_height_sds_and_target_equal_rcpchgrowth_for_20_children(reference):
    for c in children():
        sex = "male" if c["male"] else "female"
        g = growth(Heights.checked(c["height"], c["mother"], c["father"]), c["male"],
                   c["months"], reference)
        sds = rc.sds_for_measurement(reference, c["months"] / 12, "height", c["height"], sex)
        assert g.height_sds == pytest.approx(sds, abs=0.005), c
        assert g.target_height_cm == pytest.approx(
            rc.mid_parental_height(c["mother"], c["father"], sex), abs=0.051)
        lo, hi = rc.lower_and_upper_limits_of_expected_height_z(
            rc.mid_parental_height_z(c["mother"], c["father"], reference))
        assert g.target_height_low_cm == pytest.approx(
            rc.measurement_from_sds(reference, lo, "height", sex, 20.0), abs=0.051)
        assert g.target_height_high_cm == pytest.approx(
            rc.measurement_from_sds(reference, hi, "height", sex, 20.0), abs=0.051)
        assert g.target_height_low_cm < g.target_height_high_cm
        assert g.growth_reference.startswith(("UK-WHO", "CDC"))
        assert not [w for w in g.warnings if "Bayley" in w]  # no developer note among them


@pytest.mark.parametrize(("args", "says"), [
    (("0", None, None), "positive number of centimetres"),
    (("2.5", None, None), "looks like metres"),
    (("400", None, None), "outside 40-220 cm"),
    ((None, None, "178"), "without the other parent's"),
    ((None, "1.65", "178"), "looks like metres"),
    (("abc", None, None), "number of centimetres"),
])
def test_bad_heights_are_one_line(args, says):
    with pytest.raises(BoneAgeError, match=says):
        Heights.checked(*args)


def test_the_cli_gives_the_growth_fields_and_refuses_bad_heights(model_path, tmp_path, capsys):
    film, _ = synthetic_film(height=400, width=320, seed=2)
    cv2.imwrite(str(tmp_path / "f.png"), film)
    base = ["predict", str(tmp_path / "f.png"), "--sex", "F", "--model", str(model_path),
            "--chronological-age", "120"]
    assert main([*base, "--height", "138.5", "--mother-height", "165", "--father-height", "178",
                 "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["height_cm"] == 138.5 and r["growth_reference"] == "UK-WHO"
    assert r["height_sds"] == pytest.approx(
        rc.sds_for_measurement("uk-who", 10.0, "height", 138.5, "female"), abs=0.005)
    assert r["target_height_cm"] == pytest.approx(165.0)
    assert r["target_height_low_cm"] < 165 < r["target_height_high_cm"]
    assert r["predicted_adult_height_cm"] is not None or any(
        "Bayley-Pinneau" in n for n in r["notes"])
    for bad in (["--height", "0"], ["--height", "2.5"], ["--height", "400"],
                ["--father-height", "178"]):
        assert main([*base, *bad, "--out", str(tmp_path / "o.csv")]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error:")
        assert not (tmp_path / "o.csv").exists()
    # from the labels: per film, a bad height stops before any output, naming the film
    (tmp_path / "l.csv").write_text("id,male,chronological_age_months,height_cm\nf,F,120,1.4\n")
    assert main(["predict", str(tmp_path / "f.png"), "--labels", str(tmp_path / "l.csv"),
                 "--model", str(model_path), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "f: height 1.4 looks like metres" in err and not (tmp_path / "o.csv").exists()
    (tmp_path / "l.csv").write_text("id,male,chronological_age_months,height_cm\nf,F,120,138\n")
    assert main(["predict", str(tmp_path / "f.png"), "--labels", str(tmp_path / "l.csv"),
                 "--model", str(model_path), "--format", "csv"]) == 0
    assert ",138.0," in capsys.readouterr().out


def test_patient_size_is_the_height_and_the_service_takes_the_fields(model_path, tmp_path):
    from fastapi.testclient import TestClient

    from boneage.inference.api import load_model
    from boneage.service.app import create_app
    from tests.helpers import write_dicom

    film, _ = synthetic_film(height=400, width=320, seed=4)
    path = write_dicom(tmp_path / "f.dcm", film.astype(np.uint16) * 16, sex="M", age=None,
                       birth="20100301", study="20200615", PatientSize="1.42")
    model = load_model(str(model_path))
    r = model.predict(path)
    assert r.height_cm == 142.0 and r.height_sds == pytest.approx(
        rc.sds_for_measurement("uk-who", r.chronological_age_months / 12, "height", 142.0,
                               "male"), abs=0.005)
    with TestClient(create_app(model)) as c:
        png = cv2.imencode(".png", film)[1].tobytes()
        body = c.post("/v1/predict", files={"file": ("f.png", png)},
                      data={"sex": "F", "chronological_age_months": "96", "height_cm": "127",
                            "mother_height_cm": "160", "father_height_cm": "175"}).json()
        assert body["height_cm"] == 127 and body["target_height_cm"] == pytest.approx(161.0)
        bad = c.post("/v1/predict", files={"file": ("f.png", png)},
                     data={"sex": "F", "height_cm": "1.27"})
        assert bad.status_code == 400 and "looks like metres" in bad.json()["error"]


def test_the_dicom_results_carry_the_heights(model_path, tmp_path):
    """The SR holds the height (LOINC 8302-2, cm), its SDS and the target height range, and
    passes dciodvfy; the result image's panel lists them."""
    import shutil
    import subprocess

    import pydicom

    from tests.helpers import write_dicom

    pytest.importorskip("highdicom")
    film, _ = synthetic_film(height=400, width=320, seed=6)
    path = write_dicom(tmp_path / "f.dcm", film.astype(np.uint16) * 16, sex="F", age=None,
                       birth="20100301", study="20200615")
    assert main(["predict", str(path), "--model", str(model_path), "--height", "140",
                 "--mother-height", "165", "--father-height", "180", "--dicom-out",
                 str(tmp_path / "out"), "--format", "json", "--out",
                 str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    sr = pydicom.dcmread(next((tmp_path / "out").glob("SR_*.dcm")))
    found = {}

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                code = item.ConceptNameCodeSequence[0].CodeValue
                found[code] = (float(item.MeasuredValueSequence[0].NumericValue),
                               item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
                               .CodeValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert found["8302-2"] == (140.0, "cm")
    assert found["HEIGHT-SDS"][0] == pytest.approx(r["height_sds"], abs=0.01)
    assert found["TARGET-HT"] == (r["target_height_cm"], "cm")
    assert found["TARGET-HT-LOW"][0] < found["TARGET-HT"][0] < found["TARGET-HT-HIGH"][0]
    if shutil.which("dciodvfy"):
        for f in (tmp_path / "out").iterdir():
            run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
            assert not [ln for ln in (run.stdout + run.stderr).splitlines()
                        if ln.startswith("Error")], f.name
