"""Preprocessing throughput: the full `prepare` pipeline vs decode-only, with 1 and 2 workers.

    python benchmarks/prepare_throughput.py [--data ../shared/data] [--out benchmarks/results]

Sets: the 25 full-resolution raw samples (each taken 4 times, as distinct ids) and the 11,566
RSNA 100 px thumbnails. The pipeline is the seed's (crop, fit 256, CLAHE, pad) and includes
writing PNGs and the manifest; decode-only reads and decodes the same files in the same pool.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

from boneage.data.images import IMAGE_SUFFIXES, read_image
from boneage.data.labels import LabelTable, Record, read_labels
from boneage.preprocess.prepare import _init_worker, prepare
from boneage.preprocess.steps import seed_pipeline


def _decode(path: str) -> int:
    return read_image(path).size


def decode_rate(paths: list[Path], workers: int) -> float:
    t0 = time.perf_counter()
    if workers == 1:
        _init_worker()
        for p in paths:
            _decode(str(p))
    else:
        with mp.get_context("forkserver").Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_decode, [str(p) for p in paths], chunksize=4):
                pass
    return len(paths) / (time.perf_counter() - t0)


def pipeline_rate(table: LabelTable, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        r = prepare(table, seed_pipeline(256), tmp, workers=workers, progress=False)
        assert not r.failed, r.failed[:3]
        return len(table) / r.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    data = Path(a.data)
    raw = sorted(p for p in (data / "raw-samples").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    sets = {
        "raw-samples x4 (full resolution)": LabelTable(
            [Record(f"{k}-{i}", p, None, None) for k in range(4) for i, p in enumerate(raw)]),
        "rsna 100 px thumbnails": read_labels(
            data / "rsna-bone-age-100px" / "boneage-training-dataset.csv"),
    }
    results = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{mp.cpu_count()} cores", "python": sys.version.split()[0], "sets": {}}
    for name, table in sets.items():
        paths = [r.path for r in table]
        decode_rate(paths[:50], 1)  # warm the page cache
        row = {"films": len(table)}
        for w in (1, 2):
            d = decode_rate(paths, w)
            p = pipeline_rate(table, w)
            row[f"{w}w"] = {"decode_per_s": round(d, 1), "pipeline_per_s": round(p, 1),
                            "ratio": round(p / d, 3)}
            print(f"{name}: {w} worker(s): decode {d:.1f}/s, pipeline {p:.1f}/s "
                  f"({p / d:.0%} of decode)", flush=True)
        scaling = row["2w"]["pipeline_per_s"] / row["1w"]["pipeline_per_s"]
        row["scaling_2w_over_1w"] = round(scaling, 2)
        print(f"{name}: 2 workers / 1 worker = {row['scaling_2w_over_1w']:.2f}x", flush=True)
        results["sets"][name] = row
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare_throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
