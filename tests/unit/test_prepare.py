from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from boneage.cli import main
from boneage.data.labels import read_labels
from boneage.preprocess import prepare as prep
from boneage.preprocess.prepare import load_cache, prepare, read_manifest, safe_name
from boneage.preprocess.steps import seed_pipeline


def test_prepare_writes_cache_and_resumes(films, tmp_path):
    table = read_labels(films / "labels.csv")
    cache = tmp_path / "cache"
    r = prepare(table, seed_pipeline(64), cache, workers=2, progress=False)
    assert (r.done, r.skipped, r.failed) == (6, 0, [])
    m = read_manifest(cache)
    assert set(m) == set(table.ids)
    assert all(json.loads(row["crop_box"]) for row in m.values())
    assert json.loads((cache / "pipeline.json").read_text())["steps"][-1]["name"] == "scale"
    c = load_cache(cache)
    assert c.images.shape == (6, 64, 64) and c.images.dtype == np.uint8
    assert c.months.tolist() == [20, 50, 80, 110, 140, 170]

    r = prepare(table, seed_pipeline(64), cache, workers=2, progress=False)
    assert (r.done, r.skipped) == (0, 6)  # nothing to do

    # a changed source file is redone, and only it
    src = table.records[2].path
    img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(src), 255 - img)
    os.utime(src, ns=(1, 1))
    r = prepare(table, seed_pipeline(64), cache, workers=1, progress=False)
    assert (r.done, r.skipped) == (1, 5)

    # a changed pipeline redoes everything
    r = prepare(table, seed_pipeline(32), cache, workers=1, progress=False)
    assert (r.done, r.skipped) == (6, 0)
    assert load_cache(cache).images.shape == (6, 32, 32)


def test_interrupted_run_keeps_finished_work_and_no_partial_files(films, tmp_path, monkeypatch):
    table = read_labels(films / "labels.csv")
    cache = tmp_path / "cache"
    real = prep._process
    calls = {"n": 0}

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prep, "_process", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(table, seed_pipeline(32), cache, workers=1, progress=False)
    assert len(read_manifest(cache)) == 3
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(prep, "_process", real)
    r = prepare(table, seed_pipeline(32), cache, workers=1, progress=False)
    assert (r.done, r.skipped) == (3, 3)


def test_corrupt_film_fails_alone_and_cli_exits_nonzero(films, tmp_path, capsys):
    (films / "103.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc = main(["prepare", "--labels", str(films / "labels.csv"), "--out",
               str(tmp_path / "c"), "--size", "32", "--workers", "2"])
    err = capsys.readouterr()
    assert rc == 1
    assert "103.png" in err.err and "prepared 5/6" in err.out
    assert (tmp_path / "c" / "summary.json").is_file()
    assert (tmp_path / "c" / "summary.png").is_file()


def test_cli_without_labels_and_preview(films, tmp_path, capsys):
    rc = main(["prepare", "--images", str(films), "--out", str(tmp_path / "c"), "--size", "48",
               "--preview", str(tmp_path / "sheet.png"), "--preview-count", "4"])
    assert rc == 0
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 2 * 224
    assert len(list((tmp_path / "c" / "images").glob("*.png"))) == 6


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["prepare", "--labels", str(tmp_path / "no.csv"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such labels file" in err and "\n" not in err
    assert main(["prepare", "--images", str(tmp_path / "nodir"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_missing_optional_package_is_one_line(monkeypatch, capsys):
    import boneage.cli as cli

    def needs_torch(a):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "cmd_models", needs_torch)  # bound when the parser is built
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: this needs the Python package 'torch': pip install -c constraints.txt "
                   "-e '.[train]' (in the boneage checkout)")


def test_squash_pipeline_cli(films, tmp_path):
    assert main(["prepare", "--images", str(films), "--out", str(tmp_path / "c"), "--squash"]) == 0
    assert load_cache(tmp_path / "c").images.shape == (6, 100, 100)


def test_safe_name_is_unique_for_unsafe_ids():
    assert safe_name("1234") == "1234"
    a, b = safe_name("a/b"), safe_name("a_b")
    assert a != b and "/" not in a


def test_readme_first_command_example(tmp_path):
    out = tmp_path / "example-cache"
    assert main(["prepare", "--example", "--out", str(out), "--preview",
                 str(out / "preview.png")]) == 0
    assert len(read_manifest(out)) == 6
    for name in ("pipeline.json", "summary.json", "summary.png", "preview.png"):
        assert (out / name).is_file(), name
    assert all(row["crop_fallback"] == "0" for row in read_manifest(out).values())


def test_prepare_pipeline_by_preset_name_or_file(films, tmp_path):
    """`--pipeline` means the same as in `train`: a preset name, or a pipeline file."""
    import json

    from boneage.cli import main

    assert main(["prepare", "--images", str(films), "--labels", str(films / "labels.csv"),
                 "--out", str(tmp_path / "a"), "--pipeline", "hand", "--workers", "1"]) == 0
    steps = json.loads((tmp_path / "a" / "pipeline.json").read_text())["steps"]
    assert [s["name"] for s in steps] == ["to_uint8", "crop_hand", "squash", "scale"]
    assert steps[2]["size"] == 100
    assert main(["prepare", "--images", str(films), "--labels", str(films / "labels.csv"),
                 "--out", str(tmp_path / "b"), "--pipeline", str(tmp_path / "a/pipeline.json"),
                 "--image-size", "64", "--workers", "1"]) == 0
    assert json.loads((tmp_path / "b" / "pipeline.json").read_text())["steps"] == steps
    assert main(["prepare", "--images", str(films), "--out", str(tmp_path / "c"),
                 "--pipeline", "bogus"]) == 2
    assert not (tmp_path / "c").exists()
