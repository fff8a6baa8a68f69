"""Every PNG figure the project writes, in one place (matplotlib, headless, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from boneage.fileio import atomic_write_bytes

SEX_COLOURS = {"male": "#3b6fb6", "female": "#c8507a"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def dataset_figure(months: np.ndarray, male: np.ndarray, path: str | Path) -> None:
    """Counts by sex and bone-age histograms; male is an object array of True/False/None."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    counts = [int(np.sum(male == True)), int(np.sum(male == False))]  # noqa: E712
    ax[0].bar(["male", "female"], counts, color=[SEX_COLOURS["male"], SEX_COLOURS["female"]])
    ax[0].set_title("Films by sex")
    for i, c in enumerate(counts):
        ax[0].text(i, c, str(c), ha="center", va="bottom")
    bins = np.arange(0, 241, 12)
    ax[1].hist(months[np.isfinite(months)], bins=bins, color="#777")
    ax[1].set_title("Bone age, all")
    for sex, sel in (("male", male == True), ("female", male == False)):  # noqa: E712
        ax[2].hist(months[sel], bins=bins, alpha=0.6, label=sex, color=SEX_COLOURS[sex])
    ax[2].set_title("Bone age by sex")
    ax[2].legend()
    for a in ax[1:]:
        a.set_xlabel("bone age (months)")
        a.set_ylabel("films")
    save(fig, path)


def _col(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def training_curves(rows: list[dict], curves: str | Path, lr: str | Path) -> None:
    """Loss and MAE per epoch (train and validation), and the learning rate. Epochs are
    numbered from 0 as in the log, metrics.csv and the card, and the best epoch (lowest
    validation MAE, the one best.safetensors keeps) is marked."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    epochs = _col(rows, "epoch")
    val_mae = _col(rows, "val_mae")
    style = "o-" if len(rows) <= 30 else "-"  # dots only where they can be told apart
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for a, key, title in ((ax[0], "loss", "Huber loss"), (ax[1], "mae", "MAE (months)")):
        series = [_col(rows, f"{part}_{key}") for part in ("train", "val")]
        for values, label in zip(series, ("train", "validation"), strict=True):
            a.plot(epochs, values, style, label=label)
        a.set_title(title)
        values = np.concatenate(series)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size and values.max() > 5 * values.min():  # the first epochs' spikes would
            a.set_yscale("log")  # flatten the end, where runs differ by tenths of a month
            a.yaxis.set_major_locator(LogLocator(subs=(1, 1.5, 2, 3, 5, 7)))
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.yaxis.set_minor_formatter(NullFormatter())
            a.set_title(f"{title}, log scale")
    if np.isfinite(val_mae).any():
        best = int(np.nanargmin(val_mae))
        for a in ax:
            a.axvline(epochs[best], color="#888", ls=":", lw=1,
                      label=f"best: epoch {epochs[best]:.0f}, {val_mae[best]:.2f} months")
    for a in ax:
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend()
        a.grid(alpha=0.3)
    save(fig, curves)
    fig, a = plt.subplots(figsize=(6, 3.5))
    a.plot(epochs, _col(rows, "lr"), style)
    a.set_xlabel("epoch")
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_ylabel("learning rate (end of epoch)")
    a.grid(alpha=0.3)
    save(fig, lr)


def evaluation_figures(y: np.ndarray, p: np.ndarray, male: np.ndarray, metrics: dict,
                       out_dir: str | Path) -> dict[str, Path]:
    """Predicted vs true, Bland-Altman, residual histogram, MAE by age band."""
    plt = _plt()
    out_dir = Path(out_dir)
    names = ("scatter", "bland_altman", "residuals", "mae_by_age")
    paths = {k: out_dir / f"{k}.png" for k in names}
    colours = np.where(male, SEX_COLOURS["male"], SEX_COLOURS["female"])
    lim = [0, max(240.0, float(np.nanmax(np.r_[y, p])) + 5)]

    fig, a = plt.subplots(figsize=(5.5, 5.5))
    a.scatter(y, p, s=8, c=colours, alpha=0.6)
    a.plot(lim, lim, "k--", lw=1, label="identity")
    a.set(xlim=lim, ylim=lim, xlabel="true bone age (months)", ylabel="predicted (months)",
          title=f"MAE {metrics['mae']:.2f}, RMSE {metrics['rmse']:.2f}, R² {metrics['r2']:.3f}")
    a.legend()
    save(fig, paths["scatter"])

    diff, mean = p - y, (p + y) / 2
    md, sd = float(diff.mean()), float(diff.std())
    fig, a = plt.subplots(figsize=(6.5, 4.5))
    a.scatter(mean, diff, s=8, c=colours, alpha=0.6)
    for v, style in ((md, "-"), (md + 1.96 * sd, "--"), (md - 1.96 * sd, "--")):
        a.axhline(v, color="k", ls=style, lw=1)
    a.set(xlabel="mean of true and predicted (months)", ylabel="predicted - true (months)",
          title=f"Bland-Altman: bias {md:.2f}, limits of agreement ±{1.96 * sd:.2f}")
    save(fig, paths["bland_altman"])

    fig, a = plt.subplots(figsize=(6, 4))
    a.hist(diff, bins=40, color="#777")
    a.axvline(0, color="k", lw=1)
    a.set(xlabel="residual, predicted - true (months)", ylabel="films", title="Residuals")
    save(fig, paths["residuals"])

    bands = metrics["by_age_band"]
    names = list(bands)
    maes = [bands[k].get("mae", np.nan) for k in names]
    fig, a = plt.subplots(figsize=(6, 4))
    bars = a.bar(names, maes, color="#4a7f62")
    for b, k in zip(bars, names, strict=True):
        a.text(b.get_x() + b.get_width() / 2, b.get_height(), f"n={bands[k]['n']}", ha="center",
               va="bottom", fontsize=8)
    a.set(xlabel="true bone age band", ylabel="MAE (months)", title="MAE by age band")
    save(fig, paths["mae_by_age"])
    return paths


def comparison_chart(rows: list[dict], path: str | Path) -> None:
    plt = _plt()
    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    titles = ("MAE (months)", "RMSE (months)", "R²")
    for a, key, title in zip(ax, ("mae", "rmse", "r2"), titles, strict=True):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        bars = a.bar(names, vals, color="#3b6fb6")
        for b, v in zip(bars, vals, strict=True):
            a.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.3g}", ha="center",
                   va="bottom", fontsize=8)
        a.set_title(title)
        a.tick_params(axis="x", rotation=20)
    save(fig, path)


def draw_growth_chart(ax, reference: tuple[np.ndarray, np.ndarray, np.ndarray], male: bool,
                      chronological_months: float | None, bone_age_months: float,
                      interval: tuple[float, float] | None = None) -> None:
    """Bone age against chronological age: the reference (ages, mean skeletal ages, SDs, in
    months) as its mean and +/-2 SD band, and the patient's point (a horizontal line when the
    chronological age is unknown)."""
    ages, means, sds = reference
    y = ages / 12
    ax.fill_between(y, (ages - 2 * sds) / 12, (ages + 2 * sds) / 12, color="#9ecae1", alpha=0.5,
                    label="±2 SD (Greulich & Pyle / Brush)")
    ax.plot(y, ages / 12, "k--", lw=1, label="bone age = chronological age")
    ax.plot(y, means / 12, color="#08519c", lw=1.5, label="Brush Foundation mean")
    colour = SEX_COLOURS["male" if male else "female"]
    if chronological_months is not None:
        err = None
        if interval is not None:
            err = [[(bone_age_months - interval[0]) / 12], [(interval[1] - bone_age_months) / 12]]
        ax.errorbar([chronological_months / 12], [bone_age_months / 12], yerr=err, fmt="o",
                    color=colour, ms=8, capsize=4,
                    label="this film, with its 90% interval" if err else "this film")
    else:
        ax.axhline(bone_age_months / 12, color=colour, lw=2, label="this film's bone age")
    ax.set(xlabel="chronological age (years)", ylabel="bone age (years)", xlim=(0, 19),
           ylim=(0, 20), title=f"Bone age chart ({'male' if male else 'female'})",
           xticks=range(0, 19, 2), yticks=range(0, 21, 2))  # the page's steps: 2 years
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def draw_series_chart(ax, reference: tuple[np.ndarray, np.ndarray, np.ndarray], male: bool,
                      points: list[tuple[float, float, float | None, float | None, str]]) -> None:
    """A child's visits on the bone age chart: (chronological months, bone age months,
    interval low, interval high, label) per visit, joined in date order, on the reference's
    mean and +/-2 SD band."""
    ages, means, sds = reference
    y = ages / 12
    ax.fill_between(y, (ages - 2 * sds) / 12, (ages + 2 * sds) / 12, color="#9ecae1", alpha=0.5,
                    label="±2 SD (Greulich & Pyle / Brush)")
    ax.plot(y, ages / 12, "k--", lw=1, label="bone age = chronological age")
    colour = SEX_COLOURS["male" if male else "female"]
    xs = [p[0] / 12 for p in points]
    ys = [p[1] / 12 for p in points]
    err = [[(p[1] - p[2]) / 12 if p[2] is not None else 0 for p in points],
           [(p[3] - p[1]) / 12 if p[3] is not None else 0 for p in points]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", color=colour, ms=6, capsize=3,
                label="visits, with 90% intervals")
    for x, yy, p in zip(xs, ys, points, strict=True):
        ax.annotate(p[4], (x, yy), textcoords="offset points", xytext=(6, -10), fontsize=7)
    lo, hi = max(0, min(xs) - 2), min(19, max(xs) + 2)
    bottom = min([*ys, *xs, *(p[2] / 12 for p in points if p[2] is not None)])
    top = max([*ys, *xs, *(p[3] / 12 for p in points if p[3] is not None)])
    ax.set(xlabel="chronological age (years)", ylabel="bone age (years)", xlim=(lo, hi),
           ylim=(max(0, bottom - 1), min(20, top + 1)),
           title=f"Bone age across visits ({'male' if male else 'female'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def draw_height_chart(ax, centiles: dict[float, list[tuple]], male: bool,
                      points: list[tuple[float, float, str]], reference: str,
                      names: tuple[str, ...] = (), target: tuple | None = None) -> None:
    """Height against age: the reference's centile curves (SDS -> points, each named by
    `names` in SDS order, labelled at its right end) and the visits (age in months, height in
    cm, label); `target` (cm, low, high) is drawn at the right edge as the parents' target."""
    for k, (z, pts) in enumerate(sorted(centiles.items())):
        if pts:
            a, h = zip(*pts, strict=True)
            ax.plot(a, h, color="#08519c" if z == 0 else "#9ecae1", lw=1.3 if z == 0 else 0.8)
            name = names[k] if k < len(names) else f"{z:+g} SD"
            ax.annotate(name, (a[-1], h[-1]), textcoords="offset points", xytext=(2, -2),
                        fontsize=5.5, color="#08519c")
    if centiles:
        ax.plot([], [], color="#9ecae1", label=f"centiles ({reference})")
    if target is not None and target[0] is not None:
        top = max((p[0] for pts in centiles.values() for p in pts), default=18.0)
        err = None if target[1] is None else [[target[0] - target[1]], [target[2] - target[0]]]
        ax.errorbar([top + 0.6], [target[0]], yerr=err, fmt="s", color="#444", ms=5,
                    capsize=3, label="target height (mid-parental), with its range")
    colour = SEX_COLOURS["male" if male else "female"]
    xs = [p[0] / 12 for p in points]
    ax.plot(xs, [p[1] for p in points], "o-", color=colour, ms=6, label="height at the visits")
    for x, p in zip(xs, points, strict=True):
        ax.annotate(p[2], (x, p[1]), textcoords="offset points", xytext=(6, -10), fontsize=7)
    ax.set(xlabel="age (years)", ylabel="height (cm)",
           xlim=(max(0, min(xs) - 2), 20 if target is not None else min(20, max(xs) + 2)),
           title="Height chart")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
