"""Build the bundled default model from the shared 100 px RSNA films, end to end, and record
every figure the README and the model card quote.

    python tools/default_model.py [--config configs/default.yaml] [--out runs/default]
    python tools/default_model.py --run RUN_DIR [RUN_DIR ...] [--dtype int8]
                      # runs trained elsewhere (a GPU), on the same split; skips steps 1-3;
                      # several runs are averaged into one model (`boneage ensemble`)
    python tools/default_model.py --members DIR
                      # the bundled ensemble's networks, each as a float32 checkpoint with
                      # its card, to fine-tune (`boneage train --init DIR/member0.safetensors`)

1. prepare the films with the config's pipeline (`hand`: the hand's box stretched to 100 px);
2. a stratified split, seed 42: 9% validation, 9% held out (>= 1,000 films, never used for
   training or model selection);
3. `boneage train --config ...` (resumed when the run folder already holds state);
4. `boneage calibrate` on the validation films (TTA + split-conformal 90% interval);
5. `boneage evaluate --tta` on the held-out films: MAE, RMSE, R², interval coverage and width;
6. install into src/boneage/weights/: float16 weights (half the size; the model computes in
   float32 and is measured as shipped), the card (provenance, terms, held-out metrics,
   calibration, inputs and outputs), an ONNX graph that reads those same weights and answers
   in months, and the markdown model card default.md; check ONNX against torch on the
   held-out films;
7. the installed model on `../shared/data/rsna-val-fullres` (`--fullres`), where present: the
   card's full-resolution figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TERMS = ("RSNA Pediatric Bone Age Challenge (2017) training data, contributed by Stanford "
         "University, University of Colorado and UCLA: research and non-commercial use; cite "
         "Halabi SS et al., The RSNA Pediatric Bone Age Machine Learning Challenge, Radiology "
         "2019;290(2):498-503.")


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def record_validation(run: Path, evaluate: list[str], out: Path) -> None:
    """An ensemble's card has no validation metrics of its own (its members' were measured
    apart): measure them one view (`evaluate` is the command without its --out), as training
    does, so the service and `compare` show them."""
    from boneage.fileio import atomic_write_json

    sh(*evaluate, "--out", str(out))
    m = json.loads((out / "metrics.json").read_text())
    card = json.loads((run / "best.json").read_text())
    card["metrics"] = {**card.get("metrics", {}),
                       "val": {k: m[k] for k in ("n", "mae", "rmse", "r2")} | {"tta": False}}
    atomic_write_json(run / "best.json", card)


def measure_fullres(model: Path, folder: Path, out: Path) -> dict:
    """The installed model on full-resolution films never trained on, as `predict` reads
    them (8 views, the correction, the interval): the card's `fullres_metrics`, which reports
    quote for large films (the thumbnails' figure would flatter or wrong them)."""
    sh(sys.executable, "-m", "boneage.cli", "evaluate", "--model", str(model), "--images",
       str(folder), "--labels", str(folder / "labels.csv"), "--tta", "--out", str(out))
    m = json.loads((out / "metrics.json").read_text())
    return {"set": folder.name,
            "description": f"{m['n']} full-resolution films never trained on",
            "n": m["n"], "mae": round(m["mae"], 3), "bias": round(m["bias"], 2),
            "interval_coverage": (m.get("interval") or {}).get("coverage"),
            "source": f"boneage evaluate --tta on {folder.name} (tools/default_model.py)"}


def write_members(model: str, out: Path) -> list[Path]:
    """Each member of an ensemble model as a checkpoint of its own (float32, the weights as
    stored dequantised), with the preprocessing, input size and data of the ensemble's card."""
    from boneage.models.checkpoint import load_checkpoint, resolve_model_path, save_checkpoint
    from boneage.models.contract import io_contract

    net, card = load_checkpoint(resolve_model_path(model))
    if card["arch"] != "ensemble":
        raise SystemExit(f"{model} is one network ({card['arch']}), not an ensemble")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (member, spec) in enumerate(zip(net.members, card["model_kwargs"]["members"],
                                           strict=True)):
        c = {"arch": spec["arch"], "model_kwargs": spec["model_kwargs"],
             "target_norm": spec["target_norm"], "pipeline": card["pipeline"],
             "input_size": card["input_size"], "data": card.get("data", {}),
             "training": {"member_of": f"{card.get('name', model)} {card.get('version', '')}"},
             "metrics": {}, "io": io_contract(int(card["input_size"]), int(member.n_features))}
        paths.append(save_checkpoint(member, c, out / f"member{i}.safetensors"))
        print(f"{paths[-1]}: {spec['arch']} {spec['model_kwargs']}")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", default=str(ROOT.parent / "shared/data/rsna-bone-age-100px/"
                                            "boneage-training-dataset.csv"))
    ap.add_argument("--images", help="the films' folder (default: beside the labels)")
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs/default"))
    ap.add_argument("--install", default=str(ROOT / "src/boneage/weights"))
    ap.add_argument("--run", nargs="+", help="already trained run folders (their split is used "
                    "as is); two or more become one ensemble (version 4: two)")
    ap.add_argument("--version", help="the model version written into the card")
    ap.add_argument("--dtype", choices=("float16", "int8"), default="float16",
                    help="shipped weight storage (int8: a quarter of float32; an ensemble's)")
    ap.add_argument("--choose-views", action="store_true",
                    help="let calibration choose the views the estimate averages "
                         "(`boneage calibrate --choose-views`; else the 8 default views)")
    ap.add_argument("--change", action="append", default=[],
                    help="a changelog line for this version (repeatable)")
    ap.add_argument("--fullres", default=str(ROOT.parent / "shared/data/rsna-val-fullres"),
                    help="full-resolution films never trained on (with labels.csv), measured "
                         "with 8 views for the figure reports quote for films of 512 px or "
                         "more; skipped where the folder is absent")
    ap.add_argument("--members", metavar="DIR", help="only write the bundled ensemble's "
                    "networks into DIR, one checkpoint each (to fine-tune), and stop")
    a = ap.parse_args()
    if a.members:
        write_members("default", Path(a.members))
        return
    labels = Path(a.labels)
    films = ["--images", a.images] if a.images else []
    out = Path(a.out)
    run = out / "run"
    exe = [sys.executable, "-m", "boneage.cli"]
    cache = out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    if a.run and len(a.run) > 1:
        from boneage.models.ensemble import build_ensemble

        run = out / "ensemble"
        if not (run / "best.safetensors").is_file():
            build_ensemble(a.run, run, dtype=a.dtype)
    elif a.run:
        run = Path(a.run[0])
    if a.run:
        from boneage.fileio import read_csv_dicts

        cache = Path(read_csv_dicts(run / "provenance.csv")[0]["cache"])
    else:
        # the films prepared with the pipeline the config trains on (`hand` for version 3)
        from boneage.training.config import load_config
        from boneage.training.run import pipeline_for

        pipeline = out / "pipeline.json"
        pipeline.write_text(json.dumps(pipeline_for(load_config(a.config)).to_dict()) + "\n")
        sh(*exe, "prepare", "--labels", str(labels), *films, "--out", str(cache), "--pipeline",
           str(pipeline))
        split = out / "split.csv"
        if not split.is_file():
            from boneage.data.splits import save_split, stratified_split
            from boneage.preprocess.prepare import table_from_cache

            save_split(stratified_split(table_from_cache(cache), 0.09, 0.09, seed=42), split)
        if (run / "state" / "last.ckpt").is_file():
            sh(*exe, "train", "--resume", str(run))
        else:
            sh(*exe, "train", "--data", str(cache), "--split", str(split), "--config",
               a.config, "--out", str(run))
    split = run / "split.csv"
    (ROOT / "benchmarks/results/default_split.csv").write_bytes(split.read_bytes())  # auditable
    # the shipped weights are float16 or int8: calibrate and measure exactly those
    from boneage.models.checkpoint import load_checkpoint, save_checkpoint

    shipped = out / "shipped"
    shipped.mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "split.csv", "provenance.csv", "metrics.csv", "curves.png",
              "lr.png"):
        if (run / f).is_file():
            (shipped / f).write_bytes((run / f).read_bytes())
    model, card = load_checkpoint(run / "best.safetensors")
    card.pop("format", None)
    card.pop("weights_dtype", None)
    save_checkpoint(model, card, shipped / "best.safetensors", dtype=a.dtype)
    run = shipped
    sh(*exe, "calibrate", "--model", str(run), "--labels", str(labels), *films,
       "--subset", "val", *(["--choose-views"] if a.choose_views else []))
    if not (card.get("metrics") or {}).get("val"):
        record_validation(run, [*exe, "evaluate", "--model", str(run), "--labels", str(labels),
                                *films, "--subset", "val"], out / "val-single")
    sh(*exe, "evaluate", "--model", str(run), "--labels", str(labels), *films, "--subset", "test",
       "--tta", "--out", str(out / "heldout"))
    sh(*exe, "evaluate", "--model", str(run), "--labels", str(labels), *films, "--subset", "test",
       "--out", str(out / "heldout-single"))
    single = json.loads((out / "heldout-single" / "metrics.json").read_text())
    held = json.loads((out / "heldout" / "metrics.json").read_text())

    install = Path(a.install)
    card = json.loads((run / "best.json").read_text())
    old = install / "default.json"
    changelog = json.loads(old.read_text()).get("changelog", []) if old.is_file() else []
    if a.version:
        card["version"] = a.version
        changelog = [{"version": a.version, "changes": a.change}] + changelog
    card["changelog"] = changelog
    card.update(
        name="default", terms=TERMS,
        data={**card["data"], "source": "RSNA Pediatric Bone Age Challenge (2017) training "
              "films as 100x100 whole-film nearest-neighbour thumbnails (11,566 films); split "
              "stratified by age and sex, seed 42: training, validation (model choice and "
              "calibration), held out (only the metrics below)"},
        heldout_metrics={k: held[k] for k in ("n", "mae", "rmse", "r2", "bias", "mae_ci95")}
        | {"interval": held.get("interval"), "by_sex": held["by_sex"],
           "by_age_band": held["by_age_band"], "tta": True,
           "without_tta": {k: single[k] for k in ("mae", "rmse", "r2", "interval")
                           if k in single}},
    )
    (install / "default.safetensors").write_bytes((run / "best.safetensors").read_bytes())
    (install / "default.json").write_text(json.dumps(card, indent=2) + "\n")
    sh(*exe, "export", "--model", str(install / "default.safetensors"), "--out",
       str(install / "default.onnx"), "--share-weights")

    # parity: ONNX vs torch on the held-out films (no TTA, raw network output in months)
    import numpy as np

    from boneage.data.splits import load_split
    from boneage.inference.api import load_predictor
    from boneage.preprocess.prepare import load_cache

    test_ids = [i for i, s in load_split(split).items() if s == "test"]
    c = load_cache(cache, test_ids)
    t = load_predictor(install / "default.safetensors").predict_arrays(c.images, c.male)
    o = load_predictor(install / "default.onnx", "onnx").predict_arrays(c.images, c.male)
    parity = float(np.abs(t - o).max())
    print(f"ONNX vs torch on {len(test_ids)} held-out films: max |diff| {parity:.4f} months")
    # one card serves both files (default.safetensors and default.onnx share default.json)
    card = json.loads((install / "default.json").read_text())
    card["onnx_parity_max_abs_months"] = round(parity, 4)
    from boneage.models.checkpoint import write_card

    fullres = Path(a.fullres)
    if (fullres / "labels.csv").is_file():
        card["fullres_metrics"] = measure_fullres(install / "default.safetensors", fullres,
                                                  out / "fullres")
    write_card(install / "default.safetensors", card, markdown=True)  # default.json + .md
    summary = {"heldout": card["heldout_metrics"], "onnx_parity": parity,
               "calibration": card.get("calibration")}
    (ROOT / "benchmarks/results/default_model.json").write_text(
        json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
