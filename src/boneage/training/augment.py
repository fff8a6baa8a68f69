"""Augmentation on whole batches, on the batch's device (so a GPU is never starved by a loader):
random affine (rotation, scale, translation) and intensity (brightness, contrast, gamma)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from boneage.training.config import AugmentConfig


def _uniform(n: int, half_width: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(n, device=like.device, dtype=torch.float32) * 2 - 1) * half_width


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, copies: int = 1) -> torch.Tensor:
    """x: (B, 1, H, W) float in [0, 1]. Returns a new batch, each image transformed differently,
    except that x may hold `copies` stacked versions of the same films (B = copies x n), which
    are all transformed alike: a film and its rendering seen through the same view."""
    if x.shape[0] % copies:
        raise ValueError(f"a batch of {x.shape[0]} does not hold {copies} equal parts")
    b = x.shape[0] // copies
    angle = _uniform(b, math.radians(cfg.rotation), x)
    scale = 1 + _uniform(b, cfg.scale, x)
    # aspect jitter: width and height scaled apart (thumbnails were squashed from films of
    # several shapes, so a hand's proportions on them vary)
    stretch = torch.exp(_uniform(b, cfg.aspect, x))
    sx, sy = scale * stretch, scale / stretch
    tx, ty = _uniform(b, 2 * cfg.translate, x), _uniform(b, 2 * cfg.translate, x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / sx, -sin / sy, tx], 1),
                         torch.stack([sin / sx, cos / sy, ty], 1)], 1)
    grid = F.affine_grid(theta.repeat(copies, 1, 1).to(x.dtype), list(x.shape),
                         align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    n = x.shape[0]
    contrast = (1 + _uniform(b, cfg.contrast, x)).repeat(copies).view(n, 1, 1, 1).to(x.dtype)
    bright = _uniform(b, cfg.brightness, x).repeat(copies).view(n, 1, 1, 1).to(x.dtype)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    gamma = torch.exp(_uniform(b, cfg.gamma, x)).repeat(copies).view(n, 1, 1, 1).to(x.dtype)
    return x.clamp_min(1e-6) ** gamma


def render_batch(x: torch.Tensor, share: float, rng: np.random.Generator) -> torch.Tensor:
    """x: (B, 1, H, W) uint8. About `share` of the films rendered anew on the CPU
    (preprocess/render.py: background removed, contrast equalised, CLAHE, gamma, ...), before
    scaling: what a network needs to answer the same however a film was rendered."""
    from boneage.preprocess.render import random_rendering

    pick = np.flatnonzero(rng.random(x.shape[0]) < share)
    if pick.size == 0:
        return x
    imgs = x[:, 0].cpu().numpy().copy()
    for i in pick:
        imgs[i] = random_rendering(imgs[i], rng)
    return torch.from_numpy(imgs).unsqueeze(1).to(x.device)
