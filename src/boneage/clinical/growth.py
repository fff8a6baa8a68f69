"""Growth beside the bone age: the child's height as an SDS, and the target height the parents'
heights give (mid-parental height and its range), from `rcpchgrowth`, the Royal College of
Paediatrics and Child Health's library behind the NHS digital growth charts (UK-WHO by
default, CDC as an option; the reference is named on every output). Nothing here re-implements
its LMS tables or formulas.

`rcpchgrowth` is licensed AGPL-3.0-or-later: it is an optional extra (`.[growth]`), never
imported where no height is given.

The child's weight (kg) is checked here too: the Roche-Wainer-Thissen adult height needs it
(clinical/adult_height.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from boneage.errors import BoneAgeError, install_hint

REFERENCES = {"uk-who": "UK-WHO", "cdc": "CDC 2000"}
CHILD_CM = (40.0, 220.0)  # a child's height, birth to adult
PARENT_CM = (120.0, 230.0)
CHILD_KG = (1.0, 200.0)  # a child's weight, birth to adult
TARGET_RANGE_NOTE = ("target range: the mid-parental height SDS +/-1.4 SD of adult height on "
                     "the growth reference (rcpchgrowth's convention; near the +/-8.5 cm of "
                     "Tanner et al. 1970 that many clinicians use)")


def _positive(value: Any, what: str, unit: str) -> float | None:
    """A positive finite number, or None when not given; one line naming the unit otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BoneAgeError(f"{what} must be a number of {unit}, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise BoneAgeError(f"{what} must be a positive number of {unit}, got {value!r}")
    return x


def check_height(value: Any, what: str = "height", adult: bool = False) -> float | None:
    """A height in centimetres, or None when not given; one clear line for metres, inches
    and absurd values."""
    cm = _positive(value, what, "centimetres")
    if cm is None:
        return None
    lo, hi = PARENT_CM if adult else CHILD_CM
    if cm < 3:
        raise BoneAgeError(f"{what} {cm:g} looks like metres: give centimetres ({cm * 100:g})")
    if not lo <= cm <= hi:
        raise BoneAgeError(f"{what} {cm:g} cm is outside {lo:g}-{hi:g} cm: give centimetres "
                           "(inches x 2.54)")
    return cm


def check_weight(value: Any, what: str = "weight") -> float | None:
    """A weight in kilograms, or None when not given; one clear line for grams, pounds and
    absurd values."""
    kg = _positive(value, what, "kilograms")
    if kg is None:
        return None
    lo, hi = CHILD_KG
    if kg > 1000:
        raise BoneAgeError(f"{what} {kg:g} looks like grams: give kilograms ({kg / 1000:g})")
    if not lo <= kg <= hi:
        raise BoneAgeError(f"{what} {kg:g} kg is outside {lo:g}-{hi:g} kg: give kilograms "
                           "(pounds x 0.4536)")
    return kg


def check_reference(name: str) -> str:
    if name not in REFERENCES:
        raise BoneAgeError(f"unknown growth reference {name!r} (use {' or '.join(REFERENCES)})")
    return name


@dataclass
class Heights:
    """What was measured: the child's height and the parents' (cm) and the child's weight (kg),
    each optional."""

    height_cm: float | None = None
    mother_cm: float | None = None
    father_cm: float | None = None
    weight_kg: float | None = None

    @classmethod
    def checked(cls, height: Any = None, mother: Any = None, father: Any = None,
                weight: Any = None) -> Heights:
        h = cls(check_height(height), check_height(mother, "mother's height", adult=True),
                check_height(father, "father's height", adult=True), check_weight(weight))
        if (h.mother_cm is None) != (h.father_cm is None):
            given = "father's" if h.mother_cm is None else "mother's"
            raise BoneAgeError(f"a {given} height without the other parent's: the target "
                               "height needs both parents' heights")
        if h:
            _rcpch()  # a missing extra is said before any work
        return h

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.height_cm, self.mother_cm, self.father_cm,
                                           self.weight_kg))


@dataclass
class Growth:
    height_sds: float | None = None
    target_height_cm: float | None = None
    target_height_low_cm: float | None = None
    target_height_high_cm: float | None = None
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


# the UK-WHO chart's nine centile lines (0.4th to 99.6th), as SDS: -8/3 .. +8/3 in 2/3 steps
CENTILE_SDS = tuple(round(k * 2 / 3, 4) for k in range(-4, 5))
CENTILE_NAMES = ("0.4th", "2nd", "9th", "25th", "50th", "75th", "91st", "98th", "99.6th")


def height_centiles(male: bool, reference: str = "uk-who", sds: tuple[float, ...] = CENTILE_SDS,
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
