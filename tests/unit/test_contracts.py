"""Small, realistic bugs that once passed the whole suite (found by putting them into the code
one at a time), each with a test here that fails for it."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest


def test_metrics_on_hand_computed_values():
    from boneage.evaluation.metrics import regression_metrics

    m = regression_metrics(np.array([0, 10, 20, 30]), np.array([2, 8, 26, 30]))
    # errors 2, -2, 6, 0: MAE 2.5, RMSE sqrt(44/4), R² 1 - 44/500, bias 1.5
    assert m["mae"] == 2.5 and m["rmse"] == pytest.approx(np.sqrt(11), abs=1e-3)
    assert m["r2"] == pytest.approx(1 - 44 / 500, abs=1e-4) and m["bias"] == 1.5


def test_sds_uses_the_childs_own_sex(tmp_path):
    pytest.importorskip("torch")
    from boneage.clinical.reference import sd_for_age
    from boneage.data.synthetic import synthetic_film
    from boneage.inference.api import load_model
    from tests.helpers import make_test_model

    model = load_model(str(make_test_model(tmp_path)))
    film, _ = synthetic_film(height=400, width=300, seed=1)
    for sex, male in (("F", False), ("M", True)):
        r = model.predict(film, sex=sex, chronological_age_months=120)
        sd, _ = sd_for_age(120, male)
        assert r.sds == pytest.approx(r.difference_months / sd, abs=0.01), sex
    # the two sexes' SDs differ at 120 months (9.79 vs 11.73), so a swap would show
    assert sd_for_age(120, True)[0] != pytest.approx(sd_for_age(120, False)[0], abs=0.5)


def test_dicom_rescale_applied_before_the_window(tmp_path):
    pytest.importorskip("pydicom")
    from boneage.data.dicom import decode_dicom
    from tests.helpers import write_dicom

    px = np.tile(np.linspace(0, 4000, 200).astype(np.uint16), (40, 1))
    path = write_dicom(tmp_path / "r.dcm", px, window=(3000, 200))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # stored 1950-2050 -> 2900-3100
    ds.save_as(path)
    row = decode_dicom(path.read_bytes()).pixels[0]
    assert row[px[0] < 1900].max() == 0 and row[px[0] > 2100].min() == 65535


def test_seed_pipeline_records_the_seeds_own_settings():
    from boneage.preprocess.steps import Clahe, seed_pipeline

    steps = seed_pipeline(256).to_dict()["steps"]
    assert {"name": "clahe", "clip_limit": 2.0, "tile_grid": 8} in steps
    assert Clahe() == Clahe(2.0, 8)
    assert [s["name"] for s in steps] == ["to_uint8", "crop_hand", "fit", "clahe", "pad",
                                          "scale"]


def test_hand_found_inside_a_bright_collimation_field():
    from boneage.data.synthetic import synthetic_film
    from boneage.preprocess.hand import localise_hand

    film, (hx0, hy0, hx1, hy1) = synthetic_film(height=700, width=500, seed=2, marker=False)
    import cv2

    rng = np.random.default_rng(0)
    # a mottled surround (not a flat frame that trimming would remove) and a lit field with
    # the hand inside it: the field is the first thing thresholding finds
    big = np.clip(cv2.resize(rng.normal(30, 15, (22, 18)), (900, 1100)), 0, 255).astype(np.uint8)
    big[150:850, 200:700] = np.clip(170 + (film.astype(int) - 25) * 0.35, 0, 255)
    b = localise_hand(big)
    assert b.found
    assert b.x0 <= hx0 + 200 and b.y0 <= hy0 + 150 and b.x1 >= hx1 + 200 and b.y1 >= hy1 + 150
    assert (b.x1 - b.x0) * (b.y1 - b.y0) < 0.7 * 500 * 700  # inside the field, not the field


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    from boneage import fileio

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def power_cut(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", power_cut)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_text(target, "new " * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_written_files_get_the_umask_mode(tmp_path):
    from boneage import fileio

    if fileio._UMASK != 0o022:
        pytest.skip("this process does not run under umask 022")
    fileio.atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644

