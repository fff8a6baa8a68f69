"""Heatmaps: which regions of the film drove the estimate, drawn on the film at its own shape.

Methods (MONAI's implementations, on the network with the sex held fixed):
- "gradcampp" (default): Grad-CAM++ on the last feature map. On the 25 raw samples
  (benchmarks/heatmaps.py, bundled ResNet18) it gave a localised map on the hand for every film,
  in about a second on a CPU.
- "gradcam": plain Grad-CAM. For a regressor its ReLU empties the map wherever the evidence
  lowers the estimate, so most films (18 of 25) came out blank: a "plain blue wash".
- "occlusion": how far the estimate moves when each region is blurred out (MONAI
  OcclusionSensitivity). Direction-free and localised, but blocky and about 6x slower.

The map is computed on the prepared input, then laid back on the film through the geometry the
preprocessing recorded (`meta["to_input"]`: crop, squash, letterbox), so a 100 px model's map
sits on the hand of a 2,000 px film.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

METHODS = ("gradcampp", "gradcam", "occlusion")
DISPLAY_SIDE = 1024  # longest side of the film shown on the page and in reports


def _net(model, male: bool):
    """The network as a one-input module (sex fixed) with one output column, as MONAI's CAMs
    and occlusion expect."""
    import torch
    from torch import nn

    class AgeOf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sex = torch.full((x.shape[0],), 1.0 if male else 0.0)
            y = self.model(x, sex).float()
            # the network answers in months; the maps want its z-score: Grad-CAM++ weighs the
            # gradients by exp(output), which overflows at 150 months (all-zero maps)
            mean, std = getattr(self.model, "out_mean", 0.0), getattr(self.model, "out_std", 1.0)
            return ((y - mean) / std)[:, None]

    return AgeOf().eval()


def saliency(model, image: np.ndarray, male: bool, method: str = "gradcampp",
             layer: str = "model.backbone") -> np.ndarray:
    """(S, S) map in [0, 1] over one prepared image (S, S) float32 in [0, 1]; all zeros when
    nothing stands out."""
    import torch

    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r} (known: {', '.join(METHODS)})")
    if hasattr(model, "members"):  # an ensemble: each member's map, averaged
        return mean_map([saliency(m, image, male, method, layer) for m in model.members])
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    net = _net(model, male)
    if method == "occlusion":
        from monai.visualize import OcclusionSensitivity

        size = max(8, image.shape[0] // 6)
        occ = OcclusionSensitivity(net, mask_size=size, n_batch=64, verbose=False,
                                   mode="mean_img", overlap=0.5, activate=False)
        with torch.inference_mode():
            base = float(net(x)[0, 0])
            occ_map, _ = occ(x)
        cam = np.abs(occ_map[0, 0].numpy() - base)  # (B, outputs, H, W)
    else:
        from monai.visualize import GradCAM, GradCAMpp

        cls = GradCAM if method == "gradcam" else GradCAMpp
        with torch.enable_grad():  # an input that needs grad keeps MONAI's hooks quiet
            cam = cls(net, target_layers=layer, postprocessing=lambda v: v)(
                x.requires_grad_(True), class_idx=0)
        cam = np.maximum(cam[0, 0].detach().numpy(), 0)
        cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    cam = cam.astype(np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    return (cam - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(cam)


def gradcampp(maps: np.ndarray, grad: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Grad-CAM++ as MONAI computes it, from what the ONNX heatmap graph gives (models/fusion.py
    CamInputs): one network's feature map (C, h, w) and the gradient of its z-score with
    respect to the pooled features (C,), i.e. dz/dA = grad / (h w) everywhere. Upsampled
    bilinearly to `shape` (as MONAI's upsampler, align_corners False) and scaled to [0, 1].
    MONAI's exp(score) factor scales every weight alike, so the scaling removes it."""
    c, h, w = maps.shape
    a = maps.astype(np.float64)
    g = np.broadcast_to((grad.astype(np.float64) / (h * w))[:, None, None], a.shape)
    nr = g * g
    dr = 2.0 * nr + (a * g**3).sum(axis=(1, 2), keepdims=True)
    alpha = nr / (np.where(dr != 0.0, dr, 1.0) + 1e-7)
    weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2))
    cam = np.maximum((weights[:, None, None] * a).sum(axis=0), 0.0).astype(np.float32)
    cam = cv2.resize(cam, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    cam = np.maximum(cam, 0)
    lo, hi = float(cam.min()), float(cam.max())
    return (cam - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(cam)


def mean_map(maps: list[np.ndarray]) -> np.ndarray:
    """An ensemble's map: its members' maps averaged, scaled to [0, 1] again."""
    cam = np.mean(maps, axis=0)
    hi = float(cam.max())
    return cam / hi if hi > 1e-6 else np.zeros_like(cam)


def is_localised(cam: np.ndarray) -> bool:
    """Something stands out: the hot part (>= half the peak) covers between 0.5% and 35% of the
    map. A blank map or a wash over everything does not count."""
    if float(cam.max()) <= 0:
        return False
    hot = float(np.mean(cam >= 0.5 * float(cam.max())))
    return 0.005 <= hot <= 0.35


def display_film(pixels: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The film downscaled (never enlarged) so that its longest side is at most `side`."""
    from boneage.preprocess.steps import shrink

    return shrink(pixels, side)


def to_film(cam: np.ndarray, meta: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The map on the model's input laid back onto a film of `shape` (h, w): the film the
    preprocessing started from, or a display copy of it (the geometry is rescaled)."""
    from boneage.preprocess.steps import film_to_input

    m = film_to_input(meta)
    fh, fw = meta.get("film_shape", shape)
    h, w = shape
    if (fh, fw) != (h, w):  # a display copy: its pixels -> the original film's pixels
        sx, sy = fw / w, fh / h
        m = m @ np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return cv2.warpAffine(cam.astype(np.float32), m[:2], (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def overlay(base: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colour heatmap blended over a grayscale image where the map is warm; BGR uint8. Cold
    parts keep the film as it is, so the hand stays readable under the colour."""
    if base.dtype != np.uint8:
        base = np.clip(base * 255, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(np.round(cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    weight = (alpha * np.clip(cam / 0.25, 0, 1))[..., None]
    return np.round(heat * weight + grey * (1 - weight)).astype(np.uint8)
