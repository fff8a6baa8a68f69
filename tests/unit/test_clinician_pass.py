"""What a clinician reads, second pass (issue #32): the heatmap without PyTorch (the ONNX
heatmap graph gives the torch map), a report that names the identifier, the file, the creation
time and the model's version with the accuracy figure that matches the film, a warning on an
SDS that cannot be right, and the small things a user trips on."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

pypdf = pytest.importorskip("pypdf")
pytest.importorskip("onnxruntime")

from boneage.cli import main  # noqa: E402
from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.inference.api import load_model  # noqa: E402
from boneage.inference.report import pdf_report  # noqa: E402


def text_of(pdf: bytes) -> str:
    return " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_onnx_heatmap_graph_gives_the_torch_map(model_path, tmp_path):
    """Grad-CAM++ from the exported heatmap graph, in numpy, against MONAI's on the torch
    network: the same map (the bundled ensemble: benchmarks/heatmaps.py, 25 raw films)."""
    from boneage.inference.explain import saliency

    assert main(["export", "--model", str(model_path), "--out", str(tmp_path / "m.onnx")]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["onnx"]["cam"]["file"] == "m.cam.onnx"
    torch_model = load_model(str(model_path), backend="torch")
    onnx_model = load_model(str(tmp_path / "m.onnx"))
    assert onnx_model.cam is not None and onnx_model.explainer is None and onnx_model.explains
    for seed in range(4):
        film, _ = synthetic_film(height=420, width=330, seed=seed)
        img, _ = torch_model.prepare(torch_model_film(film))
        x = torch_model.predictor.pipeline.tensor_part(img, {})
        ref = saliency(torch_model.predictor.model, x, bool(seed % 2))
        assert ref.max() > 0
        assert corr(ref, onnx_model.cam.saliency(x, bool(seed % 2))) > 0.99
    # the overlay at the film's shape, from either backend
    f = torch_model_film(synthetic_film(height=420, width=330, seed=9)[0])
    a, b = torch_model.heatmap(f, "F"), onnx_model.heatmap(f, "F")
    assert a.shape == b.shape == (420, 330, 3)


def torch_model_film(pixels: np.ndarray):
    from boneage.inference.api import read_film

    return read_film(pixels, "synthetic")


def test_an_export_without_heatmap_graph_says_so_once(model_path, tmp_path, capsys):
    """A graph without its heatmap twin (an older export): one line on the terminal, the
    estimate and the report all the same, a neutral note under the film, no clinical
    warning."""
    assert main(["export", "--model", str(model_path), "--out", str(tmp_path / "m.onnx")]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    del card["onnx"]["cam"]
    (tmp_path / "m.json").write_text(json.dumps(card))
    (tmp_path / "m.cam.onnx").unlink()
    film, _ = synthetic_film(height=400, width=320, seed=1)
    cv2.imwrite(str(tmp_path / "f.png"), film)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "f.png"), "--sex", "F", "--model",
                 str(tmp_path / "m.onnx"), "--heatmap", str(tmp_path / "hm"), "--report",
                 str(tmp_path / "pdf"), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    notes = [ln for ln in err.splitlines() if "heatmap" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: ")
    assert not list((tmp_path / "hm").glob("*.png"))
    result = json.loads(out.strip().splitlines()[-1])
    assert not any("heatmap" in w for w in result["warnings"])
    text = text_of((tmp_path / "pdf" / "f.report.pdf").read_bytes())
    assert "no heatmap for this model" in text and "Warning: no heatmap" not in text


def test_report_names_identifier_file_creation_time_and_model(tmp_path):
    """The bundled model's report for a full-resolution film: each item labelled, the model's
    own version and the full-resolution accuracy figure with its set named."""
    model = load_model("default")
    film, _ = synthetic_film(height=1400, width=1100, seed=4)
    cv2.imwrite(str(tmp_path / "1449.png"), film)
    assert main(["predict", str(tmp_path / "1449.png"), "--sex", "F", "--chronological-age",
                 "120", "--identifier", "ACC-4711", "--report", str(tmp_path / "pdf"),
                 "--format", "json", "--out", str(tmp_path / "r.jsonl")]) == 0
    pdf = (tmp_path / "pdf" / "1449.report.pdf").read_bytes()
    text = text_of(pdf)
    version = model.card["version"]
    for words in ("Patient or accession ID: ACC-4711", "File: 1449.png", "Report created: ",
                  f"Model: default version {version}", "full-resolution films it had never seen",
                  "less", "more influence"):
        assert words in " ".join(text.split()), words
    assert model.card["fullres_metrics"]["set"] not in text  # no folder name (issue #42)
    assert not re.search(r"Warning: [^\n]*(heatmap|PyTorch)", text)
    # one accuracy figure for every film: a thumbnail's report quotes the same
    thumb = np.asarray(cv2.resize(film, (100, 100)))
    r = model.predict(thumb, sex="F", chronological_age_months=120)
    small = text_of(pdf_report(model, r, thumb, None, identifier=None, file_name="t.png"))
    mae = f"{model.card['fullres_metrics']['mae']:.1f} months on average"
    assert mae in " ".join(small.split()) and mae in " ".join(text.split())
    assert "Patient or accession ID: (not given)" in small and "File: t.png" in small
    if shutil.which("pdftoppm"):
        (tmp_path / "r.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", str(tmp_path / "r.pdf"),
                        str(tmp_path / "page")], check=True)
        from tests.conftest import ROOT

        art = ROOT / "test-artifacts"
        art.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "page.png", art / "report-identifier.png")


def test_identifier_for_one_film_only_and_from_the_labels(model_path, tmp_path, capsys):
    for i in range(2):
        film, _ = synthetic_film(height=300, width=240, seed=i)
        cv2.imwrite(str(tmp_path / f"c{i}.png"), film)
    files = [str(tmp_path / "c0.png"), str(tmp_path / "c1.png")]
    assert main(["predict", *files, "--sex", "F", "--model", str(model_path),
                 "--identifier", "X"]) == 2
    assert "one film" in capsys.readouterr().err
    (tmp_path / "l.csv").write_text("id,male,identifier\nc0,F,ACC-1\nc1,M,ACC-2\n")
    assert main(["predict", *files, "--labels", str(tmp_path / "l.csv"), "--model",
                 str(model_path), "--report", str(tmp_path / "pdf")]) == 0
    assert "Patient or accession ID: ACC-2" in text_of(
        (tmp_path / "pdf" / "c1.report.pdf").read_bytes())


def test_an_implausible_sds_is_said_on_every_surface(model_path, tmp_path, capsys):
    """A wrong chronological age (a child of 3 months with a bone age of years): the result
    carries the plausibility warning in the JSON, the CSV, the PDF and the service's answer."""
    from fastapi.testclient import TestClient

    from boneage.service.app import create_app

    model = load_model(str(model_path))
    film, _ = synthetic_film(height=400, width=320, seed=3)
    cv2.imwrite(str(tmp_path / "f.png"), film)
    est = model.predict(film, sex="M").bone_age_months
    # one wildly wrong (from two years on: under two the warning is the model's limits),
    # one plausible
    ages = [est - 110 if est - 110 >= 30 else min(200.0, est + 80), est + 2]
    outs = []
    for age in ages:
        r = model.predict(film, sex="M", chronological_age_months=age)
        outs.append(r)
    wrong, fine = outs
    assert abs(wrong.sds) > 4 and abs(fine.sds) < 4
    assert any(w.startswith("implausible: SDS") for w in wrong.warnings)
    assert not any("implausible" in w for w in fine.warnings)
    assert main(["predict", str(tmp_path / "f.png"), "--sex", "M", "--model", str(model_path),
                 "--chronological-age", str(ages[0]), "--format", "csv", "--report",
                 str(tmp_path / "pdf")]) == 0
    assert "implausible: SDS" in capsys.readouterr().out
    assert "implausible: SDS" in text_of((tmp_path / "pdf" / "f.report.pdf").read_bytes())
    with TestClient(create_app(model)) as c:
        body = c.post("/v1/predict", files={"file": ("f.png", (tmp_path / "f.png").read_bytes())},
                      data={"sex": "M", "chronological_age_months": str(ages[0])}).json()
        assert any(w.startswith("implausible: SDS") for w in body["warnings"])
        assert c.get("/favicon.ico").status_code == 200
        h = c.get("/health").json()
        assert h["package_version"] and "model_version" in h and "version" not in h


def test_small_things(model_path, tmp_path, capsys):
    """The table keeps its columns with two-digit years; a folder without sex is one error
    line and no table; the labels' note has its prefix; --model has help."""
    from boneage.inference.api import BoneAgeResult
    from boneage.inference.batch import Writer

    buf = io.StringIO()
    w = Writer("table", buf)
    for months in (90.7, 155.2):
        w.write(BoneAgeResult("f.png", "F", months, round(months / 12, 2), 60.0, 118.0, 96.0,
                              -5.3, -0.52, "normal"))
    header, *rows = buf.getvalue().splitlines()
    at = header.index("90% interval") + len("90% interval")
    for row in rows:
        assert row[at - 1].isdigit() and row[at] == " ", row  # the interval ends under its header
    (tmp_path / "films").mkdir()
    for i in range(3):
        film, _ = synthetic_film(height=300, width=240, seed=i)
        cv2.imwrite(str(tmp_path / "films" / f"s{i}.png"), film)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "films"), "--model", str(model_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "sex is required" in err
    (tmp_path / "l.csv").write_text("id,male,age_months\ns0,F,100\ns1,M,90\ns2,F,80\n")
    assert main(["predict", str(tmp_path / "films" / "s0.png"), "--labels", str(tmp_path / "l.csv"),
                 "--model", str(model_path)]) == 0
    assert any(ln.startswith("note: l.csv: column(s) 'age_months' not read")
               for ln in capsys.readouterr().err.splitlines())
    for cmd in ("predict", "serve"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "a run folder" in " ".join(capsys.readouterr().out.split())
