"""Ensembles: several trained networks averaged as one model.

Averaging networks that err differently is the surest accuracy lever we measured (two ResNet18s
trained apart: 8.55 months validation MAE against 8.84 and 8.85 alone). An ensemble is one
network to the rest of the toolkit: one checkpoint, one card, one ONNX graph, the same inputs
and outputs (bone age in months, pooled features: the members' side by side). Each member keeps
its own architecture, options and output scale; the card lists them under
`model_kwargs.members`. `build_ensemble` makes one from trained runs (`boneage ensemble`).

The other way to combine runs: `interpolate_runs` averages the *weights* of a network and its
own fine-tune (`boneage interpolate`), one network's cost instead of two.
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
    from boneage.fileio import ensure_writable_dir
    from boneage.models.checkpoint import load_checkpoint, resolve_model_path, save_checkpoint
    from boneage.models.contract import io_contract
    from boneage.models.registry import build_model, count_parameters

    if len(runs) < 2:
        raise BoneAgeError("an ensemble needs at least two runs")
    paths = [resolve_model_path(r) for r in runs]
    members = [_member(p) for p in paths]
    first = members[0][1]
    _check_combinable(paths, [c for _, c in members], out)
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
    _copy_split(paths[0], out)
    return card


def _check_combinable(paths: list[Path], cards: list[dict[str, Any]], out: str | Path) -> None:
    """Runs combined into one model must read the same prepared film and come from the same
    split (else one's validation films are another's training films and the combination's
    validation metrics flatter it); the output folder must be new."""
    first = cards[0]
    for p, card in zip(paths[1:], cards[1:], strict=True):
        for key, what in (("pipeline", "preprocessing"), ("input_size", "input size")):
            if card.get(key) != first.get(key):
                raise BoneAgeError(f"{p}: its {what} differs from {paths[0]}'s; combined "
                                   "networks read the same prepared film")
        split = (card.get("data") or {}).get("split_sha256")
        if split != (first.get("data") or {}).get("split_sha256"):
            raise BoneAgeError(f"{p}: trained on another split than {paths[0]}; validation "
                               "metrics would be contaminated")
    if (Path(out) / "best.safetensors").exists():
        raise BoneAgeError(f"{out}: already holds a model (best.safetensors); choose a new "
                           "folder")


def _copy_split(run: Path, out: Path) -> None:
    """The run's split and provenance beside the combined model (evaluate and calibrate find
    its validation films there)."""
    from boneage.fileio import atomic_write_bytes

    for name in ("split.csv", "provenance.csv"):
        src = run.parent / name
        if src.is_file():
            atomic_write_bytes(out / name, src.read_bytes())


def interpolate_runs(start: str | Path, end: str | Path, alpha: float, out: str | Path,
                     dtype: str = "float32") -> dict[str, Any]:
    """Write OUT/best.safetensors + best.json for the network whose weights are
    (1 - alpha) x START's + alpha x END's, END being START fine-tuned (WiSE-FT, Wortsman et
    al. 2022). A fine-tune that taught a network something new (renderings, for version 6)
    also moved it away from what it did well before; a point between the two keeps much of
    both, at one network's cost. Both must be the same architecture with the same options and
    output scale (else their weights do not correspond); calibrate the result afterwards."""
    from boneage.fileio import ensure_writable_dir
    from boneage.models.checkpoint import (
        load_checkpoint,
        read_card,
        resolve_model_path,
        save_checkpoint,
    )

    if not 0.0 <= alpha <= 1.0:
        raise BoneAgeError(f"alpha {alpha}: must lie between 0 (the first run) and 1 (the "
                           "second)")
    paths = [resolve_model_path(start), resolve_model_path(end)]
    cards = [read_card(p) for p in paths]
    for p, card in zip(paths, cards, strict=True):
        if card["arch"] == "ensemble":
            raise BoneAgeError(f"{p}: an ensemble; interpolate its members one by one")
    for key, what in (("arch", "architecture"), ("model_kwargs", "network options"),
                      ("target_norm", "output scale")):
        if cards[0].get(key) != cards[1].get(key):
            raise BoneAgeError(f"{paths[1]}: its {what} differs from {paths[0]}'s; only a run "
                               "and its own fine-tune can be interpolated")
    _check_combinable(paths, cards, out)
    (a, _), (b, _) = (load_checkpoint(p) for p in paths)  # both read before writing
    sa, sb = a.state_dict(), b.state_dict()
    a.load_state_dict({k: sa[k] * (1 - alpha) + sb[k] * alpha if sa[k].is_floating_point()
                       else sb[k] for k in sa})
    out = ensure_writable_dir(out)
    # what describes the network and its input carries over; what was measured on END
    # (metrics, calibration, correction, version, figures) does not describe the new one
    card = {k: cards[1][k] for k in ("arch", "model_kwargs", "target_norm", "pipeline",
                                     "input_size", "data", "io", "parameters")
            if k in cards[1]}
    card["training"] = {"interpolated": {"start": str(paths[0]), "end": str(paths[1]),
                                         "alpha": alpha},
                        "seconds": (cards[1].get("training") or {}).get("seconds")}
    card["metrics"] = {}
    save_checkpoint(a, card, out / "best.safetensors", dtype=dtype)
    _copy_split(paths[1], out)
    return card
