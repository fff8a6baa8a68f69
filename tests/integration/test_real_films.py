"""On the real films in ../shared/data (skipped where absent)."""

from __future__ import annotations

import numpy as np
import pytest

from boneage.cli import main
from boneage.data.images import read_image
from boneage.preprocess.hand import localise_hand
from boneage.preprocess.prepare import read_manifest
from tests.conftest import RAW, SHARED, need


@pytest.mark.parametrize("sub", ["rsna-fullres", "stanford-demo", "clinic"])
def test_prepare_every_raw_sample(sub, tmp_path, capsys):
    folder = need(RAW / sub)
    assert main(["prepare", "--images", str(folder), "--out", str(tmp_path / "c"),
                 "--size", "128"]) == 0
    rows = read_manifest(tmp_path / "c")
    assert len(rows) == len(list(folder.glob("*.[pj][np]g")))
    assert all(r["status"] == "ok" for r in rows.values())
    assert all(r["crop_fallback"] == "0" for r in rows.values())


def test_crop_keeps_the_bright_foreground_on_rsna_films():
    files = sorted(need(RAW / "rsna-fullres").glob("*.png"))
    smaller = 0
    for f in files:
        film = read_image(f)
        box = localise_hand(film)
        bright = film > np.percentile(film, 95)
        inside = bright[box.y0:box.y1, box.x0:box.x1].sum() / bright.sum()
        assert inside > 0.85, f"{f.name}: crop keeps only {inside:.0%} of the bright pixels"
        smaller += (box.x1 - box.x0) * (box.y1 - box.y0) < 0.8 * film.size
    assert smaller >= 3  # and it does crop


def test_heatmaps_on_real_films_are_localised_and_keep_the_films_shape():
    """The bundled model's heatmap on raw samples of each source: something stands out (not a
    blank wash) and the overlay has the film's own proportions."""
    pytest.importorskip("torch")
    from boneage import load_model
    from boneage.inference.api import read_film
    from boneage.inference.explain import is_localised, saliency

    model = load_model("default", backend="torch")
    files = [need(RAW / "rsna-fullres") / "1489.png", RAW / "stanford-demo" / "3.png",
             RAW / "clinic" / "m9.jpg"]
    for f in files:
        film = read_film(f)
        prepared = model.prepare(film)
        cam = saliency(model.predictor.model,
                       model.predictor.pipeline.tensor_part(prepared[0], {}), True)
        assert is_localised(cam), f.name
        pic = model.heatmap(film, "M", prepared)
        h, w = film.pixels.shape
        assert pic.shape[1] / pic.shape[0] == pytest.approx(w / h, rel=0.02), f.name
        assert max(pic.shape[:2]) == min(1024, max(h, w))


def test_full_resolution_seed_path(tmp_path, capsys):
    """The path a researcher with the full RSNA release takes, on real full-resolution films:
    prepare with the seed pipeline at 256 px (crop, CLAHE, letterbox), train, evaluate the raw
    films; evaluate replays the card's pipeline, so it measures what training measured."""
    pytest.importorskip("lightning")
    import json

    films = need(SHARED / "rsna-val-fullres")
    cache, run = tmp_path / "cache", tmp_path / "run"
    assert main(["prepare", "--images", str(films), "--labels", str(films / "labels.csv"),
                 "--out", str(cache), "--workers", "2"]) == 0
    assert main(["train", "--data", str(cache), "--config", "configs/seed.yaml", "--arch",
                 "resnet18", "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.2",
                 "--out", str(run), "--no-progress", "--precision", "32-true"]) == 0
    # fp32 as evaluate computes: `auto` trains in bf16 on CPUs with avx512_bf16, and bf16 puts
    # an untrained network's ~400-month errors about 1% (4 months) from evaluate's figure
    card = json.loads((run / "best.json").read_text())
    steps = [s["name"] for s in card["pipeline"]["steps"]]
    assert steps == ["to_uint8", "crop_hand", "fit", "clahe", "pad", "scale"]
    assert card["input_size"] == 256
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--images", str(films), "--labels",
                 str(films / "labels.csv"), "--subset", "val", "--out", str(run / "eval"),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == card["data"]["split_counts"]["val"] >= 15
    assert metrics["mae"] == pytest.approx(card["metrics"]["val"]["mae"], abs=0.05)
