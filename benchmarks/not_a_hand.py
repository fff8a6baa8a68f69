"""How often a warning voids the estimate ("does not look like a hand radiograph", "looks like
noise", ...: every such warning ends "the estimate is not meaningful"): on real hand films
(false alarms) and on pictures that are not hands (detections).

    python benchmarks/not_a_hand.py [--model default] [--others DIR]

Hands: the held-out 100 px films of the default model's split (the model never trained on
them) and every full-resolution raw sample. Not hands: drawn shapes (a chest-like blob, a long
bone, a blank film, a ramp, noise) and any PNG/JPEG/DICOM in --others (for example the chest and
tibia radiographs that the pydicom-data wheel on PyPI carries, RG1_UNCI.dcm and RG3_UNCR.dcm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# a film counts as flagged when any warning voids its estimate: "does not look like a hand
# radiograph", "looks like noise", a non-hand DICOM header (each ends with MEANINGLESS)
WARNING = "the estimate is not meaningful"


def drawn_others() -> dict[str, np.ndarray]:
    def film(draw) -> np.ndarray:
        img = np.full((900, 700), 20, np.uint8)
        draw(img)
        return cv2.GaussianBlur(img, (0, 0), 3)

    rng = np.random.default_rng(0)
    return {
        "drawn chest-like blob": film(lambda a: cv2.ellipse(a, (350, 450), (280, 360), 0, 0, 360,
                                                            150, -1)),
        "drawn long bone": film(lambda a: cv2.rectangle(a, (300, 50), (400, 850), 180, -1)),
        "blank film": np.full((900, 700), 90, np.uint8),
        "ramp": np.tile(np.linspace(0, 255, 700), (900, 1)).astype(np.uint8),
        "noise": (rng.random((900, 700)) * 255).astype(np.uint8),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--others", help="a folder of radiographs that are not hands")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/not_a_hand.json"))
    a = ap.parse_args()
    from boneage import load_model
    from boneage.data.images import list_images
    from boneage.data.splits import load_split
    from boneage.inference.api import read_film

    model = load_model(a.model, tta=False)
    data = Path(a.data)

    def flagged(films: list) -> list[bool]:
        out = []
        for i in range(0, len(films), 32):
            chunk = films[i : i + 32]
            res = model.predict_films(chunk, ["F"] * len(chunk), [None] * len(chunk))
            out += [any(WARNING in w for w in r.warnings) for r in res]
        return out

    split = load_split(ROOT / "benchmarks/results/default_split.csv")
    thumbs = data / "rsna-bone-age-100px/boneage-training-dataset"
    held_ids = [i for i, s in split.items() if s == "test"]
    held = [read_film(thumbs / f"{i}.png") for i in held_ids]
    import csv

    with open(data / "rsna-bone-age-100px/boneage-training-dataset.csv") as f:
        ages = {r["id"]: float(r["boneage"]) for r in csv.DictReader(f)}
    raw = [read_film(p) for d in sorted((data / "raw-samples").iterdir()) if d.is_dir()
           for p in list_images(d)]
    others = {k: read_film(v, k) for k, v in drawn_others().items()}
    if a.others:
        from boneage.errors import BoneAgeError

        for p in list_images(Path(a.others)):
            try:
                others[p.name] = read_film(p)
            except BoneAgeError as e:  # e.g. a compression this install cannot decode
                print(f"skipped: {e}")
    f_held, f_raw = flagged(held), flagged(raw)
    f_other = dict(zip(others, flagged(list(others.values())), strict=True))
    result = {
        "model": a.model,
        "heldout_100px": {"n": len(held), "false_alarms": int(sum(f_held)),
                          "flagged_bone_ages": sorted(ages[i] for i, x in
                                                      zip(held_ids, f_held, strict=True) if x)},
        "raw_samples": {"n": len(raw), "false_alarms": int(sum(f_raw)),
                        "flagged": [f.name for f, x in zip(raw, f_raw, strict=True) if x]},
        "not_hands": {"n": len(others), "detected": int(sum(f_other.values())),
                      "each": f_other},
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
