"""Reproducible train/validation/test splits, stratified by sex x age band, saved as CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from boneage.data.labels import LabelTable
from boneage.errors import BoneAgeError
from boneage.fileio import read_csv_dicts

AGE_BANDS_YEARS = (0, 2, 6, 10, 14, 20)
SPLITS = ("train", "val", "test")


def age_band(months: np.ndarray) -> np.ndarray:
    """Index of the age band (0-2, 2-6, 6-10, 10-14, 14-20 years) for each age in months."""
    edges = np.array(AGE_BANDS_YEARS[1:-1]) * 12.0
    return np.searchsorted(edges, np.asarray(months, float), side="right")


def band_labels() -> list[str]:
    b = AGE_BANDS_YEARS
    return [f"{b[i]}-{b[i + 1]} y" for i in range(len(b) - 1)]


def stratified_split(
    table: LabelTable, val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 42
) -> dict[str, str]:
    """Assign every id to train/val/test, keeping sex x age-band proportions in each part."""
    if not table.labelled:
        raise BoneAgeError("a stratified split needs bone ages for every row")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise BoneAgeError("split fractions must be in [0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    strata = table.male.astype(int) * 10 + age_band(table.months)
    ids = np.array(table.ids, dtype=object)
    out: dict[str, str] = {}
    for s in np.unique(strata):
        members = ids[strata == s]
        members = members[rng.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        for i, rid in enumerate(members):
            out[rid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return {rid: out[rid] for rid in table.ids}


def stratified_sample(table: LabelTable, n: int, seed: int = 42) -> list[str]:
    """Exactly n ids (all when n >= len(table)) with the table's sex x age-band proportions:
    each stratum gets its share rounded down, and the films left over go to the strata with
    the largest remainders (rounding each share on its own can miss n by a few)."""
    if n >= len(table):
        return list(table.ids)
    rng = np.random.default_rng(seed)
    strata = table.male.astype(int) * 10 + age_band(table.months)
    ids = np.array(table.ids, dtype=object)
    groups = [ids[strata == s][rng.permutation(int(np.sum(strata == s)))]
              for s in np.unique(strata)]
    quota = np.array([n * len(g) / len(ids) for g in groups])
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    chosen = {rid for g, k in zip(groups, take, strict=True) for rid in g[:k]}
    return [rid for rid in table.ids if rid in chosen]


def save_split(split: dict[str, str], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split"])
        w.writerows(split.items())
    os.replace(tmp, path)


def load_split(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise BoneAgeError(f"{path}: no such split file")
    rows = read_csv_dicts(path, "split CSV file")
    if not rows or set(rows[0]) != {"id", "split"}:
        raise BoneAgeError(f"{path}: a split file needs the columns id,split")
    bad = [r["split"] for r in rows if r["split"] not in SPLITS]
    if bad:
        raise BoneAgeError(f"{path}: unknown split name {bad[0]!r} (expected {', '.join(SPLITS)})")
    return {r["id"]: r["split"] for r in rows}
