"""Regression-to-the-mean correction: a regressor trained with a squared or Huber loss pulls its
estimates towards the training mean (too old under 6 years, too young over 14). Deeplasia's
cure: fit estimate = c + k x true age per sex on validation films and invert it, which takes
the bias by age band towards zero. Inverting fully costs accuracy (measured on our validation
films for the two-network ensemble: under-6 bias +3.2 -> -1.8 months but MAE 8.55 -> 9.02), so
the correction goes a weight w of the way, w chosen on the same films by 2-fold cross-fitting:
the largest w whose cross-fitted MAE is within 0.02 months of the best, unless the user fixes w
(`calibrate --correction-weight`: how much accuracy to trade for less bias at the ends is a
clinical choice; the cross-fitted MAE and end biases of every w are kept in the card to choose
it by). The result is a line per sex (corrected = a + b x estimate), stored in the card as
`output_correction` and applied to every view, on both backends, before TTA averaging and
intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from boneage.errors import BoneAgeError

MIN_FILMS = 20  # per sex; fewer and the line is left out (identity)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # how far towards the full inverse
TOLERANCE = 0.02  # months of cross-fitted MAE traded for less bias at the ends
YOUNG, OLD = 72.0, 168.0  # the end bands whose bias is reported: under 6 years, from 14


def _lines(y: np.ndarray, pred: np.ndarray, male: np.ndarray, w: float) -> dict[str, list]:
    """{"male": [a, b], "female": [a, b]}: w of the way from identity to the inverted line."""
    out = {}
    for key, sel in (("male", male), ("female", ~male)):
        if sel.sum() < MIN_FILMS or np.ptp(y[sel]) == 0:
            out[key] = [0.0, 1.0]
            continue
        k, c = np.polyfit(y[sel], pred[sel], 1)  # estimate = c + k x true age
        if k <= 0.1:  # no usable relation: leave this sex alone
            out[key] = [0.0, 1.0]
            continue
        out[key] = [float(-w * c / k), float(1 - w + w / k)]
    return out


def end_biases(err: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """Mean error under 6 years and from 14 (None for a band without films): where the pull
    to the mean shows."""
    return tuple(round(float(err[sel].mean()), 2) if sel.any() else None
                 for sel in (y < YOUNG, y >= OLD))


def check_weight(weight: float | None) -> None:
    if weight is not None and not 0 <= weight <= 1:
        raise BoneAgeError(f"correction weight must be in [0, 1], got {weight}")


def fit_correction(y: np.ndarray, pred: np.ndarray, male: np.ndarray,
                   weight: float | None = None) -> dict[str, Any]:
    """{"male": [a, b], "female": [a, b]} with corrected = a + b * estimate, and how w was
    chosen: for each candidate weight, the cross-fitted MAE and bias under 6 years and from 14.
    `weight` fixes w (0: no correction, 1: the full inverse) instead of choosing it."""
    check_weight(weight)
    y, pred, male = np.asarray(y, float), np.asarray(pred, float), np.asarray(male, bool)
    fold = np.random.default_rng(0).permutation(len(y)) % 2
    weights = sorted(set(WEIGHTS) | ({weight} if weight is not None else set()))
    maes, young, old = {}, {}, {}
    for w in weights:
        err = np.empty(len(y))
        for f in (0, 1):
            tr, te = fold != f, fold == f
            fit = _lines(y[tr], pred[tr], male[tr], w)
            err[te] = apply_correction(pred[te], male[te], fit) - y[te]
        maes[w] = float(np.mean(np.abs(err)))
        young[w], old[w] = end_biases(err, y)
    if weight is None:
        best = min(maes[v] for v in WEIGHTS)
        w = max(v for v in WEIGHTS if maes[v] <= best + TOLERANCE)
    else:
        w = weight
    lines = {k: [round(a, 4), round(b, 4)] for k, (a, b) in _lines(y, pred, male, w).items()}
    return {"method": "per sex, part of the way to the inverse of estimate ~ true age "
            "(validation films)", "weight": w,
            "weight_from": "cross-fitted MAE" if weight is None else "set by the user",
            "n": int(len(y)),
            "crossfit_mae": {str(k): round(v, 3) for k, v in maes.items()},
            "crossfit_bias_under_6": {str(k): v for k, v in young.items()},
            "crossfit_bias_from_14": {str(k): v for k, v in old.items()}, **lines}


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
