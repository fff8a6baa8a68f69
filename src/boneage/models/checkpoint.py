"""Checkpoints: weights in safetensors (never unpickled) beside a JSON model card.

`X.safetensors` + `X.json`. The card holds everything needed to rebuild and use the model:
architecture and its options, the exact preprocessing pipeline, target normalisation, data
provenance, metrics, and (for inference) calibration. Loading replays exactly what training saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError
from boneage.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    file_sha256,
    publish_folder,
    read_text,
)
from boneage.models.contract import check_card

CARD_FORMAT = "boneage-model/1"
BUNDLED = Path(__file__).resolve().parents[1] / "weights"  # models shipped in the package


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def check_digest(path: str | Path, expected: str | None) -> None:
    """A file the card names against the sha256 written with it: a damaged or partial copy,
    or weights swapped under a card, computed plausible but wrong answers (a changed byte in
    the weights still loads). Cards written before digests have none and are not checked."""
    if expected and file_sha256(path) != expected:
        raise BoneAgeError(f"{path}: does not match the sha256 in its model card (damaged, "
                           "truncated or replaced since it was written): reinstall or rebuild it")


DTYPES = ("float32", "float16", "int8")
SCALE = ".__scale__"  # key suffix of an int8 weight's per-channel scale


def _quantise(v):
    """int8 weights and their per-output-channel scale (symmetric): weight ~= q * scale."""
    import torch

    w = v.detach().float().cpu()
    scale = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


def stored_state(state: dict[str, Any], dtype: str) -> dict[str, Any]:
    """A state dict as stored in `dtype` (see save_checkpoint); integers are kept as they are,
    and a state already stored as int8 (its scales beside it) is read back first."""
    if dtype not in DTYPES:
        raise BoneAgeError(f"unknown weight dtype {dtype!r} (known: {', '.join(DTYPES)})")
    out = {}
    for k, v in _dequantise(dict(state)).items():
        v = v.detach().contiguous().cpu()
        if not v.is_floating_point():
            out[k] = v
        elif dtype == "int8" and v.ndim >= 2 and v.numel() >= 256:
            out[k], out[k + SCALE] = _quantise(v)
        else:
            out[k] = (v.float() if dtype == "float32" else v.half()).contiguous()
    return out


def save_checkpoint(model, card: dict[str, Any], weights: str | Path, dtype: str = "float32"
                    ) -> Path:
    """Write weights then the card, each atomically. The model computes in float32 whatever
    the storage: "float16" halves a shipped model's size; "int8" quarters it (convolution and
    dense weights as int8 with a float32 scale per output channel, everything else float16),
    which cost nothing measurable on the validation films (docs/model.md)."""
    from safetensors.torch import save

    weights = Path(weights)
    data = save(stored_state(model.state_dict(), dtype), metadata={"format": CARD_FORMAT})
    atomic_write_bytes(weights, data)
    atomic_write_json(card_path(weights), {"format": CARD_FORMAT, **card, "weights_dtype": dtype,
                                           "weights_sha256": hashlib.sha256(data).hexdigest()})
    return weights


def _dequantise(state: dict[str, Any]) -> dict[str, Any]:
    """int8 weights back to float32 (q * scale), the scales dropped."""
    for k in [k for k in state if k.endswith(SCALE)]:
        scale, base = state.pop(k), k.removesuffix(SCALE)
        try:
            state[base] = state[base].float() * scale
        except (KeyError, RuntimeError):
            raise ValueError(f"scale {k} does not fit a weight") from None
    return state


def read_card(weights: str | Path) -> dict[str, Any]:
    path = card_path(weights)
    if not path.is_file():
        raise BoneAgeError(f"{weights}: no model card {path.name} beside the weights")
    try:
        card = json.loads(read_text(path, "model card"))
    except json.JSONDecodeError as e:
        raise BoneAgeError(f"{path}: unreadable model card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "arch" not in card:
        raise BoneAgeError(f"{path}: not a boneage model card")
    check_card(card, str(path))
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
    check_digest(weights, card.get("weights_sha256"))
    model = build_model(card["arch"], **card.get("model_kwargs", {}))
    try:
        state = _dequantise(load_file(str(weights)))
    except (SafetensorError, OSError, ValueError) as e:
        raise BoneAgeError(f"{weights}: not readable safetensors ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise BoneAgeError(f"{weights}: weights do not match {card['arch']!r} ({first})") from None
    # the network answers in months (an ensemble's members carry their own scales)
    norm = card.get("target_norm") or {"mean": 0.0, "std": 1.0}
    try:
        model.set_output_scale(norm["mean"], norm["std"])
    except (KeyError, TypeError, ValueError) as e:  # a card edited by hand
        raise BoneAgeError(f"{weights}: unusable target_norm in the card ({e})") from None
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
        only = sorted(p.glob("*.safetensors"))  # a copy of one model (`calibrate --out`)
        if len(only) == 1:
            return only[0]
        raise BoneAgeError(f"{p}: no best.safetensors or last.safetensors in this folder")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if p.suffix != ".safetensors":
        raise BoneAgeError(f"{spec}: not a model (a run folder, a .safetensors checkpoint or, "
                           "for prediction, an exported .onnx)")
    if not p.is_file():
        raise BoneAgeError(f"{spec}: no such model (a run folder or a .safetensors file)")
    return p


def _markdown_path(weights: Path) -> Path:
    return weights.parent / f"{weights.stem}.md"


def write_card(weights: str | Path, card: dict[str, Any], markdown: bool | None = None) -> None:
    """The card beside the weights, and its markdown rendering (`default.md`) with it when
    `markdown`, or by default where there is one already: the two never disagree."""
    weights = Path(weights)
    atomic_write_json(card_path(weights), card)
    if markdown or (markdown is None and _markdown_path(weights).is_file()):
        from boneage.models.card import render_markdown

        atomic_write_bytes(_markdown_path(weights), render_markdown(card).encode())


RUN_FILES = ("config.yaml", "split.csv")  # what `evaluate --subset` reads from a run folder


def check_new_folder(out: str | Path) -> Path:
    """`out` for a copy of a model: absent or empty, its parent writable (checked before any
    long work starts)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BoneAgeError(f"{out}: already exists and is not an empty folder; give a new one")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BoneAgeError(f"{out.parent}: cannot write here ({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK):
        raise BoneAgeError(f"{out.parent}: cannot write here")
    return out


def copy_model(path: str | Path, card: dict[str, Any], out: str | Path) -> Path:
    """Copy the model at `path` (its .safetensors and ONNX graph of the same name, the run's
    config and split) to the new folder `out` with `card` as its card, leaving the original
    (the bundled model above all) as it was. Built beside `out` and renamed into place, so an
    interruption leaves no half a model. Returns the copy's weights (or graph) path."""
    import shutil
    import tempfile

    src = Path(path)
    out = check_new_folder(out)
    files = [src.parent / f"{src.stem}{x}" for x in (".safetensors", ".onnx")]
    files = [f for f in files if f.is_file()] + [
        f for f in (src.parent / n for n in RUN_FILES) if f.is_file()]
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for f in files:  # the graph keeps reading its weights by file name: names are kept
            shutil.copyfile(f, tmp / f.name)
        write_card(tmp / src.name, card, markdown=_markdown_path(src).is_file())
        publish_folder(tmp, out)
    except OSError as e:
        raise BoneAgeError(f"{out}: cannot write the copy ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / src.name
