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


# Phantom hand: (x, y) of each ray's base on the palm, its direction (degrees from vertical)
# and the lengths of metacarpal and phalanges, in units of 1/1000 of the film height.
_RAYS = (  # thumb, index, middle, ring, little
    ((0.32, 0.66), -38, (150, 95, 0, 70)),
    ((0.41, 0.55), -8, (190, 120, 75, 55)),
    ((0.50, 0.54), 0, (195, 130, 85, 58)),
    ((0.58, 0.555), 7, (185, 120, 80, 55)),
    ((0.66, 0.58), 16, (165, 95, 60, 50)),
)


def phantom_hand(height: int = 1000, width: int = 800, seed: int = 0) -> np.ndarray:
    """A drawn left-hand radiograph phantom (8-bit): forearm bones with epiphyses, carpals,
    metacarpals and phalanges with growth-plate gaps, a soft-tissue envelope, film noise and
    an "L" marker. No patient data went into it, so it can ship with the package as the example
    film; it is anatomy-shaped, not anatomy, and its bone age means nothing clinically."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    u = h / 1000
    soft = np.zeros((h, w), np.float32)
    bone = np.zeros((h, w), np.float32)

    def seg(img, p, q, thick, value):
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), float(value),
                 max(1, int(thick)), cv2.LINE_AA)

    def long_bone(p, q, thick):
        """Cortex brighter than the medulla; rounded ends."""
        seg(bone, p, q, thick, 0.75)
        seg(bone, p, q, thick * 0.45, 0.55)
        for c in (p, q):
            cv2.circle(bone, (int(c[0]), int(c[1])), int(thick * 0.55), 0.8, -1, cv2.LINE_AA)

    # forearm: radius and ulna with their distal epiphyses (a gap = open growth plate)
    for x, thick, top in ((0.43, 62, 0.80), (0.60, 46, 0.82)):
        p, q = (w * x, h * 1.02), (w * x, h * top + 22 * u)
        seg(soft, (w * 0.52, h * 1.02), (w * 0.51, h * 0.70), 300 * u, 1.0)
        long_bone(p, q, thick * u)
        cv2.ellipse(bone, (int(w * x), int(h * top)), (int(thick * 0.6 * u), int(12 * u)), 0, 0,
                    360, 0.85, -1, cv2.LINE_AA)
    # carpals: eight rounded bones between forearm and metacarpals
    for cx, cy, rx, ry in ((0.41, 0.73, 30, 22), (0.49, 0.735, 26, 20), (0.56, 0.74, 22, 18),
                           (0.62, 0.73, 20, 20), (0.38, 0.67, 26, 22), (0.45, 0.665, 22, 24),
                           (0.52, 0.67, 28, 26), (0.60, 0.675, 26, 24)):
        cv2.ellipse(bone, (int(w * cx), int(h * cy)), (int(rx * u), int(ry * u)),
                    float(rng.uniform(0, 180)), 0, 360, 0.8, -1, cv2.LINE_AA)
    seg(soft, (w * 0.50, h * 0.70), (w * 0.52, h * 0.56), 330 * u, 1.0)  # palm
    for (bx, by), deg, lengths in _RAYS:
        x, y = w * bx, h * by
        dx, dy = np.sin(np.radians(deg)), -np.cos(np.radians(deg))
        thick = (34 if lengths[0] > 160 else 30) * u
        start = (x, y)
        for j, length in enumerate(lengths):
            if length == 0:
                continue
            gap = 9 * u  # growth plate before each bone's epiphysis
            end = (start[0] + dx * length * u, start[1] + dy * length * u)
            long_bone((start[0] + dx * gap, start[1] + dy * gap), end, thick * (0.9 - 0.1 * j))
            seg(soft, start, end, thick * 2.3, 1.0)
            start = (end[0] + dx * 6 * u, end[1] + dy * 6 * u)
        seg(soft, start, (start[0] + dx * 8 * u, start[1] + dy * 8 * u), thick * 2.0, 1.0)
    soft = cv2.GaussianBlur(soft, (0, 0), 6 * u)
    bone = cv2.GaussianBlur(bone, (0, 0), 1.6 * u)
    img = 18 + 95 * np.clip(soft, 0, 1) + 150 * np.clip(bone, 0, 1)
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.putText(img, "L", (int(w * 0.08), int(h * 0.12)), cv2.FONT_HERSHEY_SIMPLEX, 2.4 * u, 235,
                max(1, int(6 * u)), cv2.LINE_AA)
    return img


if __name__ == "__main__":  # regenerates the shipped example film
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/phantom-hand.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), phantom_hand())
    print(f"wrote {out}")
