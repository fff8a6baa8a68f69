from __future__ import annotations

import numpy as np
import pytest

from boneage.inference.uncertainty import (
    DEFAULT_TTA,
    calibrate,
    conformal_quantile,
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
