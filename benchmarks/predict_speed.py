"""Prediction speed: cold start of `boneage predict` for one film (torch vs onnx backend), and
folder throughput on the full-resolution raw samples as a share of the decode-only rate.

    python benchmarks/predict_speed.py [--model default] [--runs 5]

Cold start = wall time of a fresh `boneage predict FILM --sex F` process (8-view TTA), median
of --runs, with `--backend torch` and `--backend onnx` (the bundled model ships both; another
model is exported to ONNX in a temporary folder first). Throughput = films per second of
`boneage predict FOLDER` (warm page cache), with TTA and with --no-tta, vs reading and decoding
the same files in the same number of processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    a = ap.parse_args()
    raw = Path(a.data) / "raw-samples"
    film = raw / "rsna-fullres" / "1418.png"
    exe = [sys.executable, "-m", "boneage.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        if a.model == "default":
            models = {"torch": ["--model", "default", "--backend", "torch"],
                      "onnx": ["--model", "default", "--backend", "onnx"]}
        else:
            onnx = Path(tmp) / "model.onnx"
            subprocess.run([*exe, "export", "--model", a.model, "--out", str(onnx)], check=True)
            models = {"torch": ["--model", a.model], "onnx": ["--model", str(onnx)]}
        cold = {}
        for backend, model in models.items():
            cmd = [*exe, "predict", str(film), "--sex", "F", *model]
            wall(cmd)  # warm the page cache
            cold[backend] = round(statistics.median(wall(cmd) for _ in range(a.runs)), 3)
            print(f"cold start, {backend}: {cold[backend]:.2f} s", flush=True)

        # folder throughput: all raw samples, copied 4 times into one folder
        folder = Path(tmp) / "films"
        folder.mkdir()
        files = [p for p in sorted(raw.rglob("*")) if p.suffix.lower() in (".png", ".jpg")]
        for k in range(4):
            for p in files:
                (folder / f"{k}-{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
        n = len(list(folder.iterdir()))
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from prepare_throughput import decode_rate

        from boneage.preprocess.prepare import cpu_count

        workers = cpu_count()
        decode = decode_rate(sorted(folder.iterdir()), workers)
        res = {}
        for backend, model in models.items():
            for mode, extra in (("tta", []), ("no_tta", ["--no-tta"])):
                t = wall([*exe, "predict", str(folder), "--sex", "F", *model, *extra,
                          "--format", "csv", "--out", str(Path(tmp) / f"{backend}.csv")])
                res[f"{backend}_{mode}"] = {"films_per_s": round(n / t, 2),
                                            "ratio": round(n / t / decode, 3)}
                print(f"folder of {n} films, {backend}, {mode}: {n / t:.2f} films/s = "
                      f"{n / t / decode:.0%} of decode-only ({decode:.1f}/s)", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps(
        {"model": a.model, "cold_start_s": cold, "decode_per_s": round(decode, 1),
         "folder": res, "workers": workers}, indent=2) + "\n")


if __name__ == "__main__":
    main()
