"""`boneage evaluate`: a model on any labelled set -> metrics.json, predictions.csv, plots and a
self-contained HTML report (with the run's training curves when there is a run folder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boneage.data.labels import LabelTable, load_table
from boneage.data.splits import load_split
from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_csv, atomic_write_json, ensure_writable_dir
from boneage.preprocess.prepare import cpu_count, preprocess_many

if TYPE_CHECKING:
    from boneage.inference.predictor import Estimates

WORST = 12  # films in the report's "largest errors" gallery


def select_subset(table: LabelTable, run_dir: Path | None, subset: str | None) -> LabelTable:
    """Keep only the films of one part (train/val/test) of the model's run split."""
    if subset is None:
        return table
    if run_dir is None or not (run_dir / "split.csv").is_file():
        raise BoneAgeError("--subset needs a model inside a run folder that has split.csv")
    split = load_split(run_dir / "split.csv")
    keep = [i for i in table.ids if split.get(i) == subset]
    if not keep:
        raise BoneAgeError(f"no film of these labels is in the run's {subset!r} split")
    return table.subset(keep)


def predict_table(predictor, table: LabelTable, tta: bool, workers: int = 0,
                  progress: bool = True):
    """(records read, true ages, sex, Estimates, errors)."""
    prepared = preprocess_many([r.path for r in table], predictor.pipeline.cached_part,
                               workers or cpu_count(), progress)
    errors = [err for _, _, err in prepared if err]
    ok = [i for i, (img, _, _) in enumerate(prepared) if img is not None]
    if not ok:
        raise BoneAgeError("no film could be read; nothing to evaluate")
    imgs = np.stack([prepared[i][0] for i in ok])
    recs = [table.records[i] for i in ok]
    male = np.array([bool(r.male) for r in recs])
    y = np.array([r.months for r in recs], float)
    return recs, y, male, predictor.estimate(imgs, male, tta), errors


def load_labelled(model: str, images: str | None, labels: str, subset: str | None,
                  skip_invalid: bool):
    from boneage.inference.api import load_model

    # the same backend choice as predict: the bundled model's ONNX graph when heatmaps are not
    # needed (so evaluate and calibrate run without torch), else PyTorch
    predictor = load_model(model, explain=False).predictor
    folder = predictor.path.parent  # a run (config.yaml) or an ensemble of runs (split.csv)
    run_dir = folder if any((folder / f).is_file() for f in ("config.yaml", "split.csv")) else None
    table = load_table(images, labels, skip_invalid=skip_invalid)
    if not table.labelled:
        raise BoneAgeError(f"{labels}: evaluation needs a bone age for every film")
    return predictor, run_dir, select_subset(table, run_dir, subset)


def evaluate(model: str, images: str | None, labels: str, out: str | None = None,
             subset: str | None = None, skip_invalid: bool = False, workers: int = 0,
             progress: bool = True, tta: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Return (metrics, errors for films that could not be read)."""
    from boneage.evaluation.metrics import evaluation_metrics, interval_metrics

    predictor, run_dir, table = load_labelled(model, images, labels, subset, skip_invalid)
    outdir = ensure_writable_dir(out) if out else None
    recs, y, male, est, errors = predict_table(predictor, table, tta, workers, progress)
    pred = est.mean
    metrics = evaluation_metrics(y, pred, male)
    cal = predictor.card.get("calibration")
    from boneage.inference.uncertainty import has_interval, interval

    lo = hi = None
    if has_interval(cal, tta):
        lo, hi = interval(pred, est.spread, cal, tta, male)
        metrics["interval"] = interval_metrics(y, lo, hi, male, cal["coverage"])
    metrics.update(model=str(predictor.path), arch=predictor.card["arch"], labels=str(labels),
                   subset=subset, tta=tta, failed=len(errors))
    if outdir is not None:
        atomic_write_json(outdir / "metrics.json", metrics)
        header = ["id", "male", "true_months", "predicted_months", "error_months"]
        rows = [[r.id, int(bool(r.male)), r.months, round(float(p), 2),
                 round(float(p) - r.months, 2)] for r, p in zip(recs, pred, strict=True)]
        if lo is not None:
            header += ["interval_low_months", "interval_high_months"]
            rows = [[*row, round(float(a), 2), round(float(b), 2)]
                    for row, a, b in zip(rows, lo, hi, strict=True)]
        if tta:  # the views' spread the interval scales with (to study other calibrations)
            header.append("spread_months")
            rows = [[*row, round(float(s), 3)] for row, s in zip(rows, est.spread, strict=True)]
        atomic_write_csv(outdir / "predictions.csv", header, rows)
        from boneage.evaluation.report import write_report
        from boneage.plots import evaluation_figures

        figures = evaluation_figures(y, pred, male, metrics, outdir)
        write_report(outdir / "report.html", metrics, figures, predictor.card, run_dir,
                     largest_errors(predictor, recs, pred))
    return metrics, errors


def largest_errors(predictor, recs: list, pred: np.ndarray, k: int = WORST
                   ) -> list[dict[str, Any]]:
    """The k films read worst, each with the film and what the model saw of it (its cached
    preprocessing): a failed hand crop, a turned hand or a fist shows at a glance."""
    from boneage.data.images import read_image
    from boneage.preprocess.steps import ToUint8

    err = pred - np.array([r.months for r in recs], float)
    worst = []
    for i in np.argsort(-np.abs(err))[:k]:
        r = recs[int(i)]
        try:
            film = ToUint8()(read_image(r.path), {})
            seen = predictor.pipeline.cached_part(film, {})
        except BoneAgeError:  # read once already; a file changed since is left out
            continue
        worst.append({"id": r.id, "male": bool(r.male), "true": float(r.months),
                      "predicted": float(pred[i]), "error": float(err[i]), "film": film,
                      "input": seen})
    return worst


def _chosen_plan(y: np.ndarray, est: Estimates) -> tuple[Estimates, dict[str, Any]]:
    """(estimates under the plan chosen on these films, the card's `tta` entry) from estimates
    over the candidate views."""
    from boneage.inference.predictor import Estimates
    from boneage.inference.uncertainty import DEFAULT_TTA, choose_plan

    plan, keep = choose_plan(y, est.views)
    views = est.views[:, keep]
    mean = views[:, plan.estimate_views].mean(axis=1)

    def mae(p: np.ndarray) -> float:
        return round(float(np.mean(np.abs(p - y))), 3)

    entry = plan.to_dict() | {"chosen_on": {
        "n": int(len(y)), "mae_identity": mae(views[:, 0]),
        "mae_default_views": mae(est.views[:, :len(DEFAULT_TTA)].mean(axis=1)),
        "mae_chosen": mae(mean)}}
    return Estimates(mean, views.std(axis=1), views[:, 0], est.features, views), entry


def calibrate_model(model: str, images: str | None, labels: str, subset: str | None = None,
                    coverage: float = 0.9, skip_invalid: bool = False, workers: int = 0,
                    progress: bool = True, correct: bool = True, choose_views: bool = False,
                    correction_weight: float | None = None, out: str | None = None,
                    bands: bool = False) -> dict[str, Any]:
    """Choose the views the TTA estimate averages (with `choose_views`; else the card's plan
    stays), fit the regression-to-the-mean correction (unless `correct` is False; its weight
    chosen on these films unless `correction_weight` sets it), the 90%
    intervals (with and without TTA, split-conformal) and the feature reference of the "not a
    hand" check on labelled films; store them in the model card, or with `out` in the card of
    a copy of the model in that new folder (the only way for an installed model: the package's
    own card stays as shipped)."""
    from boneage.inference.correction import apply_correction, check_weight, fit_correction
    from boneage.inference.uncertainty import CANDIDATE_VIEWS, TTAPlan, calibrate
    from boneage.models.checkpoint import BUNDLED, check_new_folder, copy_model, write_card

    if not 0.5 <= coverage < 1:
        raise BoneAgeError("coverage must be in [0.5, 1)")
    check_weight(correction_weight)  # before any film is read
    if correction_weight is not None and not correct:
        raise BoneAgeError("a correction weight needs the correction on (drop --no-correct)")
    if out is not None:
        check_new_folder(out)
    predictor, _, table = load_labelled(model, images, labels, subset, skip_invalid)
    if out is None and predictor.path.resolve().parent == BUNDLED.resolve():
        raise BoneAgeError(f"{model}: an installed model keeps the card it shipped with; give "
                           "--out DIR for a recalibrated copy (then use --model DIR)")
    predictor.card.pop("output_correction", None)  # fitted on the network's own estimates
    if choose_views:  # every candidate view is made once; the plan keeps what it needs
        predictor.tta_plan = TTAPlan(CANDIDATE_VIEWS)
    _, y, male, est, errors = predict_table(predictor, table, True, workers, progress)
    if len(y) < 10:
        raise BoneAgeError("calibration needs at least 10 labelled films")
    card = dict(predictor.card)
    if choose_views:
        est, card["tta"] = _chosen_plan(y, est)
    if correct:
        corr = fit_correction(y, est.mean, male, correction_weight)
        card["output_correction"] = corr
        slope = np.where(male, corr["male"][1], corr["female"][1])
        est.mean, est.single = (apply_correction(v, male, corr) for v in (est.mean, est.single))
        est.spread = est.spread * np.abs(slope)
    cal = calibrate(y, est.mean, est.spread, est.single, coverage, est.views.shape[1], bands,
                    male)
    cal.update(labels=str(labels), subset=subset, failed=len(errors))
    card["calibration"] = cal
    if est.features is not None:
        from boneage.inference.quality import embedding_reference

        card["embedding"] = embedding_reference(est.features)
    if out is not None or "recalibrated" in card:  # a copy says what it is a copy of
        import datetime

        card["recalibrated"] = {"from": card.get("recalibrated", {}).get("from", str(model)),
                                "labels": Path(labels).name, "subset": subset, "n": int(len(y)),
                                "date": datetime.date.today().isoformat()}
    if out is None:
        write_card(predictor.path, card)  # (and a copy's markdown card with it)
        copy = {}
    else:
        copy = {"copy": str(copy_model(predictor.path, card, out))}
    return (cal | copy | ({"tta": card["tta"]} if "tta" in card else {})
            | ({"output_correction": card["output_correction"]} if correct else {}))
