"""Loss weights by age: films of rare ages count more, so the estimate is pulled less towards
the common ages (the regression to the mean a model shows at both ends of the age range).

Each training film's weight is its year of age's share of the training films to the minus a
power (0: every film alike; 1: every year alike), clipped to a twentyfold range and scaled to
average 1 over the training films, so the learning rate keeps its meaning.
"""

from __future__ import annotations

import numpy as np

BIN_MONTHS = 12.0
MAX_RATIO = 20.0  # the rarest year weighs at most this many times the commonest


def age_weights(months: np.ndarray, power: float, bin_months: float = BIN_MONTHS) -> np.ndarray:
    """Weight per bin of `bin_months` (bin k: ages [k*bin, (k+1)*bin)), from the training ages."""
    bins = bin_of(np.asarray(months, dtype=np.float64), bin_months)
    counts = np.bincount(bins).astype(np.float64)
    share = np.where(counts > 0, counts / counts.sum(), np.nan)
    w = share ** -power
    lo = np.nanmin(w)
    w = np.clip(np.nan_to_num(w, nan=lo), lo, lo * MAX_RATIO)
    return w / np.mean(w[bins])


def bin_of(months: np.ndarray, bin_months: float = BIN_MONTHS) -> np.ndarray:
    return np.clip(np.floor(months / bin_months), 0, None).astype(np.int64)
