"""Grad-CAM (Selvaraju et al., ICCV 2017) on the last convolutional feature map: which regions
of the prepared film drove the estimate. For a regressor the "class score" is the predicted age
itself."""

from __future__ import annotations

import cv2
import numpy as np


def gradcam(model, image: np.ndarray, male: bool) -> np.ndarray:
    """Heatmap (S, S) in [0, 1] for one prepared image (S, S) float32 in [0, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    sex = torch.tensor([1.0 if male else 0.0])
    with torch.enable_grad():
        feats = model.features(x).detach().requires_grad_(True)
        out = model.from_features(feats, sex)
        (grad,) = torch.autograd.grad(out.sum(), feats)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * feats).sum(dim=1))[0].detach().numpy()
    cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    hi = float(cam.max())
    return cam / hi if hi > 0 else cam


def overlay(base: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colour heatmap blended over a uint8 grayscale image; returns BGR uint8."""
    if base.dtype != np.uint8:
        base = np.clip(base * 255, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(np.round(cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(heat, alpha, grey, 1 - alpha, 0)
