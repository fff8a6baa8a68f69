"""Sex fusion and regression heads shared by every architecture.

The sex value (1 male, 0 female) goes through a small MLP, is concatenated with the globally
pooled image features, and a head of dense layers regresses the bone age. The head learns a
z-score (the training films' mean and SD); the network scales it back itself, so it and its
ONNX graph answer in months (models/contract.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    """backbone(image) -> pooled features; concat sex MLP; head -> one value per image.

    upsample > 1 enlarges the image (bilinear) inside the network: the 100 px films hold no more
    detail at 200 px, but the backbones' stride-32 stems were designed for larger inputs, and
    doing it here keeps the saved preprocessing the films' own transform."""

    def __init__(self, backbone: nn.Module, features: int, head: Sequence[int],
                 head_dropouts: Sequence[float], sex_mlp: Sequence[int] = (16, 8),
                 upsample: float = 1.0) -> None:
        super().__init__()
        if not 1.0 <= upsample <= 4.0:
            raise ValueError(f"upsample must be between 1 and 4, got {upsample}")
        self.upsample = float(upsample)
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.sex_mlp = mlp([1, *sex_mlp])
        self.head = nn.Sequential(
            mlp([features + sex_mlp[-1], *head], head_dropouts),
            nn.Linear(head[-1], 1),
        )
        self.n_features = features
        # the target normalisation, from the card (not weights: kept out of the state dict)
        self.register_buffer("out_mean", torch.tensor(0.0), persistent=False)
        self.register_buffer("out_std", torch.tensor(1.0), persistent=False)

    def set_output_scale(self, mean: float, std: float) -> FusionRegressor:
        """Answer in months: the head's z-score times the training SD plus the mean."""
        self.out_mean.fill_(float(mean))
        self.out_std.fill_(float(std))
        return self

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (Grad-CAM hooks here)."""
        if self.upsample != 1.0:
            image = F.interpolate(image, scale_factor=self.upsample, mode="bilinear",
                                  align_corners=False)
        return self.backbone(image)

    def from_features(self, features: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        """The rest of the network after the feature map (Grad-CAM differentiates this)."""
        return self._head(torch.flatten(self.pool(features), 1), sex)

    def _head(self, pooled: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        s = self.sex_mlp(sex.reshape(-1, 1).to(pooled.dtype))
        z = self.head(torch.cat([pooled, s], dim=1)).squeeze(1)
        return z * self.out_std.to(z.dtype) + self.out_mean.to(z.dtype)

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(image), sex)

    def forward_with_embedding(self, image: torch.Tensor, sex: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bone age in months, pooled image features): the features tell how far a film lies
        from the films the model learned on (the "not a hand" check)."""
        pooled = torch.flatten(self.pool(self.features(image)), 1)
        return self._head(pooled, sex), pooled


class WithEmbedding(nn.Module):
    """forward() returning (output, embedding), for export to a two-output ONNX graph."""

    def __init__(self, model: FusionRegressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_embedding(image, sex)


class CamInputs(nn.Module):
    """What Grad-CAM++ needs, written as a forward computation so that it exports to ONNX
    (which has no autograd): for each member network (one for a single network), its last
    feature map A (B, C, h, w) and the gradient of its head's z-score with respect to the
    pooled features (B, C). The pooling is a mean, so dz/dA[c, i, j] = dz/dp[c] / (h w) at
    every position; the head is Linear and GELU layers, whose vector-Jacobian product is
    written out layer by layer (GELU' = Phi(u) + u phi(u))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # its parameters keep the checkpoint's names under "model."
        for m in self.members:
            head_linears(m)  # refuses a head it cannot differentiate by hand

    @property
    def members(self) -> list[nn.Module]:
        return list(getattr(self.model, "members", [self.model]))

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor] = []
        for m in self.members:
            a = m.features(image)
            h = torch.cat([torch.flatten(m.pool(a), 1),
                           m.sex_mlp(sex.reshape(-1, 1).to(a.dtype))], dim=1)
            linears = head_linears(m)
            pre = []
            for lin in linears[:-1]:
                u = lin(h)
                pre.append(u)
                h = F.gelu(u)
            d = linears[-1].weight[0].unsqueeze(0).expand(h.shape[0], -1)
            for lin, u in zip(reversed(linears[:-1]), reversed(pre), strict=True):
                cdf = 0.5 * (1.0 + torch.erf(u * (1.0 / math.sqrt(2.0))))
                pdf = torch.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi))
                d = (d * (cdf + u * pdf)) @ lin.weight
            out += [a, d[:, : a.shape[1]]]
        return tuple(out)


def head_linears(model: nn.Module) -> list[nn.Linear]:
    """The head's Linear layers in order, checked to be (Linear, GELU, [Dropout])* Linear with
    exact GELU: the only shape `CamInputs` differentiates by hand."""
    layers = [m for m in model.head.modules() if not isinstance(m, nn.Sequential)]
    layers = [m for m in layers if not isinstance(m, nn.Dropout)]
    linears = layers[0::2]
    ok = (len(layers) % 2 == 1 and all(isinstance(m, nn.Linear) for m in linears)
          and all(isinstance(m, nn.GELU) and m.approximate == "none" for m in layers[1::2])
          and linears[-1].out_features == 1)
    if not ok:
        raise ValueError("the head is not Linear/GELU layers: no heatmap graph for it")
    return linears
