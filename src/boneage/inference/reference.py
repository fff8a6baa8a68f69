"""Bone age against chronological age: the Greulich & Pyle / Brush Foundation standard
deviations by sex and age (package data, `reference/greulich_pyle_brush.json`, with its source).

SDS = (bone age - chronological age) / SD(chronological age, sex), the SD linearly interpolated
between the table's ages; |SDS| > 2 is delayed or advanced, as G&P's normal range."""

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
    """(chronological ages, mean skeletal ages, SDs) in months, for growth charts."""
    rows = np.array(reference()["male" if male else "female"], float)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def compare_ages(bone_age_months: float, chronological_months: float, male: bool) -> Comparison:
    sd, inside = sd_for_age(chronological_months, male)
    diff = bone_age_months - chronological_months
    z = diff / sd
    category = "delayed" if z < -2 else "advanced" if z > 2 else "normal"
    return Comparison(round(diff, 2), round(sd, 2), round(z, 2), category, inside)
