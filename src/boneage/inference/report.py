"""The one-page PDF report for a film, fit to hand to a colleague: who and what (identifier,
study date), the film and its heatmap at the film's own shape, the results in the units
clinicians write ("12 y 11 m"), the comparison with the reference only where it means something,
warnings that wrap inside the page, one line on what the interval and the SDS mean, the growth
chart when the chronological age is known, the model and its measured accuracy, and the
research-use disclaimer. Written with matplotlib's PDF backend (TrueType text, so the PDF's text
can be searched and extracted): no extra dependency."""

from __future__ import annotations

import io
import logging
import re
import textwrap
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from boneage import __version__
from boneage.clinical.reference import mean_curve
from boneage.inference.api import BoneAgeModel, BoneAgeResult

DISCLAIMER = ("For research use only. Not a medical device: this estimate has not been cleared "
              "for clinical use and must be reviewed by a qualified radiologist.")
INTERVAL_NOTE = ("90% interval: on films the model had not seen, the true bone age fell inside "
                 "such an interval 9 times in 10 (split-conformal calibration).")
SDS_NOTE = ("SDS: (bone age - chronological age) / the Greulich & Pyle / Brush Foundation SD for "
            "the child's age and sex. Category: delayed or advanced only where the whole 90% "
            "interval lies below -2 or above +2 SD, normal only where it lies within; "
            "otherwise indeterminate.")


# TrueType fonts tried after matplotlib's own DejaVu Sans (Latin, Greek, Cyrillic, Armenian,
# Georgian, Hebrew, Arabic), where Debian's packages installed them: fonts-droid-fallback
# (Apache-2.0; Chinese, Japanese) and fonts-nanum (SIL OFL 1.1; Korean). `.ci/run` installs
# both; without them, or for a script none has, `printable` transliterates.
FALLBACK_FONTS = ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
                  "/usr/share/fonts/truetype/nanum/NanumGothic.ttf")


@lru_cache(maxsize=1)
def _font_setup() -> tuple[list[str], frozenset[int]]:
    """(font families in fallback order, the code points they cover together)."""
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager

    families, covered = [], set()
    paths = [font_manager.findfont("DejaVu Sans")] + [p for p in FALLBACK_FONTS
                                                       if Path(p).is_file()]
    for i, path in enumerate(paths):
        try:
            if i:
                font_manager.fontManager.addfont(path)
            font = TTFont(path, lazy=True, fontNumber=0)
            covered |= set(font.getBestCmap())
            families.append(font_manager.FontProperties(fname=path).get_name())
        except Exception:  # an unreadable font file: do without it
            continue
    return families, frozenset(covered)


def printable(text: str) -> str:
    """`text` as the report's fonts can draw it, never as empty boxes: a character none of
    them has is written as its ASCII form where it has one (accents dropped), else as a rough
    romanisation from its Unicode name (DEVANAGARI LETTER RA -> ra, a vowel sign's vowel; marks
    dropped), else as its code point (U+0E01)."""
    _, covered = _font_setup()
    out = []
    for ch in text:
        if ord(ch) in covered or ch.isspace():
            out.append(ch)
            continue
        plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        if plain:
            out.append(plain)
            continue
        words = unicodedata.name(ch, "").split()
        if "CHARACTER" in words:  # THAI CHARACTER SO SUA -> so, THAI CHARACTER SARA AA -> aa
            rest = words[words.index("CHARACTER") + 1:] or [""]
            out.append((rest[1:] if rest[0] == "SARA" else rest)[0].lower())
        elif "LETTER" in words or "VOWEL" in words:
            out.append(words[-1].lower())
        elif unicodedata.category(ch) not in ("Mn", "Mc"):
            out.append(f"U+{ord(ch):04X}")
    return "".join(out)


@contextmanager
def quiet_drawing() -> Iterator[None]:
    """No warning or log line from the drawing libraries while a report is drawn: matplotlib
    logs one line per glyph a font lacks and fontTools one per glyph it subsets, so a
    patient's name could be read back from a log."""
    loggers = [logging.getLogger(n) for n in ("matplotlib", "fontTools")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def years_months(months: float) -> str:
    """155.2 -> '12 y 11 m' (rounded to the month)."""
    y, m = divmod(int(round(months)), 12)
    return f"{y} y {m} m"


def report_filename(identifier: str | None, fallback: str = "film") -> str:
    """A safe file name for the report: `bone-age-<identifier>.pdf`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (identifier or fallback).strip())[:80].strip("._")
    return f"bone-age-{stem or 'film'}.pdf"


def accuracy_line(card: dict) -> str:
    """The model's measured accuracy in plain words, one figure for every film and every
    report: the full-resolution films' where the card has it (clinics send full-resolution
    films), else the held-out thumbnails'."""
    held = card.get("heldout_metrics") or {}
    val = (card.get("metrics") or {}).get("val") or {}
    full = card.get("fullres_metrics") or {}
    if full.get("mae") is not None:
        return (f"on {full.get('n', '?')} full-resolution films it had never seen, its bone "
                f"age was off by {full['mae']:.1f} months on average")
    if held.get("mae") is not None:
        return (f"on {held.get('n', '?')} films it had never seen, its bone age was off by "
                f"{held['mae']:.1f} months on average")
    if val.get("mae") is not None:
        return f"on its validation films its bone age was off by {val['mae']:.1f} months on average"
    return "its accuracy was not recorded"


def _span(lo: float | None, hi: float | None, unit: str = "cm") -> str:
    return f" (90%: {lo:.1f}-{hi:.1f} {unit})" if lo is not None else ""


def result_rows(result: BoneAgeResult) -> list[tuple[str, str]]:
    """The results table: what is known, in clinicians' units, SDS only where meaningful."""
    rows = [("Sex", "male" if result.sex == "M" else "female"),
            ("Bone age", f"{years_months(result.bone_age_months)}  "
                         f"({result.bone_age_months:.1f} months)")]
    if result.interval_low_months is not None:
        rows.append(("90% interval", f"{years_months(result.interval_low_months)} to "
                     f"{years_months(result.interval_high_months)}  "
                     f"({result.interval_low_months:.0f}-{result.interval_high_months:.0f} "
                     "months)"))
    if result.chronological_age_months is not None:
        rows += [("Chronological age", f"{years_months(result.chronological_age_months)}  "
                  f"({result.chronological_age_months:.1f} months)"),
                 ("Difference", f"{result.difference_months:+.1f} months")]
        if result.sds is not None:
            rows += [("SDS", f"{result.sds:+.2f}"), ("Category", str(result.category))]
        else:
            rows.append(("SDS", "not given (see the warnings)"))
    return rows + growth_rows(result)


def growth_rows(result: BoneAgeResult) -> list[tuple[str, str]]:
    """The growth figures of a result (the report's rows, the table output's second lines)."""
    rows = []
    if result.height_cm is not None:
        sds = f", SDS {result.height_sds:+.2f}" if result.height_sds is not None else ""
        rows.append(("Height", f"{result.height_cm:.1f} cm{sds} ({result.growth_reference})"))
    if result.weight_kg is not None:
        rows.append(("Weight", f"{result.weight_kg:.1f} kg"))
    if result.target_height_cm is not None:
        span = (f", range {result.target_height_low_cm:.1f}-{result.target_height_high_cm:.1f}"
                if result.target_height_low_cm is not None else "")
        rows.append(("Target height", f"{result.target_height_cm:.1f} cm{span} (mid-parental)"))
    if result.predicted_adult_height_cm is not None:
        rows.append(("Adult height (BP)", f"{result.predicted_adult_height_cm:.1f} cm"
                     + _span(result.predicted_adult_height_low_cm,
                             result.predicted_adult_height_high_cm) + ", Bayley-Pinneau"))
    if result.rwt_adult_height_cm is not None:
        rows.append(("Adult height (RWT)", f"{result.rwt_adult_height_cm:.1f} cm"
                     + _span(result.rwt_adult_height_low_cm, result.rwt_adult_height_high_cm)
                     + ", Roche-Wainer-Thissen, stature at 18"))
    return rows


def model_line(model: BoneAgeModel) -> str:
    """The model by name and version, and its measured accuracy in plain words."""
    version = model.card.get("version")
    return (f"Model: {model.name}" + (f" version {version}" if version else "")
            + f" ({model.card['arch']}): {accuracy_line(model.card)}. "
            f"Software: boneage {__version__}.")


def pdf_report(model: BoneAgeModel, result: BoneAgeResult, film_pixels: np.ndarray,
               heatmap_bgr: np.ndarray | None, identifier: str | None = None,
               study_date: str | None = None, file_name: str | None = None) -> bytes:
    """One A4 page. `film_pixels`: the film as read (shown downscaled, at its shape);
    `heatmap_bgr`: the overlay from `BoneAgeModel.heatmap` (same shape) or None;
    `identifier`: the patient or accession ID typed or given; `file_name`: the film's file."""
    import matplotlib

    from boneage.inference.explain import display_film
    from boneage.plots import _plt, draw_growth_chart

    plt = _plt()
    film = display_film(film_pixels)
    families, _ = _font_setup()
    with quiet_drawing(), matplotlib.rc_context({"pdf.fonttype": 42, "font.size": 9,
                                                 "font.family": families}):
        fig = plt.figure(figsize=(8.27, 11.69))  # A4 portrait
        left, width = 0.07, 0.86
        fig.text(left, 0.955, "Bone age report", fontsize=18, weight="bold")
        fig.text(left + width, 0.958, "Report created: " + datetime.now(timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"), fontsize=8, color="#555", ha="right")
        who = [f"Patient or accession ID: {printable(identifier)}" if identifier else
               "Patient or accession ID: (not given)",
               f"File: {printable(Path(file_name or result.file).name)}"]
        if study_date:
            who.append(f"Study date: {study_date}")
        who_lines = textwrap.wrap("     ".join(who), 85)
        for k, line in enumerate(who_lines):
            fig.text(left, 0.93 - 0.014 * k, line, fontsize=9.5)
        # Fixed regions, so that nothing pushes the chart off the page: the film and its
        # heatmap on top; the results on the left with the bone age chart beside them; the
        # warnings and notes across the page below; the model line and disclaimer at the foot.
        # Text that would run into the foot is drawn smaller (`step`), never dropped.
        top = 0.905 - 0.014 * (len(who_lines) - 1)
        panels = [(film, "film", "gray")]
        if heatmap_bgr is not None:
            panels.append((heatmap_bgr[:, :, ::-1], "regions that drove the estimate "
                           "(Grad-CAM++)", None))
        pw = width / len(panels)
        fh, fw = film.shape[:2]
        img_h = min(0.27 - 0.014 * (len(who_lines) - 1), (pw - 0.02) * 8.27 * fh / fw / 11.69)
        for k, (pic, title, cmap) in enumerate(panels):
            ax = fig.add_axes([left + k * pw + 0.01, top - img_h, pw - 0.02, img_h])
            ax.imshow(pic, cmap=cmap, vmin=0, vmax=255, interpolation="antialiased")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        if heatmap_bgr is None:
            fig.text(left, top - img_h - 0.012, "no heatmap for this model", fontsize=7,
                     color="#555")
        else:  # the colour scale of the overlay
            _colour_scale(fig, [left + pw + 0.01 + (pw - 0.02) * 0.2, top - img_h - 0.016,
                                (pw - 0.02) * 0.6, 0.007])
        upper = top - img_h - 0.04
        male = result.sex == "M"
        chart = result.chronological_age_months is not None
        rows = [(label, line) for label, value in result_rows(result)
                for line in _wrapped(value, 40 if chart else 75)]
        notes = [INTERVAL_NOTE] if result.interval_low_months is not None else []
        if result.sds is not None:
            notes.append(SDS_NOTE)
        if not chart:
            notes.append("No chronological age was given: no comparison with the reference "
                         "(give it, or use a DICOM with PatientAge or the birth and study "
                         "dates).")
        lines = ([(t, "warning") for w in result.warnings
                  for t in _wrapped("Warning: " + w, 110)]
                 + [(t, "note") for n in result.notes + notes for t in _wrapped(n, 120)])
        # the room: results from `upper` down, the chart beside them (at least 0.2 tall),
        # then the other lines down to the foot at 0.09
        box_top = upper + 0.012

        def chart_box(rows_end: float) -> float:
            return max(0.2, min(0.26, box_top - rows_end - 0.02))

        def end(step: float) -> float:
            y = upper - len(rows) * 0.019 * step
            if chart:
                y = min(y, box_top - chart_box(y) - 0.035)
            return y - 0.006 - len(lines) * 0.0135 * step

        step = next((k / 20 for k in range(20, 9, -1) if end(k / 20) >= FOOT), 0.5)
        y = upper
        label_w = 0.17
        for k, (label, value) in enumerate(rows):
            first = k == 0 or rows[k - 1][0] != label
            if first:
                fig.text(left, y, label, fontsize=9 * step, color="#333")
            fig.text(left + label_w, y, value, fontsize=9 * step,
                     weight="bold" if label in ("Bone age", "Category") else "normal")
            y -= 0.019 * step
        if chart:
            box_h = chart_box(y)
            ax3 = fig.add_axes([0.60, box_top - box_h, 0.34, box_h - 0.02])
            interval = None
            if result.interval_low_months is not None:
                interval = (result.interval_low_months, result.interval_high_months)
            draw_growth_chart(ax3, mean_curve(male), male, result.chronological_age_months,
                              result.bone_age_months, interval)
            ax3.legend(fontsize=5.5, loc="upper left")
            y = min(y, box_top - box_h - 0.035)
        y -= 0.006
        for text, kind in lines:
            fig.text(left, y, text, fontsize=(8 if kind == "warning" else 7.5) * step,
                     color="#a05a00" if kind == "warning" else "#555")
            y -= 0.0135 * step
        y = 0.062  # the model line wraps (a recalibrated copy's name carries a file name)
        for line in textwrap.wrap(model_line(model), 125):
            fig.text(left, y, line, fontsize=7.5)
            y -= 0.013
        for i, line in enumerate(textwrap.wrap(DISCLAIMER, 120)):
            fig.text(left, y - 0.004 - 0.013 * i, line, fontsize=7.5, color="#a00")
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf")
        plt.close(fig)
    return buf.getvalue()


FOOT = 0.09  # the model line and the disclaimer lie below this


def _wrapped(text: str, width: int) -> list[str]:
    return textwrap.wrap(printable(text), width) or [""]


def _colour_scale(fig, rect: list[float]) -> None:
    """A horizontal bar of the heatmap's colours (OpenCV's JET, as `overlay` draws them),
    labelled from "less" to "more" influence on the estimate."""
    import cv2

    ramp = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None, :], cv2.COLORMAP_JET)
    ax = fig.add_axes(rect)
    ax.imshow(ramp[:, :, ::-1], aspect="auto")
    ax.set_xticks([0, 255], ["less", "more influence on the estimate"], fontsize=6.5)
    ax.set_yticks([])
    ax.tick_params(length=0, pad=1)
    for side in ax.spines.values():
        side.set_visible(False)


def result_picture(model: BoneAgeModel, result: BoneAgeResult | None, film_pixels: np.ndarray,
                   heatmap_bgr: np.ndarray | None, reason: str | None = None,
                   height: int = 1024) -> np.ndarray:
    """The PDF's first panel as one RGB picture (for a DICOM Secondary Capture a radiologist
    opens in any viewer): the film at its own shape, with the heatmap where there is one, and
    beside it the results, the warnings, the model and the disclaimer; for a film that was not
    assessed, "Not assessed" and why. `height` pixels tall."""
    from boneage.inference.explain import display_film
    from boneage.plots import _plt

    plt = _plt()
    film = display_film(film_pixels) if film_pixels is not None else None
    families, _ = _font_setup()
    dpi = 100
    film_w = 0 if film is None else height * film.shape[1] / film.shape[0]
    panel_w = 720
    with quiet_drawing(), matplotlib_rc(families):
        fig = plt.figure(figsize=((film_w + panel_w) / dpi, height / dpi), dpi=dpi,
                         facecolor="black")
        if film is not None:
            ax = fig.add_axes([0, 0, film_w / (film_w + panel_w), 1])
            pic = film if heatmap_bgr is None else heatmap_bgr[:, :, ::-1]
            ax.imshow(pic, cmap="gray" if heatmap_bgr is None else None, vmin=0, vmax=255,
                      interpolation="antialiased", aspect="auto")
            ax.axis("off")
        x0 = (film_w + 24) / (film_w + panel_w)
        line = 26 / height  # one line of 15 px text, in figure units

        def text(y: float, s: str, **kw) -> float:
            fig.text(x0, y, s, color=kw.pop("color", "white"), va="top", **kw)
            return y - line * kw.get("fontsize", 15) / 15

        y = 1 - 24 / height
        y = text(y, "Bone age (boneage)", fontsize=22, weight="bold") - line * 0.4
        if result is None:
            y = text(y, "Not assessed", fontsize=20, weight="bold", color="#ffb347")
            for part in textwrap.wrap(printable(reason or "no reason recorded"), 52):
                y = text(y, part, fontsize=14)
        else:
            for label, value in result_rows(result):
                text(y, label, fontsize=15, color="#cccccc")
                fig.text(x0 + 200 / (film_w + panel_w), y, value, color="white", va="top",
                         fontsize=15, weight="bold" if label in ("Bone age", "Category")
                         else "normal")
                y -= line
            y -= line * 0.4
            for w in result.warnings:
                for i, part in enumerate(textwrap.wrap(printable(w), 56)):
                    y = text(y, ("Warning: " if i == 0 else "  ") + part, fontsize=13,
                             color="#ffb347")
            for n in result.notes:
                for part in textwrap.wrap(printable(n), 62):
                    y = text(y, part, fontsize=12, color="#cccccc")
        if heatmap_bgr is not None:
            y = text(y - line * 0.4, "Colour: regions that drove the estimate (Grad-CAM++)",
                     fontsize=12, color="#cccccc")
        y = 0.16
        for part in textwrap.wrap(model_line(model), 62):
            y = text(y, part, fontsize=12, color="#cccccc")
        for part in textwrap.wrap(DISCLAIMER, 62):
            y = text(y, part, fontsize=12, color="#ff8080")
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
    return rgb


def matplotlib_rc(families: list[str]):
    import matplotlib

    return matplotlib.rc_context({"font.family": families})


def tempo_line(st) -> str:
    """One step between visits in words: a tempo only where its interval allows one."""
    rate = f"{st.bone_age_per_year:.2f} y of bone age per year"
    if st.bone_age_per_year_low is not None:
        rate += f" (90%: {st.bone_age_per_year_low:.2f} to {st.bone_age_per_year_high:.2f})"
    said = (f"; {st.tempo}" if st.tempo else "")
    return (f"since {st.from_date} ({st.years:.1f} y): {rate}{said}"
            + (f"; height {st.height_velocity_cm_per_year:.1f} cm per year"
               if st.height_velocity_cm_per_year is not None else ""))


def followup_report(model: BoneAgeModel, series, reference: str = "uk-who") -> bytes:
    """One A4 page for a child with several visits (clinical/followup.py Series): the visits
    in date order, the change between them, the bone age chart across visits and, where
    heights were given, the height chart on the growth reference."""
    from boneage.plots import _plt, draw_height_chart, draw_series_chart

    plt = _plt()
    families, _ = _font_setup()
    visits = series.visits
    male = visits[0].sex == "M"
    heights = [v for v in visits if v.height_cm is not None and
               v.chronological_age_months is not None]
    with quiet_drawing(), matplotlib_rc(families):
        fig = plt.figure(figsize=(8.27, 11.69))
        left = 0.07
        fig.text(left, 0.955, "Bone age follow-up", fontsize=18, weight="bold")
        fig.text(0.93, 0.958, "Report created: " + datetime.now(timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"), fontsize=8, color="#555", ha="right")
        fig.text(left, 0.93, f"Patient or accession ID: {printable(series.identifier)}     "
                 f"Sex: {'male' if male else 'female'}     Visits: {len(visits)}", fontsize=9.5)
        target = next((v for v in visits if v.target_height_cm is not None), None)
        y = 0.912
        if target is not None:
            rng = (f", range {target.target_height_low_cm:.1f}-"
                   f"{target.target_height_high_cm:.1f} cm"
                   if target.target_height_low_cm is not None else "")
            fig.text(left, y, f"Target height (mid-parental): {target.target_height_cm:.1f} cm"
                     f"{rng}", fontsize=9)
            y -= 0.018
        y -= 0.01
        head = ["Study date", "Chron. age", "Bone age (90% interval)", "SDS, category",
                "Height", "Adult height (90%)"]
        xs = [left, left + 0.11, left + 0.22, left + 0.44, left + 0.57, left + 0.71]
        for x, h in zip(xs, head, strict=True):
            fig.text(x, y, h, fontsize=8, weight="bold")
        for i, v in enumerate(visits):
            y -= 0.019
            st = series.steps[i - 1] if i else None
            ca = "-" if v.chronological_age_months is None else years_months(
                v.chronological_age_months)
            ba = years_months(v.bone_age_months) + (
                f" ({years_months(v.interval_low_months)} to "
                f"{years_months(v.interval_high_months)})"
                if v.interval_low_months is not None else "")
            sds = "-" if v.sds is None else f"{v.sds:+.2f}, {v.category}"
            ht = "-" if v.height_cm is None else f"{v.height_cm:.1f} cm" + (
                f", SDS {v.height_sds:+.2f}" if v.height_sds is not None else "")
            adult = "-" if v.predicted_adult_height_cm is None else (
                f"{v.predicted_adult_height_cm:.1f} cm ({v.predicted_adult_height_low_cm:.0f}-"
                f"{v.predicted_adult_height_high_cm:.0f}) BP")
            for x, text in zip(xs, [v.study_date, ca, ba, sds, ht, adult], strict=True):
                fig.text(x, y, text, fontsize=7.5)
            if v.rwt_adult_height_cm is not None:
                y -= 0.014
                fig.text(xs[5], y, f"{v.rwt_adult_height_cm:.1f} cm "
                         f"({v.rwt_adult_height_low_cm:.0f}-{v.rwt_adult_height_high_cm:.0f})"
                         " RWT", fontsize=7.5)
            if st is not None:
                y -= 0.016
                fig.text(xs[1], y, tempo_line(st), fontsize=7.5, color="#333")
        y -= 0.03
        for line in textwrap.wrap("Tempo: years of bone age gained per year of age (1.00 keeps "
                                  "pace with age), with its 90% interval from the two "
                                  "estimates' intervals; where that interval contains 1.00 the "
                                  "change cannot be told from keeping pace. BP: Bayley-Pinneau, "
                                  "RWT: Roche-Wainer-Thissen (stature at 18); each adult height "
                                  "with its 90% interval (docs/growth.md).", 125):
            fig.text(left, y, line, fontsize=7.5, color="#555")
            y -= 0.014
        points = [(v.chronological_age_months, v.bone_age_months, v.interval_low_months,
                   v.interval_high_months, v.study_date) for v in visits
                  if v.chronological_age_months is not None]
        chart_h = min(0.27 if heights else 0.45, y - 0.04 - (0.36 if heights else 0.12))
        if points:
            ax = fig.add_axes([0.12, y - 0.04 - chart_h, 0.76, chart_h])
            draw_series_chart(ax, mean_curve(male), male, points)
        if heights:
            from boneage.clinical.growth import CENTILE_NAMES, REFERENCES, height_centiles

            ax2 = fig.add_axes([0.12, 0.13, 0.76, 0.2])
            draw_height_chart(ax2, height_centiles(male, reference), male,
                              [(v.chronological_age_months, v.height_cm, v.study_date)
                               for v in heights], REFERENCES[reference], CENTILE_NAMES,
                              None if target is None else (target.target_height_cm,
                                                           target.target_height_low_cm,
                                                           target.target_height_high_cm))
        y = 0.062
        for line in textwrap.wrap(model_line(model), 125):
            fig.text(left, y, line, fontsize=7.5)
            y -= 0.013
        for line in textwrap.wrap(DISCLAIMER, 120):
            fig.text(left, y, line, fontsize=7.5, color="#a00")
            y -= 0.013
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf")
        plt.close(fig)
    return buf.getvalue()
