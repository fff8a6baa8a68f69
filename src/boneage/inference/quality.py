"""Quality checks on a film and its estimate: each a plain-language warning in the output."""

from __future__ import annotations

from typing import Any

import numpy as np

INVERTED_SCORE = 0.75  # border brightness between the film's 5th and 95th percentiles
MAX_MONTHS = 228.0  # 19 years: the end of the RSNA training range


def border_brightness(image: np.ndarray) -> float:
    """Where the film's outer ring sits between its dark (5%) and bright (95%) levels:
    near 0 for a normal film (dark air around the hand), near 1 when the film is inverted."""
    h, w = image.shape
    b = max(2, int(0.06 * min(h, w)))
    ring = np.concatenate([image[:b].ravel(), image[-b:].ravel(),
                           image[:, :b].ravel(), image[:, -b:].ravel()])
    lo, hi = np.percentile(image, [5, 95])
    return float((np.median(ring) - lo) / max(1.0, hi - lo))


def quality_warnings(meta: dict[str, Any], bone_age_months: float) -> list[str]:
    """meta: what preparing the film recorded (crop fallback, border brightness)."""
    out = []
    if meta.get("crop_fallback"):
        out.append("no hand found on the film: the whole film was used")
    if meta.get("border_brightness", 0.0) > INVERTED_SCORE:
        out.append("film looks inverted (bright background): check its photometric "
                   "interpretation")
    if not 0 <= bone_age_months <= MAX_MONTHS:
        out.append(f"estimate outside 0-{MAX_MONTHS:.0f} months, the range the model knows")
    return out
