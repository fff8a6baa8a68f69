"""Contact sheet: each film with its crop box beside what the pipeline made of it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from boneage.data.images import read_image
from boneage.data.labels import LabelTable
from boneage.fileio import atomic_write_bytes
from boneage.preprocess.steps import Pipeline, ToUint8

TILE = 224


def _fit(img: np.ndarray, size: int = TILE) -> np.ndarray:
    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 40, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def contact_sheet(table: LabelTable, pipeline: Pipeline, path: str | Path, count: int = 16,
                  columns: int = 4) -> int:
    """Write a before/after sheet for `count` films spread over the table; return how many."""
    recs = list(table)
    if len(recs) > count:
        idx = np.linspace(0, len(recs) - 1, count).round().astype(int)
        recs = [recs[i] for i in idx]
    cached = pipeline.cached_part
    tiles = []
    for rec in recs:
        raw = ToUint8()(read_image(rec.path), {})
        meta: dict = {}
        out = cached(raw, meta)
        before = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
        if "crop_box" in meta:
            x0, y0, x1, y1 = meta["crop_box"]
            colour = (0, 0, 255) if meta.get("crop_fallback") else (0, 200, 0)
            cv2.rectangle(before, (x0, y0), (x1 - 1, y1 - 1), colour,
                          max(2, max(raw.shape) // 150))
        pair = np.hstack([_fit(before), _fit(cv2.cvtColor(out, cv2.COLOR_GRAY2BGR))])
        cv2.putText(pair, rec.id[:30], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        tiles.append(pair)
    blank = np.zeros_like(tiles[0])
    while len(tiles) % columns:
        tiles.append(blank)
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    ok, buf = cv2.imencode(".png", sheet)
    atomic_write_bytes(path, buf.tobytes())
    return len(recs)
