"""`boneage prepare`: run a pipeline's cached part over a table of films into a cache folder.

CACHE/pipeline.json   the full pipeline (cached part + what is applied at load time)
CACHE/manifest.csv    id, source, size/mtime of the source, crop box, fallback, labels, status
CACHE/images/<id>.png the prepared uint8 images

Parallel over processes, atomic (every file is written to a temporary name and renamed), and
resumable: a rerun skips films whose source file and pipeline are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from boneage.data.labels import LabelTable, Record
from boneage.errors import BoneAgeError
from boneage.fileio import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
    ensure_writable_dir,
    read_csv_dicts,
)
from boneage.preprocess.steps import Pipeline

MANIFEST_COLUMNS = ("id", "source", "source_size", "source_mtime_ns", "image", "crop_box",
                    "crop_fallback", "male", "months", "status", "error")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(rid: str) -> str:
    """A file name for any id: unsafe characters replaced, and a hash added if any were."""
    clean = _SAFE.sub("_", rid)
    if clean != rid or clean.startswith("."):
        clean = f"{clean}-{hashlib.sha1(rid.encode()).hexdigest()[:8]}"
    return clean


@dataclass
class PrepareResult:
    total: int = 0
    done: int = 0
    skipped: int = 0
    fallback: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _source_stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _transform(task: tuple[str, str, Pipeline]) -> tuple[str, np.ndarray | None, dict, str]:
    """Worker: read a film and run the pipeline. Never raises: errors come back as text."""
    from boneage.data.images import read_image

    key, src, pipeline = task
    meta: dict[str, Any] = {}
    try:
        return key, pipeline(read_image(src), meta), meta, ""
    except BoneAgeError as e:
        return key, None, meta, str(e)
    except Exception as e:  # an unexpected decoder error on one file must not stop the batch
        return key, None, meta, f"{src}: {type(e).__name__}: {e}"


def _process(task: tuple[str, str, str, Pipeline]) -> dict[str, Any]:
    """Worker: transform one film and write its PNG atomically."""
    import cv2

    rid, src, dst, pipeline = task
    _, img, meta, err = _transform((rid, src, pipeline))
    if img is not None:
        # fast RLE compression: encoding is a large share of the cost for small images
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                             cv2.IMWRITE_PNG_STRATEGY, 3])
        if ok:
            atomic_write_bytes(dst, buf.tobytes())
        else:
            err = f"{src}: could not encode the prepared image"
    if err:
        return {"id": rid, "status": "failed", "error": err}
    return {"id": rid, "status": "ok", "error": "",
            "crop_box": json.dumps(meta.get("crop_box", [])),
            "crop_fallback": int(bool(meta.get("crop_fallback", False)))}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _init_pool_worker() -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool and says one line (else every
    worker prints its own KeyboardInterrupt traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker()


def parallel_map(fn: Callable[[Any], Any], tasks: list, workers: int, ordered: bool = False
                 ) -> Iterator[Any]:
    """Results of fn over tasks (in completion order, or in task order with `ordered`), in
    `workers` processes (inline for 1). The pool is always shut down, also when the caller
    stops early or is interrupted."""
    workers = max(1, min(workers, len(tasks) or 1))
    if workers == 1:
        _init_worker()
        yield from map(fn, tasks)
        return
    import multiprocessing as mp

    # not fork: a parent that already ran OpenCV threads can deadlock its forked children
    pool = mp.get_context("forkserver").Pool(workers, initializer=_init_pool_worker)
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, tasks, chunksize=4)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


def preprocess_many(paths: list[Path], pipeline: Pipeline, workers: int = 1,
                    progress: bool = False) -> list[tuple[np.ndarray | None, dict, str]]:
    """(image or None, meta, error) for each path, in order, without writing anything."""
    from tqdm import tqdm

    results: list = [None] * len(paths)
    tasks = [(str(i), str(p), pipeline) for i, p in enumerate(paths)]
    with tqdm(total=len(tasks), desc="preprocess", unit="img", disable=not progress or None,
              dynamic_ncols=True) as bar:
        for key, img, meta, err in parallel_map(_transform, tasks, workers):
            results[int(key)] = (img, meta, err)
            bar.update(1)
    return results


def table_from_cache(cache: Path) -> LabelTable:
    """The films a cache prepared successfully, with the labels its manifest recorded."""
    rows = [r for r in read_manifest(cache).values() if r["status"] == "ok"]
    if not rows:
        raise BoneAgeError(f"{cache}: not a prepared cache, or an empty one")
    return LabelTable([Record(r["id"], Path(r["source"]),
                              None if r["male"] == "" else r["male"] == "1",
                              float(r["months"]) if r["months"] else None) for r in rows],
                      source=str(cache))


def read_manifest(cache: Path) -> dict[str, dict[str, str]]:
    path = cache / "manifest.csv"
    if not path.is_file():
        return {}
    return {r["id"]: r for r in read_csv_dicts(path)}


def _row(rec: Record, src_stat: tuple[int, int], image: str, info: dict[str, Any]) -> dict:
    return {
        "id": rec.id, "source": str(rec.path), "source_size": src_stat[0],
        "source_mtime_ns": src_stat[1], "image": image,
        "crop_box": info.get("crop_box", ""), "crop_fallback": info.get("crop_fallback", ""),
        "male": "" if rec.male is None else int(rec.male),
        "months": "" if rec.months is None else rec.months,
        "status": info["status"], "error": info.get("error", ""),
    }


def prepare(
    table: LabelTable,
    pipeline: Pipeline,
    cache: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> PrepareResult:
    cache = ensure_writable_dir(cache)
    (cache / "images").mkdir(exist_ok=True)
    cached = pipeline.cached_part
    pipe_path = cache / "pipeline.json"
    same_pipeline = pipe_path.is_file() and _same_pipeline(pipe_path, pipeline)
    old = read_manifest(cache) if same_pipeline else {}
    atomic_write_text(pipe_path, json.dumps(pipeline.to_dict(), indent=2) + "\n")

    result = PrepareResult(total=len(table))
    rows: dict[str, dict] = {}
    tasks = []
    stats = {}
    for rec in table:
        st = _source_stat(rec.path)
        stats[rec.id] = st
        image = f"images/{safe_name(rec.id)}.png"
        prev = old.get(rec.id)
        if (prev and prev.get("status") == "ok" and prev.get("source") == str(rec.path)
                and prev.get("source_size") == str(st[0])
                and prev.get("source_mtime_ns") == str(st[1]) and (cache / image).is_file()):
            rows[rec.id] = _row(rec, st, image, prev)
            result.skipped += 1
        else:
            tasks.append((rec.id, str(rec.path), str(cache / image), cached))
    by_id = {r.id: r for r in table}

    def write_manifest() -> None:
        ordered = [rows[r.id] for r in table if r.id in rows]
        atomic_write_csv(cache / "manifest.csv", MANIFEST_COLUMNS,
                         ([row[c] for c in MANIFEST_COLUMNS] for row in ordered))

    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=len(tasks), desc="prepare", unit="img", disable=not progress or None,
               dynamic_ncols=True)
    last_flush = time.monotonic()
    try:
        for info in parallel_map(_process, tasks, workers):
            rid = info["id"]
            rows[rid] = _row(by_id[rid], stats[rid], f"images/{safe_name(rid)}.png", info)
            if info["status"] == "ok":
                result.done += 1
            else:
                result.failed.append((rid, info["error"]))
            bar.update(1)
            if time.monotonic() - last_flush > 5:
                write_manifest()
                last_flush = time.monotonic()
    finally:
        bar.close()
        write_manifest()  # keep whatever finished, even when interrupted
    result.seconds = time.perf_counter() - t0
    result.fallback = sum(1 for r in rows.values() if str(r["crop_fallback"]) == "1")
    return result


def _same_pipeline(path: Path, pipeline: Pipeline) -> bool:
    try:
        return Pipeline.load(path).to_json() == pipeline.to_json()
    except (BoneAgeError, OSError, ValueError):
        return False


@dataclass
class Cache:
    """A prepared cache loaded for training or evaluation: images in memory as uint8."""

    ids: list[str]
    images: np.ndarray  # (N, S, S) uint8
    male: np.ndarray
    months: np.ndarray
    pipeline: Pipeline
    root: Path


def load_cache(cache: str | Path, ids: list[str] | None = None) -> Cache:
    """Load prepared images (all, or those ids in that order) into one uint8 array."""
    import cv2

    root = Path(cache)
    if not (root / "manifest.csv").is_file() or not (root / "pipeline.json").is_file():
        raise BoneAgeError(f"{root}: not a prepared cache (run `boneage prepare` first)")
    pipeline = Pipeline.load(root / "pipeline.json")
    manifest = {k: v for k, v in read_manifest(root).items() if v["status"] == "ok"}
    if ids is None:
        ids = list(manifest)
    missing = [i for i in ids if i not in manifest]
    if missing:
        raise BoneAgeError(f"{root}: {len(missing)} id(s) not prepared, e.g. {missing[:3]}")
    size = pipeline.output_size
    if size is None:
        raise BoneAgeError(f"{root}: the pipeline has no fixed output size")
    images = np.empty((len(ids), size, size), np.uint8)
    for i, rid in enumerate(ids):
        img = cv2.imread(str(root / manifest[rid]["image"]), cv2.IMREAD_UNCHANGED)
        if img is None or img.shape != (size, size):
            raise BoneAgeError(f"{root}: prepared image for {rid!r} is missing or damaged; "
                               "rerun `boneage prepare`")
        images[i] = img
    male = np.array([manifest[i]["male"] == "1" for i in ids], bool)
    months = np.array([float(manifest[i]["months"]) if manifest[i]["months"] else np.nan
                       for i in ids], np.float32)
    return Cache(list(ids), images, male, months, pipeline, root)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
