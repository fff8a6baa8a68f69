"""Synthetic hand-like films: fixtures for tests and the out-of-the-box example.

Not anatomy: a bright palm, five fingers and a forearm with denser "bones" inside, on a dark
background, optionally with a wide border, a burnt-in side marker ("L") and a text label; the
nuisances the hand crop must ignore. The hand box is returned so tests can check crops.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np


def synthetic_film(
    height: int = 1200,
    width: int = 900,
    seed: int = 0,
    marker: bool = True,
    border: int = 0,
    bits: int = 8,
    hand_scale: float = 1.0,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(film, hand box x0, y0, x1, y1). 16-bit films use the full 0-65535 range."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 25, np.float32)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    cx = width * (0.5 + rng.uniform(-0.05, 0.05))
    s = min(height, width) / 900 * hand_scale
    palm_cy = height * 0.58
    hand = np.zeros((height, width), np.uint8)
    bone = np.zeros((height, width), np.uint8)
    # forearm from the palm to the bottom edge, palm, five fingers
    cv2.rectangle(hand, (int(cx - 140 * s), int(palm_cy)), (int(cx + 140 * s), height - 1), 255, -1)
    cv2.ellipse(hand, (int(cx), int(palm_cy)), (int(190 * s), int(170 * s)), 0, 0, 360, 255, -1)
    for i, (dx, length) in enumerate(((-150, 230), (-75, 300), (0, 330), (75, 300), (150, 240))):
        angle = (i - 2) * 0.12
        x0, y0 = cx + dx * s, palm_cy - 120 * s
        x1, y1 = x0 + np.sin(angle) * length * s, y0 - np.cos(angle) * length * s
        cv2.line(hand, (int(x0), int(y0)), (int(x1), int(y1)), 255, int(52 * s))
        cv2.line(bone, (int(x0), int(y0)), (int(x1), int(y1)), 255, int(20 * s))
    for dx in (-70, 70):
        cv2.line(bone, (int(cx + dx * s), height - 1), (int(cx + dx * s * 0.8), int(palm_cy)), 255,
                 int(40 * s))
    img[hand > 0] = 120 + rng.uniform(-10, 10)
    img[bone > 0] = 190 + rng.uniform(-10, 10)
    img = cv2.GaussianBlur(img, (0, 0), 3 * s)
    if border:  # the frame hides what lies under it
        hand[:border], hand[-border:], hand[:, :border], hand[:, -border:] = 0, 0, 0, 0
    ys, xs = np.nonzero(hand)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    img = np.round(np.clip(img, 0, 255)).astype(np.uint8)
    if marker:
        cv2.putText(img, "L", (int(width * 0.06), int(height * 0.2)), cv2.FONT_HERSHEY_SIMPLEX,
                    3 * s, 250, int(8 * s))
        cv2.putText(img, "ID 0042 2026", (int(width * 0.55), int(height * 0.06)),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.2 * s, 230, max(1, int(3 * s)))
    if border:
        img[:border, :] = 235
        img[-border:, :] = 235
        img[:, :border] = 235
        img[:, -border:] = 235
    if bits == 16:
        return img.astype(np.uint16) * 257, box
    return img, box


def write_example(folder: str | Path, n: int = 6) -> Path:
    """A folder of n synthetic films plus labels.csv in the RSNA training format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        film, _ = synthetic_film(height=1000 + 40 * i, width=800, seed=i, border=30 * (i % 2))
        cv2.imwrite(str(folder / f"{i + 1}.png"), film)
        rows.append((str(i + 1), 24 + 30 * i, "True" if i % 2 else "False"))
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "boneage", "male"])
        w.writerows(rows)
    return folder
