"""`boneage compare`: the seed's model comparison (MAE with its 95% CI, RMSE, R², parameters,
training time, pipeline, input size, TTA) as Markdown, HTML, CSV and a bar chart, from run
folders' best checkpoints.

When a run folder holds an evaluation (`RUN/eval/metrics.json`, written by
`boneage evaluate --out RUN/eval`) its metrics are used; otherwise the validation metrics
stored in the model card. Rows measured differently (another film set, with and without TTA,
an evaluation beside a card's figure) are refused unless asked for: a table that puts them
side by side reads as a comparison it is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError
from boneage.evaluation.report import data_url, fmt, page, table_html
from boneage.fileio import atomic_write_csv, atomic_write_text, ensure_writable_dir, read_text
from boneage.models.checkpoint import read_card, resolve_model_path

COLUMNS = ["name", "arch", "mae", "mae_ci95", "rmse", "r2", "tta", "pipeline", "input_size",
           "parameters", "train_minutes", "epochs", "source"]


def pipeline_label(pipeline: dict[str, Any]) -> str:
    """A pipeline's working steps in one short string (`crop_hand+squash`), without the
    type conversions every pipeline has."""
    steps = [s["name"] for s in pipeline.get("steps", [])
             if s["name"] not in ("to_uint8", "scale")]
    return "+".join(steps) or "none"


def run_row(run: str | Path) -> dict[str, Any]:
    path = resolve_model_path(run)
    card = read_card(path)
    base = Path(run) if Path(run).is_dir() else path.parent
    ev = base / "eval" / "metrics.json"
    if ev.is_file():
        try:
            m = json.loads(read_text(ev, "metrics file"))
        except json.JSONDecodeError as e:
            raise BoneAgeError(f"{ev}: not a metrics JSON file ({e.msg})") from None
        if not isinstance(m, dict) or not {"n", "mae"} <= set(m):
            raise BoneAgeError(f"{ev}: not the metrics.json of `boneage evaluate` (no n, mae); "
                               "run evaluate again or move it away")
        tta = bool(m.get("tta"))
        source = f"evaluation ({m.get('subset') or 'all'}, n={m['n']})"
    else:
        m = card.get("metrics", {}).get("val", {})
        tta = False  # training's validation: one view
        source = "validation (model card)"
    ci = m.get("mae_ci95")
    tr = dict(card.get("training", {}))
    if (base / "metrics.csv").is_file():  # the whole run, not just up to the best epoch
        from boneage.fileio import read_csv_dicts

        rows = read_csv_dicts(base / "metrics.csv")
        tr["epochs_run"] = len(rows)
        tr["seconds"] = sum(float(r["seconds"]) for r in rows)
    return {
        "name": base.name if Path(run).is_dir() else path.stem, "arch": card["arch"],
        "mae": m.get("mae"), "mae_ci95": f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else None,
        "rmse": m.get("rmse"), "r2": m.get("r2"), "tta": "yes" if tta else "no",
        "pipeline": pipeline_label(card.get("pipeline", {})),
        "input_size": card.get("input_size"), "parameters": card.get("parameters"),
        "train_minutes": round(tr["seconds"] / 60, 1) if tr.get("seconds") else None,
        "epochs": tr.get("epochs_run"), "source": source,
    }


def compare(runs: list[str], out: str | Path, allow_mixed: bool = False
            ) -> list[dict[str, Any]]:
    if not runs:
        raise BoneAgeError("give at least one run folder or checkpoint")
    rows = [run_row(r) for r in runs]
    unmeasured = [r["name"] for r in rows if r["mae"] is None]
    if unmeasured:  # an ensemble, or a run stopped before its first validation
        raise BoneAgeError(f"compare: {', '.join(unmeasured)} not measured yet (boneage "
                           "evaluate --model RUN --subset val --out RUN/eval)")
    kinds = {(r["source"], r["tta"]) for r in rows}
    if len(kinds) > 1 and not allow_mixed:
        seen = "; ".join(f"{r['name']}: {r['source']}, TTA {r['tta']}" for r in rows)
        raise BoneAgeError(f"compare: the runs were measured differently ({seen}); evaluate "
                           "each the same way (boneage evaluate --model RUN --subset val "
                           "--out RUN/eval) or pass --allow-mixed")
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
