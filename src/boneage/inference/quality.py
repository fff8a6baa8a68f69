"""Quality checks on a film and its estimate: each a plain-language warning in the output."""

from __future__ import annotations

from typing import Any

import numpy as np

INVERTED_SCORE = 0.75  # border brightness between the film's 5th and 95th percentiles
MAX_MONTHS = 228.0  # 19 years: the end of the RSNA training range
NOVELTY_MARGIN = 1.5  # x the 99.5th percentile of the calibration films' novelty
MIN_FINGER_GAPS = 3  # notches between fingers (see preprocess.hand.finger_gaps)
# below this estimated bone age the finger count is not trusted: chosen on the validation
# films (271 up to 100 months, version 4): false alarms 7 at 36 months, 4 at 48, 2 at 60; the
# non-hand pictures of benchmarks/not_a_hand.py are estimated at 96 months or more
YOUNG_MONTHS = 60.0
NOT_A_HAND = "this does not look like a hand radiograph"
MEANINGLESS = "the estimate is not meaningful"  # ends every warning that voids the estimate
NOISE_TEXTURE = 0.5  # neighbour differences / spread: real films <= 0.26, pixel noise ~1.1


def embedding_reference(features: np.ndarray) -> dict[str, Any]:
    """The card's `embedding` entry: per-feature mean and scale of the pooled features over
    labelled hand films, and the novelty above which a film is "not like a hand radiograph"."""
    f = np.asarray(features, np.float64)
    mean, sd = f.mean(axis=0), f.std(axis=0)
    ref = {"mean": [round(float(v), 5) for v in mean],
           "scale": [round(float(v), 5) for v in sd + 0.1 * float(np.median(sd)) + 1e-6]}
    scores = novelty(f, ref)
    ref.update(n=int(len(f)), p90=round(float(np.quantile(scores, 0.90)), 4),
               p995=round(float(np.quantile(scores, 0.995)), 4),
               threshold=round(float(np.quantile(scores, 0.995)) * NOVELTY_MARGIN, 4))
    return ref


def novelty(features: np.ndarray, ref: dict[str, Any]) -> np.ndarray:
    """Root-mean-square z-score of each film's features against the reference (about 1 for
    films like the training films, far higher for other pictures)."""
    z = (np.asarray(features, np.float64) - np.asarray(ref["mean"])) / np.asarray(ref["scale"])
    return np.sqrt(np.mean(z * z, axis=1))


def texture(image: np.ndarray) -> float:
    """Mean difference between neighbouring pixels over the image's spread, on a copy of at
    most 256 px: about 0.1-0.25 on radiographs, about 1 on noise."""
    from boneage.preprocess.steps import shrink

    img = shrink(image, 256).astype(np.float32)  # the uint8 film first: no full-size float copy
    return float(np.mean(np.abs(np.diff(img, axis=1))) / (img.std() + 1e-6))


def border_brightness(image: np.ndarray) -> float:
    """Where the film's outer ring sits between its dark (5%) and bright (95%) levels:
    near 0 for a normal film (dark air around the hand), near 1 when the film is inverted."""
    h, w = image.shape
    b = max(2, int(0.06 * min(h, w)))
    ring = np.concatenate([image[:b].ravel(), image[-b:].ravel(),
                           image[:, :b].ravel(), image[:, -b:].ravel()])
    lo, hi = np.percentile(image, [5, 95])
    return float((np.median(ring) - lo) / max(1.0, hi - lo))


def _not_a_hand(gaps: int | None, novelty_score: float | None, ref: dict[str, Any] | None,
                bone_age_months: float | None = None) -> bool:
    """No fingers on the film's main object and features unlike the calibration films', or
    features far unlike them whatever the shape. Either signal alone misfires: a few percent
    of real films lose their fingers to thresholding, and infants' films sit at the edge of
    the feature distribution. Under YOUNG_MONTHS of estimated bone age the finger count is not
    used at all: a small child's short, cartilage-ended fingers merge under thresholding (the
    RSNA film 1418, bone age 24 months, showed no gaps; on 100 px films up to about 5 years),
    so only far-off features count."""
    unusual = novelty_score is not None and ref is not None
    if unusual and novelty_score > ref["threshold"]:
        return True
    if bone_age_months is not None and bone_age_months < YOUNG_MONTHS:
        return False
    return gaps is not None and gaps < MIN_FINGER_GAPS and (
        not unusual or novelty_score > ref.get("p90", ref["threshold"]))


def quality_warnings(meta: dict[str, Any], bone_age_months: float,
                     novelty_score: float | None = None, reference: dict[str, Any] | None = None
                     ) -> list[str]:
    """meta: what preparing the film recorded (crop fallback, border brightness); novelty:
    how far the film's features lie from the hand films the model was calibrated on."""
    out = []
    if _not_a_hand(meta.get("finger_gaps"), novelty_score, reference, bone_age_months):
        out.append(f"{NOT_A_HAND}: {MEANINGLESS}")
    if meta.get("texture", 0.0) > NOISE_TEXTURE:
        out.append(f"this looks like noise, not a radiograph: {MEANINGLESS}")
    if meta.get("crop_fallback"):
        out.append("no hand found on the film: the whole film was used")
    if meta.get("border_brightness", 0.0) > INVERTED_SCORE:
        out.append("film looks inverted (bright background): check its photometric "
                   "interpretation")
    if not 0 <= bone_age_months <= MAX_MONTHS:
        out.append(f"estimate outside 0-{MAX_MONTHS:.0f} months, the range the model knows")
    return out
