"""Train the seed architectures (and densenet121_cbam, the seed's first "future enhancement")
with the seed recipe on the shared 100 px RSNA data and write the comparison table (the seed's
model comparison).

    python benchmarks/seed_comparison.py [--epochs 60] [--out runs/seed-comparison]
    # on a lent GPU, where ../shared is absent: the films packed by
    # `tools/default_candidates.py pack --images ... --labels ... --pipeline ... --split ...`
    python3 benchmarks/seed_comparison.py --films-pack .devdata/pack --jobs 3 --max-minutes 8

The films are used at the data's resolution (100 x 100, the `squash` pipeline, which leaves
them as they are). One fixed stratified split (seed 42, 10% validation) is made once and reused
by both runs; its sha256 is recorded. Runs are resumable: rerunning continues unfinished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ARCHS = ("densenet121", "resnet34_cbam", "densenet121_cbam")
ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--out", default="runs/seed-comparison")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--jobs", type=int, default=1,
                    help="train this many architectures at once, sharing the cores (or a GPU)")
    ap.add_argument("--films-pack", metavar="DIR", help="films packed by tools/"
                    "default_candidates.py (films.bin, films.csv, labels.csv) instead of --data")
    ap.add_argument("--max-minutes", type=float, help="each run's time budget (a lent GPU); "
                    "rerunning continues the runs")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.films_pack:
        sys.path.insert(0, str(ROOT))
        from tools.default_candidates import unpack_films

        images, labels = unpack_films(Path(a.films_pack), out / "films")
    else:
        thumbs = Path(a.data) / "rsna-bone-age-100px"
        images = thumbs / "boneage-training-dataset"
        labels = thumbs / "boneage-training-dataset.csv"
    exe = [sys.executable, "-m", "boneage.cli"]
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cache = out / "cache"
    sh(*exe, "prepare", "--images", str(images), "--labels", str(labels), "--out", str(cache),
       "--squash", "--size", "100", env=env)
    split = out / "split.csv"
    if not split.is_file():
        from boneage.data.splits import save_split, stratified_split
        from boneage.preprocess.prepare import table_from_cache

        save_split(stratified_split(table_from_cache(cache), 0.1, 0.0, seed=42), split)
    budget = ["--max-minutes", str(a.max_minutes)] if a.max_minutes else []
    if a.jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // a.jobs))

    def one(arch: str) -> None:
        run = out / arch
        if (run / "state" / "last.ckpt").is_file():
            sh(*exe, "train", "--resume", str(run), *budget, env=env)
        else:
            sh(*exe, "train", "--data", str(cache), "--split", str(split), "--arch", arch,
               "--config", str(ROOT / "configs/seed.yaml"), "--pipeline", "squash",
               "--image-size", "100", "--epochs", str(a.epochs), "--out", str(run), *budget,
               "--no-progress", env=env)
        sh(*exe, "evaluate", "--model", str(run), "--images", str(images), "--labels",
           str(labels), "--subset", "val", "--out", str(run / "eval"), env=env)

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(one, a.archs))
    sh(*exe, "compare", *[str(out / arch) for arch in a.archs], "--out", str(out / "compare"),
       env=env)
    print((out / "compare" / "compare.md").read_text())
    import hashlib

    info = {"split_sha256": hashlib.sha256(split.read_bytes()).hexdigest(), "epochs": a.epochs,
            "jobs": a.jobs}
    (out / "compare" / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
