"""Loss weights by year of age (training/balance.py) and the weighted loss that uses them."""

from __future__ import annotations

import numpy as np
import pytest

from boneage.training.balance import MAX_RATIO, age_weights, bin_of


def test_rare_years_weigh_more_and_the_films_average_one():
    months = np.array([18.0] * 10 + [130.0] * 1000 + [200.0] * 40)
    w = age_weights(months, 0.5)
    per_film = w[bin_of(months)]
    assert per_film.mean() == pytest.approx(1.0)
    # a year with 100x fewer films weighs 10x more at power 0.5, 100x (capped) at power 1
    assert w[1] / w[10] == pytest.approx(10.0)
    assert w[16] / w[10] == pytest.approx(5.0)
    w1 = age_weights(months, 1.0)
    assert w1[1] / w1[10] == pytest.approx(MAX_RATIO)
    # years without training films get the commonest year's weight, not an infinite one
    assert np.isfinite(w).all() and w[5] == pytest.approx(w[10])


def test_the_weighted_loss_is_the_weighted_mean_of_the_huber_losses():
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    import torch.nn.functional as F

    from boneage.training.module import BoneAgeModule

    def module(weights):
        return BoneAgeModule("resnet18", {}, 1e-3, 0.0, 0.0, 15.0, 100.0, 40.0, {},
                             age_weights=weights)

    pred = torch.tensor([10.0, 100.0, 150.0, 300.0])
    y = torch.tensor([20.0, 130.0, 151.0, 250.0])  # years 1, 10, 12 and past the last bin
    plain = F.huber_loss(pred, y, delta=15.0, reduction="none")
    assert module(None).loss(pred, y).item() == pytest.approx(plain.mean().item())
    weights = [1.0, 4.0] + [1.0] * 8 + [0.5, 1.0, 2.0, 3.0]
    expected = (plain * torch.tensor([4.0, 0.5, 2.0, 3.0])).mean()
    assert module(weights).loss(pred, y).item() == pytest.approx(expected.item())
