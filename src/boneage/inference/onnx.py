"""The ONNX Runtime backend: runs an exported graph (inference/export.py) with numpy, OpenCV
and onnxruntime only, no torch or Lightning, so clinics can run a model on a plain CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError, install_hint
from boneage.inference.predictor import Predictor
from boneage.models.checkpoint import check_digest, read_card
from boneage.models.contract import outputs_months


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise BoneAgeError(f"{path}: not a loadable ONNX model ({type(e).__name__})") from None


class OnnxCam:
    """Grad-CAM++ heatmaps on ONNX Runtime: the graph the export writes beside a model
    (X.cam.onnx: each member's feature map and head gradient), the map computed in numpy."""

    def __init__(self, session: Any, members: int) -> None:
        self.session, self.members = session, members

    @classmethod
    def beside(cls, predictor: OnnxPredictor) -> OnnxCam | None:
        """The heatmap graph named in the card, checked against its digest; None when the
        export has none (older exports, heads it cannot differentiate)."""
        cam = (predictor.card.get("onnx") or {}).get("cam")
        if not cam:
            return None
        path = predictor.path.parent / cam["file"]
        if not path.is_file():
            return None
        check_digest(path, cam.get("sha256"))
        return cls(_session(path), len(cam.get("outputs", [])) // 2)

    def saliency(self, image: np.ndarray, male: bool) -> np.ndarray:
        """(S, S) map in [0, 1] over one prepared image (S, S) float32 in [0, 1]."""
        from boneage.inference.explain import gradcampp, mean_map

        x = np.ascontiguousarray(image, np.float32)[None, None]
        out = self.session.run(None, {"image": x, "sex": np.array([float(male)], np.float32)})
        maps = [gradcampp(out[2 * k][0], out[2 * k + 1][0], image.shape[:2])
                for k in range(len(out) // 2)]
        return maps[0] if len(maps) == 1 else mean_map(maps)


class OnnxPredictor(Predictor):
    def __init__(self, session: Any, card: dict[str, Any], path: Path) -> None:
        super().__init__(card, path)
        self.session = session
        # graphs exported since the card's "io" answer in months; older ones a z-score
        self.months_out = outputs_months(card)

    @classmethod
    def load(cls, spec: str | Path) -> OnnxPredictor:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BoneAgeError(f"the onnx backend needs onnxruntime: {install_hint('onnx')}"
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
        return cls(_session(path), card, path)

    def _run(self, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(None, {"image": x, "sex": sex})
        return out[0], out[1] if len(out) > 1 else None  # older exports: no features output
