"""A loaded model plus the exact preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from boneage.preprocess.steps import Pipeline


@dataclass
class Predictor:
    model: Any  # torch.nn.Module in eval mode
    card: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, spec: str | Path) -> Predictor:
        from boneage.models.checkpoint import load_checkpoint, resolve_model_path

        path = resolve_model_path(spec)
        model, card = load_checkpoint(path)
        return cls(model, card, path)

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline.from_dict(self.card["pipeline"])

    def predict_arrays(self, images: np.ndarray, male: np.ndarray, batch_size: int = 32
                       ) -> np.ndarray:
        """Bone age in months for prepared uint8 images (N, S, S) and sex (N,) (True = male)."""
        import torch

        norm = self.card.get("target_norm", {"mean": 0.0, "std": 1.0})
        tensor_part = self.pipeline.tensor_part
        out = np.empty(len(images), np.float32)
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                chunk = np.stack([tensor_part(im, {}) for im in images[i : i + batch_size]])
                x = torch.from_numpy(chunk).unsqueeze(1).contiguous(
                    memory_format=torch.channels_last)
                s = torch.from_numpy(np.asarray(male[i : i + batch_size], np.float32))
                y = self.model(x, s).float().numpy()
                out[i : i + len(y)] = y * norm["std"] + norm["mean"]
        return out
