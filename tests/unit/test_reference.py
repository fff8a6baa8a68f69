from __future__ import annotations

import pytest

from boneage.clinical.reference import compare_ages, mean_curve, reference, sd_for_age


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


def test_range_and_curve_come_from_the_table():
    from boneage.clinical.reference import reference_range

    assert reference_range(male=True) == (3.0, 204.0)
    assert reference_range(male=False) == (3.0, 192.0)
    ages, means, sds = mean_curve(male=True)
    assert (ages[0], means[0], sds[0]) == (3.0, 3.01, 0.69)
    assert (ages[-1], means[-1], sds[-1]) == (204.0, 206.21, 13.05)


def test_table_ends_are_inside_and_beyond_them_outside():
    assert sd_for_age(3, male=True) == (pytest.approx(0.69), True)
    assert sd_for_age(204, male=True) == (pytest.approx(13.05), True)
    assert sd_for_age(2.9, male=True)[1] is False
    assert sd_for_age(204.1, male=True)[1] is False
    assert sd_for_age(192, male=False) == (pytest.approx(7.31), True)
    assert compare_ages(200, 230, male=False).in_range is False


def test_category_edges_by_hand():
    # at 120 months a boy's SD is 9.79: exactly 2 SD either way is still normal
    assert compare_ages(120 + 2 * 9.79, 120, male=True).category == "normal"
    assert compare_ages(120 - 2 * 9.79, 120, male=True).category == "normal"
    assert compare_ages(120 + 2 * 9.79 + 0.05, 120, male=True).category == "advanced"
    assert compare_ages(120 - 2 * 9.79 - 0.05, 120, male=True).category == "delayed"
    c = compare_ages(131.333, 120, male=False)  # girl, SD 11.73
    assert (c.difference_months, c.sd_months, c.sds) == (11.33, 11.73, 0.97)
    assert c.in_range is True


def test_category_edges_exactly(monkeypatch):
    # a table with an SD of exactly 4 months: 8 months ahead is SDS +2.0 (still normal)
    from boneage.clinical import reference as ref

    table = {"male": [[0, 0.0, 4.0], [240, 240.0, 4.0]],
             "female": [[0, 0.0, 4.123456], [240, 240.0, 4.123456]]}
    monkeypatch.setattr(ref, "reference", lambda: table)
    assert ref.compare_ages(108, 100, male=True).category == "normal"
    assert ref.compare_ages(92, 100, male=True).category == "normal"
    assert ref.compare_ages(109, 100, male=True).category == "advanced"
    assert ref.compare_ages(91, 100, male=True).category == "delayed"
    c = ref.compare_ages(110, 100, male=False)
    assert (c.sd_months, c.sds) == (4.12, 2.43)


def test_each_sex_has_its_own_curve():
    m_ages, m_means, m_sds = mean_curve(male=True)
    f_ages, f_means, f_sds = mean_curve(male=False)
    assert len(m_ages) == 24 and len(f_ages) == 23
    assert (f_ages[-1], f_means[-1], f_sds[-1]) == (192.0, 189.44, 7.31)
