"""Ensembles: several trained networks averaged as one model.

Averaging networks that err differently is the surest accuracy lever we measured (two ResNet18s
trained apart: 8.55 months validation MAE against 8.84 and 8.85 alone). An ensemble is one
network to the rest of the toolkit: one checkpoint, one card, one ONNX graph, the same inputs
and outputs (bone age in months, pooled features: the members' side by side). Each member keeps
its own architecture, options and output scale; the card lists them under
`model_kwargs.members`. `build_ensemble` makes one from trained runs (`boneage ensemble`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from boneage.errors import BoneAgeError


class EnsembleRegressor(nn.Module):
    """The mean, in months, of member networks (FusionRegressor each)."""

    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__()
        from boneage.models.registry import build_model

        if not isinstance(members, list) or len(members) < 2:
            raise ValueError("an ensemble needs a list of at least two members")
        nets = []
        for m in members:
            if not isinstance(m, dict) or m.get("arch") in (None, "ensemble"):
                raise ValueError("each member names a single architecture ('arch')")
            norm = m.get("target_norm") or {"mean": 0.0, "std": 1.0}
            if not isinstance(norm, dict) or not {"mean", "std"} <= set(norm):
                raise ValueError("a member's target_norm needs a mean and an std")
            net = build_model(m["arch"], **m.get("model_kwargs", {}))
            nets.append(net.set_output_scale(norm["mean"], norm["std"]))
        self.members = nn.ModuleList(nets)
        self.n_features = sum(int(n.n_features) for n in nets)

    def set_output_scale(self, mean: float, std: float) -> EnsembleRegressor:
        """Members answer in months with their own scales (set from the card at build)."""
        if (float(mean), float(std)) != (0.0, 1.0):
            raise ValueError("an ensemble's members carry their own target normalisation")
        return self

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(image, sex) for m in self.members]).mean(dim=0)

    def forward_with_embedding(self, image: torch.Tensor, sex: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m.forward_with_embedding(image, sex) for m in self.members]
        return (torch.stack([y for y, _ in outs]).mean(dim=0),
                torch.cat([f for _, f in outs], dim=1))


def _member(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(member entry for the card, the member's own card) from a run folder or checkpoint."""
    from boneage.models.checkpoint import read_card, resolve_model_path

    card = read_card(resolve_model_path(path))
    if card["arch"] == "ensemble":
        raise BoneAgeError(f"{path}: already an ensemble; give its member runs instead")
    entry = {"arch": card["arch"], "model_kwargs": card.get("model_kwargs", {}),
             "target_norm": card.get("target_norm") or {"mean": 0.0, "std": 1.0}}
    return entry, card


def build_ensemble(runs: list[str | Path], out: str | Path, dtype: str = "float32"
                   ) -> dict[str, Any]:
    """Write OUT/best.safetensors + best.json (and the first member's split.csv and
    provenance.csv) for the mean of `runs`. The members must share preprocessing, input size
    and data split: a member's validation films may be another's training films otherwise,
    and the ensemble's validation metrics would flatter it. The ensemble has no calibration or
    output correction of its own until `boneage calibrate` fits them."""
    from boneage.fileio import atomic_write_bytes, ensure_writable_dir
    from boneage.models.checkpoint import load_checkpoint, resolve_model_path, save_checkpoint
    from boneage.models.contract import io_contract
    from boneage.models.registry import build_model, count_parameters

    if len(runs) < 2:
        raise BoneAgeError("an ensemble needs at least two runs")
    paths = [resolve_model_path(r) for r in runs]
    members = [_member(p) for p in paths]
    first = members[0][1]
    for p, (_, card) in zip(paths[1:], members[1:], strict=True):
        for key, what in (("pipeline", "preprocessing"), ("input_size", "input size")):
            if card.get(key) != first.get(key):
                raise BoneAgeError(f"{p}: its {what} differs from {paths[0]}'s; an ensemble's "
                                   "members read the same prepared film")
        split = (card.get("data") or {}).get("split_sha256")
        if split != (first.get("data") or {}).get("split_sha256"):
            raise BoneAgeError(f"{p}: trained on another split than {paths[0]}; validation "
                               "metrics would be contaminated")
    if (Path(out) / "best.safetensors").exists():
        raise BoneAgeError(f"{out}: already holds a model (best.safetensors); choose a new "
                           "folder")
    model = build_model("ensemble", members=[m for m, _ in members]).eval()
    for net, path in zip(model.members, paths, strict=True):  # every member read before writing
        loaded, _ = load_checkpoint(path)
        net.load_state_dict(loaded.state_dict())
    out = ensure_writable_dir(out)
    trained = [{"source": str(p), "arch": c["arch"],
                "val_mae": ((c.get("metrics") or {}).get("val") or {}).get("mae"),
                **{k: (c.get("training") or {}).get(k)
                   for k in ("seconds", "device", "epochs_run")}}
               for p, (_, c) in zip(paths, members, strict=True)]
    card = {
        "arch": "ensemble", "model_kwargs": {"members": [m for m, _ in members]},
        "pipeline": first["pipeline"], "input_size": first["input_size"],
        "data": first.get("data", {}),
        "training": {"ensemble_of": trained,
                     "seconds": sum(t["seconds"] or 0 for t in trained) or None},
        "metrics": {}, "parameters": count_parameters(model),
        "io": io_contract(int(first["input_size"]), model.n_features),
    }
    save_checkpoint(model, card, out / "best.safetensors", dtype=dtype)
    for name in ("split.csv", "provenance.csv"):
        src = paths[0].parent / name
        if src.is_file():
            atomic_write_bytes(out / name, src.read_bytes())
    return card
