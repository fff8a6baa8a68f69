"""Shared fixtures. Real data lives outside the repo (../shared/data or $BONEAGE_DATA);
tests that need it skip cleanly where it is absent."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.data.synthetic import synthetic_film

ROOT = Path(__file__).resolve().parents[1]
_STARTED = time.time()
SHARED = Path(os.environ.get("BONEAGE_DATA", ROOT.parent / "shared" / "data"))
THUMBS = SHARED / "rsna-bone-age-100px"
RAW = SHARED / "raw-samples"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


@pytest.fixture
def films(tmp_path: Path) -> Path:
    """Six small synthetic films in a folder, with labels.csv in the RSNA training format."""
    d = tmp_path / "films"
    d.mkdir()
    lines = ["id,boneage,male"]
    for i in range(6):
        img, _ = synthetic_film(height=400, width=300, seed=i, border=20 * (i % 2))
        cv2.imwrite(str(d / f"{100 + i}.png"), img)
        lines.append(f"{100 + i},{20 + 30 * i},{'True' if i % 2 else 'False'}")
    (d / "labels.csv").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def thumbs_subset(tmp_path: Path) -> Path:
    """About 200 real 100 px RSNA films (labels + images) copied to a temporary folder."""
    src = need(THUMBS)
    import csv

    with open(src / "boneage-training-dataset.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    pick = [rows[i] for i in sorted(rng.choice(len(rows), 200, replace=False))]
    out = tmp_path / "thumbs"
    (out / "img").mkdir(parents=True)
    with open(out / "labels.csv", "w") as f:
        f.write("id,boneage,male\n")
        for r in pick:
            f.write(f"{r['id']},{r['boneage']},{r['male']}\n")
            (out / "img" / f"{r['id']}.png").write_bytes(
                (src / "boneage-training-dataset" / f"{r['id']}.png").read_bytes())
    return out


@pytest.fixture
def small_set(request, tmp_path: Path) -> tuple[Path, Path]:
    """(images dir, labels csv) for short training runs: 200 real thumbnails, or 120
    generated films without the data."""
    if THUMBS.exists():
        d = request.getfixturevalue("thumbs_subset")
        return d / "img", d / "labels.csv"
    import csv

    d = tmp_path / "gen"
    d.mkdir()
    rows = []
    for i in range(120):
        img, _ = synthetic_film(height=200, width=160, seed=i, hand_scale=0.5 + (i % 12) / 12)
        cv2.imwrite(str(d / f"{i}.png"), img)
        rows.append((i, 10 + 18 * (i % 12), i % 2 == 0))
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "boneage", "male"), *rows])
    return d, d / "labels.csv"


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """A small untrained checkpoint (seed pipeline, 64 px) for plumbing tests; needs torch."""
    pytest.importorskip("torch")
    from tests.helpers import make_test_model

    return make_test_model(tmp_path)


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the browser test's screenshot in the log (CI keeps it as an artifact)."""
    shot = Path(os.environ.get("BONEAGE_ARTIFACTS", ROOT / "test-artifacts")) / "page.png"
    if shot.is_file() and shot.stat().st_mtime > _STARTED:
        terminalreporter.write_line(f"browser screenshot artifact: {shot}")
