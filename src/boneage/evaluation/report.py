"""Self-contained HTML reports (images embedded as data URLs: one file to mail or archive)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from boneage.fileio import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}.figs{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.note{color:#666;font-size:.9em}.worst{display:flex;flex-wrap:wrap;gap:1em}
.worst figure{margin:0;max-width:340px}.worst img{height:180px;width:auto;margin:0 4px 0 0}
.worst figcaption{font-size:.85em}"""


def data_url(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def fmt(v: Any) -> str:
    """One way to show a number in every table: 3 decimals below 10, 2 above, M for counts."""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool) and v > 100_000:
        return f"{v / 1e6:.2f} M"
    return "" if v is None else str(v)


def signed(v: float | None) -> str:
    """A bias as +1.2 / -0.4 months, "-" where a band had no films."""
    return "-" if v is None else f"{v:+.1f}"


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            "</body></html>\n")


def _metric_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    def row(name: str, m: dict[str, Any]) -> list[Any]:
        if not m.get("n"):
            return [name, 0, "", "", "", "", ""]
        lo, hi = m["mae_ci95"]
        return [name, m["n"], m["mae"], f"{lo:.2f}-{hi:.2f}", m["rmse"], m["r2"], m["bias"]]

    rows = [row("all", metrics)]
    rows += [row(k, v) for k, v in metrics["by_sex"].items()]
    rows += [row(k, v) for k, v in metrics["by_age_band"].items()]
    return rows


def _interval_part(iv: dict[str, Any] | None) -> list[str]:
    """The interval's coverage and width by group, where the evaluation made intervals."""
    if not iv:
        return []
    groups = [("all", iv), *iv["by_sex"].items(), *iv["by_age_band"].items()]
    rows = [[name, g["n"], f"{g['coverage']:.1%}", g["mean_width"]] if g.get("n")
            else [name, 0, "", ""] for name, g in groups]
    return [f"<h2>{iv['nominal']:.0%} interval</h2>",
            table_html(["group", "n", "coverage", "mean width (months)"], rows),
            "<p class='note'>Coverage: the share of films whose true age lies in the "
            "interval.</p>"]


def jpeg_data_url(image: Any, quality: int = 90) -> str:
    """A picture embedded as JPEG, for the page and the reports (a 1,024 px film as PNG would
    be ~1 MB, as JPEG ~100 kB)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def image_url(img: Any, height: int = 180) -> str:
    """A grey-level array as a small embedded JPEG (the report stays one file)."""
    import cv2

    scale = height / img.shape[0]
    small = cv2.resize(img, (max(1, round(img.shape[1] * scale)), height),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return jpeg_data_url(small, quality=85)


def _worst_part(worst: list[dict[str, Any]]) -> list[str]:
    """The films read worst: each film beside what the model saw of it."""
    if not worst:
        return []
    cells = "".join(
        f"<figure><img src='{image_url(w['film'])}' alt='film {html.escape(w['id'])}'>"
        f"<img src='{image_url(w['input'])}' alt='model input'><figcaption>"
        f"<b>{html.escape(w['id'])}</b> ({'M' if w['male'] else 'F'}): true "
        f"{w['true']:.0f}, estimated {w['predicted']:.0f} months "
        f"(<b>{w['error']:+.0f}</b>)</figcaption></figure>" for w in worst)
    return [f"<h2>The {len(worst)} largest errors</h2>",
            "<p class='note'>Each film beside what the model saw of it (its preprocessing: the "
            "hand's box, as the network's input). All errors are in predictions.csv.</p>",
            f"<div class='worst'>{cells}</div>"]


def write_report(path: Path, metrics: dict[str, Any], figures: dict[str, Path],
                 card: dict[str, Any], run_dir: Path | None,
                 worst: list[dict[str, Any]] | None = None) -> None:
    parts = [
        f"<p>Model <b>{html.escape(card['arch'])}</b> ({html.escape(metrics['model'])}) on "
        f"{html.escape(metrics['labels'])}"
        + (f", {html.escape(metrics['subset'])} split" if metrics.get("subset") else "")
        + f": {metrics['n']} films.</p>",
        table_html(["group", "n", "MAE", "MAE 95% CI", "RMSE", "R²", "bias"],
                   _metric_rows(metrics)),
        "<p class='note'>Months. 95% CI: bootstrap over films (1000 resamples). "
        "Bias: mean of predicted - true.</p>",
        *_interval_part(metrics.get("interval")),
        "<div class='figs'>" + "".join(f"<img src='{data_url(p)}' alt='{k}'>"
                                       for k, p in figures.items()) + "</div>",
        *_worst_part(worst or []),
    ]
    if run_dir is not None and (run_dir / "curves.png").is_file():
        parts.append("<h2>Training</h2>")
        parts += [f"<img src='{data_url(run_dir / n)}' alt='{n}'>" for n in ("curves.png", "lr.png")
                  if (run_dir / n).is_file()]
    atomic_write_text(path, page("Bone age evaluation", "".join(parts)))
