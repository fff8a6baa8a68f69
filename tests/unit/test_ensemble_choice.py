"""tools/ensemble_choice.py: averages ranked on validation predictions, costs respected."""

from __future__ import annotations

import csv

import pytest
from tools.ensemble_choice import main


def _eval_dir(root, name, y, p, ids=None):
    d = root / name
    d.mkdir()
    ids = ids or [str(i) for i in range(len(y))]
    with open(d / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "male", "true_months", "predicted_months", "error_months"])
        w.writerows([i, 1, t, q, q - t] for i, t, q in zip(ids, y, p, strict=True))
    return str(d)


def test_complementary_runs_rank_first_and_costs_bound_the_choice(tmp_path, capsys):
    y = [60.0, 90.0, 120.0, 150.0]
    err = [4.0, 2.0, 4.0, 2.0]
    a = _eval_dir(tmp_path, "a", y, [v + e for v, e in zip(y, err, strict=True)])  # MAE 3
    b = _eval_dir(tmp_path, "b", y, [v - e for v, e in zip(y, err, strict=True)])  # opposite
    c = _eval_dir(tmp_path, "c", y, [v + e / 2 for v, e in zip(y, err, strict=True)])  # 1.5
    assert main([a, b, c, "--max-members", "2", "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1  MAE 1.500") and lines[0].endswith("  c")
    assert lines[1].startswith("2  MAE 0.000") and lines[1].endswith("a + b")
    assert lines[-3].split()[1:] == ["1.00", "-1.00", "1.00"]  # a's errors vs a, b, c
    # b costs too much to pair: the best pair left is a + c
    assert main([a, b, c, "--max-members", "2", "--top", "1", "--cost", "b=3",
                 "--max-cost", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("2  MAE 2.250") and lines[1].endswith("a + c")


def test_refuses_folders_of_different_films_and_missing_predictions(tmp_path):
    y = [60.0, 90.0]
    a = _eval_dir(tmp_path, "a", y, y)
    b = _eval_dir(tmp_path, "b", y, y, ids=["7", "8"])
    with pytest.raises(SystemExit, match="different films"):
        main([a, b])
    with pytest.raises(SystemExit, match="no predictions.csv"):
        main([a, str(tmp_path)])


def test_held_out_mae_is_shown_beside_the_validation_ranking(tmp_path, capsys):
    y = [60.0, 90.0, 120.0, 150.0]
    (tmp_path / "val").mkdir()
    (tmp_path / "test").mkdir()
    a = _eval_dir(tmp_path / "val", "a", y, [v + 1 for v in y])  # MAE 1
    b = _eval_dir(tmp_path / "val", "b", y, [v - 3 for v in y])  # MAE 3
    # on the held-out films a is the worse run: the ranking stays the validation one
    ha = _eval_dir(tmp_path / "test", "a", y, [v + 4 for v in y])
    hb = _eval_dir(tmp_path / "test", "b", y, [v + 2 for v in y])
    assert main([a, b, "--max-members", "2", "--held-out", ha, hb]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1  MAE 1.000  held out 4.000  cost 1  a"
    assert lines[1] == "1  MAE 3.000  held out 2.000  cost 1  b"
    assert lines[2] == "2  MAE 1.000  held out 3.000  cost 2  a + b"
    with pytest.raises(SystemExit, match="one folder per run"):
        main([a, b, "--held-out", ha])
    hc = _eval_dir(tmp_path / "test", "c", [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(SystemExit, match="held-out folders hold different films"):
        main([a, b, "--held-out", ha, hc])
    with pytest.raises(SystemExit, match="share a name"):
        main([a, b, "--held-out", ha, ha])
