"""Growth beside the bone age: the child's height as an SDS, and the target height the parents'
heights give (mid-parental height and its range), from `rcpchgrowth`, the Royal College of
Paediatrics and Child Health's library behind the NHS digital growth charts (UK-WHO by
default, CDC as an option; the reference is named on every output). Nothing here re-implements
its LMS tables or formulas.

`rcpchgrowth` is licensed AGPL-3.0-or-later: it is an optional extra (`.[growth]`), never
imported where no height is given.

Adult height prediction (Bayley-Pinneau) needs the published tables of percentages of adult
height by bone age, sex and tempo; no two independent public reproductions of them could be
checked, so no table is shipped and the prediction is null, with a one-line reason
(docs/growth.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from boneage.errors import BoneAgeError, install_hint

REFERENCES = {"uk-who": "UK-WHO (RCPCH)", "cdc": "CDC 2000"}
CHILD_CM = (40.0, 220.0)  # a child's height, birth to adult
PARENT_CM = (120.0, 230.0)
NO_PREDICTION = ("no predicted adult height: the Bayley-Pinneau tables are not shipped (no two "
                 "independent public reproductions could be checked; docs/growth.md)")


def check_height(value: Any, what: str = "height", adult: bool = False) -> float | None:
    """A height in centimetres, or None when not given; one clear line for metres, inches
    and absurd values."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        cm = float(value)
    except (TypeError, ValueError):
        raise BoneAgeError(f"{what} must be a number of centimetres, got {value!r}") from None
    lo, hi = PARENT_CM if adult else CHILD_CM
    if not math.isfinite(cm) or cm <= 0:
        raise BoneAgeError(f"{what} must be a positive number of centimetres, got {value!r}")
    if cm < 3:
        raise BoneAgeError(f"{what} {cm:g} looks like metres: give centimetres ({cm * 100:g})")
    if not lo <= cm <= hi:
        raise BoneAgeError(f"{what} {cm:g} cm is outside {lo:g}-{hi:g} cm: give centimetres "
                           "(inches x 2.54)")
    return cm


def check_reference(name: str) -> str:
    if name not in REFERENCES:
        raise BoneAgeError(f"unknown growth reference {name!r} (use {' or '.join(REFERENCES)})")
    return name


@dataclass
class Heights:
    """What was measured: the child's height and the parents' (cm), each optional."""

    height_cm: float | None = None
    mother_cm: float | None = None
    father_cm: float | None = None

    @classmethod
    def checked(cls, height: Any = None, mother: Any = None, father: Any = None) -> Heights:
        h = cls(check_height(height), check_height(mother, "mother's height", adult=True),
                check_height(father, "father's height", adult=True))
        if (h.mother_cm is None) != (h.father_cm is None):
            given = "father's" if h.mother_cm is None else "mother's"
            raise BoneAgeError(f"a {given} height without the other parent's: the target "
                               "height needs both parents' heights")
        if h:
            _rcpch()  # a missing extra is said before any work
        return h

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.height_cm, self.mother_cm, self.father_cm))


@dataclass
class Growth:
    height_sds: float | None = None
    target_height_cm: float | None = None
    target_height_low_cm: float | None = None
    target_height_high_cm: float | None = None
    predicted_adult_height_cm: float | None = None
    growth_reference: str | None = None
    warnings: list[str] = field(default_factory=list)


def _rcpch():
    try:
        import rcpchgrowth
    except ImportError:
        raise BoneAgeError(f"heights need the growth extra: {install_hint('growth')}") from None
    return rcpchgrowth


def growth(heights: Heights, male: bool, chronological_months: float | None,
           reference: str = "uk-who") -> Growth:
    """Height SDS (needs the chronological age) and the mid-parental target with its range
    (needs both parents), from rcpchgrowth; an input outside what the reference covers is a
    warning, never a number it would have to extrapolate."""
    g = Growth()
    if not heights:
        return g
    rc = _rcpch()
    sex = "male" if male else "female"
    g.growth_reference = REFERENCES[check_reference(reference)]
    if heights.height_cm is not None:
        if chronological_months is None:
            g.warnings.append("height given without a chronological age: no height SDS")
        else:
            try:
                g.height_sds = round(float(rc.sds_for_measurement(
                    reference, chronological_months / 12, "height", heights.height_cm, sex)), 2)
            except (LookupError, ValueError) as e:
                g.warnings.append(f"no height SDS ({str(e)[:120]})")
        g.warnings.append(NO_PREDICTION)
    if heights.mother_cm is not None:
        try:
            g.target_height_cm = round(float(rc.mid_parental_height(
                heights.mother_cm, heights.father_cm, sex)), 1)
            z = rc.mid_parental_height_z(heights.mother_cm, heights.father_cm, reference)
            lo, hi = rc.lower_and_upper_limits_of_expected_height_z(z)
            adult = 19.0 if reference == "who" else 20.0
            g.target_height_low_cm, g.target_height_high_cm = (
                round(float(rc.measurement_from_sds(reference, s, "height", sex, adult)), 1)
                for s in (lo, hi))
        except (LookupError, ValueError) as e:
            g.warnings.append(f"no target height ({str(e)[:120]})")
    return g


def height_centiles(male: bool, reference: str = "uk-who", sds: tuple[float, ...] = (-2, 0, 2),
                    ages_years: tuple[float, float] = (2.0, 18.0)) -> dict[float, list[tuple]]:
    """The reference's height curves (cm) at the given SDS, over an age range (years), for the
    height chart of a follow-up: {sds: [(age, cm), ...]}, from rcpchgrowth."""
    rc = _rcpch()
    sex = "male" if male else "female"
    out: dict[float, list[tuple]] = {}
    steps = int((ages_years[1] - ages_years[0]) * 4) + 1
    for z in sds:
        pts = []
        for k in range(steps):
            age = ages_years[0] + k * 0.25
            try:
                pts.append((age, float(rc.measurement_from_sds(reference, z, "height", sex, age))))
            except (LookupError, ValueError):
                continue
        out[z] = pts
    return out
