"""Train both seed architectures with the seed recipe on the shared 100 px RSNA data and write
the comparison table (the seed's model comparison).

    python benchmarks/seed_comparison.py [--epochs 60] [--out runs/seed-comparison]

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

ARCHS = ("densenet121", "resnet34_cbam")


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
                    help="train this many architectures at once, sharing the cores")
    a = ap.parse_args()
    thumbs = Path(a.data) / "rsna-bone-age-100px"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "boneage.cli"]
    cache = out / "cache"
    sh(*exe, "prepare", "--labels", str(thumbs / "boneage-training-dataset.csv"),
       "--out", str(cache), "--squash", "--size", "100")
    split = out / "split.csv"
    if not split.is_file():
        from boneage.data.splits import save_split, stratified_split
        from boneage.preprocess.prepare import table_from_cache

        save_split(stratified_split(table_from_cache(cache), 0.1, 0.0, seed=42), split)
    env = dict(os.environ)
    if a.jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // a.jobs))

    def one(arch: str) -> None:
        run = out / arch
        if (run / "state" / "last.ckpt").is_file():
            sh(*exe, "train", "--resume", str(run), env=env)
        else:
            sh(*exe, "train", "--data", str(cache), "--split", str(split), "--arch", arch,
               "--config", str(Path(__file__).resolve().parents[1] / "configs/seed.yaml"),
               "--pipeline", "squash", "--image-size", "100", "--epochs", str(a.epochs),
               "--out", str(run), env=env)
        sh(*exe, "evaluate", "--model", str(run), "--labels",
           str(thumbs / "boneage-training-dataset.csv"), "--subset", "val",
           "--out", str(run / "eval"), env=env)

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(one, a.archs))
    sh(*exe, "compare", *[str(out / arch) for arch in a.archs], "--out", str(out / "compare"))
    print((out / "compare" / "compare.md").read_text())
    import hashlib

    info = {"split_sha256": hashlib.sha256(split.read_bytes()).hexdigest(), "epochs": a.epochs,
            "jobs": a.jobs}
    (out / "compare" / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
