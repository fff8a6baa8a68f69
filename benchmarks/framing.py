"""Does the answer move with how a film is framed? Accuracy on thumbnails and on real
full-resolution films, and the change of the estimate when the same film is re-framed.

    python benchmarks/framing.py [--model default] [--tag NAME] [--reframe-n 300] [--reframe-tta]

Sets (from ../shared/data):
- thumbs: the 100 px RSNA films held out of training and model choice (the `test` part of
  benchmarks/results/default_split.csv);
- fullres: rsna-val-fullres, 103 RSNA validation films at full resolution, hand-cropped.

For each set: MAE with the model as `predict` runs it (8-view TTA, interval), bias in three age
bands (under 6 years, 6-14, over 14), 90% interval coverage and "not a hand" false alarms. Then,
without TTA, the same films re-framed: as is, cropped to the hand (our localiser, 2% margin),
padded (a quarter of each side added in the film's border grey: a small hand on a large
cassette), rotated by 10 degrees (canvas enlarged); for each, the MAE and the mean |change| of the
estimate from the film as is. Last, how many raw-samples/rsna-fullres films are flagged "not a
hand". Writes benchmarks/results/framing_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOT_A_HAND = "does not look like a hand"
BANDS = (("under 6 y", 0, 72), ("6-14 y", 72, 168), ("over 14 y", 168, 10_000))


def border_grey(img: np.ndarray) -> int:
    ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return int(np.median(ring))


def reframings(img: np.ndarray) -> dict[str, np.ndarray]:
    from boneage.preprocess.hand import localise_hand

    h, w = img.shape
    b = localise_hand(img, 0.02)
    grey = border_grey(img)
    py, px = h // 4, w // 4
    padded = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_CONSTANT, value=grey)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    rotated = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=grey)
    return {"as is": img, "cropped to the hand": img[b.y0:b.y1, b.x0:b.x1],
            "padded x1.5": padded, "rotated 10 deg": rotated}


def band_bias(y: np.ndarray, p: np.ndarray, bands=BANDS, by: np.ndarray | None = None
              ) -> dict[str, dict[str, float]]:
    """n, bias (with its standard error: a band of a few films says little) and MAE per band of
    `by` (default: the true age), for bands (name, lo, hi)."""
    by = y if by is None else by
    out = {}
    for name, lo, hi in bands:
        sel = (by >= lo) & (by < hi)
        if sel.any():
            err = p[sel] - y[sel]
            se = round(float(np.std(err, ddof=1) / np.sqrt(err.size)), 2) if err.size > 1 else None
            out[name] = {"n": int(sel.sum()), "bias": round(float(np.mean(err)), 2),
                         "bias_se": se, "mae": round(float(np.mean(np.abs(err))), 2)}
    return out


def measure(model, recs, reframe_n: int, reframe_tta: bool = False) -> dict:
    from boneage.inference.api import Film, read_film

    films = [read_film(r.path, r.id) for r in recs]
    male = [bool(r.male) for r in recs]
    y = np.array([r.months for r in recs], float)
    t0 = time.perf_counter()
    model.tta = True
    res = []
    for i in range(0, len(films), 64):
        res += model.predict_films(films[i:i + 64], male[i:i + 64], [None] * len(films[i:i + 64]))
    seconds = time.perf_counter() - t0
    p = np.array([r.bone_age_months for r in res])
    out = {"n": len(recs), "mae": round(float(np.mean(np.abs(p - y))), 3),
           "bias": round(float(np.mean(p - y)), 2), "by_age_band": band_bias(y, p),
           "not_a_hand": sum(any(NOT_A_HAND in w for w in r.warnings) for r in res),
           "films_per_s_tta": round(len(recs) / seconds, 2)}
    if res and res[0].interval_low_months is not None:
        lo = np.array([r.interval_low_months for r in res])
        hi = np.array([r.interval_high_months for r in res])
        out["coverage"] = round(float(np.mean((y >= lo) & (y <= hi))), 4)
        out["mean_width"] = round(float(np.mean(hi - lo)), 2)
    # re-framed copies, one view each (or with the shipped 8-view TTA)
    model.tta = reframe_tta
    k = min(reframe_n, len(films))
    views: dict[str, list[float]] = {}
    for f, s in zip(films[:k], male[:k], strict=True):
        variants = reframings(f.pixels)
        batch = [Film(f"{f.name} {name}", im) for name, im in variants.items()]
        for name, r in zip(variants, model.predict_films(batch, [s] * len(batch),
                                                         [None] * len(batch)), strict=True):
            views.setdefault(name, []).append(r.bone_age_months)
    base = np.array(views["as is"])
    out["reframed"] = {"n": k, **{
        name: {"mae": round(float(np.mean(np.abs(np.array(v) - y[:k]))), 3),
               "mean_abs_change": round(float(np.mean(np.abs(np.array(v) - base))), 3)}
        for name, v in views.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tag", help="name of the result file (default: the model's name)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--split", default=str(ROOT / "benchmarks/results/default_split.csv"))
    ap.add_argument("--n", type=int, default=0, help="at most this many thumbnails (0: all)")
    ap.add_argument("--reframe-n", type=int, default=300, help="films re-framed per set")
    ap.add_argument("--reframe-tta", action="store_true", help="estimate the re-framed films "
                    "with the shipped 8-view TTA instead of one view")
    a = ap.parse_args()
    from boneage import load_model
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split

    data = Path(a.data)
    model = load_model(a.model, explain=False)
    thumbs = data / "rsna-bone-age-100px"
    table = read_labels(thumbs / "boneage-training-dataset.csv",
                        thumbs / "boneage-training-dataset")
    held = {i for i, s in load_split(a.split).items() if s == "test"}
    recs = [r for r in table if r.id in held]
    recs = recs[: a.n] if a.n else recs
    full = read_labels(data / "rsna-val-fullres/labels.csv", data / "rsna-val-fullres")
    result = {"model": model.name, "pipeline": model.card["pipeline"],
              "backend": type(model.predictor).__name__,
              "reframed_views": 8 if a.reframe_tta else 1,
              "thumbs": measure(model, recs, a.reframe_n, a.reframe_tta),
              "fullres": measure(model, list(full), a.reframe_n, a.reframe_tta)}
    raw = read_labels(data / "raw-samples/rsna-fullres/labels.csv",
                      data / "raw-samples/rsna-fullres")
    from boneage.inference.api import read_film

    model.tta = True
    rr = model.predict_films([read_film(r.path, r.id) for r in raw], [r.male for r in raw],
                             [None] * len(raw))
    result["raw_rsna_fullres"] = {
        "n": len(rr), "not_a_hand": [r.file for r in rr if any(NOT_A_HAND in w
                                                               for w in r.warnings)],
        "mae": round(float(np.mean([abs(r.bone_age_months - x.months)
                                    for r, x in zip(rr, raw, strict=True)])), 2)}
    tag = a.tag or model.name.replace("/", "-")
    out = ROOT / f"benchmarks/results/framing_{tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("thumbs", "fullres"):
        m = result[name]
        rf = m["reframed"]
        print(f"{name:8} n={m['n']:<5} MAE {m['mae']:.2f}  coverage {m.get('coverage', 0):.1%}  "
              "bias " + ", ".join(f"{b} {v['bias']:+.1f}" + ("" if v["bias_se"] is None
                                                               else f" (se {v['bias_se']:.1f})")
                                  for b, v in m["by_age_band"].items())
              + f"  not-a-hand {m['not_a_hand']}")
        for v in ("as is", "cropped to the hand", "padded x1.5", "rotated 10 deg"):
            print(f"    {v:22} MAE {rf[v]['mae']:.2f}  mean |change| {rf[v]['mean_abs_change']:.2f}"
                  f"  (n={rf['n']}, {'8-view TTA' if a.reframe_tta else 'one view'})")
    print(f"raw rsna-fullres: not a hand {result['raw_rsna_fullres']['not_a_hand']}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
