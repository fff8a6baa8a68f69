"""Array steps and the Pipeline that composes them.

Each step is a small frozen dataclass whose fields are its parameters, so a pipeline serialises
to plain JSON (`{"steps": [{"name": "clahe", "clip_limit": 2.0, ...}, ...]}`) and is rebuilt
exactly from it. A model stores the pipeline it was trained with; inference replays it.

Steps take a 2-D array and a `meta` dict (where a step records what it did, e.g. the crop box)
and return a 2-D array. Everything before `scale` works on uint8 and is what `prepare` caches.
Geometric steps also compose `meta["to_input"]`, the 3x3 matrix from film pixels to the
prepared image's pixels, so that a heatmap on the model's input can be laid back on the film.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from boneage.errors import BoneAgeError

STEPS: dict[str, type[Step]] = {}
_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA,
                  "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def register(cls: type[Step]) -> type[Step]:
    STEPS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Step:
    name: ClassVar[str] = ""
    cached: ClassVar[bool] = True  # output is uint8 and can be stored by `prepare`

    def __call__(self, image: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


def _track(meta: dict[str, Any], m: np.ndarray) -> None:
    """Compose a geometric step's own 3x3 pixel mapping into meta["to_input"]."""
    meta["to_input"] = m @ meta.get("to_input", np.eye(3))


def _scaling(sx: float, sy: float) -> np.ndarray:
    # pixel centres: x' + 0.5 = (x + 0.5) * s
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def film_to_input(meta: dict[str, Any]) -> np.ndarray:
    """The 3x3 matrix from film pixels to the prepared image (identity if nothing moved)."""
    return np.asarray(meta.get("to_input", np.eye(3)), float)


def _interp(name: str) -> int:
    if name not in _INTERPOLATION:
        raise BoneAgeError(f"unknown interpolation {name!r} (use {', '.join(_INTERPOLATION)})")
    return _INTERPOLATION[name]


@register
@dataclass(frozen=True)
class ToUint8(Step):
    """8-bit films pass unchanged; 16-bit ones are stretched from their min to their max."""

    name: ClassVar[str] = "to_uint8"

    def __call__(self, image, meta):
        if image.dtype == np.uint8:
            return image
        img = image.astype(np.float32)
        lo, hi = float(img.min()), float(img.max())
        if hi <= lo:
            return np.zeros(image.shape, np.uint8)
        return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


@register
@dataclass(frozen=True)
class CropHand(Step):
    """Crop to the hand (thresholding + largest plausible component) with a margin."""

    name: ClassVar[str] = "crop_hand"
    margin: float = 0.05

    def __call__(self, image, meta):
        from boneage.preprocess.hand import localise_hand

        box = localise_hand(image, self.margin)
        meta["crop_box"] = box.as_list()
        meta["crop_fallback"] = not box.found
        _track(meta, _shift(-box.x0, -box.y0))
        return image[box.y0 : box.y1, box.x0 : box.x1]


@register
@dataclass(frozen=True)
class Clahe(Step):
    """Contrast-limited adaptive histogram equalisation, as in the seed (2.0, 8x8)."""

    name: ClassVar[str] = "clahe"
    clip_limit: float = 2.0
    tile_grid: int = 8

    def __call__(self, image, meta):
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit,
                                tileGridSize=(self.tile_grid, self.tile_grid))
        return clahe.apply(image)


@register
@dataclass(frozen=True)
class Stretch(Step):
    """The film's grey levels from its `low` to its `high` percentile stretched to 0-255. About
    one RSNA thumbnail in eight is faint (under 60 grey levels between the 1st and 99th
    percentile of the hand's box) and reads 1.5-3 months worse than the rest; a model trained
    with this step sees every film at full contrast. Only for models trained with it: stretching
    films for a model trained without it made faint films worse, and a short fine-tune with it
    did not help them (docs/model.md, Faint films); trained from scratch, networks read faint
    full-resolution films older and worse with it (docs/experiments.md)."""

    name: ClassVar[str] = "stretch"
    low: float = 1.0
    high: float = 99.0

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high <= 100:
            raise BoneAgeError(f"stretch: need 0 <= low < high <= 100, got {self.low}, "
                               f"{self.high}")

    def __call__(self, image, meta):
        lo, hi = np.percentile(image, [self.low, self.high])
        if hi - lo < 1:  # a blank film stays as it is
            return image
        lut = np.clip((np.arange(256) - lo) * (255.0 / (hi - lo)), 0, 255)
        return np.round(lut).astype(np.uint8)[image]


@register
@dataclass(frozen=True)
class Standardise(Step):
    """Render every film the same way: the hand masked from its background (Otsu, softened
    towards the background as the localiser does; a hand darker than its background, as on a
    film whose background was removed to white, is found as such), the background set to 0 and
    the hand's grey levels replaced by their rank inside the mask, spread from `low` to `high`.
    Any monotonic change of the grey levels (gamma, window, contrast stretch, 12 to 8 bits, an
    inversion undone) and any background (noise, black, white, a border) then give the same
    input: processed films read 5-7 months older than their thumbnails without it (issue #28).
    Only for models trained with it."""

    name: ClassVar[str] = "standardise"
    low: float = 40.0
    high: float = 255.0

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high <= 255:
            raise BoneAgeError(f"standardise: need 0 <= low < high <= 255, got {self.low}, "
                               f"{self.high}")

    def __call__(self, image, meta):
        mask = hand_mask(image)
        meta["hand_fraction"] = round(float(mask.mean()), 4)
        values = image[mask]
        if values.size < 16:  # nothing to standardise (a blank film): keep its shape, at 0
            return np.zeros_like(image)
        hist = np.bincount(values, minlength=256).astype(np.float64)
        cdf = np.cumsum(hist)
        mid = (cdf - 0.5 * hist) / cdf[-1]  # a grey level's mid-rank, 0-1: ties share it
        lut = np.round(self.low + (self.high - self.low) * mid).astype(np.uint8)
        out = np.zeros_like(image)
        out[mask] = lut[values]
        return out


def hand_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the hand on a uint8 image of (mostly) the hand: the brighter Otsu class,
    or the darker one where the brighter class lines most of the image's border (a background
    removed to white). Specks under 2% of the largest part (a side marker's letter) are
    dropped. A film with no usable contrast gives the whole image."""
    from boneage.preprocess.hand import SOFTNESS, _threshold

    if image.size == 0 or int(image.max()) - int(image.min()) < 10:
        return np.ones(image.shape, bool)
    blur = cv2.GaussianBlur(image, (3, 3), 0)
    mask = _threshold(blur, SOFTNESS)
    ring = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if ring.mean() > 0.5 * 255:
        mask = _threshold(255 - blur, SOFTNESS)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return np.ones(image.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= 0.02 * areas.max()) + 1
    out = np.isin(labels, keep)
    return out if out.mean() > 0.05 else np.ones(image.shape, bool)


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """INTER_AREA downscale to (width, height), done as an exact integer box average first and
    INTER_AREA for the rest: 5x faster on full-resolution films, within one grey level."""
    h, w = image.shape[:2]
    k = int(min(w / size[0], h / size[1]))
    if k >= 2:
        image = cv2.resize(image[: h // k * k, : w // k * k], (w // k, h // k),
                           interpolation=cv2.INTER_AREA)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """The image downscaled (never enlarged, aspect kept) so its longest side is at most
    `side`: for display copies and quick whole-film statistics."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return area_resize(image, (max(1, round(w * s)), max(1, round(h * s))))


@register
@dataclass(frozen=True)
class Fit(Step):
    """Aspect-preserving resize so that the longer side is `size` (no padding yet)."""

    name: ClassVar[str] = "fit"
    size: int = 256
    interpolation: str = "area"

    def __call__(self, image, meta):
        h, w = image.shape[:2]
        s = self.size / max(h, w)
        dsize = (max(1, round(w * s)), max(1, round(h * s)))
        _track(meta, _scaling(dsize[0] / w, dsize[1] / h))
        if self.interpolation == "area" and s < 1:
            return area_resize(image, dsize)
        return cv2.resize(image, dsize, interpolation=_interp(self.interpolation))


@register
@dataclass(frozen=True)
class Pad(Step):
    """Centre the image on a black size x size square (the letterbox's second half)."""

    name: ClassVar[str] = "pad"
    size: int = 256

    def __call__(self, image, meta):
        h, w = image.shape[:2]
        if h > self.size or w > self.size:
            raise BoneAgeError(f"pad: a {w}x{h} image does not fit in {self.size}x{self.size}")
        out = np.zeros((self.size, self.size), image.dtype)
        y, x = (self.size - h) // 2, (self.size - w) // 2
        out[y : y + h, x : x + w] = image
        _track(meta, _shift(x, y))
        return out


@register
@dataclass(frozen=True)
class Squash(Step):
    """Resize the whole film to size x size, ignoring aspect: how the shared 100 px data were
    made (nearest neighbour), so a model trained on them sees full-resolution films alike."""

    name: ClassVar[str] = "squash"
    size: int = 100
    interpolation: str = "nearest"

    def __call__(self, image, meta):
        h, w = image.shape[:2]
        _track(meta, _scaling(self.size / w, self.size / h))
        if (h, w) == (self.size, self.size):
            return image
        return cv2.resize(image, (self.size, self.size), interpolation=_interp(self.interpolation))


@register
@dataclass(frozen=True)
class Scale(Step):
    """uint8 to float32 in [0, 1]; applied when a batch is loaded, never cached."""

    name: ClassVar[str] = "scale"
    cached: ClassVar[bool] = False
    divisor: float = 255.0

    def __call__(self, image, meta):
        return image.astype(np.float32) / self.divisor


def _check_parameter(step: str, key: str, value: Any, default: Any) -> None:
    """A step's parameter has its default's type (a whole number > 0 for sizes and tiles, a
    finite number >= 0 otherwise, a divisor > 0): a hand-edited pipeline or card fails here in
    one line, not inside OpenCV at the first film."""
    if isinstance(default, str):
        ok = isinstance(value, str)
        if ok and key == "interpolation":
            _interp(value)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    else:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and (value > 0 or (value == 0 and key != "divisor")))
    if not ok:
        what = {str: "name", int: "positive whole number"}.get(type(default), "number >= 0")
        raise BoneAgeError(f"step {step!r}: parameter {key} = {value!r:.40} is not a {what}")


def step_from_dict(d: dict[str, Any]) -> Step:
    if not isinstance(d, dict):
        raise BoneAgeError(f"a pipeline step is {{'name': ..., parameters}}, not {d!r:.40}")
    d = dict(d)
    name = d.pop("name", None)
    if not isinstance(name, str) or name not in STEPS:
        raise BoneAgeError(f"unknown preprocessing step {name!r:.40} (known: {', '.join(STEPS)})")
    cls = STEPS[name]
    defaults = {f.name: f.default for f in fields(cls)}
    unknown = set(d) - set(defaults)
    if unknown:
        raise BoneAgeError(f"step {name!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
    for key, value in d.items():
        _check_parameter(name, key, value, defaults[key])
    return cls(**d)


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    def __call__(self, image: np.ndarray, meta: dict[str, Any] | None = None) -> np.ndarray:
        meta = {} if meta is None else meta
        for step in self.steps:
            image = step(image, meta)
        return image

    @property
    def cached_part(self) -> Pipeline:
        """The uint8 steps up to the first uncached one: what `prepare` stores on disk."""
        out = []
        for s in self.steps:
            if not s.cached:
                break
            out.append(s)
        return Pipeline(tuple(out))

    @property
    def tensor_part(self) -> Pipeline:
        return Pipeline(self.steps[len(self.cached_part.steps):])

    @property
    def output_size(self) -> int | None:
        sizes = [s.size for s in self.steps if isinstance(s, (Pad, Squash))]
        return sizes[-1] if sizes else None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pipeline:
        if not isinstance(d, dict) or not isinstance(d.get("steps"), list):
            raise BoneAgeError("a pipeline is {'steps': [...]}")
        return cls(tuple(step_from_dict(s) for s in d["steps"]))

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise BoneAgeError(f"pipeline JSON is invalid: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        from boneage.fileio import read_text

        return cls.from_json(read_text(path, "pipeline JSON file"))


def seed_pipeline(size: int = 256, crop: bool = True, clahe: bool = True,
                  clip_limit: float = 2.0, tile_grid: int = 8) -> Pipeline:
    """The seed recipe: hand crop, CLAHE, aspect-preserving letterbox to size x size
    (INTER_AREA), scale. CLAHE runs on the resized hand, before the padding: its 8x8 tiles cover
    the same parts of the hand as at full resolution, at a 70th of the cost, and the black
    padding does not enter its histograms."""
    steps: list[Step] = [ToUint8()]
    if crop:
        steps.append(CropHand())
    steps.append(Fit(size))
    if clahe:
        steps.append(Clahe(clip_limit, tile_grid))
    steps += [Pad(size), Scale()]
    return Pipeline(tuple(steps))


def thumbnail_pipeline(size: int = 100) -> Pipeline:
    """How the shared RSNA 100 px data were made: whole film, nearest-neighbour squash."""
    return Pipeline((ToUint8(), Squash(size, "nearest"), Scale()))


def hand_pipeline(size: int = 100, margin: float = 0.08) -> Pipeline:
    """Framing-independent input: the hand found on the film and its box stretched to the
    square. A whole film, the same film cropped to the hand, a small hand on a large cassette or
    a padded film all become "the hand filling the square"; training adds aspect, zoom and
    rotation jitter for what localisation leaves. Bilinear resizing enlarges a hand found on a
    100 px thumbnail smoothly and shrinks a full-resolution one with the same sparse sampling
    (aliasing) that made the thumbnails, so both look alike to a thumbnail-trained model."""
    return Pipeline((ToUint8(), CropHand(margin), Squash(size, "linear"), Scale()))


def hand_stretch_pipeline(size: int = 100, margin: float = 0.08) -> Pipeline:
    """`hand` with the hand's box stretched to full contrast before it is squared."""
    return Pipeline((ToUint8(), CropHand(margin), Stretch(), Squash(size, "linear"), Scale()))


def hand_standard_pipeline(size: int = 100, margin: float = 0.08) -> Pipeline:
    """`hand`, then the hand masked and its grey levels standardised (`standardise`): the
    same input however the film was rendered."""
    return Pipeline((ToUint8(), CropHand(margin), Squash(size, "linear"), Standardise(),
                     Scale()))


PRESETS = {"seed": "hand crop, CLAHE, aspect-preserving letterbox (the seed recipe)",
           "squash": "whole film squashed to a square, nearest neighbour (the 100 px data)",
           "hand": "the hand's box stretched to the square (framing-independent)",
           "hand-stretch": "as hand, the box's grey levels stretched to full contrast",
           "hand-standard": "as hand, the hand masked and its grey levels standardised "
                            "(rendering-independent)"}


def preset_pipeline(name: str, size: int, crop: bool = True, clahe: bool = True) -> Pipeline:
    """The pipeline a preset name stands for (`train --pipeline`, `prepare --preset`)."""
    if name == "squash":
        return thumbnail_pipeline(size)
    if name == "hand":
        return hand_pipeline(size)
    if name == "hand-stretch":
        return hand_stretch_pipeline(size)
    if name == "hand-standard":
        return hand_standard_pipeline(size)
    if name == "seed":
        return seed_pipeline(size, crop=crop, clahe=clahe)
    raise BoneAgeError(f"unknown pipeline preset {name!r} (known: {', '.join(PRESETS)})")
