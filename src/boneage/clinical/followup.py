"""Follow-up across visits: the films of one child (one identifier, each with its study date)
read as a series. Per visit the bone age, its SDS and category, the chronological age, the
height, the target height and the adult height predictions; between visits the change in bone
age per year of chronological age, with its 90% interval from the two estimates' intervals (each
interval's half-width / 1.645 as its SD, the two combined), read as a tempo only where that
interval leaves out 1.0 (keeping pace), and the height velocity. A child with one visit is no
series."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from boneage.errors import BoneAgeError

Z90 = 1.645


@dataclass
class Visit:
    identifier: str
    study_date: str  # ISO
    file: str
    sex: str
    chronological_age_months: float | None
    bone_age_months: float
    interval_low_months: float | None
    interval_high_months: float | None
    height_cm: float | None = None
    height_sds: float | None = None
    sds: float | None = None  # bone age SDS
    category: str | None = None
    target_height_cm: float | None = None
    target_height_low_cm: float | None = None
    target_height_high_cm: float | None = None
    predicted_adult_height_cm: float | None = None  # Bayley-Pinneau
    predicted_adult_height_low_cm: float | None = None
    predicted_adult_height_high_cm: float | None = None
    rwt_adult_height_cm: float | None = None  # Roche-Wainer-Thissen
    rwt_adult_height_low_cm: float | None = None
    rwt_adult_height_high_cm: float | None = None


KEEPING_PACE = "not distinguishable from keeping pace (its 90% interval contains 1.0)"


@dataclass
class Step:
    """From one visit to the next."""

    identifier: str
    from_date: str
    to_date: str
    years: float  # chronological time between the two
    bone_age_change_months: float
    bone_age_per_year: float  # years of bone age per year of age (1.0: keeping pace)
    bone_age_per_year_low: float | None = None
    bone_age_per_year_high: float | None = None
    tempo: str | None = None  # faster | slower than age, or KEEPING_PACE; None without interval
    height_velocity_cm_per_year: float | None = None


@dataclass
class Series:
    identifier: str
    visits: list[Visit]
    steps: list[Step] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per visit, with the step that led to it (the follow-up table)."""
        out = []
        for i, v in enumerate(self.visits):
            row = asdict(v)
            s = self.steps[i - 1] if i else None
            for key in ("years", "bone_age_change_months", "bone_age_per_year",
                        "bone_age_per_year_low", "bone_age_per_year_high", "tempo",
                        "height_velocity_cm_per_year"):
                row[f"since_last_{key}"] = getattr(s, key) if s else None
            out.append(row)
        return out


FOLLOWUP_COLUMNS = tuple(Series("", [Visit("", "", "", "", None, 0.0, None, None)]).rows()[0])


def _iso(value: Any, what: str) -> date:
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise BoneAgeError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def build_series(visits: list[Visit]) -> list[Series]:
    """Group visits by identifier (two or more visits make a series), in date order. Two
    visits of one child on the same date are an error, named."""
    groups: dict[str, list[Visit]] = defaultdict(list)
    for v in visits:
        groups[v.identifier].append(v)
    out = []
    for ident, vs in groups.items():
        if len(vs) < 2:
            continue
        vs.sort(key=lambda v: _iso(v.study_date, f"{ident}: study date"))
        for a, b in zip(vs, vs[1:], strict=False):
            if a.study_date == b.study_date:
                raise BoneAgeError(f"{ident}: two visits on {a.study_date} ({a.file}, {b.file}): "
                                   "a series needs one film per study date")
        series = Series(ident, vs)
        for a, b in zip(vs, vs[1:], strict=False):
            series.steps.append(step(a, b))
        out.append(series)
    return out


def step(a: Visit, b: Visit) -> Step:
    """The change from visit a to visit b."""
    if a.chronological_age_months is not None and b.chronological_age_months is not None:
        years = (b.chronological_age_months - a.chronological_age_months) / 12
    else:
        years = (_iso(b.study_date, "study date") - _iso(a.study_date, "study date")).days / 365.25
    if years <= 0:
        raise BoneAgeError(f"{a.identifier}: the chronological age at {b.study_date} is not after "
                           f"the one at {a.study_date}: check the ages and dates")
    change = b.bone_age_months - a.bone_age_months
    s = Step(a.identifier, a.study_date, b.study_date, round(years, 3), round(change, 1),
             round(change / 12 / years, 2))
    sds = [_sd(v) for v in (a, b)]
    if None not in sds:
        half = Z90 * math.sqrt(sds[0] ** 2 + sds[1] ** 2) / 12 / years
        s.bone_age_per_year_low = round(s.bone_age_per_year - half, 2)
        s.bone_age_per_year_high = round(s.bone_age_per_year + half, 2)
        s.tempo = (KEEPING_PACE if s.bone_age_per_year_low <= 1.0 <= s.bone_age_per_year_high
                   else "faster than age" if s.bone_age_per_year_low > 1.0 else "slower than age")
    if a.height_cm is not None and b.height_cm is not None:
        s.height_velocity_cm_per_year = round((b.height_cm - a.height_cm) / years, 1)
    return s


def _sd(v: Visit) -> float | None:
    if v.interval_low_months is None or v.interval_high_months is None:
        return None
    return (v.interval_high_months - v.interval_low_months) / 2 / Z90


def visit_of(result: Any, identifier: str, study_date: str) -> Visit:
    """A visit from a BoneAgeResult (inference/api.py)."""
    same = {f: getattr(result, f) for f in (
        "sds", "category", "target_height_cm", "target_height_low_cm", "target_height_high_cm",
        "predicted_adult_height_cm", "predicted_adult_height_low_cm",
        "predicted_adult_height_high_cm", "rwt_adult_height_cm", "rwt_adult_height_low_cm",
        "rwt_adult_height_high_cm")}
    return Visit(identifier, study_date, result.file, result.sex,
                 result.chronological_age_months, result.bone_age_months,
                 result.interval_low_months, result.interval_high_months, result.height_cm,
                 result.height_sds, **same)
