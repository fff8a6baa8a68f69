from __future__ import annotations

import numpy as np
import pytest

from boneage.data.labels import LabelTable, Record
from boneage.data.splits import age_band, load_split, save_split, stratified_split
from boneage.errors import BoneAgeError


def _table(n=1000, seed=0) -> LabelTable:
    rng = np.random.default_rng(seed)
    return LabelTable([Record(str(i), None, bool(rng.integers(2)), float(rng.uniform(0, 228)))
                       for i in range(n)])


def test_age_bands():
    assert age_band(np.array([0, 23.9, 24, 71, 72, 200])).tolist() == [0, 0, 1, 1, 2, 4]


def test_stratified_and_reproducible(tmp_path):
    t = _table()
    a = stratified_split(t, 0.2, 0.1, seed=7)
    assert a == stratified_split(t, 0.2, 0.1, seed=7)
    assert a != stratified_split(t, 0.2, 0.1, seed=8)
    parts = np.array([a[i] for i in t.ids])
    assert abs((parts == "val").mean() - 0.2) < 0.02 and abs((parts == "test").mean() - 0.1) < 0.02
    strata = t.male.astype(int) * 10 + age_band(t.months)
    for s in np.unique(strata):  # every stratum is split in proportion
        sel = parts[strata == s]
        assert abs((sel == "val").mean() - 0.2) < 0.06
    save_split(a, tmp_path / "split.csv")
    assert load_split(tmp_path / "split.csv") == a


def test_bad_split_file(tmp_path):
    (tmp_path / "s.csv").write_text("id,split\n1,holdout\n")
    with pytest.raises(BoneAgeError, match="unknown split"):
        load_split(tmp_path / "s.csv")
    with pytest.raises(BoneAgeError):
        stratified_split(_table(), 0.6, 0.5)


def test_stratified_sample_is_exactly_n_with_the_proportions():
    from boneage.data.splits import stratified_sample

    rng = np.random.default_rng(3)
    ids = [str(i) for i in range(503)]
    table = LabelTable([Record(i, None, bool(rng.random() < 0.45), float(rng.uniform(0, 228)))
                        for i in ids])
    for n in (20, 40, 97, 250, 502):
        pick = stratified_sample(table, n, seed=1)
        assert len(pick) == len(set(pick)) == n
    pick = set(stratified_sample(table, 250, seed=1))
    male = np.array([i in pick for i in ids]) & table.male
    assert abs(male.sum() / 250 - table.male.mean()) < 0.02
    assert stratified_sample(table, 9999) == ids
