"""Renderings: the same film as hospitals and preprocessing pipelines hand it over (background
removed to black or white, contrast stretched or equalised, CLAHE, gamma, an inversion undone
with a window, 12 bits, borders cut, sharpened, JPEG, turned upright).

Two users: `benchmarks/rendering.py` measures how far each fixed rendering (`RENDERINGS`) moves
a model's estimate, and training draws random ones (`random_rendering`, the `augment.rendering`
option) so that a network learns to answer the same whatever the rendering (issue #28).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def film_mask(img: np.ndarray) -> np.ndarray:
    """The hand on a whole uint8 film: the localiser's box, the hand's mask inside it (found on
    a copy of at most 512 px, enlarged back)."""
    from boneage.preprocess.hand import localise_hand
    from boneage.preprocess.steps import hand_mask, shrink

    b = localise_hand(img, 0.02)
    box = img[b.y0:b.y1, b.x0:b.x1]
    small = shrink(box, 512)
    m = hand_mask(small)
    if small.shape != box.shape:
        m = cv2.resize(m.astype(np.uint8), (box.shape[1], box.shape[0]),
                       interpolation=cv2.INTER_NEAREST).astype(bool)
    out = np.zeros(img.shape, bool)
    out[b.y0:b.y1, b.x0:b.x1] = m
    return out


def lut(img: np.ndarray, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A grey-level mapping of a uint8 image (computed once for the 256 levels)."""
    table = np.clip(np.round(f(np.arange(256, dtype=np.float64))), 0, 255).astype(np.uint8)
    return table[img]


def stretch(img: np.ndarray, lo_p: float = 1, hi_p: float = 99,
            where: np.ndarray | None = None) -> np.ndarray:
    """Grey levels from the lo_p-th to the hi_p-th percentile (of `where`'s pixels) to 0-255."""
    vals = img[where] if where is not None else img
    lo, hi = np.percentile(vals, [lo_p, hi_p])
    return lut(img, lambda x: (x - lo) * 255.0 / max(hi - lo, 1.0))


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    return lut(img, lambda x: 255 * (x / 255) ** g)


def clahe(img: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    return cv2.createCLAHE(clip, (tiles, tiles)).apply(img)


def background(img: np.ndarray, value: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Everything but the hand set to `value` (a background removed)."""
    m = film_mask(img) if mask is None else mask
    out = img.copy()
    out[~m] = value
    return out


def sharpen(img: np.ndarray, amount: float = 1.0, sigma: float | None = None) -> np.ndarray:
    """Unsharp masking; sigma defaults to 2 px on a 2,000 px film."""
    s = sigma if sigma is not None else max(0.5, 2 * max(img.shape) / 1000.0)
    blur = cv2.GaussianBlur(img.astype(np.float32), (0, 0), s)
    return np.clip(img + amount * (img - blur), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 40) -> np.ndarray:
    _, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def twelve_bit(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """As a 12-bit film reaches us: 0-4095 with its own offset and noise below the 8-bit step
    (the reader stretches its range back to 8 bits)."""
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) * 14 + 300 + rng.normal(0, 4, img.shape),
                   0, 4095).astype(np.uint16)


def inverted_windowed(img: np.ndarray, lo_p: float = 2, hi_p: float = 98) -> np.ndarray:
    """Stored inverted (MONOCHROME1) with a window from its lo_p-th to hi_p-th percentile, read
    back as it should be: the inversion undone, the window kept."""
    return 255 - stretch(255 - img, lo_p, hi_p)


def upright(img: np.ndarray) -> np.ndarray:
    """Turned so that the hand's long axis (the principal axis of its mask) is vertical."""
    ys, xs = np.nonzero(film_mask(img))
    if xs.size < 100:
        return img
    w, v = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    ax = v[:, np.argmax(w)]
    angle = (np.degrees(np.arctan2(ax[0], ax[1])) + 90) % 180 - 90  # from vertical
    if abs(angle) < 2:
        return img
    h, wd = img.shape
    rot = cv2.getRotationMatrix2D((wd / 2, h / 2), -angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    nw, nh = int(h * sin + wd * cos), int(h * cos + wd * sin)
    rot[0, 2] += nw / 2 - wd / 2
    rot[1, 2] += nh / 2 - h / 2
    border = int(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))
    return cv2.warpAffine(img, rot, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def borders_cut(img: np.ndarray) -> np.ndarray:
    """Cut to the hand's box (2% margin): borders, side markers and labels outside it go."""
    from boneage.preprocess.hand import localise_hand

    b = localise_hand(img, 0.02)
    return img[b.y0:b.y1, b.x0:b.x1]


def processed(img: np.ndarray, mask: np.ndarray | None = None, clip: float = 2.0) -> np.ndarray:
    """A public pipeline's look: background black, the hand stretched to full contrast inside
    its mask, then CLAHE."""
    m = film_mask(img) if mask is None else mask
    out = stretch(img, 1, 99, where=m if m.any() else None)
    out[~m] = 0
    return clahe(out, clip)


RENDERINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as is": lambda im: im,
    "background black": lambda im: background(im, 0),
    "background white": lambda im: background(im, 255),
    "contrast stretched 1-99%": stretch,
    "histogram equalised": cv2.equalizeHist,
    "CLAHE 2.0 8x8": clahe,
    "gamma 0.7": lambda im: gamma(im, 0.7),
    "gamma 1.4": lambda im: gamma(im, 1.4),
    "inverted, windowed, corrected": inverted_windowed,
    "12-bit": twelve_bit,
    "borders and labels cut": borders_cut,
    "sharpened": sharpen,
    "JPEG quality 40": jpeg,
    "turned upright": upright,
    "processed (black, stretched, CLAHE)": processed,
}


def random_rendering(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random rendering of a prepared uint8 image of the hand (what `prepare` caches): a
    background change, a contrast change, or both; drawn from wider ranges than
    `RENDERINGS` so that a network does not learn those few by heart."""
    from boneage.preprocess.steps import hand_mask

    out = img
    kind = rng.integers(3)  # 0: background, 1: contrast, 2: both
    if kind in (0, 2):
        m = hand_mask(out)
        value = int(rng.choice([0, 0, 255, rng.integers(256)]))
        out = background(out, value, m) if m.mean() < 0.98 else out
    if kind in (1, 2):
        c = rng.integers(8)
        if c == 0:
            out = stretch(out, rng.uniform(0, 5), rng.uniform(95, 100))
        elif c == 1:
            out = cv2.equalizeHist(out)
        elif c == 2:
            out = clahe(out, rng.uniform(1, 4), int(rng.choice([4, 8])))
        elif c == 3:
            out = gamma(out, float(np.exp(rng.uniform(-0.7, 0.7))))
        elif c == 4:
            out = inverted_windowed(out, rng.uniform(0, 5), rng.uniform(95, 100))
        elif c == 5:
            out = sharpen(out, rng.uniform(0.5, 2), rng.uniform(0.7, 2))
        elif c == 6:
            out = jpeg(out, int(rng.integers(20, 90)))
        else:
            out = processed(out, hand_mask(out), rng.uniform(1, 4))
    return out
