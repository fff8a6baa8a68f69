"""Regression metrics with honest uncertainty: MAE, RMSE, R², bias, and a bootstrap 95% CI for
MAE, overall, by sex and by age band."""

from __future__ import annotations

from typing import Any

import numpy as np

from boneage.data.splits import age_band, band_labels


def bootstrap_mae_ci(err: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    if err.size < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, err.size, size=(n_boot, err.size))
    boots = np.abs(err[idx]).mean(axis=1)
    return [round(float(np.percentile(boots, 2.5)), 3), round(float(np.percentile(boots, 97.5)), 3)]


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    y, p = np.asarray(y, float), np.asarray(p, float)
    if y.size == 0:
        return {"n": 0}
    err = p - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "n": int(y.size),
        "mae": round(float(np.abs(err).mean()), 3),
        "rmse": round(float(np.sqrt((err**2).mean())), 3),
        "r2": round(r2, 4),
        "bias": round(float(err.mean()), 3),
        "mae_ci95": bootstrap_mae_ci(err),
    }


def evaluation_metrics(y: np.ndarray, p: np.ndarray, male: np.ndarray) -> dict[str, Any]:
    """Overall metrics plus the same by sex and by age band (0-2, 2-6, 6-10, 10-14, 14-20 y)."""
    y, p, male = np.asarray(y, float), np.asarray(p, float), np.asarray(male, bool)
    out = regression_metrics(y, p)
    out["by_sex"] = {"male": regression_metrics(y[male], p[male]),
                     "female": regression_metrics(y[~male], p[~male])}
    bands = age_band(y)
    out["by_age_band"] = {label: regression_metrics(y[bands == i], p[bands == i])
                          for i, label in enumerate(band_labels())}
    return out


def _coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any]:
    if y.size == 0:
        return {"n": 0}
    return {"n": int(y.size), "coverage": round(float(np.mean((y >= lo) & (y <= hi))), 4),
            "mean_width": round(float(np.mean(hi - lo)), 2)}


def interval_metrics(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, male: np.ndarray,
                     nominal: float) -> dict[str, Any]:
    """How often the interval holds the true age and how wide it is, overall, by sex and by age
    band: an interval right on average can still miss the youngest or oldest too often."""
    y, lo, hi = (np.asarray(a, float) for a in (y, lo, hi))
    male = np.asarray(male, bool)
    bands = age_band(y)
    return {"nominal": nominal, **_coverage(y, lo, hi),
            "by_sex": {"male": _coverage(y[male], lo[male], hi[male]),
                       "female": _coverage(y[~male], lo[~male], hi[~male])},
            "by_age_band": {label: _coverage(y[bands == i], lo[bands == i], hi[bands == i])
                            for i, label in enumerate(band_labels())}}
