"""The `boneage` command. Each subcommand imports its stage lazily so `--help` stays instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from boneage.errors import BoneAgeError, install_hint

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _bounded(kind: type, lo: float, hi: float):
    """An argparse type: a finite number of `kind` between lo and hi."""
    import math

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}, got {text}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_data_args(p: argparse.ArgumentParser, labels_required: bool = False) -> None:
    """The same front door for every command that reads a data set."""
    p.add_argument("--images", metavar="DIR", help="folder of films (<id>.png/.jpg/.dcm)")
    p.add_argument("--labels", metavar="CSV", required=labels_required,
                   help="labels in any RSNA format (id,boneage,male / Image ID,... / Case ID,...)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="drop invalid rows (missing image, bad age or sex) instead of failing")


# ---------------------------------------------------------------------------------- prepare
def cmd_prepare(a: argparse.Namespace) -> int:
    from pathlib import Path

    from boneage.data.labels import LabelTable, load_table
    from boneage.data.summary import write_summary
    from boneage.preprocess.prepare import cpu_count, prepare
    from boneage.preprocess.steps import (
        PRESETS,
        Pipeline,
        preset_pipeline,
        seed_pipeline,
        thumbnail_pipeline,
    )

    if a.example:
        from boneage.data.synthetic import write_example

        a.images = str(write_example(Path(a.out) / "example-films"))
        a.labels = str(Path(a.images) / "labels.csv")
    if a.pipeline in PRESETS:  # one meaning everywhere: which pipeline, by name or file
        size = a.size or (100 if a.pipeline != "seed" else 256)
        pipeline = preset_pipeline(a.pipeline, size, crop=not a.no_crop, clahe=not a.no_clahe)
    elif a.pipeline:
        if not Path(a.pipeline).is_file():
            raise BoneAgeError(f"--pipeline {a.pipeline}: neither a preset "
                               f"({', '.join(PRESETS)}) nor a pipeline file")
        pipeline = Pipeline.load(a.pipeline)
    elif a.squash:
        pipeline = thumbnail_pipeline(a.size or 100)
    else:
        pipeline = seed_pipeline(a.size or 256, crop=not a.no_crop, clahe=not a.no_clahe,
                                 clip_limit=a.clip_limit, tile_grid=a.tiles)
    table = load_table(a.images, a.labels, skip_invalid=a.skip_invalid)
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    result = prepare(table, pipeline, a.out, workers=a.workers or cpu_count())
    for _, err in result.failed:
        print(f"error: {err}", file=sys.stderr)
    if a.labels:
        write_summary(table, a.out)
    if a.preview:
        from boneage.preprocess.preview import contact_sheet

        failed = {i for i, _ in result.failed}
        ok = [r for r in table if r.id not in failed]
        if ok:
            n = contact_sheet(LabelTable(ok), pipeline, a.preview, count=a.preview_count)
            print(f"preview of {n} films -> {a.preview}")
    print(f"prepared {result.total - len(result.failed)}/{result.total} films "
          f"({result.done} new, {result.skipped} unchanged, {result.fallback} kept whole: no hand "
          f"found, {len(result.failed)} failed) in {result.seconds:.1f} s -> {a.out}")
    return 1 if result.failed else 0


def _parser_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="crop, enhance and resize films into a cache",
                       description="Run the preprocessing pipeline over a folder of films into a "
                       "cache (prepared PNGs + manifest.csv + pipeline.json + dataset summary). "
                       "Reruns only do what is missing or changed.")
    _add_data_args(p)
    p.add_argument("--out", metavar="CACHE", required=True, help="cache folder to write")
    p.add_argument("--image-size", "--size", dest="size", type=_positive_int,
                   help="side of the prepared square, px (256; 100 with --squash or the "
                   "hand/squash presets)")
    p.add_argument("--no-crop", action="store_true", help="keep the whole film (no hand crop)")
    p.add_argument("--no-clahe", action="store_true", help="skip CLAHE contrast enhancement")
    p.add_argument("--clip-limit", type=float, default=2.0, help="CLAHE clip limit (2.0)")
    p.add_argument("--tiles", type=_positive_int, default=8, help="CLAHE tile grid (8 = 8x8)")
    p.add_argument("--squash", action="store_true",
                   help="reproduce the shared 100 px data: whole film, nearest-neighbour squash")
    p.add_argument("--pipeline", metavar="NAME_OR_JSON", help="a preset (seed, squash, hand, "
                   "hand-stretch; as `train --pipeline`) or a pipeline file (a cache's "
                   "pipeline.json)")
    p.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    p.add_argument("--preview", metavar="PNG", help="write a before/after contact sheet")
    p.add_argument("--preview-count", type=_positive_int, default=16, help="films in the preview")
    p.add_argument("--example", action="store_true",
                   help="generate a few synthetic films into CACHE/example-films and prepare them")
    p.set_defaults(func=cmd_prepare)


# ----------------------------------------------------------------------------------- models
def cmd_models(a: argparse.Namespace) -> int:
    if a.card:
        from boneage.models.card import render_markdown
        from boneage.models.checkpoint import read_card, resolve_model_path

        print(render_markdown(read_card(resolve_model_path(a.card))))
        return 0
    import importlib.util

    from boneage.models.checkpoint import installed_models, read_card

    if importlib.util.find_spec("torch") is None:
        print(f"architectures: install PyTorch to list and train them ({install_hint('train')})")
    else:
        from boneage.models.registry import DESCRIPTIONS, build_model, count_parameters

        print(f"{'architecture':<16}{'parameters':>12}  description")
        for name, desc in DESCRIPTIONS.items():
            # an ensemble's size is its members' (built from runs, not by name alone)
            n = "-" if name == "ensemble" else f"{count_parameters(build_model(name)):,}"
            print(f"{name:<16}{n:>12}  {desc}")
    installed = installed_models()
    print("\ninstalled models (use --model NAME):" + ("" if installed else " none yet"))
    for path in installed:
        card = read_card(path)
        held = card.get("heldout_metrics")
        where = "held-out" if held else "validation"
        held = held or (card.get("metrics") or {}).get("val") or {}
        mae = f"{where} MAE {held['mae']:.2f} months" if held.get("mae") is not None else ""
        onnx = " (+ onnx)" if path.with_suffix(".onnx").is_file() else ""
        print(f"  {path.stem:<14}{card['arch']:<16}{card.get('input_size', '')!s:>5} px  "
              f"{mae}{onnx}")
    return 0


def _parser_models(sub) -> None:
    p = sub.add_parser("models", help="list the architectures (and installed models)")
    p.add_argument("--card", metavar="MODEL", help="print this model's card in markdown (an "
                   "installed name, a run folder or a checkpoint) instead")
    p.set_defaults(func=cmd_models)


# ------------------------------------------------------------------------------------ train
_TRAIN_OVERRIDES = ("arch", "epochs", "batch_size", "image_size", "lr", "weight_decay",
                    "warmup_fraction", "huber_delta", "age_balance", "anchor", "ema",
                    "early_stopping_patience", "max_minutes", "val_fraction",
                    "test_fraction", "seed", "precision", "accelerator", "devices", "num_nodes",
                    "workers", "pipeline", "init", "limit", "logger")


def cmd_train(a: argparse.Namespace) -> int:
    import json

    from boneage.training.config import load_config
    from boneage.training.run import train

    progress = sys.stderr.isatty() if a.progress is None else a.progress
    if a.resume:
        if a.dry_run:
            raise BoneAgeError("--dry-run checks a new run; drop --resume")
        summary = train(a.resume, resume=True, progress=progress, epochs=a.epochs,
                        max_minutes=a.max_minutes)
    else:
        if not a.out and not a.dry_run:
            raise BoneAgeError("give --out RUN_DIR (or --resume RUN_DIR)")
        if a.data is None and a.labels is None:
            raise BoneAgeError("give --images DIR --labels CSV, or --data CACHE")
        overrides = {k: getattr(a, k) for k in _TRAIN_OVERRIDES}
        if a.augment is not None:
            overrides["augment"] = a.augment
        if a.no_crop:
            overrides["crop"] = False
        if a.no_clahe:
            overrides["clahe"] = False
        cfg = load_config(a.config, overrides)
        kwargs = dict(images=a.images, labels=a.labels, data=a.data, val_labels=a.val_labels,
                      val_images=a.val_images, split_file=a.split, skip_invalid=a.skip_invalid,
                      progress=progress)
        if a.dry_run:
            return _dry_run(cfg, a.cache, kwargs)
        summary = train(a.out, cfg, cache_dir=a.cache, **kwargs)
    from boneage.training.run import global_rank

    if global_rank() == 0:  # under DDP every process gets here; one says it
        print(json.dumps(summary))
    return 0


def _dry_run(cfg, cache: str | None, kwargs: dict) -> int:
    """One training and one validation batch through the whole path (config, data, network,
    device, precision) in a temporary folder that is removed afterwards: a check before a
    long run, which leaves nothing behind (films prepared for it go to --cache if given)."""
    import tempfile
    import time

    from boneage.training.run import train

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="boneage-dry-") as tmp:
        summary = train(f"{tmp}/run", cfg, cache_dir=cache, dry_run=True, **kwargs)
    best = summary.get("best") or {}
    mae = best.get("val_mae")
    print(f"dry run: one training and one validation batch of {cfg.arch} ran in "
          f"{time.perf_counter() - t0:.1f} s" + (f" (val MAE {mae:.1f} months on one batch)"
                                                 if mae is not None else "")
          + "; nothing kept")
    return 0


def _parser_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (resumable run folder)",
                       description="Train a bone-age regressor. Defaults are the seed recipe; "
                       "a YAML --config and the options below override them.")
    _add_data_args(p)
    p.add_argument("--data", metavar="CACHE", help="an already prepared cache (with labels)")
    p.add_argument("--cache", metavar="DIR", help="where to prepare films (default RUN_DIR/cache)")
    p.add_argument("--val-labels", metavar="CSV", help="a given validation set (else a split)")
    p.add_argument("--val-images", metavar="DIR", help="its films (default: the Kaggle folder "
                   "beside the CSV, else --images)")
    p.add_argument("--split", metavar="CSV", help="a saved split file (id,split) to reuse")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run; with "
                   "--epochs N (the new total) and/or --max-minutes, extend a finished one")
    p.add_argument("--config", metavar="YAML", help="settings file (see configs/)")
    p.add_argument("--arch", help="architecture (see `boneage models`)")
    p.add_argument("--epochs", type=_positive_int, help="most epochs (with --resume: the new "
                   "total)")
    p.add_argument("--batch-size", type=_positive_int, help="films per batch (per device)")
    p.add_argument("--image-size", type=_positive_int, help="side of the prepared square, px")
    p.add_argument("--pipeline", choices=("seed", "squash", "hand", "hand-stretch",
                                          "hand-standard"),
                   help="seed: crop+CLAHE+letterbox; squash: the 100 px data's transform; "
                   "hand: the hand found on the film, its box stretched to the square; "
                   "hand-stretch: hand at full contrast; hand-standard: hand, masked, its grey "
                   "levels standardised (the same input however the film was rendered)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="train on a stratified "
                   "subset of N films (same sex and age-band proportions): a quick run")
    p.add_argument("--init", metavar="MODEL", help="start from this model's weights "
                   "(fine-tuning): a name such as default, a run folder or a checkpoint")
    p.add_argument("--no-crop", action="store_true", help="seed pipeline without the hand crop")
    p.add_argument("--no-clahe", action="store_true", help="seed pipeline without CLAHE")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    p.add_argument("--warmup-fraction", type=float, help="share of steps warming up (0-1)")
    p.add_argument("--huber-delta", type=float, help="Huber loss delta, months")
    p.add_argument("--age-balance", type=float, metavar="POWER",
                   help="weight each film's loss by its year of age's share of the training "
                   "films to the minus POWER (0: off; 0.5: inverse square root)")
    p.add_argument("--anchor", type=float, metavar="SHARE", help="with --init: take this "
                   "share of each target from the starting network's own estimate of the same "
                   "view before rendering (0: off), so a fine-tune keeps what it did on ordinary "
                   "films")
    p.add_argument("--ema", type=float, help="decay of a moving average of the weights, "
                   "validated and saved (such as 0.998; 0: off)")
    p.add_argument("--early-stopping-patience", type=_positive_int,
                   help="epochs without a better validation MAE before stopping")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget (stops after an epoch)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when writing to a terminal)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random affine and intensity changes on each batch")
    p.add_argument("--val-fraction", type=float, help="share of films for validation (0-1)")
    p.add_argument("--test-fraction", type=float, help="share of films held out (0-1)")
    p.add_argument("--seed", type=int, help="for the split, the weights and the batches")
    p.add_argument("--precision", help="auto | 32-true | bf16-mixed | 16-mixed")
    p.add_argument("--accelerator", help="auto | cpu | gpu")
    p.add_argument("--devices", help="auto or a number of devices (GPUs)")
    p.add_argument("--num-nodes", type=_positive_int, help="machines (DDP)")
    p.add_argument("--workers", type=int, help="preprocessing processes (0: all cores)")
    p.add_argument("--logger", choices=("csv", "tensorboard"), help="csv: metrics.csv and "
                   "plots (default); tensorboard: also TensorBoard curves in RUN_DIR/tensorboard "
                   "(the tensorboard extra)")
    p.add_argument("--dry-run", action="store_true", help="one training and one validation "
                   "batch in a temporary folder, to check config, data and device; keeps nothing")
    p.set_defaults(func=cmd_train)


# --------------------------------------------------------------------------------- evaluate
def cmd_evaluate(a: argparse.Namespace) -> int:
    from boneage.evaluation.evaluate import evaluate

    metrics, errors = evaluate(a.model, a.images, a.labels, a.out, a.subset, a.skip_invalid,
                               a.workers or 0, progress=not a.json, tta=a.tta)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if a.json:
        from boneage.fileio import to_json

        print(to_json(metrics))
    else:
        lo, hi = metrics["mae_ci95"]
        iv = metrics.get("interval")
        print(f"n={metrics['n']}  MAE {metrics['mae']:.2f} months (95% CI {lo:.2f}-{hi:.2f})  "
              f"RMSE {metrics['rmse']:.2f}  R² {metrics['r2']:.3f}"
              + (f"  interval coverage {iv['coverage']:.1%}, mean width {iv['mean_width']:.1f}"
                 if iv else "")
              + (f"  -> {a.out}/report.html" if a.out else ""))
    return 1 if errors else 0


def _parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics, plots and an HTML report on a labelled set")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="default (the bundled model), a run folder or a checkpoint")
    _add_data_args(p, labels_required=True)
    p.add_argument("--out", metavar="REPORT_DIR", help="write metrics.json, predictions.csv, "
                   "plots and report.html here")
    p.add_argument("--subset", choices=("train", "val", "test"),
                   help="only the films in this part of the model's run split")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--tta", action="store_true", help="test-time augmentation, as `predict` "
                   "does (and interval coverage when the model is calibrated)")
    p.add_argument("--workers", type=_positive_int, help="preprocessing processes")
    p.set_defaults(func=cmd_evaluate)


def cmd_calibrate(a: argparse.Namespace) -> int:
    from boneage.evaluation.evaluate import calibrate_model

    cal = calibrate_model(a.model, a.images, a.labels, a.subset, a.coverage, a.skip_invalid,
                          a.workers or 0, correct=a.correct, choose_views=a.choose_views,
                          correction_weight=a.correction_weight, out=a.out, bands=a.by_band)
    plan = cal.get("tta")
    if plan and a.choose_views:
        c = plan["chosen_on"]
        print(f"estimate: the mean of views {plan['estimate']} of {len(plan['views'])} "
              f"(calibration-film MAE {c['mae_chosen']:.2f} months; identity alone "
              f"{c['mae_identity']:.2f}, the default views {c['mae_default_views']:.2f})")
    corr = cal.get("output_correction")
    if corr:
        from boneage.evaluation.report import signed

        print(f"correction weight {corr['weight']} ({corr['weight_from']}); cross-fitted on "
              "these films, weight: MAE, bias under 6 years, from 14 (months)")
        young, old = corr["crossfit_bias_under_6"], corr["crossfit_bias_from_14"]
        for w, mae in corr["crossfit_mae"].items():
            mark = " <-" if float(w) == corr["weight"] else ""
            print(f"  {w:>5}: {mae:.2f}, {signed(young[w])}, {signed(old[w])}{mark}")
    for row in (cal.get("bands") or {}).get("rows", []):
        print(f"  {'+'.join(row['bands'])}: {row['n']} films, centre {row['shift']:+.3f}, "
              f"q {row['q']:.3f}")
    print(f"calibrated on {cal['n']} films: q={cal['q']:.3f}, coverage "
          f"{cal['calibration_coverage']:.1%} (nominal {cal['coverage']:.0%}), mean width "
          f"{cal['calibration_mean_width']:.1f} months; stored in the model card"
          + (f" of its copy in {a.out} (use --model {a.out})" if a.out else ""))
    return 0


def _parser_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the model's prediction interval on labelled films")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="default (the bundled model), a run folder or a checkpoint")
    _add_data_args(p, labels_required=True)
    p.add_argument("--subset", choices=("train", "val", "test"),
                   help="only the films in this part of the model's run split (use val)")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal coverage (0.9)")
    p.add_argument("--by-band", action="store_true",
                   help="an interval per age band of the estimate (under 2, 2-6, 6-10, 10-14, "
                   "over 14 years; Mondrian conformal), centred on each band's bias, so that "
                   "each band is covered 90%% and a band the model reads well gets a narrower "
                   "interval (docs/prediction.md)")
    p.add_argument("--correct", action=argparse.BooleanOptionalAction, default=True,
                   help="fit a straight line per sex that undoes the pull of estimates towards "
                   "the mean (default on)")
    p.add_argument("--correction-weight", type=float, metavar="W",
                   help="how far the correction goes towards the full inverse, 0-1 (default: "
                   "chosen on these films, the largest weight within 0.02 months of the best "
                   "cross-fitted MAE; more takes bias off the youngest and oldest for some MAE)")
    p.add_argument("--choose-views", action="store_true",
                   help="choose which test-time-augmentation views the estimate averages, on "
                   "these films (use films like those the model will see; default: keep the "
                   "card's views, all averaged)")
    p.add_argument("--out", metavar="DIR",
                   help="a new folder for a recalibrated copy of the model, leaving the model "
                   "as it was (needed for the bundled model)")
    p.add_argument("--workers", type=_positive_int, help="preprocessing processes")
    p.set_defaults(func=cmd_calibrate)


# ---------------------------------------------------------------------------------- compare
def cmd_compare(a: argparse.Namespace) -> int:
    from boneage.evaluation.compare import compare
    from boneage.evaluation.report import fmt

    rows = compare(a.runs, a.out, a.allow_mixed)
    for r in rows:
        ci = f" (95% CI {r['mae_ci95']})" if r["mae_ci95"] else ""
        print(f"{r['name']:<24} {r['arch']:<16} MAE {fmt(r['mae'])}{ci}  RMSE {fmt(r['rmse'])}  "
              f"R² {fmt(r['r2'])}  TTA {r['tta']}  ({r['source']})")
    print(f"-> {a.out}/compare.md, compare.html, compare.png")
    return 0


def _parser_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare trained runs (Markdown, HTML, bar chart)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison", metavar="DIR")
    p.add_argument("--allow-mixed", action="store_true", help="put runs measured differently "
                   "(other films, TTA or not, card vs evaluation) in one table anyway")
    p.set_defaults(func=cmd_compare)


# ---------------------------------------------------------------------------------- predict
def cmd_predict(a: argparse.Namespace) -> int:
    from boneage.inference.api import load_model
    from boneage.inference.batch import BatchOptions, predict_paths
    from boneage.preprocess.prepare import cpu_count

    if a.dicom_out:
        _dicom_extras()
    root = None
    if a.uid_root:
        from boneage.inference.dicom_results import check_uid_root

        root = check_uid_root(a.uid_root)
    from boneage.clinical.growth import Heights, check_reference

    heights = Heights.checked(a.height, a.mother_height, a.father_height,
                              a.weight)  # before the model
    check_reference(a.growth_reference)
    model = load_model(a.model, a.backend, tta=not a.no_tta,
                       explain=bool(a.heatmap or a.report or a.dicom_out))
    if (a.heatmap or a.report or a.dicom_out) and not model.explains:
        from boneage.inference.api import NO_HEATMAP

        print(f"note: {NO_HEATMAP}", file=sys.stderr)
    done, errors = predict_paths(model, a.paths, BatchOptions(
        sex=a.sex, labels=a.labels, chronological_age=a.chronological_age, fmt=a.format,
        out=a.out, heatmap_dir=a.heatmap, report_dir=a.report, dicom_dir=a.dicom_out,
        uid_root=root, identifier=a.identifier, heights=heights or None,
        growth_reference=a.growth_reference, followup=a.followup,
        workers=a.workers or cpu_count(),
        skip_invalid=a.skip_invalid))
    if errors:
        print(f"{done} film(s) estimated, {len(errors)} failed", file=sys.stderr)
    return 1 if errors else 0


def _parser_predict(sub) -> None:
    p = sub.add_parser("predict", help="bone age for films (PNG, JPEG, DICOM) or folders")
    p.add_argument("paths", nargs="+", metavar="PATH", help="film files or folders")
    p.add_argument("--sex", help="M or F, for every film (else --labels or the DICOM header)")
    p.add_argument("--labels", metavar="CSV", help="sex per film (any RSNA label format) and, "
                   "from a chronological_age_months column, each child's age")
    p.add_argument("--skip-invalid", action="store_true",
                   help="drop invalid rows of --labels instead of stopping")
    p.add_argument("--chronological-age", type=float, metavar="MONTHS",
                   help="for the SDS and category, the same for every film: use it for one "
                   "child (else per film from --labels or the DICOM header)")
    p.add_argument("--height", metavar="CM", help="the child's height in cm (for every film: "
                   "one child; else a height_cm column in --labels): height SDS and the "
                   "Bayley-Pinneau adult height")
    p.add_argument("--weight", metavar="KG", help="the child's weight in kg (else a weight_kg "
                   "column in --labels, or the DICOM's PatientWeight): with the heights, the "
                   "Roche-Wainer-Thissen adult height")
    p.add_argument("--mother-height", metavar="CM", help="the mother's height in cm")
    p.add_argument("--father-height", metavar="CM", help="the father's height in cm: with the "
                   "mother's, the mid-parental target height and its range")
    p.add_argument("--followup", metavar="FILE", help="children with several visits (an "
                   "identifier and a study_date per film in --labels, or a DICOM's PatientID "
                   "and StudyDate): their series as a table (.csv or .json); with --report, a "
                   "one-page PDF each")
    p.add_argument("--growth-reference", default="uk-who", metavar="REF",
                   help="uk-who (default) or cdc, for the height figures (docs/growth.md)")
    p.add_argument("--model", default="default", metavar="NAME_OR_PATH",
                   help="an installed model (default: the bundled one), a run folder, a "
                   ".safetensors checkpoint or an .onnx graph")
    p.add_argument("--backend", choices=("torch", "onnx"),
                   help="default: onnx for an installed model that ships an ONNX graph (unless "
                   "--heatmap/--report), else torch if installed; onnx for a .onnx file")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="json: one object per line")
    p.add_argument("--out", metavar="FILE", help="write results here instead of stdout (via a "
                   "temporary file renamed at the end: never half-written)")
    p.add_argument("--heatmap", metavar="DIR", help="write a heatmap (Grad-CAM++) over each "
                   "film, at its shape, as DIR/<stem>.heatmap.png")
    p.add_argument("--report", metavar="DIR", help="write a one-page PDF report per film")
    p.add_argument("--identifier", metavar="ID", help="the patient or accession ID the report "
                   "prints, for one film (for several: an identifier column in --labels)")
    p.add_argument("--dicom-out", metavar="DIR", help="for DICOM films: write the result into "
                   "the film's study as a Structured Report and a Secondary Capture image "
                   "(SR_<uid>.dcm, SC_<uid>.dcm; docs/dicom.md)")
    p.add_argument("--uid-root", metavar="ROOT", help="UID root for --dicom-out's instances")
    p.add_argument("--no-tta", action="store_true",
                   help="one view instead of 8: faster, with a constant-width interval")
    p.add_argument("--workers", type=_positive_int, help="reading processes (default: all cores)")
    p.set_defaults(func=cmd_predict)


# ------------------------------------------------------------------------------------ serve
def cmd_serve(a: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        import uvicorn
    except ImportError:
        raise BoneAgeError(f"the service needs its extras: {install_hint('service')}") from None
    from boneage.inference.api import load_model
    from boneage.service.app import Settings, create_app

    keep = None
    if a.keep_uploads:
        from boneage.fileio import ensure_writable_dir

        keep = ensure_writable_dir(a.keep_uploads)
    key = _api_key(a)
    settings = Settings(api_key=key,
                        max_upload_bytes=int(a.max_upload_mb * 2**20), workers=a.workers,
                        queue=a.queue, keep_uploads=keep and Path(keep),
                        cors_origins=tuple(a.cors_origin or ()), docs=a.docs,
                        per_client=a.per_client)
    app = create_app(load_model(a.model, a.backend), settings)
    from boneage.service.logs import configure_logging
    from boneage.service.protocol import HeaderDeadlineProtocol

    configure_logging()
    print(f"serving {app.state.model.name} on http://{a.host}:{a.port}"
          + (" (API docs at /docs)" if a.docs else ""))
    uvicorn.run(app, host=a.host, port=a.port, log_config=None, log_level="warning",
                access_log=False, http=HeaderDeadlineProtocol, timeout_keep_alive=5)
    return 0


def _api_key(a: argparse.Namespace) -> str | None:
    """The key from --api-key-file, else BONEAGE_API_KEY, else --api-key (which every local
    user can read in the process list: a warning says so)."""
    import os
    import sys

    if a.api_key_file:
        from boneage.fileio import read_text

        key = read_text(a.api_key_file, "API key file").strip()
        if not key or "\n" in key:
            raise BoneAgeError(f"{a.api_key_file}: the API key file must hold one key on one "
                               "line")
        return key
    if a.api_key:
        print("warning: --api-key is visible to every local user in the process list; use "
              "BONEAGE_API_KEY or --api-key-file", file=sys.stderr)
        return a.api_key
    return os.environ.get("BONEAGE_API_KEY") or None


def _parser_serve(sub) -> None:
    p = sub.add_parser("serve", help="web service and page (FastAPI under uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (localhost by default)")
    p.add_argument("--port", type=_bounded(int, 1, 65535), default=8000, help="1-65535")
    p.add_argument("--model", default="default", metavar="NAME_OR_PATH",
                   help="an installed model (default: the bundled one), a run folder, a "
                   ".safetensors checkpoint or an .onnx graph")
    p.add_argument("--backend", choices=("torch", "onnx"))
    p.add_argument("--workers", type=_bounded(int, 1, 64), default=1, help="inference threads")
    p.add_argument("--queue", type=_bounded(int, 0, 10_000), default=8,
                   help="requests waiting beyond the workers before 503 (0 or more)")
    p.add_argument("--api-key-file", metavar="FILE", help="require the key in this file "
                   "(X-API-Key or Authorization: Bearer); or set BONEAGE_API_KEY")
    p.add_argument("--api-key", help="require this key (visible in the process list: prefer "
                   "BONEAGE_API_KEY or --api-key-file)")
    p.add_argument("--per-client", type=_bounded(int, 1, 1000), default=16,
                   help="uploads one client address may send at once (default 16)")
    p.add_argument("--max-upload-mb", type=_bounded(float, 0.01, 4096), default=64.0,
                   help="largest upload accepted, in MB (default 64)")
    p.add_argument("--keep-uploads", metavar="DIR", help="save uploads here (off by default)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow this origin (repeatable; CORS is off by default)")
    p.add_argument("--docs", action="store_true", help="serve the interactive API docs at "
                   "/docs (they load Swagger UI from a CDN, so they need internet)")
    p.set_defaults(func=cmd_serve)


# ------------------------------------------------------------------------------- dicom-node
def _dicom_extras() -> None:
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("pynetdicom", "highdicom")):
        raise BoneAgeError(f"DICOM results need their extras: {install_hint('dicom')}")


def cmd_dicom_node(a: argparse.Namespace) -> int:
    import signal
    import threading

    _dicom_extras()
    from boneage.dicomnode.guard import Limits
    from boneage.dicomnode.node import Destination, Node, check_ae_title, quiet_pynetdicom
    from boneage.dicomnode.spool import Spool
    from boneage.inference.api import load_model
    from boneage.inference.dicom_results import check_uid_root
    from boneage.service.logs import configure_logging

    destination = Destination.parse(a.send_to)  # every argument checked before the model loads
    check_ae_title(a.ae_title)
    for aet in a.allow_aet or ():
        check_ae_title(aet, "--allow-aet")
    root = check_uid_root(a.uid_root) if a.uid_root else None
    spool = Spool(a.spool)
    configure_logging()
    quiet_pynetdicom()
    model = load_model(a.model, a.backend, tta=not a.no_tta, explain=not a.no_heatmap)
    node = Node(model, spool, destination, ae_title=a.ae_title, host=a.host, port=a.port,
                uid_root=root, allow_aets=a.allow_aet, allow_hosts=a.allow_host,
                retry_max=a.retry_max, heatmap=not a.no_heatmap,
                max_associations=a.max_associations,
                limits=Limits(max_pdu_bytes=a.max_pdu_kb << 10,
                              max_dataset_bytes=a.max_film_mb << 20,
                              pdu_seconds=a.pdu_timeout, max_per_host=a.max_per_host))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    node.start()
    print(f"DICOM node {a.ae_title} on {a.host}:{a.port} with {model.name}; results to "
          f"{destination}; spool {a.spool}", flush=True)
    done.wait()
    node.stop()
    return 0


def _parser_dicom_node(sub) -> None:
    p = sub.add_parser("dicom-node", help="a DICOM node: films in from PACS, the bone age back "
                       "into the study as SR and Secondary Capture (docs/dicom.md)")
    p.add_argument("--ae-title", default="BONEAGE", help="this node's AE title")
    p.add_argument("--host", default="0.0.0.0", help="bind address (default all)")
    p.add_argument("--port", type=_bounded(int, 1, 65535), default=11112, help="1-65535")
    p.add_argument("--send-to", required=True, metavar="AET@HOST:PORT",
                   help="where results go (the PACS), e.g. ORTHANC@10.0.0.5:4242")
    p.add_argument("--spool", required=True, metavar="DIR", help="the durable spool: films "
                   "received and results owed survive a restart here")
    p.add_argument("--allow-aet", action="append", metavar="AET",
                   help="accept associations only from this calling AE title (repeatable)")
    p.add_argument("--allow-host", action="append", metavar="IP",
                   help="accept films only from this address (repeatable)")
    p.add_argument("--uid-root", metavar="ROOT", help="your organisation's UID root for the "
                   "results (default pydicom's 1.2.826.0.1.3680043.8.498.)")
    p.add_argument("--retry-max", type=_bounded(float, 0.1, 3600), default=60.0,
                   metavar="SECONDS", help="longest wait between tries while the destination "
                   "is down (default 60)")
    p.add_argument("--model", default="default", metavar="NAME_OR_PATH",
                   help="an installed model, a run folder, a checkpoint or an .onnx")
    p.add_argument("--backend", choices=("torch", "onnx"))
    p.add_argument("--max-associations", type=_bounded(int, 1, 1000), default=32,
                   help="senders served at once (default 32; each holds one film in memory)")
    p.add_argument("--max-per-host", type=_bounded(int, 1, 1000), default=8,
                   help="associations open at once from one address (default 8)")
    p.add_argument("--max-film-mb", type=_bounded(int, 1, 4096), default=256,
                   help="largest film (data set) received, counted as it arrives; a larger "
                   "one aborts the association (default 256)")
    p.add_argument("--max-pdu-kb", type=_bounded(int, 16, 65536), default=1024,
                   help="largest PDU a peer may send; a header claiming more aborts the "
                   "association before it is read (default 1024)")
    p.add_argument("--pdu-timeout", type=_bounded(float, 0.5, 3600), default=10.0,
                   metavar="SECONDS", help="a PDU must arrive whole this long after its first "
                   "byte (default 10)")
    p.add_argument("--no-heatmap", action="store_true",
                   help="result images without the heatmap (faster)")
    p.add_argument("--no-tta", action="store_true", help="one view instead of 8 (faster)")
    p.set_defaults(func=cmd_dicom_node)


# ----------------------------------------------------------------------------------- export
def cmd_export(a: argparse.Namespace) -> int:
    from boneage.inference.export import export_onnx

    out = export_onnx(a.model, a.out, opset=a.opset, share_weights=a.share_weights)
    print(f"exported {a.model} -> {out} (+ {out.with_suffix('.json').name})")
    return 0


def _parser_export(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (runs without torch)")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="default (the bundled model), a run folder or a checkpoint")
    p.add_argument("--out", required=True, metavar="FILE.onnx")
    p.add_argument("--opset", type=_positive_int, default=17)
    p.add_argument("--share-weights", action="store_true",
                   help="read the weights from the checkpoint's .safetensors beside the .onnx "
                   "(no second copy; keep the two files together)")
    p.set_defaults(func=cmd_export)


# --------------------------------------------------------------------------------- ensemble
def cmd_ensemble(a: argparse.Namespace) -> int:
    from boneage.models.ensemble import build_ensemble

    card = build_ensemble(a.runs, a.out, dtype=a.dtype)
    print(f"ensemble of {len(a.runs)} -> {a.out}/best.safetensors ({card['parameters']:,} "
          f"parameters, {a.dtype}); next: boneage calibrate --model {a.out} --subset val ..., "
          "then boneage evaluate")
    return 0


def _parser_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="average trained runs into one model",
                       description="Average trained runs (same preprocessing and split) into "
                       "one model that predict, evaluate, calibrate, export and serve use as "
                       "any other. Calibrate it afterwards: the members' own calibrations do "
                       "not carry over.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoints (2 or more)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder for the ensemble")
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32",
                   help="weight storage: float16 halves the file, int8 quarters it (per-channel "
                   "scales; the network still computes in float32)")
    p.set_defaults(func=cmd_ensemble)


# ------------------------------------------------------------------------------ interpolate
def cmd_interpolate(a: argparse.Namespace) -> int:
    from boneage.models.ensemble import interpolate_runs

    interpolate_runs(a.start, a.end, a.alpha, a.out, dtype=a.dtype)
    print(f"{1 - a.alpha:g} x {a.start} + {a.alpha:g} x {a.end} -> {a.out}/best.safetensors "
          f"({a.dtype}); next: boneage calibrate --model {a.out} --subset val ..., then "
          "boneage evaluate")
    return 0


def _parser_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="a network between a run and its own fine-tune",
                       description="Average the weights of a trained run (START) and its own "
                       "fine-tune (END, `boneage train --init START`): (1 - alpha) x START + "
                       "alpha x END. Keeps much of what each does well at one network's cost "
                       "(WiSE-FT); choose alpha on validation films. Calibrate it afterwards.")
    p.add_argument("start", metavar="START", help="run folder or checkpoint")
    p.add_argument("end", metavar="END", help="run folder or checkpoint fine-tuned from START")
    p.add_argument("--alpha", type=float, required=True,
                   help="0 gives START, 1 gives END")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder for the network")
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32",
                   help="weight storage (see boneage ensemble --help)")
    p.set_defaults(func=cmd_interpolate)


# ------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line naming the command and its --help, and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from boneage import __version__

    parser = _Parser(
        prog="boneage",
        description="Skeletal (bone) age from a hand radiograph: prepare data, train, evaluate, "
        "compare models.",
    )
    parser.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _parser_prepare(sub)
    _parser_models(sub)
    _parser_train(sub)
    _parser_evaluate(sub)
    _parser_calibrate(sub)
    _parser_compare(sub)
    _parser_ensemble(sub)
    _parser_interpolate(sub)
    _parser_predict(sub)
    _parser_serve(sub)
    _parser_dicom_node(sub)
    _parser_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BoneAgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work was kept", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, a vanished file: one line, not a traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (try a smaller --batch-size or --image-size)", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # an optional extra that this install lacks
        extra = _EXTRAS.get((e.name or "").split(".")[0], "train")
        print(f"error: this needs the Python package {e.name!r}: {install_hint(extra)}",
              file=sys.stderr)
        return 2


_EXTRAS = {"torch": "train", "monai": "train", "lightning": "train", "onnxruntime": "onnx",
           "onnx": "export", "fastapi": "service", "uvicorn": "service", "multipart": "service"}


if __name__ == "__main__":
    sys.exit(main())
