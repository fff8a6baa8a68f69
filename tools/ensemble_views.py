"""Which trained runs AND which test-time views to average, chosen on validation, as shipped
(with the output correction fitted on validation); measured on the other sets.

    python tools/ensemble_views.py --run e120=runs/v3/hand-rn18-e120 \\
        --run x3=runs/v3/hand-rn18-x3 --run s2=runs/v5/hand-rn18-s2 [--cost x3=2.25] \\
        [--max-members 3] [--top 10] [--reference e120+x3:8] [--cache runs/ensemble_views] \\
        [--data ../shared/data]

Each run makes every candidate view (`CANDIDATE_VIEWS`: the 8 default ones, then zooms x1.12,
1.18, 1.24) of every film of each set: the validation and held-out thumbnails of
benchmarks/results/default_split.csv and `rsna-val-fullres`; estimates before any correction
are cached per run and set (`--cache`, NAME names the file: a cached name is not recomputed;
about 3 minutes per ResNet18 x2 run and thumbnail set on 2 cores). Then every average of up to
`--max-members` runs over each view set in `VIEW_SETS` gets the correction `calibrate` would
fit on its validation estimates, and is ranked by its corrected validation MAE; the held-out
and full-resolution figures (MAE, bias under 6 years and from 14) are shown beside it, never
used to rank. `--reference RUNS:VIEWS` (a VIEW_SETS key) is shown as well, whatever its rank.
Cost: the members' time per view (`--cost`, default 1) times the views made (the estimate's,
and at least the 8 default ones the interval's spread is taken over). Writes
benchmarks/results/ensemble_views.json. Tables of it: docs/experiments.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = ("val", "test", "fullres")
# indices into CANDIDATE_VIEWS; the first 8 are the default views, 8-10 the zooms
VIEW_SETS: dict[str, list[int]] = {
    "identity": [0], "8": list(range(8)), "identity+z1.12": [0, 8], "8+z1.12": list(range(9)),
    "identity+z1.12+z1.18": [0, 8, 9], "identity+0.94+z1.12": [0, 3, 8],
    "identity+1.06+z1.12": [0, 4, 8], "identity+1.06": [0, 4]}


def score(views: dict[str, dict[str, np.ndarray]], y: dict[str, np.ndarray],
          male: dict[str, np.ndarray], members: tuple[str, ...], idx: list[int]) -> dict:
    """One ensemble over one view set: the correction fitted on 'val', then MAE and end biases
    on every set, before (`raw`) and after it."""
    from boneage.inference.correction import apply_correction, end_biases, fit_correction

    est = {s: np.mean([views[s][m][:, idx].mean(axis=1) for m in members], axis=0) for s in y}
    corr = fit_correction(y["val"], est["val"], male["val"])
    row: dict = {"members": "+".join(members), "views": idx, "weight": corr.get("weight")}
    for s in y:
        e = apply_correction(est[s], male[s], corr) - y[s]
        young, old = end_biases(e, y[s])
        row[s] = {"mae": round(float(np.abs(e).mean()), 3),
                  "mae_raw": round(float(np.abs(est[s] - y[s]).mean()), 3),
                  "bias_under_6": young, "bias_from_14": old}
    return row


def cost_of(members: tuple[str, ...], idx: list[int], cost: dict[str, float]) -> float:
    """Members' time per view x the views made: the estimate's, and at least the 8 default
    ones the interval's spread is taken over."""
    return sum(cost.get(m, 1.0) for m in members) * max(len(idx), 8)


def rank(views: dict[str, dict[str, np.ndarray]], y: dict[str, np.ndarray],
         male: dict[str, np.ndarray], cost: dict[str, float], max_members: int,
         view_sets: dict[str, list[int]] = VIEW_SETS) -> list[dict]:
    """Every ensemble x view set, best corrected validation MAE first."""
    rows = []
    for n in range(1, max_members + 1):
        for members in itertools.combinations(sorted(views["val"]), n):
            for name, idx in view_sets.items():
                r = score(views, y, male, members, idx)
                r["view_set"] = name
                r["cost"] = cost_of(members, idx, cost)
                rows.append(r)
    return sorted(rows, key=lambda r: r["val"]["mae"])


def estimates(runs: dict[str, str], data: Path, split: Path, cache: Path) -> dict:
    """set -> name -> (films, views) estimates before correction, plus y and male per set."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tta_views import films  # the film sets of benchmarks/tta_views.py

    from boneage import load_model
    from boneage.evaluation.evaluate import predict_table
    from boneage.inference.uncertainty import CANDIDATE_VIEWS, TTAPlan

    cache.mkdir(parents=True, exist_ok=True)
    out: dict = {"views": {s: {} for s in SETS}, "y": {}, "male": {}}
    pipeline = None
    for s in SETS:
        for n, path in runs.items():
            f = cache / f"{s}-{n}.npz"
            if not f.is_file():
                p = load_model(path, explain=False).predictor
                pipeline = pipeline or p.pipeline.to_dict()
                if p.pipeline.to_dict() != pipeline:
                    raise SystemExit(f"error: {n}: another preprocessing than the other runs; "
                                     "an ensemble's members read one prepared film")
                p.card.pop("output_correction", None)
                p.tta_plan = TTAPlan(CANDIDATE_VIEWS)
                _, y, male, est, _ = predict_table(p, films(data, split, s, 0), True)
                np.savez(f, views=est.views, y=y, male=male)
                print(f"{s}: {n} done", flush=True)
            d = np.load(f)
            out["views"][s][n] = d["views"]
            out["y"][s], out["male"][s] = d["y"], d["male"]
    return out


def _pairs(specs: list[str], cast) -> dict:
    """NAME=VALUE arguments as a dict, or a one-line error."""
    out = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            out[name] = cast(value)
        except ValueError:
            value = ""
        if not name or not value:
            raise SystemExit(f"error: {spec}: expected NAME=VALUE")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=PATH",
                    help="a run folder or checkpoint, under a short name (repeatable)")
    ap.add_argument("--cost", action="append", default=[], metavar="NAME=UNITS")
    ap.add_argument("--max-members", type=int, default=3)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--reference", help="RUNS:VIEWS shown whatever its rank, e.g. e120+x3:8")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--cache", default=str(ROOT / "runs/ensemble_views"))
    a = ap.parse_args(argv)
    runs, cost = _pairs(a.run, str), _pairs(a.cost, float)
    ref = None
    if a.reference:
        members, _, vs = a.reference.partition(":")
        ref = (tuple(members.split("+")), vs)
        if vs not in VIEW_SETS or not set(ref[0]) <= set(runs):
            raise SystemExit(f"error: --reference {a.reference}: expected RUNS:VIEWS with runs "
                             f"given by --run and VIEWS one of {', '.join(VIEW_SETS)}")
    est = estimates(runs, Path(a.data), Path(a.split), Path(a.cache))
    rows = rank(est["views"], est["y"], est["male"], cost, a.max_members)
    shown = rows[: a.top]
    if ref:
        r = score(est["views"], est["y"], est["male"], ref[0], VIEW_SETS[ref[1]])
        r.update(view_set=ref[1], cost=cost_of(ref[0], VIEW_SETS[ref[1]], cost), reference=True)
        shown = [r, *shown]
    from boneage.evaluation.report import signed

    for r in shown:
        cells = "  ".join(f"{s} {r[s]['mae']:.3f} ({signed(r[s]['bias_under_6'])} / "
                          f"{signed(r[s]['bias_from_14'])})" for s in SETS)
        print(f"{r['members']:24} {r['view_set']:22} cost {r['cost']:5.1f}  {cells}"
              + ("  <- reference" if r.get("reference") else ""))
    out = ROOT / "benchmarks/results/ensemble_views.json"
    out.write_text(json.dumps({"runs": runs, "cost": cost, "n_ranked": len(rows),
                               "view_sets": VIEW_SETS, "shown": shown}, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
