"""Sex fusion and regression heads shared by every architecture.

The sex value (1 male, 0 female) goes through a small MLP, is concatenated with the globally
pooled image features, and a head of dense layers regresses the (normalised) bone age.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropouts: Sequence[float] | None = None, final_act: bool = True
        ) -> nn.Sequential:
    """Linear layers between consecutive sizes, GELU after each (but the last unless final_act),
    and dropout after layer i when dropouts[i] > 0."""
    layers: list[nn.Module] = []
    n = len(sizes) - 1
    for i in range(n):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < n - 1 or final_act:
            layers.append(nn.GELU())
        if dropouts and i < len(dropouts) and dropouts[i] > 0:
            layers.append(nn.Dropout(dropouts[i]))
    return nn.Sequential(*layers)


class FusionRegressor(nn.Module):
    """backbone(image) -> pooled features; concat sex MLP; head -> one value per image."""

    def __init__(self, backbone: nn.Module, features: int, head: Sequence[int],
                 head_dropouts: Sequence[float], sex_mlp: Sequence[int] = (16, 8)) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.sex_mlp = mlp([1, *sex_mlp])
        self.head = nn.Sequential(
            mlp([features + sex_mlp[-1], *head], head_dropouts),
            nn.Linear(head[-1], 1),
        )

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (Grad-CAM hooks here)."""
        return self.backbone(image)

    def from_features(self, features: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        """The rest of the network after the feature map (Grad-CAM differentiates this)."""
        f = torch.flatten(self.pool(features), 1)
        s = self.sex_mlp(sex.reshape(-1, 1).to(f.dtype))
        return self.head(torch.cat([f, s], dim=1)).squeeze(1)

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(image), sex)
