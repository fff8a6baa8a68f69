"""Uncertainty: test-time augmentation gives a spread per film; split-conformal calibration on
labelled films turns it into a 90% prediction interval.

Calibration (normalised split-conformal): on calibration films with true age y, TTA mean m and
TTA spread s, the scores |y - m| / (s + eps) are ranked and q is their ceil((n + 1) 0.9)-th
smallest. The interval for a new film is m +/- q (s + eps): wider where the augmented views
disagree. Exchangeable films are then covered 90% of the time. The calibration is stored in the
model card and needs only numpy at inference.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

# (rotation degrees, scale, shift x, shift y as fractions of the size); the first is identity
DEFAULT_TTA: tuple[tuple[float, float, float, float], ...] = (
    (0, 1.0, 0, 0), (-6, 1.0, 0, 0), (6, 1.0, 0, 0), (0, 0.94, 0, 0), (0, 1.06, 0, 0),
    (0, 1.0, 0.03, 0), (0, 1.0, -0.03, 0), (0, 1.0, 0, 0.03),
)


def tta_views(image: np.ndarray, views=DEFAULT_TTA) -> np.ndarray:
    """(V, S, S) uint8: the prepared image under each affine view (black outside)."""
    h, w = image.shape
    out = np.empty((len(views), h, w), image.dtype)
    for i, (deg, scale, tx, ty) in enumerate(views):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
        m[0, 2] += tx * w
        m[1, 2] += ty * h
        out[i] = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    n = len(scores)
    if n < 10:
        raise ValueError("calibration needs at least 10 labelled films")
    k = min(n, math.ceil((n + 1) * coverage))
    return float(np.sort(scores)[k - 1])


def _conformal(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, coverage: float
               ) -> dict[str, Any]:
    eps = max(float(np.median(spread)), 0.5)
    q = conformal_quantile(np.abs(y - mean) / (spread + eps), coverage)
    half = q * (spread + eps)
    return {"q": round(q, 4), "eps": round(eps, 4),
            "calibration_coverage": round(float(np.mean(np.abs(y - mean) <= half)), 4),
            "calibration_mean_width": round(float(np.mean(2 * half)), 2)}


def calibrate(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, single: np.ndarray | None = None,
              coverage: float = 0.9, n_views: int = len(DEFAULT_TTA)) -> dict[str, Any]:
    """The card's `calibration` entry, with the coverage and width it reaches on these films.

    `single` (the unaugmented view's predictions) adds a constant-width interval for
    predictions made without TTA (faster, no spread to scale by)."""
    y, mean, spread = (np.asarray(a, float) for a in (y, mean, spread))
    cal: dict[str, Any] = {"method": "split-conformal, |error| / (TTA spread + eps)",
                           "coverage": coverage, "tta_views": n_views, "n": int(len(y)),
                           **_conformal(y, mean, spread, coverage)}
    if single is not None:
        cal["single"] = _conformal(y, np.asarray(single, float), np.zeros(len(y)), coverage)
    return cal


def interval(mean: np.ndarray, spread: np.ndarray, cal: dict[str, Any], tta: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated interval; without TTA the constant-width one (see `has_interval`)."""
    c = cal if tta else cal["single"]
    half = c["q"] * (np.asarray(spread, float) + c["eps"])
    return np.clip(mean - half, 0, None), mean + half


def has_interval(cal: dict[str, Any] | None, tta: bool) -> bool:
    return bool(cal) and (tta or "single" in cal)
