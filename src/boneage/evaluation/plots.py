"""Every PNG figure the project writes, in one place (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from boneage.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from boneage.data.labels import LabelTable

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


def dataset_figure(table: LabelTable, path: str | Path) -> None:
    plt = _plt()
    months = table.months
    male = np.array([r.male for r in table], dtype=object)
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
