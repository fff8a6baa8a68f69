"""The bundled default model as a user gets it: installed, described, the same on both
backends, and sensible on the shipped example film (accuracy on real films is measured by
tools/default_model.py; the check on real films here is deliberately loose)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boneage import load_model  # noqa: E402
from boneage.cli import main  # noqa: E402
from boneage.data.synthetic import phantom_hand  # noqa: E402
from boneage.models.checkpoint import BUNDLED, read_card  # noqa: E402
from tests.conftest import RAW, ROOT, need  # noqa: E402

EXAMPLE = ROOT / "examples" / "phantom-hand.png"


def test_shipped_files_card_and_size():
    files = {p.name for p in BUNDLED.iterdir()}
    assert {"default.safetensors", "default.json", "default.onnx"} <= files
    total = sum(p.stat().st_size for p in BUNDLED.iterdir())
    assert total < 30e6, total  # one set of int8 weights serves both backends
    card = read_card(BUNDLED / "default.safetensors")
    assert card["name"] == "default" and "Halabi" in card["terms"]
    assert card["weights_dtype"] == "int8" and card["onnx"]["weights"] == "default.safetensors"
    # version 4: two networks averaged in one model
    assert card["arch"] == "ensemble" and len(card["model_kwargs"]["members"]) == 2
    # the framing-independent preprocessing: the hand found on the film, then squared
    assert [s["name"] for s in card["pipeline"]["steps"]] == ["to_uint8", "crop_hand", "squash",
                                                              "scale"]
    assert set(card["output_correction"]) >= {"male", "female"}
    cal = card["calibration"]
    assert cal["n"] >= 1000 and "single" in cal and len(card["embedding"]["mean"]) == 1024


def test_example_film_is_the_drawing():
    shipped = cv2.imread(str(EXAMPLE), cv2.IMREAD_UNCHANGED)
    assert shipped.shape == (1000, 800)
    assert np.abs(shipped.astype(int) - phantom_hand()).mean() < 0.5


def test_readme_first_command_on_both_backends(capsys):
    rows = {}
    for backend in ("torch", "onnx"):
        assert main(["predict", str(EXAMPLE), "--sex", "F", "--chronological-age", "96",
                     "--backend", backend, "--format", "json"]) == 0
        rows[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = rows["torch"]
    assert 0 < r["bone_age_months"] < 228
    assert r["interval_low_months"] < r["bone_age_months"] < r["interval_high_months"]
    assert r["sds"] is not None and r["category"] in ("delayed", "normal", "advanced",
                                                            "indeterminate")
    assert not any("hand" in w for w in r["warnings"])
    assert abs(rows["onnx"]["bone_age_months"] - r["bone_age_months"]) <= 0.05


def test_a_chest_like_picture_is_not_a_hand():
    img = np.full((900, 700), 20, np.uint8)
    cv2.ellipse(img, (350, 450), (280, 360), 0, 0, 360, 150, -1)
    r = load_model("default").predict(cv2.GaussianBlur(img, (0, 0), 3), sex="M")
    assert any("does not look like a hand" in w for w in r.warnings)


@pytest.mark.data
def test_held_out_thumbnails_re_measured():
    """Not the card's numbers: the shipped model, run here on 120 of its held-out films."""
    import csv

    from tests.conftest import THUMBS

    need(THUMBS)
    split = {r["id"]: r["split"] for r in csv.DictReader(
        (ROOT / "benchmarks/results/default_split.csv").open())}
    with open(THUMBS / "boneage-training-dataset.csv") as f:
        rows = [r for r in csv.DictReader(f) if split.get(r["id"]) == "test"][:120]
    model = load_model("default", backend="onnx")
    res = model.predict_batch([THUMBS / "boneage-training-dataset" / f"{r['id']}.png"
                               for r in rows], sex=["M" if r["male"] == "True" else "F"
                                                    for r in rows])
    y = np.array([float(r["boneage"]) for r in rows])
    p = np.array([x.bone_age_months for x in res])
    inside = np.mean([x.interval_low_months <= t <= x.interval_high_months
                      for x, t in zip(res, y, strict=True)])
    assert np.mean(np.abs(p - y)) < 12  # the whole held-out set: about 9 (docs/model.md)
    assert 0.8 <= inside <= 0.98  # nominal 90%


@pytest.mark.data
def test_full_resolution_films_are_estimated_sensibly():
    import csv

    folder = need(RAW / "rsna-fullres")
    with open(folder / "labels.csv") as f:
        labels = {r["id"]: r for r in csv.DictReader(f)}
    model = load_model("default")
    errors, flagged = [], 0
    for rid, row in labels.items():
        r = model.predict(folder / f"{rid}.png", sex="M" if row["male"] == "True" else "F")
        errors.append(abs(r.bone_age_months - float(row["boneage"])))
        assert r.interval_low_months <= r.bone_age_months <= r.interval_high_months
        flagged += any("not look like a hand" in w for w in r.warnings)
    assert np.mean(errors) < 20, errors  # held-out MAE is ~9; 7 films vary a lot
    assert flagged <= 1  # benchmarks/not_a_hand.py: 1 of the 25 raw samples is a false alarm


def test_readme_python_example_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    block = text.split("From Python, the same numbers as the CLI:")[1]
    code = block.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    r, results = scope["r"], scope["results"]
    assert r.sex == "F" and r.interval_low_months < r.bone_age_months < r.interval_high_months
    assert [x.sex for x in results] == ["M", "F"]
    assert results[1].bone_age_months == r.bone_age_months


def test_bundled_model_estimates_on_onnx_and_explains_with_torch():
    """The service's and the API's default: the faster backend for the estimate, the PyTorch
    network (the same weights) for the heatmap."""
    pytest.importorskip("onnxruntime")
    from boneage.inference.api import read_film

    m = load_model("default")
    assert type(m.predictor).__name__ == "OnnxPredictor" and m.explains
    r = m.predict(EXAMPLE, sex="F")
    t = load_model("default", backend="torch").predict(EXAMPLE, sex="F")
    assert abs(r.bone_age_months - t.bone_age_months) <= 0.05
    film = read_film(EXAMPLE)
    pic = m.heatmap(film, "F")
    assert pic.ndim == 3 and pic.shape[2] == 3
    assert np.abs(pic[..., 0].astype(int) - pic[..., 2]).max() > 50  # colour on the grey film
    assert not load_model("default", explain=False).explains  # no PyTorch loaded for nothing
