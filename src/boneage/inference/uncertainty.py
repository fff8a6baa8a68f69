"""Uncertainty: test-time augmentation gives a spread per film; split-conformal calibration on
labelled films turns it into a 90% prediction interval.

Calibration (normalised split-conformal): on calibration films with true age y, TTA mean m and
TTA spread s, the scores |y - m| / (s + eps) are ranked and q is their ceil((n + 1) 0.9)-th
smallest. The interval for a new film is m +/- q (s + eps): wider where the augmented views
disagree. Exchangeable films are then covered 90% of the time. The calibration is stored in the
model card and needs only numpy at inference.

By age band (`bands`, Mondrian conformal; issue #41): the films are grouped by sex (where
given) and by the band their *estimate* falls in (under 2, 2-6, 6-10, 10-14, over 14 years;
a band with fewer than MIN_BAND_FILMS calibration films joins its older neighbour) and each
group gets its own q and its own centre (the median of (y - m) / (s + eps) there: the
model's bias at that age, which the interval then follows). The estimate is a function of
the film, so the 90% holds within each group, not only on average over ages and sexes.

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


BAND_EDGES = (24.0, 72.0, 120.0, 168.0)  # months: under 2, 2-6, 6-10, 10-14, over 14 years
BAND_NAMES = ("0-2 y", "2-6 y", "6-10 y", "10-14 y", "14-20 y")
MIN_BAND_FILMS = 30


def band_index(months: np.ndarray, edges: tuple[float, ...] = BAND_EDGES) -> np.ndarray:
    """The age band (0 = youngest) of each value in months."""
    return np.searchsorted(np.asarray(edges, float), np.asarray(months, float), side="right")


def _merged_bands(estimates: np.ndarray) -> list[list[int]]:
    """The bands as groups of band indices: one with too few calibration films joins its older
    neighbour (the oldest joins its younger one)."""
    counts = np.bincount(band_index(estimates), minlength=len(BAND_NAMES))
    groups: list[list[int]] = []
    pending: list[int] = []
    for b in range(len(counts)):
        pending.append(b)
        if sum(counts[pending]) >= MIN_BAND_FILMS:
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1] += pending
        else:
            groups.append(pending)
    return groups


def _groups(mean: np.ndarray, male: np.ndarray | None) -> list[tuple[str | None, list[int]]]:
    """(sex or None, merged bands) for every calibration group: by band of the estimate,
    within each sex where the sexes are given."""
    if male is None:
        return [(None, g) for g in _merged_bands(mean)]
    return [(sex, g) for sex, k in (("M", male), ("F", ~male)) for g in _merged_bands(mean[k])]


def _members(mean: np.ndarray, male: np.ndarray | None, sex: str | None,
             group: list[int], edges: tuple[float, ...] = BAND_EDGES) -> np.ndarray:
    k = np.isin(band_index(mean, edges), group)
    if sex is not None and male is not None:
        k &= male if sex == "M" else ~male
    return k


def _conformal(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, coverage: float,
               bands: bool = False, male: np.ndarray | None = None) -> dict[str, Any]:
    eps = max(float(np.median(spread)), 0.5)
    scale = spread + eps
    out: dict[str, Any] = {"eps": round(eps, 4)}
    if not bands:
        out["q"] = round(conformal_quantile(np.abs(y - mean) / scale, coverage), 4)
        half = out["q"] * scale
        lo, hi = mean - half, mean + half
    else:
        rows = []
        for sex, group in _groups(mean, male):
            k = _members(mean, male, sex, group)
            r = (y[k] - mean[k]) / scale[k]
            shift = float(np.median(r))
            rows.append({"bands": [BAND_NAMES[b] for b in group], "n": int(k.sum()),
                         "shift": round(shift, 4),
                         "q": round(conformal_quantile(np.abs(r - shift), coverage), 4)}
                        | ({"sex": sex} if sex else {}))
        out["q"] = max(r["q"] + abs(r["shift"]) for r in rows)  # a bound, for older readers
        out["bands"] = {"by": "estimate" + (" and sex" if male is not None else ""),
                        "edges_months": list(BAND_EDGES), "rows": rows}
        lo, hi = _banded(mean, spread, out, male)
    out["calibration_coverage"] = round(float(np.mean((lo <= y) & (y <= hi))), 4)
    out["calibration_mean_width"] = round(float(np.mean(hi - lo)), 2)
    return out


def _banded(mean: np.ndarray, spread: np.ndarray, c: dict[str, Any],
            male: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The interval of a calibration by band (and sex, where it has rows per sex)."""
    edges = tuple(c["bands"]["edges_months"])
    scale = np.asarray(spread, float) + c["eps"]
    lo, hi = np.full(len(mean), np.nan), np.full(len(mean), np.nan)
    for row in c["bands"]["rows"]:
        sex = row.get("sex")
        if sex is not None and male is None:
            raise ValueError("this calibration is by sex: give each film's sex")
        k = _members(mean, male, sex, [BAND_NAMES.index(b) for b in row["bands"]], edges)
        lo[k] = mean[k] + (row["shift"] - row["q"]) * scale[k]
        hi[k] = mean[k] + (row["shift"] + row["q"]) * scale[k]
    return lo, hi


def calibrate(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, single: np.ndarray | None = None,
              coverage: float = 0.9, n_views: int = len(DEFAULT_TTA), bands: bool = False,
              male: np.ndarray | None = None) -> dict[str, Any]:
    """The card's `calibration` entry, with the coverage and width it reaches on these films;
    `bands`: a q and a centre per age band of the estimate (Mondrian, above), within each sex
    where `male` is given.

    `single` (the unaugmented view's predictions) adds a constant-width interval for
    predictions made without TTA (faster, no spread to scale by)."""
    y, mean, spread = (np.asarray(a, float) for a in (y, mean, spread))
    male = None if male is None or not bands else np.asarray(male, bool)
    method = "split-conformal, |error| / (TTA spread + eps)" + (
        ", by age band of the estimate" + (" and sex" if male is not None else "")
        + " (Mondrian), centred on each group's median" if bands else "")
    cal: dict[str, Any] = {"method": method, "coverage": coverage, "tta_views": n_views,
                           "n": int(len(y)), **_conformal(y, mean, spread, coverage, bands, male)}
    if single is not None:
        cal["single"] = _conformal(y, np.asarray(single, float), np.zeros(len(y)), coverage,
                                   bands, male)
    return cal


def interval(mean: np.ndarray, spread: np.ndarray, cal: dict[str, Any], tta: bool = True,
             male: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated interval; without TTA the constant-width one (see `has_interval`);
    `male` (one per film) for a calibration by sex."""
    c = cal if tta else cal["single"]
    mean = np.asarray(mean, float)
    if "bands" not in c:
        half = c["q"] * (np.asarray(spread, float) + c["eps"])
        return np.clip(mean - half, 0, None), mean + half
    lo, hi = _banded(mean, spread, c, None if male is None else np.asarray(male, bool))
    return np.clip(lo, 0, None), hi


def has_interval(cal: dict[str, Any] | None, tta: bool) -> bool:
    return bool(cal) and (tta or "single" in cal)
