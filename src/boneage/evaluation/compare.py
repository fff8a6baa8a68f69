"""`boneage compare`: the seed's model comparison (MAE, RMSE, R², parameters, training time)
as Markdown, HTML, CSV and a bar chart, from run folders' best checkpoints.

When a run folder holds an evaluation (`RUN/eval/metrics.json`, written by
`boneage evaluate --out RUN/eval`) its metrics are used; otherwise the validation metrics
stored in the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError
from boneage.evaluation.report import data_url, fmt, page, table_html
from boneage.fileio import atomic_write_csv, atomic_write_text, ensure_writable_dir
from boneage.models.checkpoint import read_card, resolve_model_path

COLUMNS = ["name", "arch", "mae", "rmse", "r2", "parameters", "train_minutes", "epochs",
           "input_size", "source"]


def run_row(run: str | Path) -> dict[str, Any]:
    path = resolve_model_path(run)
    card = read_card(path)
    base = Path(run) if Path(run).is_dir() else path.parent
    ev = base / "eval" / "metrics.json"
    if ev.is_file():
        m = json.loads(ev.read_text())
        source = f"evaluation ({m.get('subset') or 'all'}, n={m['n']})"
    else:
        m = card.get("metrics", {}).get("val", {})
        source = "validation (model card)"
    tr = dict(card.get("training", {}))
    if (base / "metrics.csv").is_file():  # the whole run, not just up to the best epoch
        from boneage.fileio import read_csv_dicts

        rows = read_csv_dicts(base / "metrics.csv")
        tr["epochs_run"] = len(rows)
        tr["seconds"] = sum(float(r["seconds"]) for r in rows)
    return {
        "name": base.name if Path(run).is_dir() else path.stem, "arch": card["arch"],
        "mae": m.get("mae"), "rmse": m.get("rmse"), "r2": m.get("r2"),
        "parameters": card.get("parameters"),
        "train_minutes": round(tr["seconds"] / 60, 1) if tr.get("seconds") else None,
        "epochs": tr.get("epochs_run"), "input_size": card.get("input_size"), "source": source,
    }


def compare(runs: list[str], out: str | Path) -> list[dict[str, Any]]:
    if not runs:
        raise BoneAgeError("give at least one run folder or checkpoint")
    rows = [run_row(r) for r in runs]
    out = ensure_writable_dir(out)
    atomic_write_csv(out / "compare.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    atomic_write_text(out / "compare.md", "\n".join(md) + "\n")
    from boneage.plots import comparison_chart

    comparison_chart(rows, out / "compare.png")
    body = table_html(COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    body += f"<img src='{data_url(out / 'compare.png')}' alt='comparison'>"
    atomic_write_text(out / "compare.html", page("Model comparison", body))
    return rows
