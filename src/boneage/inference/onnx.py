"""ONNX export (image and sex inputs, dynamic batch) and an ONNX Runtime backend that needs
neither torch nor Lightning: clinics can run a model with numpy, OpenCV and onnxruntime."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_json
from boneage.inference.predictor import Predictor, TorchPredictor


def export_onnx(spec: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write OUT.onnx and its model card OUT.json (the same card, marked as ONNX)."""
    import warnings

    import torch

    out = Path(out)
    if out.suffix != ".onnx":
        raise BoneAgeError(f"{out}: the ONNX file name must end in .onnx")
    src = TorchPredictor.load(spec)
    size = int(src.card["input_size"])
    x = torch.rand(2, 1, size, size)
    sex = torch.tensor([1.0, 0.0])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                src.model, (x, sex), str(tmp), input_names=["image", "sex"],
                output_names=["output"], opset_version=opset, dynamo=False,
                dynamic_axes={"image": {0: "batch"}, "sex": {0: "batch"}, "output": {0: "batch"}},
            )
        os.replace(tmp, out)
    except OSError as e:
        raise BoneAgeError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_json(out.with_suffix(".json"), {**src.card, "onnx": {"opset": opset,
                                                                       "source": str(src.path)}})
    return out


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

    def _run(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": x, "sex": sex})[0]
