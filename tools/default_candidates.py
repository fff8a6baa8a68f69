"""Train the default-model candidates (configs/candidates/*.yaml) side by side on one machine,
typically a lent GPU, and bring their run folders back; the choice between them is made on
validation MAE (never on the held-out films).

    # here: copy the prepared 100 px cache and the split into .devdata/pack/ (git-ignored)
    python tools/default_candidates.py pack --cache runs/default/cache \\
        --split runs/default/split.csv
    # or, where the prepared cache is over what a lent machine takes (64 MiB with the working
    # tree; the `hand` pipeline's enlarged crops), the source films, prepared there with each
    # candidate's own pipeline (once per distinct pipeline):
    python tools/default_candidates.py pack --images DATA/boneage-training-dataset \\
        --labels DATA/boneage-training-dataset.csv --split benchmarks/results/default_split.csv
    # here: the wheels the lent machine's Python lacks (MONAI, pydicom) into .devdata/whl/,
    # and whether the working tree, the pack and the wheels fit what a lent machine takes
    python tools/default_candidates.py wheels
    # there (one process per candidate, in parallel, each bounded by --max-minutes):
    python tools/default_candidates.py train --out /tmp/cand --pack $OUT
    # here: reassemble the parts, point each run at the local cache of its own pipeline (one
    # --cache per pipeline the runs were trained on) and at the full split
    python tools/default_candidates.py unpack --parts DIR --dest runs/candidates \\
        --cache runs/default/cache [runs/cache-standard ...] --split runs/default/split.csv

summary.json gives each run's best validation metrics and its epochs against its config's, and
flags (`cut`) a schedule the time budget stopped before its end: resume such a run on the
machine it ran on (its optimizer state does not travel) or shorten its `epochs:`.

Only the training and validation films travel (the held-out films stay here). Weights come back
as int8 (a quarter of the bytes; the shipped ensemble stores its members that way) in one tar
split in 15 MiB parts, the most a lent machine returns per file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART = 15 * 2**20
TRAVEL_LIMIT = 64 * 2**20  # the working tree and what is carried, together
PACK = ROOT / ".devdata/pack"
WHEELS = ("monai", "pydicom")  # what the lent machine's Python lacks (torch, Lightning are there)


def pack(a: argparse.Namespace) -> None:
    dest = Path(a.dest)
    if not (a.cache or (a.images and a.labels)):
        sys.exit("pack: give --cache, or --images and --labels")
    if dest.exists() and any(dest.iterdir()) and not (dest / "split.csv").is_file():
        # a pack always holds its split.csv: anything else there is not ours to delete
        sys.exit(f"pack: {dest} holds files that are not a pack; give a new or empty --dest")
    for given in (a.split, a.cache, a.images, a.labels):
        if given and not Path(given).exists():
            sys.exit(f"pack: {given} does not exist")
    split = dict(r[:2] for r in csv.reader(Path(a.split).read_text().splitlines()[1:]) if r)
    keep = {i for i, s in split.items() if s in ("train", "val")}
    if not keep:
        sys.exit(f"pack: {a.split} names no train or val films (an id,split CSV)")
    partial = dest.with_name(dest.name + ".partial")  # an old pack stays whole until replaced
    if partial.exists():
        shutil.rmtree(partial)
    try:
        if a.cache:
            _pack_cache(Path(a.cache), partial, keep)
        else:
            _pack_films(Path(a.images), Path(a.labels), partial, keep)
        with open(partial / "split.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "split"])
            w.writerows([i, s] for i, s in split.items() if i in keep)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written stays behind
        raise
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)
    print(f"{len(keep)} films, {_bytes(dest) / 1e6:.1f} MB in {dest}")
    _travel_note(dest, dest.parent / "whl")


def wheels(a: argparse.Namespace) -> None:
    """Download, for the lent machine's Python, the wheels of what its image lacks (MONAI and
    pydicom, at the versions installed here; both pure Python): the call installs them with
    `pip install --no-index --no-deps --target`."""
    from importlib import metadata

    dest = Path(a.dest)
    names = []
    for name in WHEELS:
        try:
            names.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            sys.exit(f"wheels: {name} is not installed here (pip install -e '.[train]' first)")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()  # one version of each: two stop the install there
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", a.python, "--implementation", "cp", "--platform",
           "manylinux2014_x86_64", "-d", str(dest), *names]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"wheels: pip download failed for {' '.join(names)}")
    for whl in sorted(dest.glob("*.whl")):
        print(f"{whl.name}  {whl.stat().st_size / 1e6:.1f} MB")
    _travel_note(Path(a.pack), dest)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _travel_note(pack_dir: Path, wheel_dir: Path) -> None:
    """Whether the tracked working tree, the pack and the wheels fit the 64 MiB a lent machine
    takes, and what to move aside when they do not (the bundled weights: training does not
    read them)."""
    tree = _tracked_bytes()
    if tree is None:
        return
    sizes = {"the working tree": tree, "the pack": _bytes(pack_dir),
             "the wheels": _bytes(wheel_dir)}
    total = sum(sizes.values())
    said = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items())
    if total <= TRAVEL_LIMIT:
        print(f"travels: {said}; {total / 2**20:.1f} of {TRAVEL_LIMIT // 2**20} MiB")
        return
    weights = ROOT / "src/boneage/weights/default.safetensors"
    left = total - (weights.stat().st_size if weights.is_file() else 0)
    print(f"note: {said}: {total / 2**20:.1f} MiB, over the {TRAVEL_LIMIT // 2**20} MiB a lent "
          f"machine takes; with src/boneage/weights/default.safetensors moved aside for the call "
          f"(training does not read it; put it back after) {left / 2**20:.1f} MiB"
          + ("" if left <= TRAVEL_LIMIT else ": still over, pack fewer films"))


def _tracked_bytes() -> int | None:
    """The size of the files git tracks here (what travels to a lent machine with the pack)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((ROOT / f).stat().st_size for f in out.decode().split("\0")
               if f and (ROOT / f).is_file())


def _pack_films(images: Path, labels: Path, dest: Path, keep: set[str]) -> None:
    """Source films as their own bytes, end to end in one file (films.bin, indexed by
    films.csv: a tar's 512-byte headers would add 15%) and their labels."""
    dest.mkdir(parents=True)
    with open(labels, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r and r[0] in keep]
    missing = sorted(keep - {r[0] for r in rows})
    if missing:
        sys.exit(f"pack: {len(missing)} film(s) of the split have no row in {labels} "
                 f"(first: {missing[0]})")
    with open(dest / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    offset = 0
    with open(dest / "films.bin", "wb") as blob, open(dest / "films.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "offset", "bytes"])
        for r in rows:
            film = next(images.glob(f"{r[0]}.*"), None)
            if film is None:
                sys.exit(f"pack: no film for id {r[0]} in {images}")
            data = film.read_bytes()
            blob.write(data)
            w.writerow([film.name, offset, len(data)])
            offset += len(data)


def unpack_films(pack_dir: Path, films: Path) -> tuple[Path, Path]:
    """The packed films written back as files into `films`: (that folder, the labels CSV)."""
    films.mkdir(parents=True, exist_ok=True)
    blob = (pack_dir / "films.bin").read_bytes()
    with open(pack_dir / "films.csv", newline="") as f:
        for r in csv.DictReader(f):
            start = int(r["offset"])
            (films / Path(r["name"]).name).write_bytes(blob[start:start + int(r["bytes"])])
    return films, pack_dir / "labels.csv"


def _prepare_films(pack_dir: Path, out: Path, configs: list[Path]) -> dict[Path, Path]:
    """On the lent machine: unpack the films once and run `boneage prepare` once per distinct
    pipeline among the configs (so `hand` and `hand-stretch` candidates train side by side on
    one pack of films). Returns config -> its cache."""
    from boneage.training.config import load_config
    from boneage.training.run import pipeline_for

    films, _ = unpack_films(pack_dir, out / "films")
    by_config: dict[Path, Path] = {}
    for cfg in configs:
        pipeline = pipeline_for(load_config(cfg))
        cache = out / f"cache-{pipeline.fingerprint()}"
        if cache not in by_config.values():
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{cache.name}.json").write_text(pipeline.to_json())
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "boneage.cli", "prepare", "--images", str(films),
                            "--labels", str(pack_dir / "labels.csv"), "--pipeline",
                            str(out / f"{cache.name}.json"), "--out", str(cache),
                            "--workers", str(os.cpu_count() or 1)], check=True, env=_env())
            print(f"prepared {cache.name} in {time.time() - t0:.0f} s", flush=True)
        by_config[cfg] = cache
    return by_config


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}"
            f"{os.environ.get('PYTHONPATH', '')}"}


def _pack_cache(cache: Path, dest: Path, keep: set[str]) -> None:
    (dest / "cache" / "images").mkdir(parents=True)
    for name in ("pipeline.json",):
        shutil.copy2(cache / name, dest / "cache" / name)
    with open(cache / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r["id"] in keep]
    with open(dest / "cache" / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        shutil.copy2(cache / r["image"], dest / "cache" / r["image"])


def _shrink(weights: Path, dtype: str = "int8") -> None:
    """Rewrite a checkpoint stored as `dtype` (its card says so), keeping its metadata: int8
    brings four ResNet18 runs home within the 64 MiB a lent machine returns, and costs nothing
    measurable (docs/model.md); the shipped ensemble stores its members that way anyway."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from boneage.fileio import file_sha256
    from boneage.models.checkpoint import card_path, stored_state

    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    save_file(stored_state(state, dtype), str(weights), metadata=meta)
    card = json.loads(card_path(weights).read_text())
    card["weights_dtype"] = dtype
    card["weights_sha256"] = file_sha256(weights)  # the rewritten weights' own
    card_path(weights).write_text(json.dumps(card, indent=2) + "\n")


def train(a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = sorted(p for p in Path(a.configs).glob("*.yaml")
                     if not a.only or p.stem in a.only)
    env = _env()
    data = Path(a.data)
    caches = (_prepare_films(data, out, configs) if (data / "films.bin").is_file()
              else dict.fromkeys(configs, data))
    procs = {}
    t0 = time.time()
    for cfg in configs:
        cmd = [sys.executable, "-m", "boneage.cli", "train", "--data", str(caches[cfg]), "--split",
               a.split, "--config", str(cfg), "--out", str(out / cfg.stem), "--no-progress",
               "--max-minutes", str(a.max_minutes)]
        log = open(out / f"{cfg.stem}.log", "w")  # noqa: SIM115 (closed when the run ends)
        procs[cfg.stem] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                           log)
        print("started", cfg.stem, flush=True)
    summary = {}
    for cfg in configs:
        name = cfg.stem
        p, log = procs[name]
        rc = p.wait()
        log.close()
        summary[name] = run_summary(out / name, rc, cfg)
        print(name, json.dumps(summary[name]), flush=True)
        if summary[name]["cut"]:
            print(f"{name}: note: the time budget cut its schedule at epoch "
                  f"{summary[name]['epochs_run']} of {summary[name]['epochs_planned']} (its "
                  "learning rate had not decayed); its optimizer state stays on this machine, "
                  "so resume it here (boneage train --resume) or shorten its epochs", flush=True)
        print("".join((out / f"{name}.log").read_text().splitlines(True)[-4:]), flush=True)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if a.pack:
        dest = Path(a.pack)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "summary.json", dest / "summary.json")
        tar_path = out.parent / (out.name + ".tar")
        # best first; a candidate's weights travel only while the parts stay under ~60 MiB
        order = sorted(procs, key=lambda n: (summary[n]["val"] or {}).get("val", {}).get(
            "mae", float("inf")))
        budget = 60 * 2**20
        with tarfile.open(tar_path, "w") as tar:
            for name in order:
                run = out / name
                if (run / "best.safetensors").is_file():
                    _shrink(run / "best.safetensors")  # before its card is packed
                for f in sorted(run.glob("*")):
                    if not f.is_file() or f.name.startswith("last."):
                        continue
                    if f.name == "best.safetensors":
                        if f.stat().st_size > budget:
                            print(f"{name}: weights left behind (size limit)", flush=True)
                            continue
                        budget -= f.stat().st_size
                    tar.add(f, arcname=f"{name}/{f.name}")
                tar.add(out / f"{name}.log", arcname=f"{name}/train.log")
        data = tar_path.read_bytes()
        for i in range(0, len(data), PART):
            (dest / f"runs.tar.{i // PART:02d}").write_bytes(data[i:i + PART])
        print(f"packed {len(data) / 1e6:.1f} MB into {dest}", flush=True)


def run_summary(run: Path, rc: int, cfg: Path) -> dict:
    """What one candidate's run came to: exit code, best validation metrics, epochs run against
    the config's, and whether the time budget cut its schedule (stopped before the last epoch
    with the learning rate still up: neither finished nor early-stopped). A cut run is a
    weaker network than its recipe and cannot be resumed once only its int8 weights travel."""
    from boneage.training.config import load_config

    best = json.loads((run / "best.json").read_text()) if (run / "best.json").is_file() else None
    config = load_config(cfg)
    planned, patience = config.epochs, config.early_stopping_patience
    done = _epochs_run(run)
    best_epoch = (best or {}).get("metrics", {}).get("epoch")
    since_best = done - 1 - best_epoch if done is not None and best_epoch is not None else None
    cut = bool(done is not None and done < planned
               and (since_best is None or since_best < patience))
    return {"rc": rc, "val": best["metrics"] if best else None, "epochs_run": done,
            "epochs_planned": planned, "cut": cut,
            "seconds": best["training"]["seconds"] if best else None,
            "device": best["training"]["device"] if best else None}


def _epochs_run(run: Path) -> int | None:
    """Epochs the run finished (metrics.csv rows), not the best epoch's count."""
    metrics = run / "metrics.csv"
    return len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else None


def cache_for(run: Path, caches: list[Path]) -> Path | None:
    """The prepared cache whose pipeline is the run's own: a `hand-standard` candidate was
    trained on other prepared films than a `hand` one, and its provenance must say so."""
    from boneage.preprocess.steps import Pipeline

    want = Pipeline.from_dict(json.loads((run / "best.json").read_text())["pipeline"])
    for cache in caches:
        if (cache / "pipeline.json").is_file() and \
                Pipeline.load(cache / "pipeline.json").fingerprint() == want.fingerprint():
            return cache
    return None


def unpack(a: argparse.Namespace) -> None:
    from boneage.fileio import file_sha256

    parts = sorted(Path(a.parts).glob("runs.tar.*"))
    if not parts:
        sys.exit(f"unpack: no runs.tar.* parts in {a.parts}")
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        tar_path = staging / "runs.tar"
        tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
        try:
            with tarfile.open(tar_path) as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError) as e:
            sys.exit(f"unpack: the parts in {a.parts} do not make a whole tar ({e}): one "
                     "missing or cut short?")
        tar_path.unlink()
        runs = sorted(p for p in staging.iterdir() if (p / "config.yaml").is_file())
        caches = {run.name: cache_for(run, [Path(c) for c in a.cache]) for run in runs}
        unmatched = [run for run in runs if caches[run.name] is None]
        if unmatched:  # before anything lands in dest
            from boneage.training.config import load_config

            run = unmatched[0]
            cfg = load_config(run / "config.yaml")
            sys.exit(f"unpack: no --cache holds the films as {run.name} was trained on them; "
                     f"prepare them (`boneage prepare --images ... --labels ... --pipeline "
                     f"{cfg.pipeline} --image-size {cfg.image_size} --out DIR`) and add DIR "
                     "to --cache")
        clash = [run.name for run in runs if (dest / run.name).exists()]
        if clash:
            sys.exit(f"unpack: {dest / clash[0]} exists already; give a new --dest")
        for run in runs:
            run.rename(dest / run.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for run in (dest / r.name for r in runs):
        shutil.copy2(a.split, run / "split.csv")  # the full split: held-out rows included
        with open(run / "provenance.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rows[0]["cache"] = rows[0]["source"] = str(caches[run.name].resolve())
        with open(run / "provenance.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        card = json.loads((run / "best.json").read_text())  # describe the full split
        split = dict(csv.reader(Path(a.split).read_text().splitlines()[1:]))
        card["data"].update(
            source=rows[0]["source"],
            split_counts={s: sum(v == s for v in split.values()) for s in ("train", "val", "test")},
            split_sha256=file_sha256(run / "split.csv"))
        (run / "best.json").write_text(json.dumps(card, indent=2) + "\n")
        print("unpacked", run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("pack")
    p.add_argument("--cache", help="a prepared cache to pack")
    p.add_argument("--images", help="or: source films, prepared on the lent machine")
    p.add_argument("--labels", help="their labels CSV")
    p.add_argument("--split", required=True)
    p.add_argument("--dest", default=str(PACK))
    p.set_defaults(func=pack)
    p = sub.add_parser("wheels")
    p.add_argument("--dest", default=str(ROOT / ".devdata/whl"))
    p.add_argument("--python", default="3.12", help="the lent machine's Python version")
    p.add_argument("--pack", default=str(PACK), help="the pack, for the size check")
    p.set_defaults(func=wheels)
    p = sub.add_parser("train")
    p.add_argument("--data", default=str(PACK),
                   help="a prepared cache, or a packed folder of source films (films.bin)")
    p.add_argument("--split", default=str(PACK / "split.csv"))
    p.add_argument("--configs", default=str(ROOT / "configs/candidates"))
    p.add_argument("--out", required=True)
    p.add_argument("--max-minutes", type=float, default=6.0)
    p.add_argument("--only", nargs="+", metavar="NAME", help="these candidates only")
    p.add_argument("--pack", help="folder for the summary and the tar parts")
    p.set_defaults(func=train)
    p = sub.add_parser("unpack")
    p.add_argument("--parts", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--cache", required=True, nargs="+",
                   help="prepared caches (one per pipeline the runs were trained on)")
    p.add_argument("--split", required=True)
    p.set_defaults(func=unpack)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
