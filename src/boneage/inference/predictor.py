"""A loaded model plus the exact preprocessing it was trained with, on either backend:
PyTorch (safetensors weights) or ONNX Runtime (an exported .onnx, no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError
from boneage.inference.uncertainty import TTAPlan
from boneage.preprocess.steps import Pipeline


class Predictor:
    """Shared logic: the card's pipeline and contract, batching, the output correction.
    Subclasses only run the network on a float32 batch (B, 1, S, S) and sex (B,)."""

    months_out = False  # whether the backend's network answers in months (set per backend)

    def __init__(self, card: dict[str, Any], path: Path) -> None:
        self.card = card
        self.path = path
        if "pipeline" not in card or "input_size" not in card:
            raise BoneAgeError(f"{path}: model card has no 'pipeline' or 'input_size': the "
                               "films it was trained on cannot be replayed")
        self.pipeline = Pipeline.from_dict(card["pipeline"])
        self.tta_plan = TTAPlan.from_card(card)

    def _run(self, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(network output, pooled features or None) for a float32 batch."""
        raise NotImplementedError

    def infer(self, images: np.ndarray, male: np.ndarray, batch_size: int = 32
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(bone age in months, features or None) for prepared uint8 images (N, S, S) and
        sex (N,) (True = male)."""
        from boneage.models.contract import check_inputs

        check_inputs(self.card, np.asarray(images), np.asarray(male))
        # networks answer in months; only exports older than the card's "io" need scaling
        norm = ({"mean": 0.0, "std": 1.0} if self.months_out
                else self.card.get("target_norm", {"mean": 0.0, "std": 1.0}))
        tensor_part = self.pipeline.tensor_part
        out = np.empty(len(images), np.float32)
        feats: list[np.ndarray] = []
        for i in range(0, len(images), batch_size):
            x = np.stack([tensor_part(im, {}) for im in images[i : i + batch_size]])[:, None]
            s = np.asarray(male[i : i + batch_size], np.float32)
            y, f = self._run(np.ascontiguousarray(x, np.float32), s)
            out[i : i + len(y)] = y * norm["std"] + norm["mean"]
            if f is not None:
                feats.append(f)
        from boneage.inference.correction import apply_correction

        out = apply_correction(out, male, self.card.get("output_correction"))
        return out, np.concatenate(feats) if feats else None

    def predict_arrays(self, images: np.ndarray, male: np.ndarray, batch_size: int = 32
                       ) -> np.ndarray:
        """Bone age in months, one view per image."""
        return self.infer(images, male, batch_size)[0]

    def estimate(self, images: np.ndarray, male: np.ndarray, tta: bool = True,
                 batch_size: int = 32) -> Estimates:
        """Predictions over the test-time-augmented views of each image (the card's plan: the
        estimate averages its chosen views, the spread is over all) or over the image alone."""
        from boneage.inference.uncertainty import tta_views

        plan = self.tta_plan
        n, v = len(images), (len(plan.views) if tta else 1)
        if n == 0:
            return Estimates(np.zeros(0), np.zeros(0), np.zeros(0), None, np.zeros((0, v)))
        views = (np.concatenate([tta_views(im, plan.views) for im in images]) if tta
                 else images)
        preds, feats = self.infer(views, np.repeat(np.asarray(male, bool), v), batch_size)
        preds = preds.reshape(n, v).astype(float)
        mean = preds[:, plan.estimate_views].mean(axis=1) if tta else preds[:, 0]
        return Estimates(mean, preds.std(axis=1), preds[:, 0],
                         None if feats is None else feats.reshape(n, v, -1)[:, 0], preds)


@dataclass
class Estimates:
    """Per film: the estimate (the mean over the plan's estimate views), the spread over all
    views (0 for one view), the unaugmented view's prediction, its pooled features (None when
    the model does not expose them) and every view's prediction (N, V)."""

    mean: np.ndarray
    spread: np.ndarray
    single: np.ndarray
    features: np.ndarray | None
    views: np.ndarray | None = None


class TorchPredictor(Predictor):
    months_out = True  # load_checkpoint sets the network's output scale from the card

    def __init__(self, model: Any, card: dict[str, Any], path: Path) -> None:
        super().__init__(card, path)
        self.model = model

    @classmethod
    def load(cls, spec: str | Path) -> TorchPredictor:
        from boneage.models.checkpoint import load_checkpoint, resolve_model_path

        path = resolve_model_path(spec)
        model, card = load_checkpoint(path)
        return cls(model, card, path)

    def _run(self, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            y, f = self.model.forward_with_embedding(t, torch.from_numpy(sex))
            return y.float().numpy(), f.float().numpy()
