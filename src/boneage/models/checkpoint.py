"""Checkpoints: weights in safetensors (never unpickled) beside a JSON model card.

`X.safetensors` + `X.json`. The card holds everything needed to rebuild and use the model:
architecture and its options, the exact preprocessing pipeline, target normalisation, data
provenance, metrics, and (for inference) calibration. Loading replays exactly what training saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_bytes, atomic_write_json

CARD_FORMAT = "boneage-model/1"
BUNDLED = Path(__file__).resolve().parents[1] / "weights"  # models shipped in the package


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(model, card: dict[str, Any], weights: str | Path, half: bool = False
                    ) -> Path:
    """Write weights (contiguous fp32 tensors, or fp16 to halve a shipped model's size: the
    model still computes in fp32) then the card, each atomically."""
    from safetensors.torch import save

    weights = Path(weights)
    state = {k: (v.detach().half() if half else v.detach().float()).contiguous().cpu()
             if v.is_floating_point() else v.detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    atomic_write_bytes(weights, save(state, metadata={"format": CARD_FORMAT}))
    atomic_write_json(card_path(weights), {"format": CARD_FORMAT, **card,
                                           "weights_dtype": "float16" if half else "float32"})
    return weights


def read_card(weights: str | Path) -> dict[str, Any]:
    path = card_path(weights)
    if not path.is_file():
        raise BoneAgeError(f"{weights}: no model card {path.name} beside the weights")
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BoneAgeError(f"{path}: unreadable model card ({e})") from None
    if card.get("format") != CARD_FORMAT or "arch" not in card:
        raise BoneAgeError(f"{path}: not a boneage model card")
    return card


def load_checkpoint(weights: str | Path):
    """(model in eval mode, card). Raises BoneAgeError for anything that does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from boneage.models.registry import build_model

    weights = Path(weights)
    if not weights.is_file():
        raise BoneAgeError(f"{weights}: no such model file")
    card = read_card(weights)
    model = build_model(card["arch"], **card.get("model_kwargs", {}))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise BoneAgeError(f"{weights}: not readable safetensors ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise BoneAgeError(f"{weights}: weights do not match {card['arch']!r} ({first})") from None
    norm = card.get("target_norm") or {"mean": 0.0, "std": 1.0}
    model.set_output_scale(norm["mean"], norm["std"])  # the network answers in months
    model.eval()
    return model, card


def installed_models() -> list[Path]:
    """The models shipped inside the package (weights/NAME.safetensors with NAME.json)."""
    return sorted(BUNDLED.glob("*.safetensors")) if BUNDLED.is_dir() else []


def installed_name(spec: str | Path) -> str | None:
    """The name of an installed model that `spec` names ("default"), or None: a bare name (no
    folder part, no suffix) with NAME.safetensors in the package. A file or folder of that
    name in the working directory is given as ./default."""
    text = str(spec)
    if isinstance(spec, Path) or not text or Path(text).name != text or Path(text).suffix:
        return None
    return text if (BUNDLED / f"{text}.safetensors").is_file() else None


def resolve_model_path(spec: str | Path) -> Path:
    """"default" or another installed name, a run folder (its best checkpoint), a .safetensors
    file, or a card .json."""
    name = installed_name(spec)
    if name is not None:
        return BUNDLED / f"{name}.safetensors"
    if str(spec) == "default":
        raise BoneAgeError("no bundled default model is installed in this version; "
                           "give --model RUN_DIR_OR_CHECKPOINT")
    p = Path(spec)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise BoneAgeError(f"{p}: no best.safetensors or last.safetensors in this folder")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if p.suffix != ".safetensors":
        raise BoneAgeError(f"{spec}: not a model (a run folder, a .safetensors checkpoint or, "
                           "for prediction, an exported .onnx)")
    if not p.is_file():
        raise BoneAgeError(f"{spec}: no such model (a run folder or a .safetensors file)")
    return p
