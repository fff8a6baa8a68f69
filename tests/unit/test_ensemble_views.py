"""tools/ensemble_views.py: ensembles x test-time views ranked on corrected validation MAE."""

from __future__ import annotations

import numpy as np
import pytest
from tools.ensemble_views import main, rank, score


def _sets(rng):
    """Three runs over 11 views: 'a' exact on view 0 only, 'b' exact on view 8 only,
    'c' noisy everywhere; ages spread over 0-200 months, both sexes."""
    views, y, male = {}, {}, {}
    for s, n in (("val", 200), ("test", 150)):
        y[s] = rng.uniform(5, 200, n)
        male[s] = np.arange(n) % 2 == 0
        a, b, c = (y[s][:, None] + rng.normal(0, 12, (n, 11)) for _ in range(3))
        a[:, 0] = y[s] + rng.normal(0, 1, n)
        b[:, 8] = y[s] + rng.normal(0, 1, n)
        views[s] = {"a": a, "b": b, "c": c}
    return views, y, male


def test_the_accurate_views_of_the_accurate_runs_rank_first():
    views, y, male = _sets(np.random.default_rng(0))
    rows = rank(views, y, male, {"b": 2.0}, max_members=2,
                view_sets={"identity": [0], "zoom": [8], "both": [0, 8], "8": list(range(8))})
    assert len(rows) == (3 + 3) * 4
    best = rows[0]
    assert (best["members"], best["view_set"]) in {("a", "identity"), ("b", "zoom")}
    assert best["val"]["mae"] < 1.5 and best["test"]["mae"] < 1.5  # measured, not ranked on
    maes = [r["val"]["mae"] for r in rows]
    assert maes == sorted(maes)
    both = next(r for r in rows if r["members"] == "a+b" and r["view_set"] == "both")
    assert both["cost"] == (1 + 2) * 8 and both["views"] == [0, 8]


def test_the_correction_is_fitted_on_validation_and_counts():
    rng = np.random.default_rng(1)
    views, y, male = _sets(rng)
    for s in y:  # a pull to the middle the correction should partly undo
        views[s]["a"] = 100 + 0.6 * (views[s]["a"] - 100)
    r = score(views, y, male, ("a",), [0])
    assert r["weight"] > 0
    assert r["val"]["mae"] < r["val"]["mae_raw"] and r["test"]["mae"] < r["test"]["mae_raw"]
    assert r["val"]["bias_under_6"] is not None and r["test"]["bias_from_14"] is not None


@pytest.mark.parametrize("args", [["--run", "a"], ["--run", "a=x", "--cost", "a=fast"],
                                  ["--run", "a=x", "--reference", "a+b:8"],
                                  ["--run", "a=x", "--reference", "a:sideways"]])
def test_bad_arguments_fail_in_one_line(args, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([*args, "--cache", str(tmp_path)])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
