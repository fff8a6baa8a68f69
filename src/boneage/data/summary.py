"""Dataset summary, as the seed's first figures: counts by sex and the bone-age distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from boneage.data.labels import LabelTable
from boneage.fileio import atomic_write_json


def _stats(months: np.ndarray) -> dict[str, float | int]:
    m = months[np.isfinite(months)]
    if m.size == 0:
        return {"n": 0}
    return {"n": int(m.size), "mean": round(float(m.mean()), 2), "sd": round(float(m.std()), 2),
            "min": float(m.min()), "median": float(np.median(m)), "max": float(m.max())}


def summarise(table: LabelTable) -> dict[str, Any]:
    male = np.array([r.male for r in table], dtype=object)
    months = table.months
    return {
        "n": len(table),
        "counts_by_sex": {"male": int(np.sum(male == True)),  # noqa: E712
                          "female": int(np.sum(male == False)),  # noqa: E712
                          "unknown": int(np.sum([m is None for m in male]))},
        "bone_age_months": {
            "all": _stats(months),
            "male": _stats(months[male == True]),  # noqa: E712
            "female": _stats(months[male == False]),  # noqa: E712
        },
    }


def write_summary(table: LabelTable, out_dir: str | Path) -> dict[str, Any]:
    """summary.json, plus summary.png (sex counts, age histograms) when ages are known."""
    out_dir = Path(out_dir)
    summary = summarise(table)
    atomic_write_json(out_dir / "summary.json", summary)
    if summary["bone_age_months"]["all"]["n"]:
        from boneage.plots import dataset_figure

        dataset_figure(table.months, np.array([r.male for r in table], dtype=object),
                       out_dir / "summary.png")
    return summary
