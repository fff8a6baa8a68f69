"""Uncertainty: test-time augmentation gives a spread per film; split-conformal calibration on
labelled films turns it into a 90% prediction interval.

Calibration (normalised split-conformal): on calibration films with true age y, TTA mean m and
TTA spread s, the scores |y - m| / (s + eps) are ranked and q is their ceil((n + 1) 0.9)-th
smallest. The interval for a new film is m +/- q (s + eps): wider where the augmented views
disagree. Exchangeable films are then covered 90% of the time. The calibration is stored in the
model card and needs only numpy at inference.

Which views a model makes, and which of them its estimate averages, is the card's `tta` plan
(`TTAPlan`): the spread is taken over all the views, the estimate over the plan's. A card
without one makes the 8 default views and averages them all. `choose_estimate_views` picks the
estimate's views on calibration films (`boneage calibrate --choose-views`); it helps only on
films framed like those: for the bundled networks the identity with a 1.12 zoom is 0.07 months
better on held-out thumbnails but 0.16 worse on full-resolution films (docs/model.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# (rotation degrees, scale, shift x, shift y as fractions of the size); the first is identity
DEFAULT_TTA: tuple[tuple[float, float, float, float], ...] = (
    (0, 1.0, 0, 0), (-6, 1.0, 0, 0), (6, 1.0, 0, 0), (0, 0.94, 0, 0), (0, 1.06, 0, 0),
    (0, 1.0, 0.03, 0), (0, 1.0, -0.03, 0), (0, 1.0, 0, 0.03),
)
# offered besides the default views when calibration chooses the estimate's views
EXTRA_CANDIDATES: tuple[tuple[float, float, float, float], ...] = (
    (0, 1.12, 0, 0), (0, 1.18, 0, 0), (0, 1.24, 0, 0))
CANDIDATE_VIEWS = DEFAULT_TTA + EXTRA_CANDIDATES  # what calibration makes to choose among
MAX_ESTIMATE_VIEWS = 3
MIN_GAIN = 0.01  # months of calibration-film MAE a further view must gain to be added


@dataclass(frozen=True)
class TTAPlan:
    """The views test-time augmentation makes (the first is the identity) and the indices of
    those the estimate averages (None: all). The spread, which scales the interval, is always
    taken over all the views."""

    views: tuple[tuple[float, float, float, float], ...] = DEFAULT_TTA
    estimate: tuple[int, ...] | None = None

    @property
    def estimate_views(self) -> list[int]:
        return list(range(len(self.views))) if self.estimate is None else list(self.estimate)

    def to_dict(self) -> dict[str, Any]:
        return {"views": [[float(x) for x in v] for v in self.views],
                "estimate": self.estimate_views}

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> TTAPlan:
        """The card's plan (the default views, all averaged, when it has none); a hand-edited
        plan that makes no sense is a one-line error at load, not a wrong answer later."""
        from boneage.errors import BoneAgeError

        spec = card.get("tta")
        if spec is None:
            return cls()
        try:
            views = tuple(tuple(float(x) for x in v) for v in spec["views"])
            est = tuple(int(i) for i in spec["estimate"])
            if not 1 <= len(views) <= 32 or any(len(v) != 4 for v in views):
                raise ValueError("1 to 32 views of [degrees, scale, shift x, shift y]")
            if views[0] != (0.0, 1.0, 0.0, 0.0):
                raise ValueError("the first view must be the identity [0, 1, 0, 0]")
            for deg, scale, tx, ty in views:
                if not (abs(deg) <= 45 and 0.5 <= scale <= 2 and abs(tx) <= 0.25
                        and abs(ty) <= 0.25):
                    raise ValueError("a view beyond 45 degrees, a 0.5-2 scale or a 0.25 shift")
            if not est or len(set(est)) != len(est) or not all(0 <= i < len(views) for i in est):
                raise ValueError("'estimate' must list distinct indices of its views")
        except (TypeError, ValueError, KeyError) as e:
            raise BoneAgeError(f"unusable 'tta' plan in the model card ({e})") from None
        return cls(views, est)


def choose_estimate_views(y: np.ndarray, preds: np.ndarray, max_views: int = MAX_ESTIMATE_VIEWS,
                          min_gain: float = MIN_GAIN) -> tuple[int, ...]:
    """Indices of the views (columns of `preds`, the identity first) whose mean estimates the
    calibration films `y` best: greedily from the identity, a view at a time while one lowers
    the MAE by at least `min_gain` months."""
    y, preds = np.asarray(y, float), np.asarray(preds, float)
    chosen = [0]

    def mae(idx: list[int]) -> float:
        return float(np.mean(np.abs(preds[:, idx].mean(axis=1) - y)))

    while len(chosen) < max_views:
        rest = [v for v in range(preds.shape[1]) if v not in chosen]
        if not rest:
            break
        best = min(rest, key=lambda v: mae(chosen + [v]))
        if mae(chosen) - mae(chosen + [best]) < min_gain:
            break
        chosen.append(best)
    return tuple(chosen)


def choose_plan(y: np.ndarray, preds: np.ndarray) -> tuple[TTAPlan, list[int]]:
    """The plan chosen on calibration films from their predictions over CANDIDATE_VIEWS (the
    columns of `preds`), and which of those columns it keeps: the default views (their spread
    scales the interval) and the extra views its estimate uses."""
    chosen = choose_estimate_views(y, preds)
    keep = list(range(len(DEFAULT_TTA))) + [i for i in chosen if i >= len(DEFAULT_TTA)]
    return (TTAPlan(tuple(CANDIDATE_VIEWS[i] for i in keep), tuple(keep.index(i) for i in chosen)),
            keep)


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
