"""How far to go from an ensemble's networks to their fine-tunes (`boneage interpolate`),
chosen on validation films and on the films the fine-tunes were for.

    python tools/interpolation_choice.py --start A0 A1 --end B0 B1 --alphas 0 0.3 0.5 0.7 1 \\
        [--labels CSV] [--split benchmarks/results/default_split.csv] \\
        [--also DIR ...] [--correction default] [--out runs/interp]

For each alpha, member i is interpolated between START[i] and END[i] (END[i] fine-tuned from
START[i]), the members are averaged (`boneage ensemble`) and measured as the release measures
before calibration: MAE and bias on the split's validation films (one view), and on each
`--also` folder of films with labels.csv (8 views; e.g. `rsna-processed-fullres`, the
renderings the fine-tune was for); with `--correction MODEL`, as corrected by that model's
per-sex output correction. Prints one row per alpha and writes OUT/choice.json. Never
pass the films you report (`rsna-val-fullres`, the held-out films): the table is for choosing.
Version 6 of the bundled model: `--start member0 member1` (`python tools/default_model.py
--members DIR`, version 4.1), `--end` their rendering fine-tunes (version 5), alpha 0.85
(docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", nargs="+", required=True, help="the networks before fine-tuning")
    ap.add_argument("--end", nargs="+", required=True, help="their fine-tunes, same order")
    ap.add_argument("--alphas", nargs="+", type=float, default=[0, 0.3, 0.5, 0.7, 1])
    ap.add_argument("--labels", default=str(ROOT.parent / "shared/data/rsna-bone-age-100px/"
                                            "boneage-training-dataset.csv"))
    ap.add_argument("--images", help="the films' folder (default: beside the labels)")
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--also", nargs="*", default=[str(ROOT.parent / "shared/data/"
                                                      "rsna-processed-fullres")])
    ap.add_argument("--out", default=str(ROOT / "runs/interp"))
    ap.add_argument("--correction", metavar="MODEL",
                    help="apply this model's per-sex output correction (e.g. `default`) to every "
                         "alpha, so the table reads as a released model would (an interpolated "
                         "network has none until calibrated)")
    a = ap.parse_args()
    if len(a.start) != len(a.end):
        raise SystemExit("error: --start and --end need the same number of networks")
    from boneage import load_model
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split
    from boneage.errors import BoneAgeError
    from boneage.models.ensemble import build_ensemble, interpolate_runs

    images = Path(a.images) if a.images else None
    table = read_labels(Path(a.labels), images)
    val = {i for i, s in load_split(a.split).items() if s == "val"}
    films = [r for r in table if r.id in val]
    also = {Path(d).name: list(read_labels(Path(d) / "labels.csv", Path(d))) for d in a.also}
    out = Path(a.out)
    correction = None
    if a.correction:
        from boneage.models.checkpoint import read_card, resolve_model_path

        correction = read_card(resolve_model_path(a.correction)).get("output_correction")
    rows = {}
    for alpha in a.alphas:
        here = out / f"alpha{alpha:g}"
        if here.exists():
            shutil.rmtree(here)
        members = [here / f"member{i}" for i in range(len(a.start))]
        try:
            for s, e, m in zip(a.start, a.end, members, strict=True):
                interpolate_runs(s, e, alpha, m)
            if len(members) > 1:
                build_ensemble(members, here / "ensemble")
        except BoneAgeError as e:
            raise SystemExit(f"error: {e}") from None
        model_path = here / ("ensemble" if len(members) > 1 else "member0")
        row = {}
        for name, recs, tta in [("validation", films, False)] + [(k, v, True)
                                                                for k, v in also.items()]:
            model = load_model(str(model_path), explain=False, tta=tta)
            if correction:
                model.predictor.card["output_correction"] = correction
            sexes = ["M" if r.male else "F" for r in recs]
            res = model.predict_batch([r.path for r in recs], sex=sexes)
            err = np.array([x.bone_age_months - r.months for x, r in zip(res, recs,
                                                                           strict=True)])
            row[name] = {"n": len(recs), "mae": round(float(np.abs(err).mean()), 3),
                         "bias": round(float(err.mean()), 2)}
        rows[alpha] = row
        print(f"alpha {alpha:g}: " + "  ".join(f"{k} MAE {v['mae']:.3f} bias {v['bias']:+.2f}"
                                              for k, v in row.items()), flush=True)
    (out / "choice.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"-> {out / 'choice.json'}")


if __name__ == "__main__":
    main()
