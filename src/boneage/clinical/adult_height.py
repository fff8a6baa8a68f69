"""Adult height predicted from the bone age, the endocrinologist's third question.

Two published methods, each from its own table shipped as package data (`reference/`, sources
in its README):

- **Bayley-Pinneau** (J Pediatr 1952;40:423): adult height = present height / (per cent of
  adult height reached at this bone age / 100), the percentage from the table of the child's
  tempo: average (bone age within a year of the chronological age), accelerated (a year or
  more ahead) or retarded (a year or more behind). Between the table's rows (3 months apart;
  4 or 2 months at the girls' 6-10, 7-10, 8-10) the percentage is linearly interpolated.
  Outside a table's range there is no prediction (boys retarded stop at bone age 13-0).
- **Roche-Wainer-Thissen** (Pediatrics 1975;56:1026): stature at 18 from recumbent length,
  weight, mid-parent stature and bone age with quarterly coefficients by chronological age
  (boys 1-16 y, girls 1-14 y), linearly interpolated between quarters. A standing height is
  made a recumbent length by adding 1.25 cm, as the paper says.

The interval of each prediction carries two errors (docs/growth.md "Adult height"):
1. this bone age's own 90% interval: every bone age inside it is run through the method (it
   moves the table row, and can move the tempo category and so the table); the spread of the
   answers is this film's share;
2. the method's own error: a 90% half-width from the published error of height prediction
   (see `method_half_width_cm`), combined with the first in quadrature on each side.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "reference"
BP_TABLE = DATA / "bayley_pinneau_1952.csv"
RWT_TABLE = DATA / "rwt_1975.csv"
BAYLEY_PINNEAU = "Bayley-Pinneau"
RWT = "Roche-Wainer-Thissen"
STANDING_TO_RECUMBENT_CM = 1.25  # RWT 1975: length = stature + 1.25 cm
Z90 = 1.645
GRID = 49  # bone ages sampled across the bone age's interval


@dataclass(frozen=True)
class AdultHeight:
    """One method's prediction: the point, its 90% interval, how it was read, or why none."""

    method: str
    cm: float | None = None
    low_cm: float | None = None
    high_cm: float | None = None
    detail: str | None = None  # e.g. "average girls' table IIIA: 86.2% of adult height"
    reason: str | None = None  # a plain line: why there is no prediction


def ym(months: float) -> str:
    """120 -> '10-0', the tables' way of writing a bone age (years-months)."""
    y, m = divmod(int(round(months)), 12)
    return f"{y}-{m}"


@lru_cache(maxsize=1)
def bp_tables() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]:
    """(sex, category) -> (bone ages in months, percentages, the paper's table names)."""
    rows: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    with open(BP_TABLE, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.setdefault((r["sex"], r["category"]), []).append(
                (float(r["bone_age_months"]), float(r["percent_of_adult_height"]), r["table"]))
    out = {}
    for key, values in rows.items():
        values.sort()
        ages, pct, tables = zip(*values, strict=True)
        out[key] = (np.array(ages), np.array(pct), tables)
    return out


def bp_category(bone_age_months: float, chronological_months: float) -> str:
    """The paper's tempo rule: a year or more ahead accelerated, behind retarded."""
    diff = bone_age_months - chronological_months
    return "accelerated" if diff >= 12 else "retarded" if diff <= -12 else "average"


def bp_percentage(male: bool, category: str, bone_age_months: float
                  ) -> tuple[float, str] | tuple[None, str]:
    """(per cent of adult height, the table's name), or (None, why) outside its range."""
    sex = "male" if male else "female"
    ages, pct, tables = bp_tables()[(sex, category)]
    if not ages[0] <= bone_age_months <= ages[-1]:
        who = "boys" if male else "girls"
        return None, (f"the Bayley-Pinneau table for {category} {who} covers bone ages "
                      f"{ym(ages[0])} to {ym(ages[-1])} (years-months); this bone age is "
                      f"{ym(bone_age_months)}")
    k = int(np.searchsorted(ages, bone_age_months, side="right")) - 1
    return float(np.interp(bone_age_months, ages, pct)), tables[min(k, len(tables) - 1)]


def bp_point(height_cm: float, male: bool, bone_age_months: float,
             chronological_months: float) -> tuple[float | None, str]:
    category = bp_category(bone_age_months, chronological_months)
    pct, what = bp_percentage(male, category, bone_age_months)
    if pct is None:
        return None, what
    return height_cm / (pct / 100), f"{category} {'boys' if male else 'girls'}' table " \
                                    f"{what}: {pct:.2f}% of adult height"


@lru_cache(maxsize=1)
def rwt_table() -> dict[str, np.ndarray]:
    """sex -> rows of (age in years, length, weight, mid-parent, bone age, intercept)."""
    rows: dict[str, list[list[float]]] = {"male": [], "female": []}
    with open(RWT_TABLE, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows[r["sex"]].append([float(r[c]) for c in (
                "age_years", "beta_length", "beta_weight", "beta_midparent", "beta_bone_age",
                "intercept")])
    return {k: np.array(sorted(v)) for k, v in rows.items()}


def rwt_coefficients(male: bool, age_years: float) -> np.ndarray | None:
    """(length, weight, mid-parent, bone age, intercept) at this age, linearly interpolated
    between the paper's quarters; None outside its ages."""
    t = rwt_table()["male" if male else "female"]
    if not t[0, 0] <= age_years <= t[-1, 0]:
        return None
    return np.array([np.interp(age_years, t[:, 0], t[:, j]) for j in range(1, 6)])


def rwt_point(recumbent_cm: float, weight_kg: float, midparent_cm: float, bone_age_years: float,
              male: bool, age_years: float) -> float | None:
    """Stature at 18 (cm) by RWT; `midparent_cm` is the plain mean of the parents' heights."""
    b = rwt_coefficients(male, age_years)
    if b is None:
        return None
    return float(b[0] * recumbent_cm + b[1] * weight_kg + b[2] * midparent_cm
                 + b[3] * bone_age_years + b[4])


def method_half_width_cm(male: bool, chronological_months: float) -> float:
    """The method's own 90% error half-width (cm). Neither the Bayley-Pinneau error tables
    (the paper's Tables IV and V) nor RWT's errors (printed as graphs) are in a checked copy
    here; the figure used is the published error of the Tanner-Whitehouse Mark II prediction
    (Tanner et al., Arch Dis Child 1983;58:767: 95% of predictions within +/-8 cm for boys of
    10 years falling to +/-6 cm at 15; girls within about +/-6 cm), converted to a 90% width.
    In the one study comparing the three on the same boys (Am J Hum Biol 1997;9:371), BP's and
    RWT's errors were larger than TW Mark II's, so this is a lower bound on their errors."""
    years = chronological_months / 12
    half95 = float(np.interp(years, [10.0, 15.0], [8.0, 6.0])) if male else 6.0
    return half95 / 1.96 * Z90


def _interval(point: float, spread: list[float], method_cm: float) -> tuple[float, float]:
    lo_film, hi_film = point - min(spread), max(spread) - point
    return (point - math.hypot(max(lo_film, 0.0), method_cm),
            point + math.hypot(max(hi_film, 0.0), method_cm))


def _grid(bone_age: float, low: float | None, high: float | None) -> list[float]:
    if low is None or high is None:
        return [bone_age]
    return [bone_age, *np.linspace(low, high, GRID).tolist()]


def bayley_pinneau(height_cm: float | None, male: bool, bone_age_months: float,
                   chronological_months: float | None, low: float | None = None,
                   high: float | None = None) -> AdultHeight:
    """The Bayley-Pinneau prediction with its interval; `low`/`high`: the bone age's 90%
    interval (months)."""
    if height_cm is None:
        return AdultHeight(BAYLEY_PINNEAU, reason="no Bayley-Pinneau prediction: it needs the "
                           "child's height")
    if chronological_months is None:
        return AdultHeight(BAYLEY_PINNEAU, reason="no Bayley-Pinneau prediction: it needs the "
                           "chronological age (it chooses the table)")
    point, detail = bp_point(height_cm, male, bone_age_months, chronological_months)
    if point is None:
        return AdultHeight(BAYLEY_PINNEAU, reason=f"no Bayley-Pinneau prediction: {detail}")
    spread = [p for p, _ in (bp_point(height_cm, male, b, chronological_months)
                             for b in _grid(bone_age_months, low, high)) if p is not None]
    lo, hi = _interval(point, spread, method_half_width_cm(male, chronological_months))
    part = ""
    if low is not None and len(spread) < GRID + 1:
        part = "; part of the bone age's interval lies beyond the tables and is left out"
    return AdultHeight(BAYLEY_PINNEAU, round(point, 1), round(lo, 1), round(hi, 1),
                       detail + part)


def roche_wainer_thissen(height_cm: float | None, weight_kg: float | None,
                         mother_cm: float | None, father_cm: float | None, male: bool,
                         bone_age_months: float, chronological_months: float | None,
                         low: float | None = None, high: float | None = None) -> AdultHeight:
    """The RWT prediction (stature at 18) with its interval, where the weight and both
    parents' heights are given; the child's height is taken as standing from 2 years of age
    (made a recumbent length by +1.25 cm) and as a length below."""
    missing = [what for what, v in (("the child's height", height_cm), ("the weight", weight_kg),
                                    ("both parents' heights", mother_cm),
                                    ("the chronological age", chronological_months))
               if v is None]
    if missing:
        return AdultHeight(RWT, reason="no Roche-Wainer-Thissen prediction: it needs "
                           + " and ".join(missing))
    years = chronological_months / 12
    t = rwt_table()["male" if male else "female"]
    if rwt_coefficients(male, years) is None:
        who = "boys" if male else "girls"
        return AdultHeight(RWT, reason=f"no Roche-Wainer-Thissen prediction: its coefficients "
                           f"cover {who} aged {t[0, 0]:g} to {t[-1, 0]:g} years")
    length = height_cm + (STANDING_TO_RECUMBENT_CM if chronological_months >= 24 else 0.0)
    midparent = (mother_cm + father_cm) / 2

    def at(ba: float) -> float:
        return rwt_point(length, weight_kg, midparent, ba / 12, male, years)

    point = at(bone_age_months)
    spread = [at(b) for b in _grid(bone_age_months, low, high)]
    lo, hi = _interval(point, spread, method_half_width_cm(male, chronological_months))
    return AdultHeight(RWT, round(point, 1), round(lo, 1), round(hi, 1),
                       f"stature at 18 years; length {length:.1f} cm, mid-parent "
                       f"{midparent:.1f} cm")
