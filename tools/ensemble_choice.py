"""Which trained runs to average into an ensemble, chosen on validation predictions.

    python tools/ensemble_choice.py runs/eval-val-a runs/eval-val-b runs/eval-val-c \\
        [--cost eval-val-b=2.25] [--max-members 3] [--max-cost 3.25] [--top 5] \\
        [--held-out runs/eval-test-a runs/eval-test-b runs/eval-test-c]

Each argument is a `boneage evaluate --subset val --out DIR` folder (its predictions.csv); all
must hold the same films. Prints, per ensemble size, the best averages of their predictions
(MAE in months, cost in units of one network's time per view) and the correlation of the
members' errors: members whose errors correlate near 1 gain little from being averaged.
Choose on validation films only; measure the chosen ensemble once on held-out films.
`--held-out` takes the same runs' folders on held-out films, in the same order, and adds each
shown combination's held-out MAE beside its validation MAE: whether a validation gain carries
over, without choosing on the held-out films (the ranking stays the validation one).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import numpy as np


def read_predictions(folder: Path) -> dict[str, tuple[float, float]]:
    """id -> (true months, predicted months) from an evaluate folder."""
    path = folder / "predictions.csv"
    if not path.is_file():
        raise SystemExit(f"error: {folder}: no predictions.csv (an `evaluate --out` folder?)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return {r["id"]: (float(r["true_months"]), float(r["predicted_months"])) for r in rows}
    except (KeyError, ValueError) as e:
        raise SystemExit(f"error: {path}: not an evaluate predictions file ({e})") from None


def read_runs(folders: list[str], what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(true months, run name -> predicted months) over the films all the folders share."""
    tables = {Path(e).name: read_predictions(Path(e)) for e in folders}
    if len(tables) < len(folders):
        raise SystemExit(f"error: two of the {what} folders share a name: the name is the run's "
                         "name here, so give each its own")
    ids = sorted(next(iter(tables.values())))
    if any(sorted(t) != ids for t in tables.values()):
        raise SystemExit(f"error: the {what} folders hold different films: evaluate every run "
                         f"on the same {what} films")
    y = np.array([next(iter(tables.values()))[i][0] for i in ids])
    return y, {k: np.array([t[i][1] for i in ids]) for k, t in tables.items()}


def mae_of(y: np.ndarray, preds: dict[str, np.ndarray], members: tuple[str, ...]) -> float:
    return float(np.mean(np.abs(np.mean([preds[k] for k in members], axis=0) - y)))


def combinations(y: np.ndarray, preds: dict[str, np.ndarray], cost: dict[str, float],
                 max_members: int, max_cost: float) -> list[tuple[float, float, tuple[str, ...]]]:
    """(MAE, cost, members) of every average of up to `max_members` runs within `max_cost`,
    best first within each size."""
    out = []
    for n in range(1, max_members + 1):
        for c in itertools.combinations(preds, n):
            units = sum(cost.get(k, 1.0) for k in c)
            if units <= max_cost:
                out.append((mae_of(y, preds, c), units, c))
    return sorted(out, key=lambda r: (len(r[2]), r[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", help="`boneage evaluate --out` folders (validation)")
    ap.add_argument("--cost", action="append", default=[], metavar="NAME=UNITS",
                    help="a run's time per view in units of one network (default 1)")
    ap.add_argument("--max-members", type=int, default=3)
    ap.add_argument("--max-cost", type=float, default=float("inf"))
    ap.add_argument("--top", type=int, default=5, help="combinations shown per size")
    ap.add_argument("--held-out", nargs="+", default=[], metavar="DIR",
                    help="the same runs' evaluate folders on held-out films, in the same order: "
                         "each shown combination's held-out MAE is printed beside it")
    a = ap.parse_args(argv)
    y, preds = read_runs(a.evals, "validation")
    held = None
    if a.held_out:
        if len(a.held_out) != len(a.evals):
            raise SystemExit(f"error: --held-out takes one folder per run ({len(a.evals)}), "
                             f"got {len(a.held_out)}")
        hy, hp = read_runs(a.held_out, "held-out")
        held = (hy, dict(zip(preds, hp.values(), strict=True)))
    cost = {}
    for c in a.cost:
        name, _, units = c.partition("=")
        try:
            cost[name] = float(units)
        except ValueError:
            raise SystemExit(f"error: --cost {c}: expected NAME=UNITS") from None
    rows = combinations(y, preds, cost, a.max_members, a.max_cost)
    for n in range(1, a.max_members + 1):
        for mae, units, members in [r for r in rows if len(r[2]) == n][: a.top]:
            shown = f"  held out {mae_of(*held, members):.3f}" if held else ""
            print(f"{n}  MAE {mae:.3f}{shown}  cost {units:g}  {' + '.join(members)}")
    names = list(preds)
    errors = np.array([preds[k] - y for k in names])
    corr = np.corrcoef(errors)
    width = max(len(k) for k in names)
    print("\ncorrelation of errors")
    for i, k in enumerate(names):
        print(f"{k:{width}}  " + " ".join(f"{v:.2f}" for v in corr[i]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
