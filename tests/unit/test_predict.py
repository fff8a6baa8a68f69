"""Prediction for films: the Python API and `boneage predict` (with an untrained model: these
tests check the plumbing, the accuracy lives in the benchmarks)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boneage import load_model  # noqa: E402
from boneage.cli import main  # noqa: E402
from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from boneage.inference.api import RESULT_COLUMNS  # noqa: E402
from boneage.inference.uncertainty import DEFAULT_TTA  # noqa: E402
from boneage.models.checkpoint import read_card  # noqa: E402
from tests.helpers import make_calibration_set, make_test_model, write_dicom  # noqa: E402


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "films"
    d.mkdir()
    for i in range(3):
        film, _ = synthetic_film(height=500, width=400, seed=i)
        cv2.imwrite(str(d / f"f{i}.png"), film)
    return d


def test_api_same_numbers_for_path_bytes_and_array(model_path, folder):
    m = load_model(str(model_path))
    path = folder / "f0.png"
    a = m.predict(path, sex="F", chronological_age_months=100)
    b = m.predict(path.read_bytes(), sex="female", chronological_age_months=100)
    c = m.predict(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), sex=False,
                  chronological_age_months=100)
    assert a.bone_age_months == b.bone_age_months == c.bone_age_months
    assert a.sex == "F" and a.chronological_age_months == 100
    assert a.sds is not None and a.category in ("delayed", "normal", "advanced")
    assert a.difference_months == pytest.approx(a.bone_age_months - 100, abs=0.06)
    assert "model not calibrated: no interval" in a.warnings
    assert list(a.to_dict()) == list(RESULT_COLUMNS)
    batch = m.predict_batch([path, folder / "f1.png"], sex=["F", "M"])
    assert batch[0].bone_age_months == a.bone_age_months and batch[1].sex == "M"
    # an array is read as a file would be: grey stored as colour is grey, colour is noted
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    d = m.predict(np.dstack([grey] * 3), sex="F", chronological_age_months=100)
    assert d.bone_age_months == a.bone_age_months and d.warnings == a.warnings
    e = m.predict(np.dstack([grey, grey // 2, 255 - grey]), sex="F")
    assert any("colour picture" in w for w in e.warnings)
    assert m.predict_batch([], sex=[]) == []


def test_api_input_errors(model_path, folder, tmp_path, monkeypatch):
    m = load_model(str(model_path))
    with pytest.raises(BoneAgeError, match="sex is required"):
        m.predict(folder / "f0.png")
    with pytest.raises(BoneAgeError, match="unknown sex"):
        m.predict(folder / "f0.png", sex="X")
    with pytest.raises(BoneAgeError, match="between 0 and 240"):
        m.predict(folder / "f0.png", sex="M", chronological_age_months=900)
    with pytest.raises(BoneAgeError, match="not an image"):
        m.predict(b"hello", sex="M")
    for bad, words in ((np.zeros(100), "not shape"), (np.zeros((0, 4)), "empty"),
                       (np.full((50, 50), np.nan), "NaN"), (np.array([["a"]]), "real numbers")):
        with pytest.raises(BoneAgeError, match=words):
            m.predict(bad, sex="M")
    with pytest.raises(BoneAgeError, match="1 value.s. for 2 film"):
        m.predict_batch([folder / "f0.png"] * 2, sex=["M"])
    with pytest.raises(BoneAgeError, match="not a model"):
        load_model("nosuchmodel")
    from boneage.inference import api
    from boneage.models import checkpoint

    for mod in (checkpoint, api):  # an install without weights says so
        monkeypatch.setattr(mod, "BUNDLED", tmp_path / "empty")
    with pytest.raises(BoneAgeError, match="no bundled default model"):
        load_model("default")
    with pytest.raises(BoneAgeError, match="not a model"):
        load_model(str(folder / "f0.png"))


def test_cli_unwritable_output_is_one_line(model_path, folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["predict", str(folder / "f0.png"), "--sex", "M", "--model", str(model_path),
                 "--out", str(blocker / "dir" / "r.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cannot write" in err and "\n" not in err
    # a folder that does not exist yet is made, as `evaluate --out` makes one
    assert main(["predict", str(folder / "f0.png"), "--sex", "M", "--model", str(model_path),
                 "--out", str(tmp_path / "new" / "dir" / "r.csv"), "--format", "csv"]) == 0
    assert (tmp_path / "new" / "dir" / "r.csv").read_text().startswith("file,sex,")


def test_dicom_header_gives_sex_and_age(model_path, tmp_path):
    film, _ = synthetic_film(height=300, width=240, seed=4)
    p = write_dicom(tmp_path / "a.dcm", (255 - film).astype(np.uint16) * 16, "MONOCHROME1",
                    sex="M", age="008Y")
    r = load_model(str(model_path)).predict(p)
    assert r.sex == "M" and r.chronological_age_months == 96
    adult = write_dicom(tmp_path / "b.dcm", film.astype(np.uint16), sex="F", age="030Y")
    r2 = load_model(str(model_path)).predict(adult)  # an adult's age is noted, not fatal
    assert r2.chronological_age_months is None and "ignored" in r2.warnings[0]
    assert not any("inverted" in w for w in r.warnings)  # MONOCHROME1 was turned right


def test_quality_warnings(model_path, folder):
    m = load_model(str(model_path))
    flat = m.predict(np.full((300, 200), 90, np.uint8), sex="M")
    assert any("no hand found" in w for w in flat.warnings)
    film = cv2.imread(str(folder / "f1.png"), cv2.IMREAD_GRAYSCALE)
    inv = m.predict(255 - film, sex="M")
    assert any("inverted" in w for w in inv.warnings)
    assert not any("inverted" in w for w in m.predict(film, sex="M").warnings)


def test_cli_predict_streams_csv_and_survives_a_bad_file(model_path, folder, tmp_path, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "r.csv"
    rc = main(["predict", str(folder), "--sex", "M", "--chronological-age", "120", "--model",
               str(model_path), "--format", "csv", "--out", str(out), "--workers", "2"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "3 film(s) estimated, 1 failed" in err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["file"].split("/")[-1] for r in rows] == ["f0.png", "f1.png", "f2.png"]
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert all(r["sex"] == "M" and r["chronological_age_months"] == "120.0" for r in rows)


def test_cli_predict_json_labels_heatmap_and_onnx(model_path, folder, tmp_path, capsys,
                                                  monkeypatch):
    from boneage.inference import api, batch

    (folder / "labels.csv").write_text("Case ID,Sex,Ground truth bone age (months)\n"
                                       "f0,F,10\nf1,M,20\nf2,F,30\n")
    reads, prepares = [], []
    real_read, real_prepare = batch.read_film, api.prepare_film
    monkeypatch.setattr(batch, "read_film", lambda p, *a: reads.append(p) or real_read(p, *a))
    monkeypatch.setattr(api, "prepare_film",
                        lambda *a, **k: prepares.append(1) or real_prepare(*a, **k))
    rc = main(["predict", str(folder), "--labels", str(folder / "labels.csv"), "--model",
               str(model_path), "--format", "json", "--heatmap", str(tmp_path / "hm"),
               "--report", str(tmp_path / "rep"), "--workers", "1"])
    assert rc == 0
    # each film read and prepared once, for the estimate, the heatmap and the report alike
    assert len(reads) == 3 and len(prepares) == 3
    pdfs = sorted((tmp_path / "rep").iterdir())
    assert [p.name for p in pdfs][0] == "f0.report.pdf" and pdfs[0].read_bytes()[:4] == b"%PDF"
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["sex"] for x in lines] == ["F", "M", "F"]
    assert sorted(p.name for p in (tmp_path / "hm").iterdir()) == \
        ["f0.heatmap.png", "f1.heatmap.png", "f2.heatmap.png"]
    # two films of one name in two folders: neither's heatmap overwrites the other's
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f0.png").write_bytes((folder / "f1.png").read_bytes())
    assert main(["predict", str(folder / "f0.png"), str(tmp_path / "other" / "f0.png"),
                 "--sex", "F", "--model", str(model_path), "--heatmap",
                 str(tmp_path / "hm2")]) == 0
    assert sorted(p.name for p in (tmp_path / "hm2").iterdir()) == \
        ["films_f0.heatmap.png", "other_f0.heatmap.png"]
    capsys.readouterr()
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--model", str(model_path), "--out", str(onnx)]) == 0
    capsys.readouterr()
    assert main(["predict", str(folder), "--labels", str(folder / "labels.csv"), "--model",
                 str(onnx), "--format", "json"]) == 0
    lines2 = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    for a, b in zip(lines, lines2, strict=True):
        assert abs(a["bone_age_months"] - b["bone_age_months"]) <= 0.1  # rounded to 0.1


def test_output_names_never_collide():
    from boneage.inference.batch import output_stems

    files = [Path("a/x.png"), Path("b/x.dcm"), Path("a_x.png"), Path("y.png"), Path("a/x.png")]
    assert output_stems(files) == ["a_x", "b_x", "a_x-2", "y", "a_x-3"]


def test_calibrate_then_intervals(model_path, folder, tmp_path, capsys):
    make_calibration_set(folder)
    assert main(["calibrate", "--model", str(model_path), "--images", str(folder),
                 "--labels", str(folder / "cal.csv"), "--choose-views"]) == 0
    card = read_card(model_path)
    cal, plan = card["calibration"], card["tta"]
    assert cal["coverage"] == 0.9 and cal["n"] == 12 and cal["q"] > 0
    # the estimate's views were chosen on these films: the default views kept for the spread,
    # an extra (zoomed) view only where the estimate uses it
    assert plan["views"][:8] == [[float(x) for x in v] for v in DEFAULT_TTA]
    assert 0 in plan["estimate"] and cal["tta_views"] == len(plan["views"])
    assert set(range(8, len(plan["views"]))) <= set(plan["estimate"])
    assert plan["chosen_on"]["mae_chosen"] <= plan["chosen_on"]["mae_identity"]
    r = load_model(str(model_path)).predict(folder / "c3.png", sex="M")
    assert r.interval_low_months < r.bone_age_months < r.interval_high_months
    assert not any("not calibrated" in w for w in r.warnings)
    assert main(["evaluate", "--model", str(model_path), "--images", str(folder), "--labels",
                 str(folder / "cal.csv"), "--tta", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["interval"]["coverage"] >= 0.9 and metrics["tta"] is True
    # coverage by sex and age band add up to the films; each film's interval is written out
    iv = metrics["interval"]
    assert sum(b["n"] for b in iv["by_age_band"].values()) == iv["n"] == metrics["n"]
    assert sum(b["n"] for b in iv["by_sex"].values()) == iv["n"]
    assert main(["evaluate", "--model", str(model_path), "--images", str(folder), "--labels",
                 str(folder / "cal.csv"), "--tta", "--out", str(tmp_path / "ev")]) == 0
    with open(tmp_path / "ev" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    inside = [float(r["interval_low_months"]) <= float(r["true_months"])
              <= float(r["interval_high_months"]) for r in rows]
    # (rounded to 0.01 month, a film on the calibrated edge may fall either side)
    assert len(rows) == iv["n"] and abs(np.mean(inside) - iv["coverage"]) <= 1 / len(rows)
    assert all(float(r["interval_low_months"]) < float(r["predicted_months"])
               < float(r["interval_high_months"]) for r in rows)
    report = (tmp_path / "ev" / "report.html").read_text()
    assert "90% interval" in report
    # the largest errors, worst first, each film with what the model saw of it
    worst = max(rows, key=lambda r: abs(float(r["error_months"])))
    assert report.count("<figure>") == min(12, len(rows)) and "largest errors" in report
    first = report.split("<figure>")[1]
    assert f"<b>{worst['id']}</b>" in first and first.count("<img src='data:image/jpeg") == 2
    assert f"(<b>{float(worst['error_months']):+.0f}</b>)" in first
    # without --choose-views the card's plan stays; a hand-edited plan that makes no sense is
    # one line
    card = read_card(model_path)
    card["tta"] = {"views": [[0, 1, 0, 0], [0, 1.5, 0, 0]], "estimate": [1]}
    (model_path.with_suffix(".json")).write_text(json.dumps(card))
    assert main(["calibrate", "--model", str(model_path), "--images", str(folder),
                 "--labels", str(folder / "cal.csv")]) == 0
    assert read_card(model_path)["tta"]["estimate"] == [1]
    assert read_card(model_path)["calibration"]["tta_views"] == 2
    card["tta"]["estimate"] = [2]
    (model_path.with_suffix(".json")).write_text(json.dumps(card))
    capsys.readouterr()
    assert main(["predict", str(folder / "c3.png"), "--sex", "M", "--model",
                 str(model_path)]) == 2
    err = capsys.readouterr().err
    assert "unusable 'tta' plan" in err and err.count("\n") == 1


def test_calibrate_with_a_chosen_correction_weight(model_path, folder, capsys):
    make_calibration_set(folder)
    args = ["calibrate", "--model", str(model_path), "--images", str(folder), "--labels",
            str(folder / "cal.csv")]
    assert main([*args, "--correction-weight", "0.6"]) == 0
    corr = read_card(model_path)["output_correction"]
    assert corr["weight"] == 0.6 and corr["weight_from"] == "set by the user"
    # the trade-off every weight would give, the chosen one marked, for the user to choose by
    assert set(corr["crossfit_mae"]) == {"0.0", "0.25", "0.5", "0.6", "0.75", "1.0"}
    out = capsys.readouterr().out
    assert "correction weight 0.6 (set by the user)" in out and out.count(" <-") == 1
    assert main(args) == 0  # without it the weight is chosen on the films again
    assert read_card(model_path)["output_correction"]["weight_from"] == "cross-fitted MAE"
    for bad in (["--correction-weight", "1.5"], ["--no-correct", "--correction-weight", "0.5"]):
        before = (model_path.with_suffix(".json")).read_bytes()
        capsys.readouterr()
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err
        assert "correction weight" in err and err.count("\n") == 1
        assert (model_path.with_suffix(".json")).read_bytes() == before  # card untouched


def test_calibrate_out_writes_a_copy_and_leaves_the_model(model_path, folder, tmp_path,
                                                          monkeypatch, capsys):
    make_calibration_set(folder)
    card = model_path.with_suffix(".json")
    before = card.read_bytes()
    args = ["calibrate", "--images", str(folder), "--labels", str(folder / "cal.csv")]
    copy = tmp_path / "recalibrated"
    assert main([*args, "--model", str(model_path), "--out", str(copy)]) == 0
    assert f"copy in {copy} (use --model {copy})" in capsys.readouterr().out
    assert card.read_bytes() == before  # the model is as it was
    assert sorted(f.name for f in copy.iterdir()) == ["m.json", "m.safetensors"]
    again = read_card(copy / "m.safetensors")
    assert again["calibration"]["n"] == 12 and "recalibrated" not in read_card(model_path)
    assert (again["recalibrated"]["from"], again["recalibrated"]["labels"],
            again["recalibrated"]["n"]) == (str(model_path), "cal.csv", 12)
    from boneage.models.card import render_markdown

    assert "calibrated on 12 films of cal.csv" in render_markdown(again)
    assert "calibrated on the validation films" in render_markdown(read_card(model_path))
    r = load_model(str(copy)).predict(folder / "c3.png", sex="M")  # the folder is the model
    assert r.interval_low_months < r.bone_age_months < r.interval_high_months
    assert "model not calibrated: no interval" in load_model(str(model_path)).predict(
        folder / "c3.png", sex="M").warnings
    # recalibrated again in place, the copy still says what it is a copy of
    assert main([*args, "--model", str(copy), "--coverage", "0.8"]) == 0
    again = read_card(copy / "m.safetensors")
    assert again["recalibrated"]["from"] == str(model_path)
    assert again["calibration"]["coverage"] == 0.8
    # a folder that holds something already is refused before any film is read
    assert main([*args, "--model", str(model_path), "--out", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "not an empty folder" in err and err.count("\n") == 1
    # an installed model keeps its shipped card: only a copy is recalibrated
    from boneage.inference import api
    from boneage.models import checkpoint

    shipped = tmp_path / "weights"
    shipped.mkdir()
    model_path.with_suffix(".safetensors").rename(shipped / "default.safetensors")
    card.rename(shipped / "default.json")
    (shipped / "default.md").write_text("# Model card: default\n")  # as the bundled one has
    monkeypatch.setattr(checkpoint, "BUNDLED", shipped)
    monkeypatch.setattr(api, "BUNDLED", shipped)
    assert main([*args, "--model", "default"]) == 2
    err = capsys.readouterr().err
    assert "give --out DIR for a recalibrated copy" in err and err.count("\n") == 1
    assert (shipped / "default.json").read_bytes() == before
    assert main([*args, "--model", "default", "--out", str(tmp_path / "ours")]) == 0
    assert (shipped / "default.json").read_bytes() == before
    assert "calibration" in read_card(tmp_path / "ours" / "default.safetensors")
    assert "## Recalibration" in (tmp_path / "ours" / "default.md").read_text()
    assert (shipped / "default.md").read_text() == "# Model card: default\n"
    # what the page, the API's answers and the PDF report name it
    assert load_model(str(tmp_path / "ours")).name.endswith(", recalibrated on cal.csv")
    assert "recalibrated" not in load_model("default").name


def test_installed_models_by_name(tmp_path, monkeypatch, capsys):
    from boneage.inference import api
    from boneage.models import checkpoint

    shipped = tmp_path / "weights"
    shipped.mkdir()
    make_test_model(shipped).rename(shipped / "default.safetensors")
    (shipped / "m.json").rename(shipped / "default.json")
    monkeypatch.setattr(checkpoint, "BUNDLED", shipped)
    monkeypatch.setattr(api, "BUNDLED", shipped)
    assert load_model("default").predictor.path == shipped / "default.safetensors"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "installed models" in out and "default" in out.split("installed models")[1]


def test_cli_predict_ages_per_film_from_labels_and_skip_invalid(model_path, folder, tmp_path,
                                                               capsys):
    """A folder of different children: each film's own chronological age (labels column or
    DICOM header), never one age for all; invalid label rows refused, or dropped on request."""
    film, _ = synthetic_film(height=300, width=240, seed=5)
    write_dicom(folder / "d.dcm", film.astype(np.uint16) * 16, sex="F", age="010Y")
    labels = folder / "labels.csv"
    labels.write_text("id,male,chronological_age_months\nf0,M,60\nf1,F,130.5\nf2,M,\n"
                      "ghost,X,12\n")
    args = ["predict", str(folder), "--labels", str(labels), "--model", str(model_path),
            "--format", "json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown sex" in err and "--skip-invalid" in err and err.count("\n") == 1
    assert main([*args, "--skip-invalid"]) == 0
    out = capsys.readouterr()
    rows = {Path(x["file"]).name: x for x in map(json.loads, out.out.strip().splitlines())}
    assert rows["f0.png"]["chronological_age_months"] == 60
    assert rows["f1.png"]["chronological_age_months"] == 130.5
    assert rows["f2.png"]["chronological_age_months"] is None
    assert rows["d.dcm"]["chronological_age_months"] == 120  # the DICOM header's own
    assert "dropped 1 invalid row" in out.err
    # the flag still means "this age, for every film"
    assert main([*args, "--skip-invalid", "--chronological-age", "99"]) == 0
    ages = {json.loads(x)["chronological_age_months"]
            for x in capsys.readouterr().out.strip().splitlines()}
    assert ages == {99}
