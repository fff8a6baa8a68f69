"""Random damage to what users hand over, counted: films (bytes changed or cut in a PNG, a JPEG
and a DICOM), the bundled model's card (one value replaced or removed), its weights and ONNX
graph (bytes changed or cut), and a training config (one value replaced). Each case must be read,
or refused with one BoneAgeError line; anything else (another exception: a traceback for the
user) is counted and listed. A process crash (a decoder's segmentation fault) ends the run.

    python benchmarks/fuzz_inputs.py [--cases 300] [--seed 0] [--only films card weights config]

Prints one line per target and writes benchmarks/results/fuzz_inputs.json.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boneage.errors import BoneAgeError  # noqa: E402

VALUES = [None, "abc", -1, 0, 1e12, [], {}, True, float("nan"), [1, 2], {"x": 1}]


def run(cases: int, make: Callable[[int], Callable[[], object]]) -> dict:
    """make(i) damages one copy and returns the call to try on it."""
    read = refused = 0
    other: collections.Counter = collections.Counter()
    for i in range(cases):
        call = make(i)
        try:
            call()
            read += 1
        except BoneAgeError as e:
            refused += 1
            if "\n" in str(e):
                other["BoneAgeError over several lines"] += 1
        except Exception as e:  # what the user would have seen as a traceback
            where = traceback.extract_tb(e.__traceback__)[-1].name
            other[f"{type(e).__name__} in {where}"] += 1
    return {"cases": cases, "read": read, "refused": refused,
            "other": sum(other.values()), "other_kinds": dict(other)}


def damaged(data: bytes, rng: np.random.Generator, head: int | None = None) -> bytes:
    b = bytearray(data)
    if rng.random() < 0.25:
        return bytes(b[: rng.integers(1, len(b))])
    for _ in range(rng.integers(1, 8)):
        i = rng.integers(0, min(len(b), head or len(b)))
        b[i] = rng.integers(0, 256)
    return bytes(b)


def fuzz_films(cases: int, rng: np.random.Generator, tmp: Path) -> dict:
    import cv2
    from tests.helpers import write_dicom

    from boneage.data.synthetic import synthetic_film
    from boneage.inference.api import read_film

    film, _ = synthetic_film(height=300, width=240, seed=3)
    dcm = write_dicom(tmp / "f.dcm", film.astype(np.uint16) * 16, window=(2000, 3000))
    sources = [cv2.imencode(".png", film)[1].tobytes(), cv2.imencode(".jpg", film)[1].tobytes(),
               dcm.read_bytes()]

    def make(i):
        data = damaged(sources[i % 3], rng)
        return lambda: read_film(data, "x")

    return run(cases, make)


def fuzz_card(cases: int, rng: np.random.Generator, tmp: Path) -> dict:
    from boneage.inference.api import load_model
    from boneage.models.checkpoint import BUNDLED

    for f in ("default.safetensors", "default.onnx"):
        shutil.copyfile(BUNDLED / f, tmp / f)
    card0 = json.loads((BUNDLED / "default.json").read_text())
    film = (np.random.default_rng(0).random((300, 240)) * 255).astype(np.uint8)

    def paths(o, p=()):
        yield p
        items = o.items() if isinstance(o, dict) else enumerate(o[:6]) if isinstance(o, list) \
            else ()
        for k, v in items:
            yield from paths(v, p + (k,))

    keys = [p for p in paths(card0) if p]

    def make(i):
        card = copy.deepcopy(card0)
        *parents, last = keys[rng.integers(len(keys))]
        node = card
        for k in parents:
            node = node[k]
        if isinstance(node, dict) and rng.random() < 0.3:
            del node[last]
        else:
            node[last] = VALUES[rng.integers(len(VALUES))]
        (tmp / "default.json").write_text(json.dumps(card))
        return lambda: load_model(tmp, backend="onnx", explain=False).predict(film, sex="M")

    return run(cases, make)


def fuzz_weights(cases: int, rng: np.random.Generator, tmp: Path) -> dict:
    from boneage.inference.api import load_model
    from boneage.models.checkpoint import BUNDLED

    for f in ("default.json", "default.safetensors", "default.onnx"):
        shutil.copyfile(BUNDLED / f, tmp / f)
    originals = {f: (BUNDLED / f).read_bytes() for f in ("default.safetensors", "default.onnx")}
    film = (np.random.default_rng(0).random((300, 240)) * 255).astype(np.uint8)

    def make(i):
        for f, data in originals.items():
            (tmp / f).write_bytes(data)
        name = list(originals)[i % 2]
        (tmp / name).write_bytes(damaged(originals[name], rng, head=65536))
        return lambda: load_model(tmp, backend="onnx", explain=False).predict(film, sex="M")

    return run(cases, make)


def fuzz_config(cases: int, rng: np.random.Generator, tmp: Path) -> dict:
    import yaml

    from boneage.training.config import load_config

    base = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    keys = [(k,) for k in base] + [("augment", k) for k in base.get("augment") or {}]

    def make(i):
        cfg = copy.deepcopy(base)
        *parents, last = keys[rng.integers(len(keys))]
        node = cfg
        for k in parents:
            node = node[k]
        node[last] = VALUES[rng.integers(len(VALUES))]
        (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
        return lambda: load_config(tmp / "c.yaml")

    return run(cases, make)


TARGETS = {"films": fuzz_films, "card": fuzz_card, "weights": fuzz_weights,
           "config": fuzz_config}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    a = ap.parse_args()
    out = {}
    for name in a.only:
        with tempfile.TemporaryDirectory() as tmp:
            r = TARGETS[name](a.cases, np.random.default_rng(a.seed), Path(tmp))
        out[name] = r
        print(f"{name:8s} {r['cases']} cases: {r['read']} read, {r['refused']} refused in one "
              f"line, {r['other']} other {r['other_kinds'] or ''}", flush=True)
    res = ROOT / "benchmarks" / "results" / "fuzz_inputs.json"
    res.write_text(json.dumps({"cases": a.cases, "seed": a.seed, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
