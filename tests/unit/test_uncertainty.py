from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boneage.errors import BoneAgeError
from boneage.inference.uncertainty import (
    DEFAULT_TTA,
    TTAPlan,
    calibrate,
    choose_estimate_views,
    conformal_quantile,
    has_interval,
    interval,
    tta_views,
)


def test_tta_views_identity_first_and_distinct():
    img = np.zeros((64, 64), np.uint8)
    img[10:30, 20:40] = 200
    v = tta_views(img)
    assert v.shape == (len(DEFAULT_TTA), 64, 64)
    assert np.array_equal(v[0], img)
    assert all(not np.array_equal(v[0], v[i]) for i in range(1, len(v)))


def test_conformal_interval_covers_new_films_at_the_nominal_rate():
    rng = np.random.default_rng(0)

    def films(n):  # heteroscedastic errors; the spread is an honest but noisy guide
        spread = rng.uniform(1, 8, n)
        y = rng.uniform(0, 228, n)
        mean = y + rng.normal(0, 1, n) * spread * 1.7
        return y, mean, spread * rng.uniform(0.8, 1.2, n)

    cal = calibrate(*films(2000), coverage=0.9)
    assert 0.89 <= cal["calibration_coverage"] <= 0.91
    y, mean, spread = films(20000)
    lo, hi = interval(mean, spread, cal)
    covered = np.mean((y >= lo) & (y <= hi))
    assert 0.88 <= covered <= 0.92
    # wider where the views disagree
    assert (hi - lo)[spread > 6].mean() > 1.5 * (hi - lo)[spread < 2].mean()


def test_conformal_quantile_needs_enough_films():
    with pytest.raises(ValueError):
        conformal_quantile(np.ones(5), 0.9)
    assert conformal_quantile(np.arange(1, 20, dtype=float), 0.9) == 18.0


def test_single_view_interval_has_constant_width_and_covers():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 228, 3000)
    single = y + rng.normal(0, 10, 3000)
    cal = calibrate(y[:1500], single[:1500], np.full(1500, 3.0), single=single[:1500])
    assert has_interval(cal, tta=False) and not has_interval(None, tta=True)
    assert not has_interval({k: v for k, v in cal.items() if k != "single"}, tta=False)
    lo, hi = interval(single[1500:], np.zeros(1500), cal, tta=False)
    width = hi - lo
    assert np.ptp(width[lo > 0]) < 1e-9  # constant where not clipped at 0
    assert 0.87 <= np.mean((y[1500:] >= lo) & (y[1500:] <= hi)) <= 0.93


def test_novelty_separates_other_pictures_from_the_reference():
    from boneage.inference.quality import embedding_reference, novelty, quality_warnings

    rng = np.random.default_rng(2)
    centre = rng.uniform(0, 2, 64)
    hands = np.maximum(centre + rng.normal(0, 0.3, (500, 64)), 0)
    ref = embedding_reference(hands)
    assert len(ref["mean"]) == 64 and ref["threshold"] > ref["p995"] > 0
    new_hands = np.maximum(centre + rng.normal(0, 0.3, (200, 64)), 0)
    others = np.maximum(rng.uniform(0, 2, (200, 64)) + rng.normal(0, 0.3, (200, 64)), 0)
    assert np.mean(novelty(new_hands, ref) > ref["threshold"]) < 0.02
    assert np.mean(novelty(others, ref) > ref["threshold"]) > 0.95
    flagged = quality_warnings({}, 100.0, float(novelty(others[:1], ref)[0]), ref)
    assert any("does not look like a hand" in w for w in flagged)
    typical = float(np.median(novelty(new_hands, ref)))
    assert 0.5 < typical < 1.5 and quality_warnings({}, 100.0, typical, ref) == []
    # no fingers: flagged once the features are also unusual (above the 90th percentile)
    assert quality_warnings({"finger_gaps": 1}, 100.0, typical, ref) == []
    assert quality_warnings({"finger_gaps": 1}, 100.0, ref["p90"] * 1.05, ref) != []
    assert quality_warnings({"finger_gaps": 4}, 100.0, ref["p90"] * 1.05, ref) == []
    assert quality_warnings({"finger_gaps": 0}, 100.0) != []  # no reference: shape alone
    # a small child's fingers merge under thresholding: under 3 years only far-off features
    assert quality_warnings({"finger_gaps": 0}, 24.0, ref["p90"] * 1.05, ref) == []
    assert quality_warnings({"finger_gaps": 0}, 50.0, ref["p90"] * 1.05, ref) == []  # < 5 y
    assert quality_warnings({"finger_gaps": 0}, 70.0, ref["p90"] * 1.05, ref) != []
    assert quality_warnings({"finger_gaps": 0}, 24.0, ref["threshold"] * 1.05, ref) != []


def test_correction_undoes_a_pull_towards_the_mean():
    from boneage.inference.correction import apply_correction, fit_correction

    rng = np.random.default_rng(1)
    y = rng.uniform(10, 220, 600)
    male = rng.random(600) < 0.5
    # estimates pulled towards 120 months, more for girls, plus noise
    pull = np.where(male, 0.8, 0.7)
    pred = 120 + pull * (y - 120) + rng.normal(0, 5, 600)
    corr = fit_correction(y, pred, male)
    assert corr["male"][1] == pytest.approx(1 / 0.8, rel=0.05)
    assert corr["female"][1] == pytest.approx(1 / 0.7, rel=0.05)
    fixed = apply_correction(pred, male, corr)
    young = y < 60
    assert abs(np.mean(fixed[young] - y[young])) < 2 < np.mean(pred[young] - y[young])
    assert np.array_equal(apply_correction(pred, male, None), pred.astype(np.float32))
    # too few films of one sex: that sex is left as it is
    few = fit_correction(y[:30], pred[:30], np.ones(30, bool))
    assert few["female"] == [0.0, 1.0]


def test_a_fixed_correction_weight_trades_mae_for_less_bias_at_the_ends():
    from boneage.errors import BoneAgeError
    from boneage.inference.correction import fit_correction

    rng = np.random.default_rng(3)
    y = rng.uniform(10, 220, 800)
    male = rng.random(800) < 0.5
    pred = 125 + 0.75 * (y - 125) + rng.normal(0, 8, 800)
    auto = fit_correction(y, pred, male)
    full = fit_correction(y, pred, male, weight=1.0)
    none = fit_correction(y, pred, male, weight=0.0)
    assert auto["weight_from"] == "cross-fitted MAE" and full["weight_from"] == "set by the user"
    assert none["male"] == [0.0, 1.0] and full["male"][1] == pytest.approx(1 / 0.75, rel=0.05)
    young = full["crossfit_bias_under_6"]
    # going further towards the inverse takes the bias off the youngest, at a cost in MAE
    assert young["0.0"] > young["0.5"] > abs(young["1.0"])
    assert full["crossfit_mae"]["1.0"] > min(full["crossfit_mae"].values())
    assert full["crossfit_mae"] == {k: v for k, v in auto["crossfit_mae"].items()}
    with pytest.raises(BoneAgeError, match="correction weight"):
        fit_correction(y, pred, male, weight=-0.1)


def test_chosen_views_skip_a_biased_view_and_stop_when_nothing_gains():
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 228, 2000)
    noise = lambda s: rng.normal(0, s, 2000)  # noqa: E731
    preds = np.stack([y + noise(8), y + 15 + noise(8), y + noise(8), y + noise(8) + 25], axis=1)
    assert choose_estimate_views(y, preds) == (0, 2)  # the biased views never help
    assert choose_estimate_views(y, preds, max_views=1) == (0,)
    # a copy of the identity gains nothing: the identity alone
    assert choose_estimate_views(y, np.stack([preds[:, 0]] * 3, axis=1)) == (0,)


def test_tta_plan_from_card_defaults_round_trips_and_refuses_nonsense():
    assert TTAPlan.from_card({}) == TTAPlan() and TTAPlan().estimate_views == list(range(8))
    plan = TTAPlan(DEFAULT_TTA + ((0, 1.12, 0, 0),), (0, 8))
    assert TTAPlan.from_card({"tta": plan.to_dict()}) == plan
    bad = [{"views": [[5, 1, 0, 0]], "estimate": [0]},  # identity not first
           {"views": [[0, 1, 0, 0], [0, 9, 0, 0]], "estimate": [0]},  # absurd zoom
           {"views": [[0, 1, 0, 0]], "estimate": [0, 3]},  # no such view
           {"views": [[0, 1, 0, 0]], "estimate": []},
           {"views": [[0, 1, 0]], "estimate": [0]},
           {"views": "all"}]
    for spec in bad:
        with pytest.raises(BoneAgeError, match="unusable 'tta' plan") as e:
            TTAPlan.from_card({"tta": spec})
        assert "\n" not in str(e.value)


def test_estimate_averages_the_plans_views_and_spreads_over_all():
    from boneage.inference.predictor import Predictor

    class Brightness(Predictor):  # the "network" answers the image's mean grey level
        months_out = True

        def _run(self, x, sex):
            return x.reshape(len(x), -1).mean(axis=1) * 100, None

    card = {"pipeline": {"steps": [{"name": "scale", "divisor": 255.0}]}, "input_size": 32,
            "io": {"inputs": []}}
    img = np.zeros((2, 32, 32), np.uint8)
    img[:, 4:28, 4:28] = 200
    p = Brightness(card, Path("m"))
    every = p.estimate(img, np.array([True, False]))
    assert np.allclose(every.mean, every.views.mean(axis=1)) and every.views.shape == (2, 8)
    p.tta_plan = TTAPlan(DEFAULT_TTA, (0, 4))
    two = p.estimate(img, np.array([True, False]))
    assert np.allclose(two.mean, every.views[:, [0, 4]].mean(axis=1))
    assert np.allclose(two.spread, every.spread) and np.allclose(two.single, every.views[:, 0])
    one = p.estimate(img, np.array([True, False]), tta=False)
    assert np.allclose(one.mean, every.views[:, 0]) and np.all(one.spread == 0)


def test_calibration_by_age_band_covers_each_band_and_follows_its_bias():
    """Mondrian conformal (issue #41): on films whose error is wide and biased at one age and
    narrow at another, the all-ages interval over-covers one band and under-covers the other;
    calibrated by band of the estimate, each band is covered 90% on fresh films, the narrow band
    gets the narrow interval and the biased band's interval is centred on its bias."""
    from boneage.inference.uncertainty import band_index, calibrate, interval

    rng = np.random.default_rng(3)

    def films(n):
        m = rng.uniform(30, 200, n)
        young = m < 72
        s = np.full(n, 2.0)  # the views agree equally everywhere
        err = np.where(young, rng.normal(4.0, 3.0, n), rng.normal(0.0, 12.0, n))
        return m + err, m, s, young
    y, m, s, young = films(6000)
    y2, m2, s2, young2 = films(6000)
    flat = calibrate(y, m, s)
    banded = calibrate(y, m, s, bands=True)
    lo, hi = interval(m2, s2, flat)
    inside = (lo <= y2) & (y2 <= hi)
    assert inside[young2].mean() > 0.97 and inside[~young2].mean() < 0.9
    lo, hi = interval(m2, s2, banded)
    inside = (lo <= y2) & (y2 <= hi)
    for b in np.unique(band_index(m2)):
        k = band_index(m2) == b
        assert 0.87 <= inside[k].mean() <= 0.93, b
    assert np.median((hi - lo)[young2]) < 0.5 * np.median((hi - lo)[~young2])
    centre = ((lo + hi) / 2 - m2)[young2]
    assert abs(np.median(centre) - 4.0) < 0.5  # follows the young band's +4 months bias
    rows = banded["bands"]["rows"]
    assert sum(r["n"] for r in rows) == 6000 and all(r["n"] >= 30 for r in rows)


def test_a_band_with_few_films_joins_its_neighbour():
    from boneage.inference.uncertainty import calibrate, interval

    rng = np.random.default_rng(4)
    m = np.concatenate([rng.uniform(2, 20, 5), rng.uniform(30, 200, 400)])  # 5 under 2 years
    y = m + rng.normal(0, 8, len(m))
    cal = calibrate(y, m, np.ones(len(m)), bands=True)
    first = cal["bands"]["rows"][0]
    assert first["bands"][:2] == ["0-2 y", "2-6 y"] and first["n"] >= 30
    lo, hi = interval(np.array([10.0]), np.array([1.0]), cal)  # an infant reads that row
    assert hi[0] - lo[0] == pytest.approx(2 * first["q"] * (1 + cal["eps"]), rel=1e-6)
