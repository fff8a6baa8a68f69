"""The one-page PDF report for a film: thumbnails of the film and its heatmap, the results,
the growth chart, the model and its measured accuracy, the date, and a research-use disclaimer.
Written with matplotlib's PDF backend: no extra dependency."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np

from boneage import __version__
from boneage.inference.api import BoneAgeModel, BoneAgeResult
from boneage.inference.reference import mean_curve

DISCLAIMER = ("For research use only. Not a medical device: this estimate has not been cleared "
              "for clinical use and must be reviewed by a qualified radiologist.")


def _accuracy_line(card: dict) -> str:
    held = card.get("heldout_metrics") or {}
    val = (card.get("metrics") or {}).get("val") or {}
    if held.get("mae") is not None:
        return (f"held-out MAE {held['mae']:.2f} months, RMSE {held.get('rmse', float('nan')):.2f}"
                f" (n={held.get('n', '?')})")
    if val.get("mae") is not None:
        return f"validation MAE {val['mae']:.2f} months"
    return "accuracy not recorded"


def pdf_report(model: BoneAgeModel, result: BoneAgeResult, film_pixels: np.ndarray,
               heatmap_bgr: np.ndarray | None) -> bytes:
    from boneage.plots import _plt, draw_growth_chart

    plt = _plt()
    fig = plt.figure(figsize=(8.27, 11.69))  # A4 portrait
    fig.text(0.07, 0.955, "Bone age report", fontsize=18, weight="bold")
    fig.text(0.07, 0.935, datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             fontsize=9, color="#555")
    ax1 = fig.add_axes([0.07, 0.60, 0.40, 0.31])
    ax1.imshow(film_pixels, cmap="gray")
    ax1.set_title("film", fontsize=9)
    ax1.axis("off")
    ax2 = fig.add_axes([0.53, 0.60, 0.40, 0.31])
    if heatmap_bgr is not None:
        ax2.imshow(heatmap_bgr[:, :, ::-1])
        ax2.set_title("regions that drove the estimate (Grad-CAM)", fontsize=9)
    else:
        ax2.text(0.5, 0.5, "heatmap not available", ha="center", va="center")
    ax2.axis("off")
    rows = [("Sex", "male" if result.sex == "M" else "female"),
            ("Bone age",
             f"{result.bone_age_months:.1f} months ({result.bone_age_years:.1f} years)")]
    if result.interval_low_months is not None:
        rows.append(("90% interval", f"{result.interval_low_months:.0f} - "
                                     f"{result.interval_high_months:.0f} months"))
    if result.chronological_age_months is not None:
        rows += [("Chronological age", f"{result.chronological_age_months:.1f} months"),
                 ("Difference", f"{result.difference_months:+.1f} months"),
                 ("SDS", f"{result.sds:+.2f}"), ("Category", str(result.category))]
    if result.warnings:
        rows.append(("Warnings", "; ".join(result.warnings)))
    tab = fig.add_axes([0.07, 0.40, 0.86, 0.17])
    tab.axis("off")
    t = tab.table(cellText=[[k, v] for k, v in rows], colWidths=[0.3, 0.7], loc="upper left",
                  cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(9)
    t.scale(1, 1.3)
    ax3 = fig.add_axes([0.12, 0.10, 0.76, 0.26])
    interval = None
    if result.interval_low_months is not None:
        interval = (result.interval_low_months, result.interval_high_months)
    male = result.sex == "M"
    draw_growth_chart(ax3, mean_curve(male), male, result.chronological_age_months,
                      result.bone_age_months, interval)
    fig.text(0.07, 0.055, f"Model {model.name} ({model.card['arch']}), boneage {__version__}; "
             f"{_accuracy_line(model.card)}.", fontsize=8)
    fig.text(0.07, 0.035, DISCLAIMER, fontsize=8, color="#a00", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    plt.close(fig)
    return buf.getvalue()
