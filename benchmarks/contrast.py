"""Faint films: how the error depends on a film's contrast, and whether stretching the contrast
at inference alone helps a model trained without it.

    python benchmarks/contrast.py [--model default] [--subset val|test] [--stretch]

For the thumbnails of one part of benchmarks/results/default_split.csv, each film goes through
the model's own preprocessing; its contrast is the spread between the 1st and 99th percentile
of the hand's box as the `hand` preset prepares it (before any `stretch` step, so models with
and without one are compared on the same films in each band). Reports the one-view MAE and
bias by contrast band and, with --stretch, the same after the `stretch` step is applied to the
prepared images (a model trained without the step sees them only at inference). Writes
benchmarks/results/contrast_<model>_<subset>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# (name, low, high) grey levels between the 1st and 99th percentile of the hand's box
BANDS = tuple((f"{lo}-{hi}", lo, hi) for lo, hi in ((0, 60), (60, 120), (120, 160), (160, 256)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--subset", default="val", choices=("val", "test"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/rsna-bone-age-100px"))
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--stretch", action="store_true",
                    help="also estimate the films with their contrast stretched")
    a = ap.parse_args()
    from framing import band_bias  # this folder is on the path when run as a script

    from boneage import load_model
    from boneage.data.images import read_image
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split
    from boneage.preprocess.steps import Stretch, hand_pipeline

    data = Path(a.data)
    table = read_labels(data / "boneage-training-dataset.csv", data / "boneage-training-dataset")
    part = {i for i, s in load_split(a.split).items() if s == a.subset}
    recs = [r for r in table if r.id in part]
    model = load_model(a.model, explain=False)
    cached = model.predictor.pipeline.cached_part
    films = [read_image(r.path) for r in recs]
    images = np.stack([cached(f, {}) for f in films])
    box = hand_pipeline(images.shape[-1]).cached_part
    male = np.array([bool(r.male) for r in recs])
    y = np.array([r.months for r in recs], float)
    contrast = np.array([np.subtract(*np.percentile(box(f, {}), [99, 1])) for f in films])
    p = model.predictor.predict_arrays(images, male)
    result = {"model": model.name, "subset": a.subset, "n": len(recs),
              "faint_share": round(float(np.mean(contrast < 60)), 3),
              "as_is": {"mae": round(float(np.mean(np.abs(p - y))), 3),
                        "by_contrast": band_bias(y, p, BANDS, contrast)}}
    if a.stretch:
        stretched = np.stack([Stretch()(im, {}) for im in images])
        q = model.predictor.predict_arrays(stretched, male)
        result["stretched"] = {"mae": round(float(np.mean(np.abs(q - y))), 3),
                               "by_contrast": band_bias(y, q, BANDS, contrast)}
    name = model.name.replace("/", "-")
    out = ROOT / f"benchmarks/results/contrast_{name}_{a.subset}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{a.subset}: n={len(recs)}, faint (contrast under 60 grey levels) "
          f"{result['faint_share']:.1%}")
    for key in ("as_is", "stretched"):
        if key in result:
            r = result[key]
            print(f"  {key:9} MAE {r['mae']:.2f}  " + "  ".join(
                f"[{b}] n={v['n']} MAE {v['mae']:.2f} bias {v['bias']:+.1f}"
                for b, v in r["by_contrast"].items()))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
