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
