"""How often a warning voids the estimate ("does not look like a hand radiograph", "looks like
noise", ...: every such warning ends "the estimate is not meaningful"): on real hand films
(false alarms) and on pictures that are not hands (detections).

    python benchmarks/not_a_hand.py [--model default] [--others DIR]

Hands: the held-out 100 px films of the default model's split (the model never trained on
them), every full-resolution raw sample, and the full-resolution `rsna-val-fullres` and
`rsna-processed-fullres` films (where present). Not hands: drawn shapes (a chest-like blob, a long
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


def _labelled(folder: Path) -> tuple[list, list[str]]:
    """A folder's films and each one's sex from its labels.csv ("F" where it has none, as for
    the unlabelled demo films): under 5 years of estimated bone age the finger count is not
    used, so the sex, through the estimate, decides which check a film gets."""
    from boneage.data.images import list_images
    from boneage.data.labels import read_labels
    from boneage.inference.api import read_film

    if (folder / "labels.csv").is_file():
        table = read_labels(folder / "labels.csv", folder, require_age=False)
        return ([read_film(r.path) for r in table],
                ["M" if r.male else "F" for r in table])
    paths = list_images(folder)
    return [read_film(p) for p in paths], ["F"] * len(paths)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--others", help="a folder of radiographs that are not hands")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/not_a_hand.json"))
    a = ap.parse_args()
    from boneage import load_model
    from boneage.data.images import list_images
    from boneage.data.labels import read_labels
    from boneage.data.splits import load_split
    from boneage.inference.api import read_film

    model = load_model(a.model, tta=False)
    data = Path(a.data)

    def flagged(films: list, sexes: list[str] | None = None) -> list[bool]:
        sexes = sexes or ["F"] * len(films)
        out = []
        for i in range(0, len(films), 32):
            chunk = films[i : i + 32]
            res = model.predict_films(chunk, sexes[i : i + 32], [None] * len(chunk))
            out += [any(WARNING in w for w in r.warnings) for r in res]
        return out

    def names(films: list, flags: list[bool]) -> list[str]:
        return [Path(f.name).name for f, x in zip(films, flags, strict=True) if x]

    split = load_split(ROOT / "benchmarks/results/default_split.csv")
    thumbs = data / "rsna-bone-age-100px/boneage-training-dataset"
    table = read_labels(data / "rsna-bone-age-100px/boneage-training-dataset.csv", thumbs)
    held_rows = [r for r in table if split.get(r.id) == "test"]
    held = [read_film(r.path) for r in held_rows]
    raw, raw_sex = [], []
    for d in sorted((data / "raw-samples").iterdir()):
        if d.is_dir():
            films, sexes = _labelled(d)
            raw, raw_sex = raw + films, raw_sex + sexes
    full = {name: _labelled(data / name)
            for name in ("rsna-val-fullres", "rsna-processed-fullres") if (data / name).is_dir()}
    others = {k: read_film(v, k) for k, v in drawn_others().items()}
    if a.others:
        from boneage.errors import BoneAgeError

        for p in list_images(Path(a.others)):
            try:
                others[p.name] = read_film(p)
            except BoneAgeError as e:  # e.g. a compression this install cannot decode
                print(f"skipped: {e}")
    f_held = flagged(held, ["M" if r.male else "F" for r in held_rows])
    f_raw = flagged(raw, raw_sex)
    f_full = {name: flagged(*pair) for name, pair in full.items()}
    f_other = dict(zip(others, flagged(list(others.values())), strict=True))
    result = {
        "model": a.model,
        "heldout_100px": {"n": len(held), "false_alarms": int(sum(f_held)),
                          "flagged_bone_ages": sorted(r.months for r, x in
                                                      zip(held_rows, f_held, strict=True) if x)},
        "raw_samples": {"n": len(raw), "false_alarms": int(sum(f_raw)),
                        "flagged": names(raw, f_raw)},
        **{name.replace("-", "_"): {"n": len(films), "false_alarms": int(sum(f_full[name])),
                                    "flagged": names(films, f_full[name])}
           for name, (films, _) in full.items()},
        "not_hands": {"n": len(others), "detected": int(sum(f_other.values())),
                      "each": f_other},
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
