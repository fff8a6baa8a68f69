from __future__ import annotations

import pytest

from boneage.inference.reference import compare_ages, mean_curve, reference, sd_for_age


def test_table_has_source_and_both_sexes():
    ref = reference()
    assert "Greulich" in ref["source"] and "Brush" in ref["source"]
    assert len(ref["male"]) == 24 and len(ref["female"]) == 23
    ages, means, sds = mean_curve(male=False)
    assert (ages[1:] > ages[:-1]).all() and (sds > 0).all()
    assert abs(means - ages).max() < 12  # mean skeletal age tracks chronological age


def test_sd_values_and_interpolation():
    assert sd_for_age(120, male=True) == (pytest.approx(9.79), True)
    assert sd_for_age(120, male=False) == (pytest.approx(11.73), True)
    mid, _ = sd_for_age(126, male=True)  # halfway between 120 (9.79) and 132 (10.09)
    assert mid == pytest.approx((9.79 + 10.09) / 2)
    sd, inside = sd_for_age(230, male=False)
    assert sd == pytest.approx(7.31) and inside is False


def test_sds_and_categories():
    c = compare_ages(bone_age_months=140, chronological_months=120, male=True)
    assert c.difference_months == 20 and c.sds == pytest.approx(20 / 9.79, abs=0.01)
    assert c.category == "advanced"
    assert compare_ages(100, 120, male=True).category == "delayed"
    assert compare_ages(125, 120, male=False).category == "normal"
