"""The 90% interval by age band and by sex (issue #41): coverage, width in months and in SD units
(the Greulich & Pyle / Brush SD at the film's age; for films without a chronological age, the
labelled bone age stands in for it), and how many films' intervals allow a category (the whole
interval inside or beyond the -2/+2 SD lines, for a child whose chronological age is the
labelled bone age) - for the interval calibrated on all ages at once and by age band of the
estimate (Mondrian, inference/uncertainty.py).

The calibration films are the validation thumbnails; the choice between the two is made there
by 5-fold cross-conformal (calibrate on four fifths, measure on the fifth); the chosen
calibration is then measured on held-out sets it never saw (the test thumbnails,
rsna-val-fullres). Inputs are `boneage evaluate --tta --out DIR` folders (predictions.csv with
the views' spread).

    python benchmarks/interval_bands.py --calibration runs/eval-v7-val \\
        --measure test=runs/eval-v7-test fullres=runs/eval-v7-fullres
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from boneage.clinical.reference import sd_for_age
from boneage.inference.uncertainty import BAND_NAMES, band_index, calibrate, interval

OUT = Path(__file__).parent / "results" / "interval_bands.json"


def read(folder: str) -> dict[str, np.ndarray]:
    with open(Path(folder) / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "spread_months" not in rows[0]:
        raise SystemExit(f"{folder}: predictions.csv without spread_months (evaluate --tta)")
    return {"y": np.array([float(r["true_months"]) for r in rows]),
            "m": np.array([float(r["predicted_months"]) for r in rows]),
            "s": np.array([float(r["spread_months"]) for r in rows]),
            "male": np.array([r["male"] == "1" for r in rows])}


def measure(d: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> dict:
    y, male = d["y"], d["male"]
    sd = np.array([sd_for_age(a, bool(m))[0] for a, m in zip(y, male, strict=True)])
    inside = (lo <= y) & (y <= hi)
    width_sd = (hi - lo) / sd
    # the category a child whose age is its bone age would get: decided where the interval
    # does not cross a 2 SD line
    decided = ((hi < y - 2 * sd) | (lo > y + 2 * sd) | ((lo >= y - 2 * sd) & (hi <= y + 2 * sd)))

    def part(k: np.ndarray) -> dict:
        return {"n": int(k.sum()), "coverage": round(float(inside[k].mean()), 4) if k.any()
                else None, "mean_width_months": round(float((hi - lo)[k].mean()), 2)
                if k.any() else None,
                "median_width_sd": round(float(np.median(width_sd[k])), 2) if k.any() else None,
                "category_decided": round(float(decided[k].mean()), 4) if k.any() else None}
    band = band_index(y)
    return {"all": part(np.ones(len(y), bool)),
            "by_band": {name: part(band == b) for b, name in enumerate(BAND_NAMES)},
            "by_sex": {"male": part(male), "female": part(~male)}}


def cross_conformal(d: dict[str, np.ndarray], bands: bool, by_sex: bool, folds: int = 5
                    ) -> dict:
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(d["y"])) % folds
    lo, hi = np.empty(len(d["y"])), np.empty(len(d["y"]))
    for f in range(folds):
        cal_k, test_k = fold != f, fold == f
        cal = calibrate(d["y"][cal_k], d["m"][cal_k], d["s"][cal_k], bands=bands,
                        male=d["male"][cal_k] if by_sex else None)
        lo[test_k], hi[test_k] = interval(d["m"][test_k], d["s"][test_k], cal,
                                          male=d["male"][test_k])
    return measure(d, lo, hi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", required=True, help="evaluate --tta folder (validation)")
    ap.add_argument("--measure", nargs="*", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    val = read(a.calibration)
    result: dict = {"calibration": a.calibration, "n": int(len(val["y"])), "methods": {}}
    for name, bands, by_sex in (("global", False, False), ("by_band", True, False),
                                ("by_band_and_sex", True, True)):
        cal = calibrate(val["y"], val["m"], val["s"], bands=bands,
                        male=val["male"] if by_sex else None)
        entry = {"cross_conformal_on_calibration": cross_conformal(val, bands, by_sex),
                 "calibration": {k: v for k, v in cal.items() if k != "single"}}
        for spec in a.measure:
            label, folder = spec.split("=", 1)
            d = read(folder)
            entry[label] = measure(d, *interval(d["m"], d["s"], cal, male=d["male"]))
        result["methods"][name] = entry
        cv = entry["cross_conformal_on_calibration"]
        print(f"{name:15s} cross-conformal on {a.calibration}: coverage "
              f"{cv['all']['coverage']:.3f}, median width {cv['all']['median_width_sd']:.2f} SD, "
              f"decided {cv['all']['category_decided']:.3f}; by band "
              + ", ".join(f"{b} {v['coverage']}" for b, v in cv["by_band"].items()))
        for spec in a.measure:
            label = spec.split("=", 1)[0]
            m = entry[label]["all"]
            print(f"{'':15s} {label}: coverage {m['coverage']:.3f}, mean width "
                  f"{m['mean_width_months']:.1f} months, median {m['median_width_sd']:.2f} SD, "
                  f"decided {m['category_decided']:.3f}; by band "
                  + ", ".join(f"{b} {v['coverage']}" for b, v in entry[label]["by_band"].items()))
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
