"""Does the answer move with how a film was rendered? The same films re-rendered as hospitals
and preprocessing pipelines hand them over, and the change of the estimate on each.

    python benchmarks/rendering.py [--model default] [--tag NAME] [--thumbs-n 300] [--one-view]

Sets (from ../shared/data):
- fullres: rsna-val-fullres, 103 RSNA validation films at full resolution, hand-cropped;
- thumbs: the first N 100 px RSNA films held out of training and model choice (the `test` part
  of benchmarks/results/default_split.csv), or with `--thumbs-subset val` the validation films
  (a model is chosen on those, never on the held-out ones);
- processed: rsna-processed-fullres, 20 RSNA training-id films as a public pipeline rendered
  them (background removed, hand upright, contrast enhanced), whose thumbnails are held out of
  every model here: MAE and bias as they are.

Each film of fullres and thumbs is rendered again (`boneage.preprocess.render.RENDERINGS`:
background removed to
black or white, contrast stretched, histogram equalised, CLAHE, gamma, inverted then
corrected with a window, 12 bits, borders cut, sharpened, JPEG, turned upright, and the
processed pipeline's combination) and estimated with the model as `predict` runs it (8
test-time views, or one with --one-view). For each rendering: MAE, bias, and the mean signed
and absolute change of the estimate from the film as it is. Writes
benchmarks/results/rendering_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def estimate(model, films: list[np.ndarray], male: list[bool], names: list[str]) -> np.ndarray:
    from boneage.inference.api import Film

    out = []
    for i in range(0, len(films), 32):
        batch = [Film(n, f) for n, f in zip(names[i:i + 32], films[i:i + 32], strict=True)]
        res = model.predict_films(batch, male[i:i + 32], [None] * len(batch))
        out += [r.bone_age_months for r in res]
    return np.array(out)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    from boneage.preprocess.steps import ToUint8

    return ToUint8()(img, {})


def measure_renderings(model, recs) -> dict:
    from boneage.data.images import read_image
    from boneage.preprocess.render import RENDERINGS

    films = [_as_uint8(read_image(r.path)) for r in recs]
    male = [bool(r.male) for r in recs]
    y = np.array([r.months for r in recs], float)
    names = [str(r.id) for r in recs]
    out: dict = {"n": len(recs)}
    base = None
    for name, render in RENDERINGS.items():
        t0 = time.perf_counter()
        p = estimate(model, [render(f) for f in films], male, names)
        if base is None:
            base = p
        d = p - base
        out[name] = {"mae": round(float(np.mean(np.abs(p - y))), 3),
                     "bias": round(float(np.mean(p - y)), 2),
                     "mean_change": round(float(np.mean(d)), 2),
                     "mean_abs_change": round(float(np.mean(np.abs(d))), 2),
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def measure_set(model, recs) -> dict:
    from boneage.data.images import read_image

    films = [_as_uint8(read_image(r.path)) for r in recs]
    y = np.array([r.months for r in recs], float)
    p = estimate(model, films, [bool(r.male) for r in recs], [str(r.id) for r in recs])
    return {"n": len(recs), "mae": round(float(np.mean(np.abs(p - y))), 3),
            "bias": round(float(np.mean(p - y)), 2),
            "per_film": {str(r.id): round(float(v), 2) for r, v in zip(recs, p, strict=True)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tag", help="name of the result file (default: the model's name)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--thumbs-n", type=int, default=300, help="thumbnails re-rendered")
    ap.add_argument("--thumbs-subset", choices=("test", "val"), default="test",
                    help="which part of the split the thumbnails come from: the held-out films "
                         "(report) or the validation films (to choose a model on)")
    ap.add_argument("--one-view", action="store_true", help="one view instead of the shipped "
                    "8-view test-time augmentation")
    ap.add_argument("--only", nargs="*", help="only these sets (fullres, thumbs, processed)")
    a = ap.parse_args()
    from boneage import load_model
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split

    data = Path(a.data)
    model = load_model(a.model, explain=False, tta=not a.one_view)
    sets = a.only or ["processed", "fullres", "thumbs"]
    result: dict = {"model": model.name, "version": model.card.get("version"),
                    "pipeline": model.card["pipeline"], "views": 1 if a.one_view else 8}
    if "processed" in sets:
        d = data / "rsna-processed-fullres"
        result["processed"] = measure_set(model, list(read_labels(d / "labels.csv", d)))
    if "fullres" in sets:
        d = data / "rsna-val-fullres"
        result["fullres"] = measure_renderings(model, list(read_labels(d / "labels.csv", d)))
    if "thumbs" in sets:
        d = data / "rsna-bone-age-100px"
        table = read_labels(d / "boneage-training-dataset.csv", d / "boneage-training-dataset")
        held = {i for i, s in load_split(a.split).items() if s == a.thumbs_subset}
        recs = [r for r in table if r.id in held][: a.thumbs_n]
        result["thumbs"] = measure_renderings(model, recs) | {"subset": a.thumbs_subset}
    from boneage.preprocess.render import RENDERINGS

    tag = a.tag or model.name.replace("/", "-")
    out = ROOT / f"benchmarks/results/rendering_{tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if "processed" in result:
        r = result["processed"]
        print(f"processed n={r['n']}: MAE {r['mae']:.2f}  bias {r['bias']:+.2f}")
    for key in ("fullres", "thumbs"):
        if key not in result:
            continue
        print(f"{key} (n={result[key]['n']}, {result['views']} view(s)):")
        for name in RENDERINGS:
            v = result[key][name]
            print(f"  {name:36} MAE {v['mae']:6.2f}  bias {v['bias']:+6.2f}  "
                  f"change {v['mean_change']:+6.2f}  |change| {v['mean_abs_change']:5.2f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
