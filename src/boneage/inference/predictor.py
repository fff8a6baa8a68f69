"""A loaded model plus the exact preprocessing it was trained with, on either backend:
PyTorch (safetensors weights) or ONNX Runtime (an exported .onnx, no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError
from boneage.preprocess.steps import Pipeline


class Predictor:
    """Shared logic: the card's pipeline, batching and target normalisation. Subclasses only
    run the network on a float32 batch (B, 1, S, S) and sex (B,)."""

    def __init__(self, card: dict[str, Any], path: Path) -> None:
        self.card = card
        self.path = path
        self.pipeline = Pipeline.from_dict(card["pipeline"])

    @staticmethod
    def load(spec: str | Path, backend: str = "torch") -> Predictor:
        if backend == "torch":
            return TorchPredictor.load(spec)
        if backend == "onnx":
            from boneage.inference.onnx import OnnxPredictor

            return OnnxPredictor.load(spec)
        raise BoneAgeError(f"unknown backend {backend!r} (torch or onnx)")

    def _run(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_arrays(self, images: np.ndarray, male: np.ndarray, batch_size: int = 32
                       ) -> np.ndarray:
        """Bone age in months for prepared uint8 images (N, S, S) and sex (N,) (True = male)."""
        norm = self.card.get("target_norm", {"mean": 0.0, "std": 1.0})
        tensor_part = self.pipeline.tensor_part
        out = np.empty(len(images), np.float32)
        for i in range(0, len(images), batch_size):
            x = np.stack([tensor_part(im, {}) for im in images[i : i + batch_size]])[:, None]
            s = np.asarray(male[i : i + batch_size], np.float32)
            y = self._run(np.ascontiguousarray(x, np.float32), s)
            out[i : i + len(y)] = y * norm["std"] + norm["mean"]
        return out


    def predict_tta(self, images: np.ndarray, male: np.ndarray, batch_size: int = 32
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean, spread) in months over the test-time-augmented views of each image."""
        from boneage.inference.uncertainty import DEFAULT_TTA, tta_views

        v = len(DEFAULT_TTA)
        views = np.concatenate([tta_views(im) for im in images]) if len(images) else images
        preds = self.predict_arrays(views, np.repeat(np.asarray(male, bool), v), batch_size)
        preds = preds.reshape(len(images), v)
        return preds.mean(axis=1), preds.std(axis=1)


class TorchPredictor(Predictor):
    def __init__(self, model: Any, card: dict[str, Any], path: Path) -> None:
        super().__init__(card, path)
        self.model = model

    @classmethod
    def load(cls, spec: str | Path) -> TorchPredictor:
        from boneage.models.checkpoint import load_checkpoint, resolve_model_path

        path = resolve_model_path(spec)
        model, card = load_checkpoint(path)
        return cls(model, card, path)

    def _run(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return self.model(t, torch.from_numpy(sex)).float().numpy()
