"""The seed's learning-rate schedule: cosine warm-up over the first part of the steps, then
cosine decay to zero."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup_fraction: float) -> float:
    """Multiplier of the base learning rate at a given optimiser step."""
    total = max(1, total)
    warm = int(total * warmup_fraction)
    if step < warm:
        return 0.5 * (1 - math.cos(math.pi * (step + 1) / warm))
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
