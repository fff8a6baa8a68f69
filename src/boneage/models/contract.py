"""A model's contract, declared in its card as a MONAI bundle's metadata does: each input and
output with its name, dtype, shape, value range, units and (for sex) encoding. The network and
its ONNX graph both answer in months; the predictor checks what it is given against this.
Torch-free, so the ONNX backend and the service read it too."""

from __future__ import annotations

from typing import Any

import numpy as np

from boneage.errors import BoneAgeError

SEX_ENCODING = {"male": 1.0, "female": 0.0}


def io_contract(input_size: int, features: int | None = None) -> dict[str, Any]:
    """The inputs and outputs of a model whose prepared films are input_size x input_size."""
    outputs: list[dict[str, Any]] = [
        {"name": "bone_age", "dtype": "float32", "shape": ["batch"], "units": "months",
         "description": "estimated skeletal age, before the card's output_correction"},
    ]
    if features:
        outputs.append({"name": "features", "dtype": "float32", "shape": ["batch", features],
                        "units": "none", "description": "pooled image features (the "
                        "\"not a hand\" check compares them with the training films')"})
    return {
        "inputs": [
            {"name": "image", "dtype": "float32", "shape": ["batch", 1, input_size, input_size],
             "range": [0.0, 1.0], "units": "grey level / 255",
             "description": "the film after the card's pipeline (replayed by `boneage`)"},
            {"name": "sex", "dtype": "float32", "shape": ["batch"], "range": [0.0, 1.0],
             "encoding": SEX_ENCODING, "units": "none"},
        ],
        "outputs": outputs,
    }


def outputs_months(card: dict[str, Any]) -> bool:
    """Whether the model's first output is already in months (cards written since the
    contract; older exports answered a z-score de-normalised outside)."""
    outs = (card.get("io") or {}).get("outputs") or [{}]
    return outs[0].get("units") == "months"


def check_inputs(card: dict[str, Any], images: np.ndarray, male: np.ndarray) -> None:
    """Prepared films (N, S, S) uint8 and sex (N,) of 0/1 or booleans, as the card says."""
    size = int(card["input_size"])
    if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
        raise BoneAgeError(f"model input: prepared films must be uint8 (N, {size}, {size}), "
                           f"got {images.dtype} {tuple(images.shape)}")
    sex = np.asarray(male)
    if sex.shape != (len(images),):
        raise BoneAgeError(f"model input: one sex value per film, got {sex.shape} for "
                           f"{len(images)} films")
    if sex.dtype != bool and not np.isin(sex, (0, 1)).all():
        raise BoneAgeError("model input: sex must be 1 (male) or 0 (female)")


def _number(v: Any, low: float | None = None) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            and (low is None or v >= low))


def _numbers(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, list) and len(v) > 0 and (n is None or len(v) == n)
            and all(_number(x) for x in v))


def _sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def check_card(card: dict[str, Any], where: str) -> None:
    """The parts of a card that inference computes with, checked when it is read, so that a
    hand-edited or damaged card is one line naming its key, not a traceback at the first film
    (its descriptive parts, metrics and history, are only shown)."""
    from boneage.preprocess.steps import Pipeline

    def bad(key: str, what: str) -> BoneAgeError:
        return BoneAgeError(f"{where}: model card: '{key}' {what}")

    size = card.get("input_size")
    if size is not None and not (isinstance(size, int) and not isinstance(size, bool)
                                 and 8 <= size <= 4096):
        raise bad("input_size", f"is {size!r:.40}, not an image side in pixels")
    if not isinstance(card.get("model_kwargs", {}), dict):
        raise bad("model_kwargs", "is not a mapping of the network's options")
    try:
        if "pipeline" in card:  # a network's card may lack one; estimating needs it (Predictor)
            Pipeline.from_dict(card["pipeline"])
    except BoneAgeError as e:
        raise bad("pipeline", f"cannot be replayed: {e}") from None
    norm = card.get("target_norm")
    if norm is not None and not (isinstance(norm, dict) and _number(norm.get("mean"))
                                 and _number(norm.get("std")) and norm["std"] > 0):
        raise bad("target_norm", "needs numbers 'mean' and 'std' (> 0)")
    corr = card.get("output_correction")
    if corr and not (isinstance(corr, dict)
                     and all(_numbers(corr.get(k), 2) for k in ("male", "female"))):
        raise bad("output_correction", "needs 'male' and 'female' as [a, b] (a + b x estimate)")
    cal = card.get("calibration")
    if cal:
        parts = [cal] + ([cal["single"]] if isinstance(cal, dict) and "single" in cal else [])
        if not all(isinstance(c, dict) and _number(c.get("q"), 0) and _number(c.get("eps"), 0)
                   for c in parts):
            raise bad("calibration", "needs numbers 'q' and 'eps' (>= 0), as `boneage "
                      "calibrate` writes them")
    emb = card.get("embedding")
    if emb and not (isinstance(emb, dict) and _numbers(emb.get("mean"))
                    and _numbers(emb.get("scale"), len(emb.get("mean") or []))
                    and min(emb["scale"]) > 0 and _number(emb.get("threshold"), 0)
                    and _number(emb.get("p90", 0), 0)):
        raise bad("embedding", "needs equally long lists 'mean' and 'scale' (> 0) and a "
                  "'threshold', as `boneage calibrate` writes them")
    digest = card.get("weights_sha256")
    if digest is not None and not _sha256(digest):
        raise bad("weights_sha256", "is not a sha256 digest (64 hex digits)")
    onnx = card.get("onnx")
    if onnx is not None and not (isinstance(onnx, dict)
                                 and isinstance(onnx.get("weights", ""), str)
                                 and (onnx.get("sha256") is None or _sha256(onnx["sha256"]))):
        raise bad("onnx", "needs 'weights' (a file name or 'embedded') and a sha256 digest")
    io = card.get("io")
    if io is not None and not (isinstance(io, dict) and all(
            isinstance(io.get(k, []), list) and all(isinstance(x, dict) for x in io.get(k, []))
            for k in ("inputs", "outputs"))):
        raise bad("io", "needs lists 'inputs' and 'outputs' of mappings")
