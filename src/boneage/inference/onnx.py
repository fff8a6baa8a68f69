"""The ONNX Runtime backend: runs an exported graph (inference/export.py) with numpy, OpenCV
and onnxruntime only, no torch or Lightning, so clinics can run a model on a plain CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError
from boneage.inference.predictor import Predictor
from boneage.models.checkpoint import check_digest, read_card
from boneage.models.contract import outputs_months


class OnnxPredictor(Predictor):
    def __init__(self, session: Any, card: dict[str, Any], path: Path) -> None:
        super().__init__(card, path)
        self.session = session
        # graphs exported since the card's "io" answer in months; older ones a z-score
        self.months_out = outputs_months(card)

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
        card = read_card(path)  # OUT.json beside it, checked as any card
        # the graph and the weights it reads, against the card's digests, before ONNX Runtime
        # sees them (it prints its own lines about a damaged file, beside our one line)
        graph = card.get("onnx") or {}
        check_digest(path, graph.get("sha256"))
        if graph.get("weights") not in (None, "embedded"):
            check_digest(path.parent / graph["weights"], card.get("weights_sha256"))
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
