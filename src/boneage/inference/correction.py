"""Regression-to-the-mean correction: a regressor trained with a squared or Huber loss pulls its
estimates towards the training mean (too old under 6 years, too young over 14). A straight line
per sex, fitted on validation films (true age against estimate, as Deeplasia does), stretches
them back. It is stored in the card as `output_correction` and applied to every view, on both
backends, before TTA averaging and intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_FILMS = 20  # per sex; fewer and the line is left out (identity)


def fit_correction(y: np.ndarray, pred: np.ndarray, male: np.ndarray) -> dict[str, Any]:
    """{"male": [a, b], "female": [a, b]} with corrected = a + b * estimate (least squares)."""
    y, pred, male = np.asarray(y, float), np.asarray(pred, float), np.asarray(male, bool)
    out: dict[str, Any] = {"method": "linear per sex: true age ~ a + b x estimate, validation "
                           "films", "n": int(len(y))}
    for key, sel in (("male", male), ("female", ~male)):
        if sel.sum() < MIN_FILMS or np.ptp(pred[sel]) == 0:
            out[key] = [0.0, 1.0]
            continue
        b, a = np.polyfit(pred[sel], y[sel], 1)
        out[key] = [round(float(a), 4), round(float(b), 4)]
    return out


def apply_correction(pred: np.ndarray, male: np.ndarray, corr: dict[str, Any] | None
                     ) -> np.ndarray:
    """Estimates in months after the card's correction (unchanged without one)."""
    pred = np.asarray(pred, np.float32)
    if not corr:
        return pred
    male = np.asarray(male, bool)
    a = np.where(male, corr["male"][0], corr["female"][0]).astype(np.float32)
    b = np.where(male, corr["male"][1], corr["female"][1]).astype(np.float32)
    return a + b * pred
