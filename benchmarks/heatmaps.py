"""Which heatmap method shows something on real films? Every method of
`boneage.inference.explain` on the 25 raw samples (rsna-fullres, stanford-demo, clinic):

    python benchmarks/heatmaps.py [--model default] [--sheet out.png]

Per method: how many maps are localised (a hot part, >= half the peak, covering 0.5-35% of the
model's input: not blank, not a wash), how much of that hot part lies on the hand (pixels above
Otsu's threshold of the input) rather than on the background, and the seconds per film on this
CPU. Beside them, the same Grad-CAM++ computed without torch, on ONNX Runtime from the heatmap
graph the export writes (X.cam.onnx): its correlation with the torch map, film by film, and
its time. --sheet writes a contact sheet (film | one overlay per method | ONNX) to look at.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/raw-samples"))
    ap.add_argument("--sheet", help="write a contact sheet PNG here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/heatmaps.json"))
    a = ap.parse_args()
    from boneage import load_model
    from boneage.inference.api import read_film
    from boneage.inference.explain import (
        METHODS,
        display_film,
        is_localised,
        overlay,
        saliency,
        to_film,
    )

    model = load_model(a.model, backend="torch")
    onnx = load_model(a.model, backend="onnx")
    if onnx.cam is None:
        raise SystemExit(f"{a.model}: no ONNX heatmap graph beside it (boneage export)")
    sexes: dict[str, bool] = {}
    for labels in Path(a.data).glob("*/labels.csv"):
        with open(labels) as f:
            for row in csv.DictReader(f):
                key = Path(next(iter(row.values()))).stem
                sexes[key] = str(row.get("male", row.get("sex", "M"))).upper() in ("TRUE", "M",
                                                                                    "1")
    files = sorted(p for p in Path(a.data).glob("*/*") if p.suffix.lower() in (".png", ".jpg"))
    stats = {m: {"localised": 0, "on_hand": [], "seconds": 0.0} for m in METHODS}
    rows, aspect_errors, names, corr, onnx_s = [], [], [], [], 0.0
    for path in files:
        film = read_film(path)
        names.append(path.name)
        img, meta = model.prepare(film)
        # what a clinician is shown: the overlay from the default method, at the film's shape
        shown_full = model.heatmap(film, sexes.get(path.stem, True), (img, meta))
        fh, fw = film.pixels.shape
        aspect_errors.append(abs(shown_full.shape[1] / shown_full.shape[0] / (fw / fh) - 1))
        x = model.predictor.pipeline.tensor_part(img, {})
        _, mask = cv2.threshold(img, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        shown = display_film(film.pixels, 256)
        row = [cv2.cvtColor(shown, cv2.COLOR_GRAY2BGR)]
        for m in METHODS:
            t0 = time.perf_counter()
            cam = saliency(model.predictor.model, x, sexes.get(path.stem, True), m)
            stats[m]["seconds"] += time.perf_counter() - t0
            stats[m]["localised"] += is_localised(cam)
            hot = cam >= 0.5 * max(float(cam.max()), 1e-6)
            if hot.any() and cam.max() > 0:
                stats[m]["on_hand"].append(float(mask[hot].mean()))
            row.append(overlay(shown, to_film(cam, meta, shown.shape[:2])))
            if m == "gradcampp":
                t0 = time.perf_counter()
                cam_onnx = onnx.cam.saliency(x, sexes.get(path.stem, True))
                onnx_s += time.perf_counter() - t0
                corr.append(float(np.corrcoef(cam.ravel(), cam_onnx.ravel())[0, 1]))
                onnx_row = overlay(shown, to_film(cam_onnx, meta, shown.shape[:2]))
        rows.append(np.hstack([*row, onnx_row]))
    n = len(files)
    result = {"model": model.name, "films": n,
              "max_aspect_error": round(float(max(aspect_errors)), 4), "methods": {
        m: {"localised": s["localised"],
            "hot_on_hand": round(float(np.mean(s["on_hand"])), 3) if s["on_hand"] else None,
            "seconds_per_film": round(s["seconds"] / max(n, 1), 3)} for m, s in stats.items()},
              "onnx_gradcampp": {"correlation_min": round(min(corr), 4),
                                 "correlation_mean": round(float(np.mean(corr)), 4),
                                 "seconds_per_film": round(onnx_s / max(n, 1), 3)}}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"overlays keep the film's aspect within {result['max_aspect_error']:.1%}")
    for m, s in result["methods"].items():
        print(f"{m:10} localised {s['localised']}/{n}  hot part on the hand {s['hot_on_hand']}  "
              f"{s['seconds_per_film']:.2f} s/film")
    o = result["onnx_gradcampp"]
    print(f"gradcampp on ONNX Runtime: correlation with torch min {o['correlation_min']}, mean "
          f"{o['correlation_mean']}; {o['seconds_per_film']:.2f} s/film")
    if a.sheet:
        width = max(r.shape[1] for r in rows)
        rows = [cv2.copyMakeBorder(r, 2, 2, 0, width - r.shape[1], cv2.BORDER_CONSTANT)
                for r in rows]
        cv2.imwrite(a.sheet, np.vstack(rows))
        print(f"sheet -> {a.sheet}")


if __name__ == "__main__":
    main()
