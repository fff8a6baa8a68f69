"""Which test-time views should a model's estimate average? Each view's MAE, and the MAE of
the averages that matter, on the validation and held-out thumbnails and on rsna-val-fullres.

    python benchmarks/tta_views.py [--model default] [--sets val test fullres] [--n 0]

Views: `CANDIDATE_VIEWS`, the 8 default ones then the zooms `calibrate --choose-views` may
add. Estimates are the network's own (the card's output correction left out),
so the figures compare views, not corrections. For each set: n, each view's MAE, the MAE of the
identity alone, of the 8 default views, of the identity with each extra view, and of the views
`choose_estimate_views` picks on the first set given (validation), with the paired difference
of that choice from the 8 default views (mean and standard error per film). Intervals: a 90%
split-conformal interval calibrated on the first set, its coverage and mean width on every set,
for the estimate of the 8 default views with their spread, and for the chosen views' estimate
with the spread of the 8 default views or of the chosen views only.
Writes benchmarks/results/tta_views_<model>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def films(data: Path, split: Path, name: str, n: int):
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split

    if name == "fullres":
        table = read_labels(data / "rsna-val-fullres/labels.csv", data / "rsna-val-fullres")
    else:
        thumbs = data / "rsna-bone-age-100px"
        table = read_labels(thumbs / "boneage-training-dataset.csv",
                            thumbs / "boneage-training-dataset")
        table = table.subset(i for i, s in load_split(split).items() if s == name)
    return table.subset([r.id for r in table.records[:n]]) if n else table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--sets", nargs="+", default=["val", "test", "fullres"],
                    choices=("val", "test", "fullres"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--n", type=int, default=0, help="at most this many films per set (0: all)")
    a = ap.parse_args()
    from boneage import load_model
    from boneage.evaluation.evaluate import predict_table
    from boneage.inference.uncertainty import (
        CANDIDATE_VIEWS,
        DEFAULT_TTA,
        TTAPlan,
        calibrate,
        choose_estimate_views,
        interval,
    )

    predictor = load_model(a.model, explain=False).predictor
    predictor.card.pop("output_correction", None)
    views = CANDIDATE_VIEWS
    predictor.tta_plan = TTAPlan(views)
    d = len(DEFAULT_TTA)
    combos = {"identity": [0], "8 default views": list(range(d)),
              **{f"identity + zoom x{views[i][1]:g}": [0, i] for i in range(d, len(views))}}
    result = {"model": a.model, "backend": type(predictor).__name__,
              "views": [list(v) for v in views], "interval_calibrated_on": a.sets[0],
              "sets": {}}
    chosen = None
    cals: dict[str, dict] = {}
    for name in a.sets:
        _, y, _, est, _ = predict_table(predictor, films(Path(a.data), Path(a.split), name,
                                                         a.n), True)
        p = est.views

        def err(idx: list[int]) -> np.ndarray:
            return np.abs(p[:, idx].mean(axis=1) - y)  # noqa: B023

        if chosen is None:
            chosen = list(choose_estimate_views(y, p))
            result["chosen_on"] = name
            result["chosen"] = chosen
        default = list(range(d))
        ways = {"8 default views, their spread": (default, default),
                "chosen views, spread of the 8 default": (chosen, default),
                "chosen views, their own spread": (chosen, chosen)}
        iv = {}
        for way, (est_idx, spread_idx) in ways.items():
            mean, spread = p[:, est_idx].mean(axis=1), p[:, spread_idx].std(axis=1)
            cals.setdefault(way, calibrate(y, mean, spread, coverage=0.9))
            lo, hi = interval(mean, spread, cals[way])
            iv[way] = {"coverage": round(float(np.mean((y >= lo) & (y <= hi))), 3),
                       "mean_width": round(float(np.mean(hi - lo)), 2)}
        diff = err(chosen) - err(default)
        result["sets"][name] = {
            "n": int(len(y)),
            "view_mae": [round(float(err([i]).mean()), 3) for i in range(len(views))],
            "mae": {k: round(float(err(v).mean()), 3) for k, v in combos.items()}
            | {"chosen": round(float(err(chosen).mean()), 3)},
            "chosen_minus_default": {"mean": round(float(diff.mean()), 3),
                                     "se": round(float(diff.std() / np.sqrt(len(diff))), 3)},
            "interval_90": iv}
        s = result["sets"][name]
        print(f"{name:8} n={s['n']:<5} " + "  ".join(f"{k} {v:.3f}" for k, v in s["mae"].items())
              + f"  (chosen {chosen}: {s['chosen_minus_default']['mean']:+.3f} +/- "
              f"{s['chosen_minus_default']['se']:.3f} vs the 8 default views)", flush=True)
        for way, v in iv.items():
            print(f"    90% interval, {way}: coverage {v['coverage']:.1%}, mean width "
                  f"{v['mean_width']:.1f} months")
    out = ROOT / f"benchmarks/results/tta_views_{Path(a.model).name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
