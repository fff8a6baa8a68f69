"""Bone age against chronological age: the Greulich & Pyle / Brush Foundation standard
deviations by sex and age (package data, `reference/greulich_pyle_brush.json`, with its source).

SDS = (bone age - chronological age) / SD(chronological age, sex), the SD linearly interpolated
between the table's ages; beyond -2 is delayed, beyond +2 advanced, as G&P's normal range.

A category respects the estimate's 90% interval (`categorise`): delayed or advanced only when
the whole interval lies beyond the -2 or +2 SD line, normal only when it lies within; otherwise
"indeterminate", with the reason in one plain line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE = Path(__file__).resolve().parents[1] / "reference" / "greulich_pyle_brush.json"


@lru_cache(maxsize=1)
def reference() -> dict:
    return json.loads(TABLE.read_text())


@dataclass(frozen=True)
class Comparison:
    difference_months: float
    sd_months: float
    sds: float
    category: str  # delayed | normal | advanced
    in_range: bool  # the chronological age lies within the table's ages


def sd_for_age(chronological_months: float, male: bool) -> tuple[float, bool]:
    """(interpolated SD in months, whether the age lies within the table)."""
    rows = np.array(reference()["male" if male else "female"], float)
    ages, sds = rows[:, 0], rows[:, 2]
    inside = bool(ages[0] <= chronological_months <= ages[-1])
    return float(np.interp(chronological_months, ages, sds)), inside


def reference_range(male: bool) -> tuple[float, float]:
    """(first, last) chronological age in months that the table covers for this sex."""
    rows = reference()["male" if male else "female"]
    return float(rows[0][0]), float(rows[-1][0])


def mean_curve(male: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chronological ages, mean skeletal ages, SDs) in months, for the bone age chart."""
    rows = np.array(reference()["male" if male else "female"], float)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def compare_ages(bone_age_months: float, chronological_months: float, male: bool) -> Comparison:
    sd, inside = sd_for_age(chronological_months, male)
    diff = bone_age_months - chronological_months
    z = diff / sd
    category = "delayed" if z < -2 else "advanced" if z > 2 else "normal"
    return Comparison(round(diff, 2), round(sd, 2), round(z, 2), category, inside)


INDETERMINATE = "indeterminate"
CATEGORIES = ("delayed", "normal", "advanced", INDETERMINATE)


def categorise(bone_age_months: float, low: float | None, high: float | None,
               chronological_months: float, male: bool) -> tuple[str, str | None]:
    """(category, reason) from the whole 90% interval [low, high]; without an interval the
    point estimate's category, said to be such. The reason is None when the category holds
    over the whole interval."""
    sd, _ = sd_for_age(chronological_months, male)
    point = compare_ages(bone_age_months, chronological_months, male).category
    if low is None or high is None:
        return point, "no 90% interval: the category is the estimate's alone"
    z_lo, z_hi = ((low - chronological_months) / sd, (high - chronological_months) / sd)
    if z_hi < -2:
        return "delayed", None
    if z_lo > 2:
        return "advanced", None
    if z_lo >= -2 and z_hi <= 2:
        return "normal", None
    span = f"the 90% interval {low:.0f}-{high:.0f} months"
    if low <= chronological_months <= high and point != "normal":
        why = f"{span} contains the chronological age ({chronological_months:.0f} months)"
    else:
        lines = [f"the {s} SD line ({line:.0f} months)" for s, line in
                 (("-2", chronological_months - 2 * sd), ("+2", chronological_months + 2 * sd))
                 if low <= line <= high]
        why = f"{span} crosses " + " and ".join(lines)
    return INDETERMINATE, f"category indeterminate: {why}"
