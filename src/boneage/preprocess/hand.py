"""Hand localisation by thresholding and connected components (about 10 ms a film).

Films come with side markers ("L"), burnt-in text, wide borders, collimated fields that are
themselves bright rectangles, and varying exposure. The search works on a small copy of the film:
Otsu threshold, morphological clean-up, then the largest component that is not a thin strip. When
that component is a near-perfect rectangle it is a collimation field or a cassette panel, not a
hand, so the search repeats inside it. A component too small to be a hand means "not found", and
the caller keeps the whole film.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from boneage.preprocess.steps import area_resize

WORK_SIZE = 384  # longest side of the working copy
MIN_AREA_FRACTION = 0.03  # of the searched region
RECT_EXTENT = 0.88  # component area / its box area above which it is a field, not a hand
SOFTNESS = 0.5  # how far below Otsu, towards the background, the threshold moves


@dataclass(frozen=True)
class HandBox:
    """Crop box in full-resolution pixel coordinates (x0, y0 inclusive; x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    found: bool

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def _best_component(mask: np.ndarray, min_area: float) -> tuple[np.ndarray, float] | None:
    """Stats row of the largest plausible component, and its extent (area / box area)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = mask.shape
    best = None
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area < min_area:
            continue
        # thin strips along an edge (film borders, rulers) are never the hand
        if (bw >= 0.97 * w and bh < 0.15 * h) or (bh >= 0.97 * h and bw < 0.15 * w):
            continue
        # a frame: spans the whole region but fills little of it
        if bw >= 0.97 * w and bh >= 0.97 * h and area < 0.3 * bw * bh:
            continue
        if best is None or area > best[4]:
            best = stats[i]
    if best is None:
        return None
    return best, best[4] / float(best[2] * best[3])


def _threshold(region: np.ndarray, softness: float) -> np.ndarray:
    """Otsu, then lowered part of the way towards the background level: Otsu alone tends to
    cut faint soft tissue (fingertips) off the hand."""
    t, _ = cv2.threshold(region, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    below = region[region < t]
    if below.size:
        t = t - softness * (t - float(np.median(below)))
    mask = (region > t).astype(np.uint8) * 255
    k = max(3, (min(region.shape) // 60) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)


def _clip_bright(region: np.ndarray, q: float = 95.0) -> np.ndarray:
    """The region with grey levels above its q-th percentile lowered to it. On a faint film a
    small bright side marker or label otherwise takes Otsu's threshold for itself, and the hand
    falls below it with the background (RSNA film 3440: hand 46-63 grey levels, "L" marker 255)."""
    return np.minimum(region, np.percentile(region, q)).astype(region.dtype)


def _trim_uniform_border(img: np.ndarray, max_fraction: float = 0.35) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inside any flat frame (scanner borders, white or black edges). "Flat" is
    relative to the film's contrast: on a faint film (under 60 grey levels from its 1st to its
    99th percentile, median 27: 65 of the 103 `rsna-val-fullres` films) a row across the
    fingertips varies by less than 4 levels and a fixed bound trimmed the hand itself."""
    h, w = img.shape
    lo, hi = np.percentile(img, [1, 99])
    flat = min(4.0, 0.1 * max(float(hi - lo), 1.0))
    row_flat = img.std(axis=1) < flat
    col_flat = img.std(axis=0) < flat

    def run(flat: np.ndarray) -> int:
        limit = int(len(flat) * max_fraction)
        n = 0
        while n < limit and flat[n]:
            n += 1
        return n

    y0, y1 = run(row_flat), h - run(row_flat[::-1])
    x0, x1 = run(col_flat), w - run(col_flat[::-1])
    return x0, y0, x1, y1


def _inside_frame(small: np.ndarray, frame: tuple[int, int, int, int] | None = None
                  ) -> tuple[int, int, int, int]:
    """The region to search: a little inside any trimmed frame edge, past its blurred rim."""
    sh, sw = small.shape
    f = frame or _trim_uniform_border(small)
    return (f[0] + 4 * (f[0] > 0), f[1] + 4 * (f[1] > 0),
            f[2] - 4 * (f[2] < sw), f[3] - 4 * (f[3] < sh))


def white_background(img: np.ndarray) -> bool:
    """Whether the film's background was removed to white (the hand darker than all around
    it): most of its edge at the top grey level, and a good part of what lies inside any flat
    border too (a white frame around a dark film is a border, not a background)."""
    ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if np.mean(ring >= 250) <= 0.5:
        return False
    x0, y0, x1, y1 = _trim_uniform_border(img)
    inner = img[y0:y1, x0:x1]
    return bool(inner.size and np.mean(inner >= 250) > 0.15)


def _working_copy(image: np.ndarray, blur: int) -> tuple[np.ndarray, float]:
    """(blurred copy with the longest side at most WORK_SIZE, its scale to the film). A film
    whose background was removed to white is searched inverted, so that the hand is the
    bright object the search looks for, as on every other film."""
    h, w = image.shape[:2]
    scale = WORK_SIZE / max(h, w)
    small = area_resize(image, (max(1, round(w * scale)), max(1, round(h * scale)))) \
        if scale < 1 else image.copy()
    if white_background(small):
        small = 255 - small
    return cv2.GaussianBlur(small, (blur, blur), 0), small.shape[1] / w


def finger_gaps(image: np.ndarray, depth: float = 0.1) -> int:
    """How many deep notches (convexity defects deeper than `depth` x the square root of its
    area) the film's largest bright object has: 4 between spread fingers, 3 to 6 on nearly
    every hand radiograph, 0 to 2 on a chest, a long bone or a blank picture."""
    small, _ = _working_copy(image, 3)
    x0, y0, x1, y1 = _inside_frame(small)
    region = small[y0:y1, x0:x1]
    if region.size == 0 or int(region.max()) - int(region.min()) < 10:
        return 0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_threshold(region, SOFTNESS), 8)
    if n < 2 or stats[1:, 4].max() < MIN_AREA_FRACTION * region.size:
        # nothing hand-sized: measure the whole film again with its bright spots clipped, or a
        # faint film's marker is the object measured. Only this check searches again; the crop
        # box stays the localiser's (a second search there moved framing: docs/experiments.md)
        region = _clip_bright(small)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(_threshold(region, SOFTNESS), 8)
    if n < 2:
        return 0
    comp = (labels == 1 + int(np.argmax(stats[1:, 4]))).astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(c)
    if len(c) < 4 or area <= 0:
        return 0
    defects = cv2.convexityDefects(c, cv2.convexHull(c, returnPoints=False))
    if defects is None:
        return 0
    return int(np.sum(defects.reshape(-1, 4)[:, 3] / 256.0 > depth * np.sqrt(area)))


def localise_hand(image: np.ndarray, margin: float = 0.05) -> HandBox:
    """Find the hand on a 2-D uint8 film; fall back to the whole film when none is plausible."""
    h, w = image.shape[:2]
    small, scale = _working_copy(image, 5)
    sh, sw = small.shape
    # (x0, y0, x1, y1) of the region searched, in small-image coordinates
    frame = _trim_uniform_border(small)
    rx0, ry0, rx1, ry1 = _inside_frame(small, frame)
    found_box = None
    for _ in range(3):
        region = small[ry0:ry1, rx0:rx1]
        if region.size == 0 or int(region.max()) - int(region.min()) < 10:
            break
        area = region.shape[0] * region.shape[1]
        hit = _best_component(_threshold(region, SOFTNESS), MIN_AREA_FRACTION * area)
        if hit is None:
            break
        (x, y, bw, bh, _), extent = hit
        found_box = (rx0 + x, ry0 + y, rx0 + x + bw, ry0 + y + bh)
        if extent < RECT_EXTENT or bw * bh < 0.1 * area:
            break
        # a filled rectangle: a collimated field or panel; look for the hand inside it,
        # trimming its edge so that the field's own border does not count
        inset = max(2, int(0.02 * max(bw, bh)))
        rx0, ry0, rx1, ry1 = (found_box[0] + inset, found_box[1] + inset,
                              found_box[2] - inset, found_box[3] - inset)
    if found_box is None:
        return HandBox(0, 0, w, h, False)
    x0, y0, x1, y1 = (v / scale for v in found_box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    # the margin never reaches into a trimmed frame
    fx0, fy0 = frame[0] / scale, frame[1] / scale
    fx1 = frame[2] / scale if frame[2] < sw else w
    fy1 = frame[3] / scale if frame[3] < sh else h
    return HandBox(
        max(0, int(fx0), int(x0 - mx)), max(0, int(fy0), int(y0 - my)),
        min(w, int(np.ceil(fx1)), int(np.ceil(x1 + mx))),
        min(h, int(np.ceil(fy1)), int(np.ceil(y1 + my))), True,
    )
