"""Tests against expectations worked out apart from the code (hand-computed values and
properties), for the kinds of one-line bug that passed the suite before (issue #33): metrics by
sex, the conformal rank, the correction weight's rule, the card's boundaries, stratification,
the geometry a step records, the training config's bounds."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from boneage.data.labels import LabelTable, Record
from boneage.data.splits import age_band, stratified_sample, stratified_split
from boneage.errors import BoneAgeError
from boneage.evaluation.metrics import bootstrap_mae_ci, evaluation_metrics, interval_metrics
from boneage.evaluation.metrics import regression_metrics as regression_metrics_of
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


# --- metrics: exact keys, the rounding each figure promises, the interval's closed ends -------


def test_regression_metrics_keys_and_rounding():
    y = np.array([0.0, 1.0, 2.0])
    p = y + np.array([1 / 3, -1 / 3, 1 / 3])  # MAE 1/3, bias 1/9, RMSE 1/3
    m = regression_metrics_of(y, p)
    assert set(m) == {"n", "mae", "rmse", "r2", "bias", "mae_ci95"}
    assert m["mae"] == 0.333 and m["rmse"] == 0.333 and m["bias"] == 0.111
    # R^2 = 1 - (3 x 1/9) / 2 = 5/6, to 4 places
    assert m["r2"] == 0.8333
    assert regression_metrics_of(np.array([]), np.array([])) == {"n": 0}


def test_r2_needs_only_some_spread():
    y = np.array([0.0, 0.5])  # total sum of squares 0.125: small, but R^2 exists
    assert regression_metrics_of(y, y)["r2"] == 1.0
    assert math.isnan(regression_metrics_of(np.ones(3), np.ones(3))["r2"])


def test_metrics_accept_sex_as_zeros_and_ones():
    y = np.array([100.0, 120, 140, 60])
    p = y + np.array([2.0, 2, 2, -10])
    m = evaluation_metrics(y, p, [1, 1, 1, 0])  # a CSV column read as integers
    assert m["by_sex"]["male"]["n"] == 3 and m["by_sex"]["female"]["mae"] == 10.0
    iv = interval_metrics(y, y - 1, y + 1, [1, 1, 1, 0], 0.9)
    assert iv["by_sex"]["female"]["n"] == 1


def test_interval_counts_its_ends_as_inside():
    y = np.array([10.0, 20.0, 30.0])
    lo = np.array([10.0, 15.0, 31.0])  # the truth on the lower end, inside, below
    hi = np.array([12.0, 20.0, 40.0])  # ... and on the upper end for the second
    m = interval_metrics(y, lo, hi, [True, False, True], 0.9)
    assert m["nominal"] == 0.9 and m["n"] == 3
    assert m["coverage"] == 0.6667  # 2 of 3, to 4 places
    assert m["mean_width"] == 5.33  # (2 + 5 + 9) / 3, to 2 places
    assert set(m) == {"nominal", "n", "coverage", "mean_width", "by_sex", "by_age_band"}
    # 10 and 20 months are under 2 years, 30 months is in 2-6 years; none is older
    assert m["by_age_band"]["0-2 y"] == {"n": 2, "coverage": 1.0, "mean_width": 3.5}
    assert m["by_age_band"]["2-6 y"] == {"n": 1, "coverage": 0.0, "mean_width": 9.0}
    assert m["by_age_band"]["6-10 y"] == {"n": 0}


def test_bootstrap_ci_is_the_documented_percentile_interval():
    # 1,000 resamples drawn with numpy's generator seeded 0, the 2.5th and 97.5th percentiles
    err = np.random.default_rng(11).normal(0, 10, 40)
    rng = np.random.default_rng(0)
    boots = np.abs(err[rng.integers(0, err.size, size=(1000, err.size))]).mean(axis=1)
    expect = [round(float(np.percentile(boots, q)), 3) for q in (2.5, 97.5)]
    got = bootstrap_mae_ci(err)
    assert got == expect and got == bootstrap_mae_ci(err)  # reproducible
    assert got[0] < np.abs(err).mean() < got[1]
    assert bootstrap_mae_ci(np.full(5, 2.0)) == [2.0, 2.0]
    assert all(math.isnan(v) for v in bootstrap_mae_ci(np.array([3.0])))
    assert not any(math.isnan(v) for v in bootstrap_mae_ci(np.array([3.0, 1.0])))


# --- test-time views and their plan: geometry, bounds, the greedy rule ----------------------


def _dot(h=40, w=60, x=30, y=20):
    img = np.zeros((h, w), np.uint8)
    img[y, x] = 255
    return img


def test_tta_views_move_a_dot_as_each_view_says():
    from boneage.inference.uncertainty import tta_views

    img = _dot()
    views = ((0, 1.0, 0, 0), (0, 1.0, 0.1, 0), (0, 1.0, 0, 0.1), (90, 1.0, 0, 0),
             (0, 2.0, 0, 0))
    out = tta_views(img, views)
    assert out.shape == (5, 40, 60) and out.dtype == np.uint8
    peaks = [np.unravel_index(int(np.argmax(o)), o.shape) for o in out]  # (row, col)
    assert peaks[0] == (20, 30)
    assert peaks[1] == (20, 36)  # 0.1 x 60 = 6 px to the right
    assert peaks[2] == (24, 30)  # 0.1 x 40 = 4 px down
    # 90 degrees counter-clockwise about the centre (30, 20): (30, 20) stays; a dot right of
    # the centre goes above it
    assert peaks[3] == (20, 30)
    right = tta_views(_dot(x=40), views[3:4])[0]
    assert np.unravel_index(int(np.argmax(right)), right.shape) == (10, 30)
    # zoomed x2 about the centre: a dot 10 px right of it lands 20 px right
    zoom = tta_views(_dot(x=40), views[4:5])[0]
    assert np.unravel_index(int(np.argmax(zoom)), zoom.shape) == (20, 50)
    # what a shift uncovers is black
    shifted = tta_views(np.full((40, 40), 200, np.uint8), ((0, 1.0, 0.25, 0),))[0]
    assert shifted[:, :9].max() == 0 and shifted[:, 12:].min() == 200


@pytest.mark.parametrize("views,ok", [
    ([[0, 1, 0, 0]] * 32, True), ([[0, 1, 0, 0]] * 33, False), ([], False),
    ([[0, 1, 0, 0], [45, 1, 0, 0], [-45, 0.5, 0.25, -0.25], [0, 2, 0, 0]], True),
    ([[0, 1, 0, 0], [45.5, 1, 0, 0]], False), ([[0, 1, 0, 0], [0, 0.49, 0, 0]], False),
    ([[0, 1, 0, 0], [0, 2.01, 0, 0]], False), ([[0, 1, 0, 0], [0, 1, 0.26, 0]], False),
    ([[0, 1, 0, 0], [0, 1, 0, -0.26]], False), ([[0, 1, 0]], False),
    ([[5, 1, 0, 0]], False),
])
def test_tta_plan_bounds(views, ok):
    from boneage.inference.uncertainty import TTAPlan

    card = {"tta": {"views": views, "estimate": [0]}}
    if ok:
        assert len(TTAPlan.from_card(card).views) == len(views)
    else:
        with pytest.raises(BoneAgeError, match="unusable 'tta' plan"):
            TTAPlan.from_card(card)


WORDS = r"\('estimate' must list distinct indices of its views\)$"


@pytest.mark.parametrize("estimate,words", [
    ([0, 2], WORDS), ([0, 0], WORDS), ([], WORDS), ([-1], WORDS)])
def test_tta_plan_estimate_indices(estimate, words):
    from boneage.inference.uncertainty import TTAPlan

    with pytest.raises(BoneAgeError, match=words):
        TTAPlan.from_card({"tta": {"views": [[0, 1, 0, 0], [0, 1.1, 0, 0]],
                                   "estimate": estimate}})


def test_tta_plan_messages_name_the_rule():
    from boneage.inference.uncertainty import TTAPlan

    for views, words in (([[0, 1, 0]], "1 to 32 views of [degrees, scale, shift x, shift y]"),
                         ([[1, 1, 0, 0]], "the first view must be the identity [0, 1, 0, 0]"),
                         ([[0, 1, 0, 0], [90, 1, 0, 0]],
                          "a view beyond 45 degrees, a 0.5-2 scale or a 0.25 shift")):
        with pytest.raises(BoneAgeError) as e:
            TTAPlan.from_card({"tta": {"views": views, "estimate": [0]}})
        assert str(e.value) == f"unusable 'tta' plan in the model card ({words})"


def test_greedy_views_stop_below_the_minimum_gain():
    from boneage.inference.uncertainty import choose_estimate_views

    y = np.zeros(4)
    # the identity errs by 1, view 1 by 0, view 2 by 0.25: the identity with view 1 errs by
    # 0.5 (a gain of 0.5, against 0.375 with view 2); all three by 5/12 (a further 1/12)
    preds = np.tile([1.0, 0.0, 0.25], (4, 1))
    assert choose_estimate_views(y, preds, max_views=3, min_gain=0.5) == (0, 1)  # gain = min
    assert choose_estimate_views(y, preds, max_views=3, min_gain=0.51) == (0,)
    assert choose_estimate_views(y, preds, max_views=3, min_gain=0.05) == (0, 1, 2)
    assert choose_estimate_views(y, preds, max_views=2, min_gain=0.05) == (0, 1)
    # every view taken before max_views: the search ends with what it has
    assert choose_estimate_views(y, preds[:, :2], max_views=5, min_gain=0.0) == (0, 1)


def test_chosen_plan_keeps_the_default_views_and_adds_the_extra_one():
    from boneage.inference.uncertainty import CANDIDATE_VIEWS, DEFAULT_TTA, choose_plan

    n = len(CANDIDATE_VIEWS)
    y = np.zeros(6)
    first_extra = len(DEFAULT_TTA)
    for extra in (first_extra, n - 1):
        preds = np.full((6, n), 4.0)
        preds[:, 0] = 2.0
        preds[:, extra] = -2.0  # this extra view cancels the identity's error exactly
        plan, keep = choose_plan(y, preds)
        assert keep == list(range(len(DEFAULT_TTA))) + [extra]
        assert plan.views == DEFAULT_TTA + (CANDIDATE_VIEWS[extra],)
        assert plan.estimate == (0, len(DEFAULT_TTA))


def test_interval_never_goes_below_zero_months():
    from boneage.inference.uncertainty import interval

    cal = {"q": 2.0, "eps": 1.0, "single": {"q": 3.0, "eps": 2.0}}
    lo, hi = interval(np.array([3.0, 50.0]), np.array([1.0, 1.0]), cal)
    assert lo.tolist() == [0.0, 46.0] and hi.tolist() == [7.0, 54.0]
    lo, hi = interval(np.array([50.0]), np.array([0.0]), cal, tta=False)
    assert lo.tolist() == [44.0] and hi.tolist() == [56.0]  # the single view's 3 x (0 + 2)


def test_calibration_entry_by_hand():
    # 12 films, |errors| 1..12, spreads 0: eps = 0.5 (the floor), scores 2..24, 90% rank
    # ceil(13 x 0.9) = 12 -> q = 24; the constant-width interval likewise
    y = np.zeros(12)
    mean = np.arange(1, 13, dtype=float) / 3  # |errors| 1/3 .. 4: q = 4 / 0.5 = 8
    cal = calibrate(y, mean, np.zeros(12), single=mean, coverage=0.9, n_views=8)
    assert cal["method"] == "split-conformal, |error| / (TTA spread + eps)"
    assert (cal["coverage"], cal["tta_views"], cal["n"]) == (0.9, 8, 12)
    assert cal["eps"] == 0.5 and cal["q"] == 8.0
    assert cal["calibration_coverage"] == 1.0 and cal["calibration_mean_width"] == 8.0
    spread = np.array([0.7] * 6 + [0.1] * 6)  # median 0.4 -> eps floor 0.5
    c2 = calibrate(y, mean, spread, coverage=0.9)
    scores = np.abs(mean) / (spread + 0.5)
    assert c2["q"] == round(float(np.sort(scores)[11]), 4)
    assert c2["calibration_coverage"] == 1.0
    assert c2["calibration_mean_width"] == round(float(np.mean(2 * c2["q"] * (spread + 0.5))),
                                                 2)
    odd = calibrate(y, np.full(12, 1 / 3), np.zeros(12))
    assert odd["q"] == 0.6667 and odd["calibration_mean_width"] == 0.67
    with pytest.raises(ValueError, match="^calibration needs at least 10 labelled films$"):
        conformal_quantile(np.ones(9), 0.9)
    spread = np.full(12, 0.61234567)  # eps: the median spread, to 4 places
    c3 = calibrate(y, mean, spread, coverage=0.8)  # rank ceil(13 x 0.8) = 11 of 12
    assert c3["eps"] == 0.6123 and c3["calibration_coverage"] == 0.9167


# --- the correction's parts by hand ------------------------------------------------------------


def _sexes(n_male, n_female, slope=0.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(20, 200, n_male + n_female)
    male = np.arange(n_male + n_female) < n_male
    return y, slope * y + 60, male


def test_a_sex_with_too_few_films_keeps_the_identity():
    from boneage.inference.correction import MIN_FILMS, _lines

    y, pred, male = _sexes(MIN_FILMS - 1, MIN_FILMS)
    lines = _lines(y, pred, male, 1.0)
    assert lines["male"] == [0.0, 1.0]  # 19 boys: left alone
    assert lines["female"][1] == pytest.approx(2.0)  # 20 girls: 1 / 0.5
    y, pred, male = _sexes(MIN_FILMS, MIN_FILMS - 1)
    lines = _lines(y, pred, male, 1.0)
    assert lines["male"][1] == pytest.approx(2.0) and lines["female"] == [0.0, 1.0]


def test_one_age_or_no_relation_keeps_the_identity():
    from boneage.inference.correction import _lines

    male = np.ones(30, bool)
    assert _lines(np.full(30, 100.0), np.linspace(50, 150, 30), male, 1.0)["male"] == [0.0, 1.0]
    y = np.arange(30) % 2 + 100.0  # ages 100 and 101: spread 1, a line can be fitted
    assert _lines(y, 0.5 * y + 60, male, 1.0)["male"][1] == pytest.approx(2.0)
    flat = _lines(np.linspace(20, 200, 30), np.full(30, 120.0), male, 1.0)["male"]
    assert flat == [0.0, 1.0]  # slope 0: nothing to invert


def test_lines_go_w_of_the_way():
    from boneage.inference.correction import _lines

    y, pred, male = _sexes(40, 40)
    for w in (0.0, 0.25, 1.0):
        a, b = _lines(y, pred, male, w)["female"]
        # estimate = 60 + 0.5 y; inverse: y = (estimate - 60) / 0.5 = -120 + 2 estimate
        assert a == pytest.approx(-w * 120) and b == pytest.approx(1 - w + 2 * w)


def test_end_biases_by_hand():
    from boneage.inference.correction import OLD, YOUNG, end_biases

    y = np.array([YOUNG - 1, YOUNG, 100, OLD - 1, OLD])
    err = np.array([1.0, 100.0, 100.0, 100.0, 2 / 3])
    assert end_biases(err, y) == (1.0, 0.67)  # 72 and 167 months are neither end
    assert end_biases(err[1:4], y[1:4]) == (None, None)


def test_correction_weight_bounds_and_a_weight_set_by_the_user():
    from boneage.inference.correction import check_weight

    for ok in (0, 0.5, 1):
        check_weight(ok)
    for bad in (-0.01, 1.01, 2):
        with pytest.raises(BoneAgeError, match="correction weight"):
            check_weight(bad)
    y, pred, male = _pulled()
    fit = fit_correction(y, pred, male, weight=0.3)
    assert fit["weight"] == 0.3 and fit["weight_from"] == "set by the user"
    assert "0.3" in fit["crossfit_mae"] and "0.3" in fit["crossfit_bias_from_14"]


def test_correction_entry_keys_and_rounding():
    y, pred, male = _pulled()
    fit = fit_correction(y, pred, male)
    assert set(fit) == {"method", "weight", "weight_from", "n", "crossfit_mae",
                        "crossfit_bias_under_6", "crossfit_bias_from_14", "male", "female"}
    assert fit["method"] == ("per sex, part of the way to the inverse of estimate ~ true age "
                             "(validation films)")
    assert fit["weight_from"] == "cross-fitted MAE" and fit["n"] == len(y)
    assert set(fit["crossfit_mae"]) == {str(w) for w in WEIGHTS}
    for a, b in (fit["male"], fit["female"]):
        assert a == round(a, 4) and b == round(b, 4) and a != round(a, 3)
    assert all(v == round(v, 3) for v in fit["crossfit_mae"].values())


def test_corrected_estimates_are_float32_per_sex():
    corr = {"male": [1.0, 2.0], "female": [-1.0, 0.5]}
    out = apply_correction(np.array([10.0, 10.0]), [1, 0], corr)
    assert out.dtype == np.float32 and out.tolist() == [21.0, 4.0]
    assert apply_correction(np.array([10.0]), [1], None).tolist() == [10.0]


# --- splits: reproduced, bounded, said in words ---------------------------------------------

def test_the_recorded_split_is_reproduced_from_labels_and_seed():
    """benchmarks/results/default_split.csv (the bundled model's split) is what the function
    gives for the thumbnails' labels with 9% + 9% and seed 42: a split is reproducible."""
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split
    from tests.conftest import ROOT, THUMBS, need

    csv = need(THUMBS / "boneage-training-dataset.csv")
    recorded = load_split(ROOT / "benchmarks/results/default_split.csv")
    assert stratified_split(read_labels(csv), 0.09, 0.09, seed=42) == recorded


def test_split_defaults_and_fraction_bounds():
    table = _table(COUNTS)
    split = stratified_split(table)  # 10% validation, no test part
    assert "test" not in split.values()
    assert abs(sum(v == "val" for v in split.values()) - 0.1 * len(table)) <= len(COUNTS)
    assert set(stratified_split(table, 0.0, 0.0).values()) == {"train"}
    for val, test in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (-0.1, 0.0), (0.0, -0.1),
                      (1.2, -0.5)):
        with pytest.raises(BoneAgeError, match=r"^split fractions must be in \[0, 1\) and sum to "
                                                   r"less than 1$"):
            stratified_split(table, val, test)
    unlabelled = LabelTable([Record("a", None, True, None)])
    with pytest.raises(BoneAgeError, match="^a stratified split needs bone ages for every row$"):
        stratified_split(unlabelled)


def test_sample_gives_leftovers_to_the_largest_remainders():
    # strata of 8, 6 and 5 films (19); 4 films: quotas 1.68, 1.26, 1.05 -> 1 each, and the one
    # left over goes to the 8-film stratum (remainder 0.68)
    counts = {(True, 2): 8, (False, 2): 6, (True, 3): 5}
    table = _table(counts)
    for seed in range(3):
        chosen = stratified_sample(table, 4, seed=seed)
        got = {k: sum(1 for r in table if r.id in chosen and (r.male, age_band(r.months)) == k)
               for k in counts}
        assert got == {(True, 2): 2, (False, 2): 1, (True, 3): 1}
    assert stratified_sample(table, 4, seed=7) == stratified_sample(table, 4, seed=7)
    assert stratified_sample(table, 19) == table.ids and stratified_sample(table, 30) == table.ids


def test_split_files_are_checked_in_words(tmp_path):
    from boneage.data.splits import load_split, save_split

    with pytest.raises(BoneAgeError, match="no such split file"):
        load_split(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,part\n1,train\n")
    with pytest.raises(BoneAgeError, match="needs the columns id,split"):
        load_split(bad)
    bad.write_text("id,split\n1,holdout\n")
    with pytest.raises(BoneAgeError, match=r"unknown split name 'holdout' \(expected train, "
                                           r"val, test\)"):
        load_split(bad)
    bad.write_bytes(b"\x00\xff\x00binary")
    with pytest.raises(BoneAgeError, match=r"\bsplit CSV file\b"):
        load_split(bad)
    good = tmp_path / "s.csv"
    save_split({"a": "train", "b": "test"}, good)
    assert load_split(good) == {"a": "train", "b": "test"}
    assert good.read_bytes() == b"id,split\r\na,train\r\nb,test\r\n"


# --- labels: every message in full, each rule at its edge ---------------------------------


def _csv(folder, text, images=("a", "b", "c", "d", "e")):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for stem in images:
        cv2.imwrite(str(folder / f"{stem}.png"), np.zeros((40, 40), np.uint8))
    p = folder / "labels.csv"
    p.write_text(text)
    return p


def test_labels_missing_columns_said_in_full(tmp_path):
    from boneage.data.labels import read_labels

    p = _csv(tmp_path, "name,colour\nx,red\n")
    with pytest.raises(BoneAgeError) as e:
        read_labels(p)
    assert str(e.value) == ("labels.csv: missing column(s) id (id / Image ID / Case ID), sex "
                            "(male / Sex), bone age (boneage / Bone Age (months)); found name, "
                            "colour")
    p.write_text("id,male\na,1\n")
    assert read_labels(p, require_age=False).ids == ["a"]
    p.write_text("")
    with pytest.raises(BoneAgeError, match="found none"):
        read_labels(p)


def test_labels_row_problems_said_in_full(tmp_path):
    from boneage.data.labels import read_labels

    p = _csv(tmp_path, "id,male,boneage\n,1,10\na,1,0\na,x,240\nb,0,-1\nc,1,240.5\nd,1,nan\n"
                       "e,0,\nf,1,5\n")
    with pytest.raises(BoneAgeError) as e:
        read_labels(p)
    msg = str(e.value)
    assert msg.startswith("labels.csv: column 'id': empty id: 1 row(s) (row 2: ''); ")
    assert "column 'id': duplicate id: 1 row(s) (row 4: 'a'); " in msg
    assert ("column 'male': unknown sex (expected M/F, male/female, True/False, 1/0): 1 row(s) "
            "(row 4: 'x'); ") in msg
    assert ("column 'boneage': outside 0-240 months: 2 row(s) (row 5: '-1', row 6: '240.5'); "
            in msg)
    assert "column 'boneage': not a number: 2 row(s) (row 7: 'nan', row 8: ''); " in msg
    assert f"missing image in {tmp_path} (looked for f{{.png," in msg
    assert msg.endswith(" (use --skip-invalid to drop them)")
    t = read_labels(p, skip_invalid=True)  # 0 and 240 months are inside the range
    assert t.ids == ["a"] and t.months.tolist() == [0.0] and t.dropped == 7
    assert t.source == str(p) and t.notes == ["labels.csv: dropped 7 invalid row(s)"]


def test_labels_more_than_three_bad_rows_are_summarised(tmp_path):
    from boneage.data.labels import read_labels

    rows = "".join(f"{s},1,x\n" for s in "abcde")
    with pytest.raises(BoneAgeError) as e:
        read_labels(_csv(tmp_path, "id,male,boneage\n" + rows))
    assert ("column 'boneage': not a number: 5 row(s) (row 2: 'x', row 3: 'x', row 4: 'x' and 2 "
            "more)") in str(e.value)
    with pytest.raises(BoneAgeError) as e:
        read_labels(_csv(tmp_path, "id,male,boneage\na,1,x\nb,1,x\nc,1,x\n"))
    assert "(row 2: 'x', row 3: 'x', row 4: 'x') " in str(e.value)
    with pytest.raises(BoneAgeError, match="labels.csv: every row is invalid, nothing left"):
        read_labels(_csv(tmp_path, "id,male,boneage\na,1,x\n"), skip_invalid=True)
    with pytest.raises(BoneAgeError, match="labels.csv: no rows"):
        read_labels(_csv(tmp_path, "id,male,boneage\n"))


def test_labels_chronological_age_and_unread_age_columns(tmp_path):
    from boneage.data.labels import read_labels

    p = _csv(tmp_path, "id,male,chronological_age_months,age_at_visit\na,1,,3\nb,0,120,4\n")
    t = read_labels(p, require_age=False)
    assert [r.chronological_months for r in t] == [None, 120.0]
    assert t.notes == ["labels.csv: column(s) 'age_at_visit' not read; name a bone age "
                       "'boneage', the child's age 'chronological_age_months'"]
    p.write_text("id,male,age\na,1,100\n")
    assert "'age' not read" in read_labels(p, require_age=False).notes[0]
    assert read_labels(p).months.tolist() == [100.0]  # as a bone age, where one is required
    p.write_text("id,male,chronological_age_months\na,1,250\n")
    with pytest.raises(BoneAgeError, match="column 'chronological_age_months': outside 0-240"):
        read_labels(p, require_age=False)


def test_labels_match_files_by_name_and_subset(tmp_path):
    from boneage.data.labels import read_labels

    p = _csv(tmp_path, "id,male,boneage\nsub/a.png,1,10\nb,0,20\n")
    t = read_labels(p, tmp_path)
    assert [r.path.name for r in t] == ["a.png", "b.png"]
    s = t.subset(["b", "zzz"])
    assert s.ids == ["b"] and s.notes == [] and s.source == t.source
    assert read_labels(p, require_images=False).records[0].path is None


def test_table_from_a_folder_and_the_clis_front_door(tmp_path):
    from boneage.data.labels import default_images_dir, load_table, table_from_folder

    d = tmp_path / "films"
    _csv(d, "", images=("a", "b"))
    (d / "a.jpg").write_bytes((d / "a.png").read_bytes())  # two files with one stem
    (d / "notes.txt").write_text("not a film")
    t = table_from_folder(d)
    assert sorted(t.ids) == ["a.jpg", "a.png", "b"] and t.source == str(d)
    assert len(t.notes) == 1 and "notes.txt" in t.notes[0]
    assert all(r.path is not None and r.male is None for r in t)
    assert load_table(d, None).ids == t.ids
    with pytest.raises(BoneAgeError, match=r"^give --images DIR and/or --labels CSV$"):
        load_table(None, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BoneAgeError, match="no PNG, JPEG or DICOM images found"):
        table_from_folder(empty)
    p = _csv(tmp_path / "k", "id,male,boneage\na,1,10\nb,1,x\n")
    with pytest.raises(BoneAgeError):
        load_table(None, p)
    assert load_table(None, p, skip_invalid=True).ids == ["a"]
    assert load_table(None, _csv(tmp_path / "k2", "id,male\na,1\n"), require_age=False).ids
    # the Kaggle layout: x.csv beside x/, sometimes x/x/
    (tmp_path / "x" / "x").mkdir(parents=True)
    assert default_images_dir(tmp_path / "x.csv") == tmp_path / "x" / "x"
    (tmp_path / "y").mkdir()
    assert default_images_dir(tmp_path / "y.csv") == tmp_path / "y"
    assert default_images_dir(tmp_path / "z.csv") == tmp_path


def test_correction_reads_sex_as_zeros_and_ones():
    y, pred, male = _pulled()
    assert fit_correction(y, pred, male.astype(int).tolist()) == fit_correction(y, pred, male)


# --- the model's contract as declared, and the card's messages in full ------------------------


def test_io_contract_is_the_declared_interface():
    from boneage.models.contract import SEX_ENCODING, io_contract, outputs_months

    io = io_contract(100, 1024)
    assert io == {
        "inputs": [
            {"name": "image", "dtype": "float32", "shape": ["batch", 1, 100, 100],
             "range": [0.0, 1.0], "units": "grey level / 255",
             "description": "the film after the card's pipeline (replayed by `boneage`)"},
            {"name": "sex", "dtype": "float32", "shape": ["batch"], "range": [0.0, 1.0],
             "encoding": {"male": 1.0, "female": 0.0}, "units": "none"},
        ],
        "outputs": [
            {"name": "bone_age", "dtype": "float32", "shape": ["batch"], "units": "months",
             "description": "estimated skeletal age, before the card's output_correction"},
            {"name": "features", "dtype": "float32", "shape": ["batch", 1024], "units": "none",
             "description": "pooled image features (the \"not a hand\" check compares them "
                            "with the training films')"},
        ],
    }
    assert SEX_ENCODING == {"male": 1.0, "female": 0.0}
    assert [o["name"] for o in io_contract(64)["outputs"]] == ["bone_age"]
    assert outputs_months({"io": io}) is True
    assert outputs_months({"io": {"outputs": [{"units": "z-score"}, {"units": "months"}]}}) is False
    assert outputs_months({}) is False and outputs_months({"io": {"outputs": []}}) is False


@pytest.mark.parametrize("over,message", [
    ({"input_size": 7}, "card: model card: 'input_size' is 7, not an image side in pixels"),
    ({"model_kwargs": []}, "card: model card: 'model_kwargs' is not a mapping of the network's "
                           "options"),
    ({"pipeline": {"steps": "x"}}, "card: model card: 'pipeline' cannot be replayed: a pipeline "
                                   "is {'steps': [...]}"),
    ({"target_norm": {"mean": 1}}, "card: model card: 'target_norm' needs numbers 'mean' and "
                                   "'std' (> 0)"),
    ({"output_correction": {"male": [1]}}, "card: model card: 'output_correction' needs 'male' "
                                           "and 'female' as [a, b] (a + b x estimate)"),
    ({"calibration": {"q": "x"}}, "card: model card: 'calibration' needs numbers 'q' and 'eps' "
                                  "(>= 0), as `boneage calibrate` writes them"),
    ({"embedding": {"mean": [1.0], "scale": [1.0], "threshold": 1.0, "p90": -1}},
     "card: model card: 'embedding' needs equally long lists 'mean' and 'scale' (> 0) and a "
     "'threshold', as `boneage calibrate` writes them"),
    ({"embedding": {"mean": [], "scale": [], "threshold": 1.0}}, "'embedding' needs"),
    ({"weights_sha256": "0" * 63}, "card: model card: 'weights_sha256' is not a sha256 digest "
                                   "(64 hex digits)"),
    ({"weights_sha256": "X" * 64}, "'weights_sha256' is not a sha256 digest"),
    ({"onnx": {"weights": 3}}, "card: model card: 'onnx' needs 'weights' (a file name or "
                               "'embedded') and a sha256 digest"),
    ({"onnx": {"sha256": "xyz"}}, "'onnx' needs"),
    ({"onnx": []}, "'onnx' needs"),
    ({"io": {"inputs": [1]}}, "card: model card: 'io' needs lists 'inputs' and 'outputs' of "
                              "mappings"),
    ({"io": {"outputs": "x"}}, "'io' needs lists"),
])
def test_card_messages_in_full(over, message):
    with pytest.raises(BoneAgeError) as e:
        check_card({"arch": "resnet18", **over}, "card")
    assert message in str(e.value)


@pytest.mark.parametrize("over", [
    {"onnx": {"weights": "embedded"}}, {"onnx": {"weights": "m.safetensors", "sha256": "ab" * 32}},
    {"embedding": {"mean": [1.0], "scale": [1.0], "threshold": 1.0}},
    {"io": {"inputs": []}}, {"output_correction": {}}, {"calibration": {}},
])
def test_card_parts_that_are_fine(over):
    check_card({"arch": "resnet18", **over}, "card")


def test_sex_values_checked_in_full():
    from boneage.models.contract import check_inputs

    card = {"input_size": 8}
    with pytest.raises(BoneAgeError, match=r"^model input: sex must be 1 \(male\) or 0 "
                                           r"\(female\)$"):
        check_inputs(card, np.zeros((1, 8, 8), np.uint8), np.array([2]))


def test_a_sex_without_a_relation_is_left_alone_and_the_other_still_fitted():
    from boneage.inference.correction import _lines

    y, pred, male = _sexes(30, 30)
    pred = np.where(male, 120.0, pred)  # boys' estimates flat: slope 0
    lines = _lines(y, pred, male, 1.0)
    assert lines["male"] == [0.0, 1.0] and lines["female"][1] == pytest.approx(2.0)


def test_uncorrected_crossfit_error_is_the_plain_error():
    # w = 0 is the identity on either half: its cross-fitted MAE is the MAE itself
    y, pred, male = _pulled()
    pred = pred + np.random.default_rng(2).normal(0, 5, len(y))
    fit = fit_correction(y, pred, male)
    assert fit["crossfit_mae"]["0.0"] == round(float(np.mean(np.abs(pred - y))), 3)
