"""A hostile-input corpus, made at test time (small: bombs are built with few frames against
lowered limits), plus pydicom's own test files, run against the CLI and the service: one-line
errors and no tracebacks, statuses 200 or 4xx and never 5xx, memory bounded, nothing on disk."""

from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from boneage.cli import main  # noqa: E402
from boneage.data import dicom  # noqa: E402
from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from boneage.inference.api import load_model, read_film  # noqa: E402
from boneage.service.app import Settings, create_app  # noqa: E402
from tests.helpers import (  # noqa: E402
    damage_bits_allocated,
    dicom_bytes,
    undecodable_jpeg_dicom,
)


def corpus(tmp: Path) -> dict[str, Path]:
    """Name -> file. Each is refused with one clear line, or estimated with a warning."""
    film, _ = synthetic_film(height=300, width=240, seed=3)
    rng = np.random.default_rng(0)
    png = cv2.imencode(".png", film)[1].tobytes()
    items = {
        "empty": b"",
        "text": b"patient list\nnot an image\n",
        "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\n",
        "html": b"<html><script>alert(1)</script></html>",
        "random bytes": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "png header only": png[:40],
        "truncated png": png[: len(png) // 3],
        "png pixel bomb": b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + struct.pack(">II", 60000, 60000)
        + b"\x08\x00\x00\x00\x00" + b"\0" * 8,
        "tiny png": cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes(),
        "one-pixel-high png": cv2.imencode(".png", np.zeros((1, 3000), np.uint8))[1].tobytes(),
        "jpeg header only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        "colour photo": cv2.imencode(".png", (rng.random((300, 400, 3)) * 255).astype(
            np.uint8))[1].tobytes(),
        "noise": cv2.imencode(".png", (rng.random((400, 300)) * 255).astype(np.uint8))[1]
        .tobytes(),
        "dicom preamble only": b"\0" * 128 + b"DICM",
        "dicom garbage": b"\0" * 128 + b"DICM" + rng.integers(0, 256, 3000, dtype=np.uint8)
        .tobytes(),
        "deflated frame bomb": dicom_bytes(np.zeros((512, 512)), frames=64, deflate=True),
        "claimed frames bomb": dicom_bytes(np.zeros((256, 256)), NumberOfFrames=100000),
        "multi-frame film": dicom_bytes(film.astype(np.uint16) * 200, frames=3),
        "MR of a hand": dicom_bytes(film.astype(np.uint16) * 200, Modality="MR"),
        "chest CR": dicom_bytes(film.astype(np.uint16) * 200, Modality="CR",
                                BodyPartExamined="CHEST"),
    }
    tmp.mkdir(parents=True, exist_ok=True)
    items["dicom damaged element"] = damage_bits_allocated(
        dicom_bytes(film.astype(np.uint16) * 200))
    items["dicom undecodable jpeg"] = undecodable_jpeg_dicom(tmp / "jpeg12.dcm").read_bytes()
    out = {}
    for name, data in items.items():
        p = tmp / name.replace(" ", "_")
        p.write_bytes(data)
        out[name] = p
    import pydicom

    for f in sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm")):
        out[f"pydicom {f.name}"] = f
    return out


@pytest.fixture
def lowered(monkeypatch):
    """The bombs above are small; the limits are lowered to match (same code paths)."""
    monkeypatch.setattr(dicom, "MAX_INFLATED_BYTES", 8 << 20)
    monkeypatch.setattr(dicom, "MAX_DICOM_BYTES", 64 << 20)


def test_deflated_bomb_refused_before_it_inflates(tmp_path, lowered):
    data = dicom_bytes(np.zeros((512, 512)), frames=64, deflate=True)  # 32 MB inflated
    assert len(data) < 200_000
    tracemalloc.start()
    with pytest.raises(BoneAgeError, match="inflates to over 8 MB"):
        read_film(data, "bomb.dcm")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # counted in 1 MB steps, never held whole
    with pytest.raises(BoneAgeError, match="over the limit of 64 MB"):
        read_film(dicom_bytes(np.zeros((256, 256)), NumberOfFrames=100000), "claim.dcm")


def test_multi_frame_and_colour_dicoms_are_read_as_one_grey_film(tmp_path):
    film, _ = synthetic_film(height=300, width=240, seed=3)
    f = read_film(dicom_bytes(film.astype(np.uint16) * 200, frames=3), "three.dcm")
    assert f.pixels.shape == (300, 240) and f.pixels.dtype == np.uint8
    import pydicom

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit_2frame.dcm",
                 "examples_ybr_color.dcm"):
        f = read_film(files / name)
        assert f.pixels.ndim == 2 and any("colour" in n for n in f.notes), name


def test_header_says_not_a_hand(model_path, tmp_path):
    film, _ = synthetic_film(height=300, width=240, seed=3)
    m = load_model(str(model_path))
    r = m.predict(dicom_bytes(film.astype(np.uint16) * 200, Modality="MR"),
                  chronological_age_months=100)
    assert any("Modality is MR" in w for w in r.warnings) and r.sds is None
    r = m.predict(dicom_bytes(film.astype(np.uint16) * 200, BodyPartExamined="CHEST"))
    assert any("BodyPartExamined is CHEST" in w for w in r.warnings)
    r = m.predict(dicom_bytes(film.astype(np.uint16) * 200, BodyPartExamined="HAND"))
    assert not any("DICOM" in w for w in r.warnings)


def test_cli_one_line_per_bad_file_and_no_traceback(model_path, tmp_path, lowered,
                                                    capfd):
    """capfd, not capsys: what the C libraries (libpng, libjpeg) print goes to the process's
    stderr, which capsys does not see."""
    files = corpus(tmp_path / "c")
    for name, path in files.items():
        rc = main(["predict", str(path), "--sex", "F", "--model", str(model_path),
                   "--no-tta", "--workers", "1"])
        out = capfd.readouterr()
        assert rc in (0, 1), (name, rc, out.err)
        assert "Traceback" not in out.err + out.out, name
        lines = [x for x in out.err.splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("error:")]
        assert all(x.startswith(("error:", "note:")) or "estimated" in x for x in lines), name
        if rc == 1:
            assert len(errors) == 1 and "\n" not in errors[0], name


def test_folder_of_hostile_files_reads_by_content(model_path, tmp_path, capsys):
    d = tmp_path / "export"
    d.mkdir()
    film, _ = synthetic_film(height=300, width=240, seed=3)
    (d / "IM0001").write_bytes(dicom_bytes(film.astype(np.uint16) * 200))  # no suffix (PACS)
    (d / "scan.pdf").write_bytes(b"%PDF-1.4\n")
    (d / "notes.png").write_bytes(b"not really a png")
    (d / "dangling.png").symlink_to(d / "nowhere.png")
    (d / "loop.dcm").symlink_to(d / "loop.dcm")
    assert main(["predict", str(d), "--model", str(model_path), "--format", "csv",
                 "--no-tta"]) == 0
    out = capsys.readouterr()
    assert "IM0001" in out.out
    note = [x for x in out.err.splitlines() if x.startswith("note:")]
    assert len(note) == 1 and "skipped 4 file(s)" in note[0]
    assert "2 not an image" in note[0] and "2 broken or looping link" in note[0]


def test_service_never_answers_5xx(model_path, tmp_path, lowered):
    files = corpus(tmp_path / "c")
    before = set(os.listdir(tmp_path))
    c = TestClient(create_app(load_model(str(model_path)), Settings()))
    statuses = {}
    for name, path in files.items():
        for route in ("/v1/predict", "/v1/report"):
            r = c.post(route, files={"file": (path.name, path.read_bytes(), "x/y")},
                       data={"sex": "F"})
            statuses[(name, route)] = r.status_code
            assert r.status_code < 500, (name, route, r.text[:200])
            if r.status_code >= 400:
                body = r.json()
                assert set(body) == {"error"} and "\n" not in body["error"], name
    assert statuses[("deflated frame bomb", "/v1/predict")] == 413
    assert statuses[("png pixel bomb", "/v1/predict")] == 413
    assert statuses[("pdf", "/v1/predict")] == 415
    assert statuses[("multi-frame film", "/v1/predict")] == 200
    assert statuses[("dicom damaged element", "/v1/predict")] == 422
    assert statuses[("dicom undecodable jpeg", "/v1/report")] == 422
    assert set(os.listdir(tmp_path)) == before  # nothing written beside the corpus


def test_out_file_is_never_half_written(model_path, tmp_path, monkeypatch, capsys):
    """Two runs into the same --out at once, and a run stopped by Ctrl-C: each leaves a whole
    CSV (header + complete rows) and no temporary file behind."""
    import csv
    import subprocess
    import sys

    d = tmp_path / "films"
    d.mkdir()
    for i in range(20):
        film, _ = synthetic_film(height=200, width=160, seed=i)
        cv2.imwrite(str(d / f"f{i:02}.png"), film)
    (tmp_path / "o").mkdir()
    out = tmp_path / "o" / "r.csv"
    cmd = [sys.executable, "-m", "boneage.cli", "predict", str(d), "--sex", "F", "--model",
           str(model_path), "--no-tta", "--format", "csv", "--out", str(out), "--workers", "1"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(300) == 0 for p in procs)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20 and all(r["bone_age_months"] for r in rows)
    assert [p.name for p in out.parent.iterdir()] == ["r.csv"]

    from boneage.inference.api import BoneAgeModel

    real = BoneAgeModel.predict_films
    calls = []

    def stop_on_second_chunk(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(BoneAgeModel, "predict_films", stop_on_second_chunk)
    rc = main(["predict", str(d), "--sex", "F", "--model", str(model_path), "--no-tta",
               "--format", "csv", "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 130 and err.strip().splitlines()[-1].startswith("interrupted")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16  # the first chunk, whole
    assert [p.name for p in out.parent.iterdir()] == ["r.csv"]


def test_arguments_refused_before_any_work(tmp_path, capsys):
    labels = tmp_path / "l.csv"
    labels.write_text("id,boneage,male\n")
    for args, words in (
        (["serve", "--port", "99999"], "between 1 and 65535"),
        (["serve", "--max-upload-mb", "nan"], "between"),
        (["serve", "--queue", "-5"], "between 0"),
        (["train", "--labels", str(labels), "--devices", "abc", "--out", str(tmp_path / "r")],
         "devices must be auto"),
        (["train", "--labels", str(labels), "--accelerator", "tpuz", "--out",
          str(tmp_path / "r")], "accelerator must be one of"),
        (["train", "--labels", str(labels), "--val-fraction", "1.5", "--out",
          str(tmp_path / "r")], "val_fraction"),
    ):
        with pytest.raises(SystemExit) if args[0] == "serve" else _nothing():
            rc = main(args)
            assert rc == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err, args
    assert not (tmp_path / "r").exists()  # a refused command leaves nothing behind


def test_a_binary_file_where_text_is_expected_is_one_line(model_path, tmp_path, capsys):
    # a config, pipeline, split, labels or model card that is not text (a film given by
    # mistake, a corrupt copy): one line naming the file and what it should be, exit 2
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(128, 256)) * 8)
    films = tmp_path / "films"
    films.mkdir()
    film, _ = synthetic_film(height=200, width=160, seed=1)
    cv2.imwrite(str(films / "a.png"), film)
    (films / "labels.csv").write_text("id,boneage,male\na,100,1\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "best.safetensors").write_bytes(model_path.read_bytes())
    (broken / "best.json").write_bytes(junk.read_bytes())
    data = ["--images", str(films), "--labels", str(films / "labels.csv")]
    for args, what in (
        (["train", "--config", str(junk), *data, "--out", str(tmp_path / "r")], "YAML config file"),
        (["train", "--split", str(junk), *data, "--out", str(tmp_path / "r")], "split CSV file"),
        (["prepare", "--pipeline", str(junk), *data, "--out", str(tmp_path / "c")],
         "pipeline JSON file"),
        (["predict", str(films / "a.png"), "--labels", str(junk)], "labels CSV file"),
        (["predict", str(films / "a.png"), "--sex", "F", "--model", str(broken)], "model card"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"not a {what} (not UTF-8 text)" in err
        assert err.count("\n") == 1 and "Traceback" not in err, args
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_predict_and_compare_refuse_bad_arguments_before_any_output(model_path, tmp_path,
                                                                     capsys):
    film, _ = synthetic_film(height=200, width=160, seed=1)
    cv2.imwrite(str(tmp_path / "a.png"), film)
    for args, words in (
        (["--sex", "X"], "unknown sex 'X'"),
        (["--sex", "F", "--out", str(tmp_path)], "a folder; --out takes a file name"),
    ):
        assert main(["predict", str(tmp_path / "a.png"), "--model", str(model_path),
                     *args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and words in err and err.count("\n") == 1, args  # no table header
    # compare with a run whose eval/metrics.json is not evaluate's (hand-edited, truncated)
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for f in (model_path, model_path.with_suffix(".json")):
        (run / f"best{f.suffix}").write_bytes(f.read_bytes())
    for text in ("[1, 2]", '{"mae": 3}', "{"):
        (run / "eval" / "metrics.json").write_text(text)
        assert main(["compare", str(run), str(model_path), "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert "metrics.json: not" in err and err.count("\n") == 1, text


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


def test_json_and_table_outputs_stay_well_formed(model_path, tmp_path, capsys):
    import json

    film, _ = synthetic_film(height=300, width=240, seed=1)
    odd = tmp_path / "a\nb.png"
    cv2.imwrite(str(odd), film)
    assert main(["predict", str(odd), "--sex", "F", "--model", str(model_path),
                 "--no-tta"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 and table[1].startswith("a\\nb.png")
    (tmp_path / "one.csv").write_text("id,boneage,male\nb,100,F\n")  # one film: R² undefined
    (tmp_path / "b.png").write_bytes(odd.read_bytes())
    rc = main(["evaluate", "--model", str(model_path), "--images", str(tmp_path), "--labels",
               str(tmp_path / "one.csv"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and json.loads(out)["n"] == 1 and "NaN" not in out
