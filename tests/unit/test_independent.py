"""Tests against expectations worked out apart from the code (hand-computed values and
properties), for the kinds of one-line bug that passed the suite before (issue #33): metrics by
sex, the conformal rank, the correction weight's rule, the card's boundaries, stratification,
the geometry a step records, the training config's bounds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from boneage.data.labels import LabelTable, Record
from boneage.data.splits import age_band, stratified_sample, stratified_split
from boneage.errors import BoneAgeError
from boneage.evaluation.metrics import evaluation_metrics, interval_metrics
from boneage.inference.correction import TOLERANCE, WEIGHTS, apply_correction, fit_correction
from boneage.inference.uncertainty import calibrate, conformal_quantile
from boneage.models.contract import check_card
from boneage.preprocess.steps import (
    CropHand,
    Fit,
    Pad,
    Pipeline,
    Squash,
    ToUint8,
    film_to_input,
    seed_pipeline,
)
from boneage.training.config import AugmentConfig, TrainConfig, validate

# --- metrics by sex: each sex's figures are those of its own films alone -------------------


def test_metrics_by_sex_are_each_sexs_own_films():
    # boys all 2 months too old, girls all 10 months too young: MAE 2 and 10, bias +2 and -10
    y = np.array([100.0, 120, 140, 60, 80, 100, 160])
    male = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    p = np.where(male, y + 2, y - 10)
    m = evaluation_metrics(y, p, male)
    assert m["by_sex"]["male"]["n"] == 3 and m["by_sex"]["female"]["n"] == 4
    assert m["by_sex"]["male"]["mae"] == pytest.approx(2.0)
    assert m["by_sex"]["male"]["bias"] == pytest.approx(2.0)
    assert m["by_sex"]["female"]["mae"] == pytest.approx(10.0)
    assert m["by_sex"]["female"]["bias"] == pytest.approx(-10.0)
    assert m["mae"] == pytest.approx((3 * 2 + 4 * 10) / 7, abs=1e-3)


def test_interval_metrics_by_sex_are_each_sexs_own_films():
    # boys' intervals all hold the truth, girls' hold it for 1 of 4 (widths 4 and 10)
    y = np.array([100.0, 120, 140, 60, 80, 100, 160])
    male = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    lo = np.where(male, y - 2, y + 1)
    hi = np.where(male, y + 2, y + 11)
    lo[3] = y[3] - 5
    hi[3] = y[3] + 5
    m = interval_metrics(y, lo, hi, male, 0.9)
    assert m["by_sex"]["male"] == {"n": 3, "coverage": 1.0, "mean_width": 4.0}
    assert m["by_sex"]["female"] == {"n": 4, "coverage": 0.25, "mean_width": 10.0}


def test_metrics_by_age_band_are_each_bands_own_films():
    y = np.array([12.0, 30, 90, 150, 200])  # one film in each band (0-2, 2-6, 6-10, 10-14, 14+)
    p = y + np.array([1.0, -2, 3, -4, 5])
    m = evaluation_metrics(y, p, np.ones(5, bool))
    assert [v["mae"] for v in m["by_age_band"].values()] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [v["bias"] for v in m["by_age_band"].values()] == [1.0, -2.0, 3.0, -4.0, 5.0]


# --- the conformal rank: ceil((n + 1)(1 - alpha))-th smallest score --------------------------


@pytest.mark.parametrize("n", [10, 11, 19, 20, 29, 49, 99, 100, 137])
@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_conformal_quantile_uses_the_finite_sample_rank(n, coverage):
    scores = np.random.default_rng(n).permutation(np.arange(1, n + 1)).astype(float)
    num = round(coverage * 100)
    k = min(n, -(-(n + 1) * num // 100))  # ceil((n + 1) coverage) in integers
    assert conformal_quantile(scores, coverage) == float(k)


def test_conformal_quantile_hand_values():
    # n = 19 at 90%: rank ceil(20 x 0.9) = 18; n = 10: ceil(9.9) = 10 (the largest score)
    assert conformal_quantile(np.arange(19, 0, -1) * 1.0, 0.9) == 18.0
    assert conformal_quantile(np.arange(10) * 2.0, 0.9) == 18.0
    with pytest.raises(ValueError):
        conformal_quantile(np.arange(9) * 1.0, 0.9)


def test_calibrated_interval_covers_at_least_the_nominal_share():
    # constant spread: the interval's half width is q (spread + eps) with q the 18th of 19
    y = np.zeros(19)
    mean = np.arange(1, 20, dtype=float)  # |errors| 1..19
    cal = calibrate(y, mean, np.zeros(19), coverage=0.9)
    eps = cal["eps"]
    assert eps == 0.5
    assert cal["q"] == pytest.approx(18 / eps)
    assert cal["calibration_coverage"] == pytest.approx(18 / 19, abs=1e-4)


# --- the correction weight: the largest w within TOLERANCE of the best cross-fitted MAE ------


def _pulled(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(10, 220, n)
    male = rng.random(n) < 0.5
    return y, 0.6 * y + 50 + rng.normal(0, 1, n), male


def test_correction_weight_is_the_largest_within_tolerance_of_the_best():
    for seed in range(4):
        y, pred, male = _pulled(seed=seed)
        pred = pred + np.random.default_rng(seed + 9).normal(0, 15, len(y))  # noisier
        fit = fit_correction(y, pred, male)
        maes = {float(k): v for k, v in fit["crossfit_mae"].items()}
        best = min(maes[w] for w in WEIGHTS)
        eligible = [w for w in WEIGHTS if maes[w] <= best + TOLERANCE + 1e-9]
        assert fit["weight"] == max(eligible)


def test_weights_that_tie_resolve_to_the_largest():
    # no pull at all: every line is nearly the identity, every weight's cross-fitted MAE lies
    # within the tolerance of the best, and the rule takes the largest (1.0), not the smallest
    rng = np.random.default_rng(5)
    y = rng.uniform(10, 220, 2000)
    male = rng.random(2000) < 0.5
    fit = fit_correction(y, y + rng.normal(0, 3, 2000), male)
    maes = [float(v) for v in fit["crossfit_mae"].values()]
    assert max(maes) - min(maes) <= TOLERANCE  # the precondition: all tie
    assert fit["weight"] == 1.0


def test_strong_pull_to_the_mean_is_corrected_fully():
    # estimates pulled hard towards the mean, almost without noise: the full inverse (w = 1)
    # recovers the true ages; w = 0 leaves errors of tens of months
    y, pred, male = _pulled()
    fit = fit_correction(y, pred, male)
    assert fit["weight"] == 1.0
    assert float(fit["crossfit_mae"]["1.0"]) < 2 < float(fit["crossfit_mae"]["0.0"])
    corrected = apply_correction(pred, male, fit)
    assert np.mean(np.abs(corrected - y)) < 2
    # and the line itself, by hand: estimate = 50 + 0.6 y  ->  y = (estimate - 50) / 0.6
    a, b = fit["male"]
    assert b == pytest.approx(1 / 0.6, rel=0.02)
    assert a == pytest.approx(-50 / 0.6, rel=0.05)


def test_no_pull_is_left_uncorrected():
    # estimates with no pull but a non-linear error: any line fitted on one half is worse on
    # the other, so no correction (w = 0) must win by more than the tolerance
    rng = np.random.default_rng(3)
    y = rng.uniform(10, 220, 600)
    male = rng.random(600) < 0.5
    pred = y + 25 * np.sin(y / 12) + rng.normal(0, 2, 600)
    fit = fit_correction(y, pred, male, weight=None)
    maes = {float(k): v for k, v in fit["crossfit_mae"].items()}
    assert fit["weight"] == max(w for w in WEIGHTS if maes[w] <= min(maes.values()) + TOLERANCE)


# --- the card's boundaries: a zero where it divides or scales is refused ---------------------


def _card(**over):
    card = {"arch": "resnet18", "input_size": 100,
            "target_norm": {"mean": 120.0, "std": 40.0},
            "calibration": {"q": 1.5, "eps": 0.5},
            "embedding": {"mean": [0.0, 1.0], "scale": [1.0, 2.0], "threshold": 3.0}}
    card.update(over)
    return card


@pytest.mark.parametrize("over", [
    {"target_norm": {"mean": 120.0, "std": 0.0}},
    {"target_norm": {"mean": 120.0, "std": -1.0}},
    {"embedding": {"mean": [0.0, 1.0], "scale": [1.0, 0.0], "threshold": 3.0}},
    {"embedding": {"mean": [0.0, 1.0], "scale": [1.0], "threshold": 3.0}},
    {"embedding": {"mean": [0.0, 1.0], "scale": [1.0, 2.0], "threshold": -0.1}},
    {"calibration": {"q": -0.01, "eps": 0.5}},
    {"calibration": {"q": 1.0, "eps": -0.01}},
    {"input_size": 7}, {"input_size": 4097}, {"input_size": 0}, {"input_size": True},
    {"weights_sha256": "a" * 63}, {"weights_sha256": "a" * 65}, {"weights_sha256": "A" * 64},
    {"output_correction": {"male": [0.0, 1.0], "female": [0.0]}},
    {"pipeline": {"steps": [{"name": "scale", "divisor": 0.0}]}},
])
def test_card_boundaries_refused(over):
    with pytest.raises(BoneAgeError):
        check_card(_card(**over), "card")


@pytest.mark.parametrize("over", [
    {}, {"target_norm": {"mean": 0.0, "std": 1e-6}},
    {"embedding": {"mean": [0.0, 1.0], "scale": [1e-6, 2.0], "threshold": 0.0}},
    {"calibration": {"q": 0.0, "eps": 0.0}}, {"input_size": 8}, {"input_size": 4096},
    {"weights_sha256": "0123456789abcdef" * 4},
    {"pipeline": {"steps": [{"name": "scale", "divisor": 1e-3}]}},
])
def test_card_boundaries_accepted(over):
    check_card(_card(**over), "card")


# --- stratification: each sex x age-band stratum keeps its share within one film ------------


def _table(counts: dict[tuple[bool, int], int]) -> LabelTable:
    # an age in the middle of each band (0-2, 2-6, 6-10, 10-14, 14-20 years)
    mid = {0: 12.0, 1: 48.0, 2: 96.0, 3: 144.0, 4: 200.0}
    recs = []
    for (male, band), n in counts.items():
        recs += [Record(f"{'m' if male else 'f'}{band}-{i}", None, male, mid[band])
                 for i in range(n)]
    return LabelTable(recs)


# strata that a sex/band mix-up would merge: (male, band 0) with (female, band 1), ...
COUNTS = {(True, 0): 40, (False, 1): 40, (True, 1): 33, (False, 2): 27, (True, 3): 50,
          (False, 3): 21, (False, 4): 18, (True, 4): 11}


@pytest.mark.parametrize("seed", range(8))
def test_split_keeps_each_stratums_share_within_one_film(seed):
    table = _table(COUNTS)
    split = stratified_split(table, val_fraction=0.2, test_fraction=0.15, seed=seed)
    for (male, band), n in COUNTS.items():
        ids = [r.id for r in table if r.male == male and age_band(r.months) == band]
        n_val = sum(split[i] == "val" for i in ids)
        n_test = sum(split[i] == "test" for i in ids)
        assert abs(n_val - 0.2 * n) <= 1, (male, band, n_val)
        assert abs(n_test - 0.15 * n) <= 1, (male, band, n_test)


@pytest.mark.parametrize("seed", range(4))
def test_sample_keeps_each_stratums_share_within_one_film(seed):
    table = _table(COUNTS)
    chosen = set(stratified_sample(table, 60, seed=seed))
    assert len(chosen) == 60
    total = sum(COUNTS.values())
    for (male, band), n in COUNTS.items():
        k = sum(1 for r in table if r.male == male and age_band(r.months) == band
                and r.id in chosen)
        assert abs(k - 60 * n / total) <= 1, (male, band, k)


# --- the geometry a step records: a mark on the film lands where the record says -------------


def _marked_film(h: int, w: int, x: int, y: int) -> np.ndarray:
    film = np.full((h, w), 60, np.uint8)
    film[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = 255
    return film


def _peak(img: np.ndarray) -> tuple[float, float]:
    """Centre of the brightest part (within a tenth of the range below the maximum)."""
    lo, hi = float(img.min()), float(img.max())
    ys, xs = np.nonzero(img >= hi - 0.1 * (hi - lo))
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("shape", [(300, 180), (180, 300), (401, 99)])
@pytest.mark.parametrize("steps", ["letterbox", "squash"])
def test_a_mark_lands_where_the_recorded_geometry_says(shape, steps):
    h, w = shape
    x, y = int(w * 0.3), int(h * 0.7)
    film = _marked_film(h, w, x, y)
    pipe = (Pipeline((ToUint8(), Fit(64, "linear"), Pad(64))) if steps == "letterbox"
            else Pipeline((ToUint8(), Squash(64, "linear"))))
    meta: dict = {}
    out = pipe(film, meta)
    px, py, _ = film_to_input(meta) @ np.array([x, y, 1.0])
    ox, oy = _peak(out)
    assert abs(px - ox) <= 1.0 and abs(py - oy) <= 1.0, ((px, py), (ox, oy))


def test_pad_records_its_shift_on_the_right_axes():
    # a 10 x 4 (h x w) image centred on 20 x 20: shifted 8 right and 5 down
    meta: dict = {}
    Pad(20)(np.ones((10, 4), np.uint8), meta)
    assert np.allclose(film_to_input(meta), [[1, 0, 8], [0, 1, 5], [0, 0, 1]])


def test_a_heatmap_mapped_back_lands_on_the_same_film_pixels():
    from boneage.inference.explain import to_film

    h, w = 360, 200
    x, y = 60, 250
    film = _marked_film(h, w, x, y)
    meta: dict = {}
    prepared = seed_pipeline(64, crop=False, clahe=False).cached_part(film, meta)
    cam = (prepared >= 0.9 * prepared.max()).astype(np.float32)  # the map: the mark itself
    back = to_film(cam, meta, film.shape)
    bx, by = _peak(back)
    assert abs(bx - x) <= 3 and abs(by - y) <= 3, ((bx, by), (x, y))


def test_crop_records_its_offset():
    meta: dict = {}
    film = np.zeros((200, 160), np.uint8)
    film[40:180, 30:120] = 200  # a bright block: the localiser's "hand"
    CropHand(0.0)(film, meta)
    x0, y0 = meta["crop_box"][:2]
    assert np.allclose(film_to_input(meta) @ [x0 + 5, y0 + 7, 1], [5, 7, 1])


# --- the training config's bounds: a value that trains nothing is refused --------------------


def _cfg(**over):
    aug = over.pop("augment", {})
    return replace(TrainConfig(arch="resnet18", pipeline="hand"), augment=AugmentConfig(**aug),
                   **over)


@pytest.mark.parametrize("over", [
    {"lr": 0.0}, {"lr": -1e-3}, {"epochs": 0}, {"batch_size": 0}, {"image_size": 15},
    {"warmup_fraction": 1.0}, {"warmup_fraction": -0.1}, {"huber_delta": 0.0},
    {"ema": 1.0}, {"ema": -0.1}, {"age_balance": 1.01}, {"age_balance": -0.5},
    {"max_minutes": -1.0}, {"limit": 19}, {"num_nodes": 0}, {"workers": -1},
    {"val_fraction": 1.0}, {"val_fraction": 0.6, "test_fraction": 0.4},
    {"augment": {"aspect": 1.0}},
])
def test_training_bounds_refused(over):
    pytest.importorskip("torch")  # validate looks the architecture up in the registry
    with pytest.raises(BoneAgeError):
        validate(_cfg(**over))


@pytest.mark.parametrize("over", [
    {}, {"lr": 1e-7}, {"epochs": 1}, {"batch_size": 1}, {"image_size": 16},
    {"warmup_fraction": 0.0}, {"warmup_fraction": 0.99}, {"huber_delta": 1e-3},
    {"ema": 0.0}, {"ema": 0.9999}, {"age_balance": 1.0}, {"max_minutes": 0.0},
    {"limit": 20}, {"limit": 0}, {"augment": {"aspect": 0.99}},
])
def test_training_bounds_accepted(over):
    pytest.importorskip("torch")
    validate(_cfg(**over))
