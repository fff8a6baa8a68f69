"""The ONNX Runtime backend: runs an exported graph (inference/export.py) with numpy, OpenCV
and onnxruntime only, no torch or Lightning, so clinics can run a model on a plain CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError
from boneage.inference.predictor import Predictor


class OnnxPredictor(Predictor):
    def __init__(self, session: Any, card: dict[str, Any], path: Path) -> None:
        super().__init__(card, path)
        self.session = session

    @classmethod
    def load(cls, spec: str | Path) -> OnnxPredictor:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BoneAgeError("the onnx backend needs onnxruntime: pip install onnxruntime"
                               ) from None
        path = Path(spec)
        if path.suffix != ".onnx" or not path.is_file():
            raise BoneAgeError(f"{spec}: no such .onnx model (export one with `boneage export`)")
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            raise BoneAgeError(f"{path}: no model card {card_path.name} beside it")
        card = json.loads(card_path.read_text())
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BoneAgeError(f"{path}: not a loadable ONNX model ({type(e).__name__})"
                               ) from None
        return cls(session, card, path)

    def _run(self, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(None, {"image": x, "sex": sex})
        return out[0], out[1] if len(out) > 1 else None  # older exports: no features output
