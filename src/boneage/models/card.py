"""A model card in markdown (as Hugging Face model cards read), rendered from the JSON card so
the two never disagree: intended use, limits, inputs and outputs, data, metrics by sex and age
band, bias, uncertainty, changelog, terms. `tools/default_model.py` writes it beside the
bundled weights; `boneage models --card NAME` prints any model's."""

from __future__ import annotations

from typing import Any

INTENDED_USE = (
    "Estimating skeletal (bone) age in months from a posteroanterior radiograph of a child's "
    "left hand and the child's sex, as decision support for a clinician who reads the film; "
    "for research and teaching. Not a medical device: it has not been cleared or approved "
    "for clinical use by any regulator.")
LIMITS = [
    "Trained on 100x100 thumbnails of RSNA films (North American children, 2017 challenge "
    "data): detail finer than the thumbnails show is not used, and other populations, "
    "scanners and hospitals may read differently (measure on your own films first).",
    "Estimates lean towards the middle of the age range (the per-sex linear correction "
    "reduces but does not remove it): see the bias by age band below.",
    "Films that are not a left hand radiograph (other body parts, photographs, colour "
    "pictures, noise) are flagged as not meaningful, not refused: read the warnings.",
    "The interval is a 90% split-conformal interval calibrated on {calibrated}; it holds on "
    "average over films like those, not for every film.",
]


def _f(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _metrics_rows(groups: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| group | n | MAE (months) | MAE 95% CI | RMSE | bias (months) |",
            "|---|---|---|---|---|---|"]
    for name, m in groups.items():
        ci = m.get("mae_ci95")
        rows.append(f"| {name} | {m['n']} | {_f(m['mae'])} | "
                    f"{f'{ci[0]:.2f}-{ci[1]:.2f}' if ci else '-'} | {_f(m.get('rmse'))} | "
                    f"{_f(m.get('bias'))} |")
    return rows


def architecture(card: dict[str, Any]) -> str:
    """`resnet18` {options}, or for an ensemble the mean of its members, each so described."""
    kwargs = card.get("model_kwargs") or {}
    if card["arch"] != "ensemble":
        return f"`{card['arch']}` {kwargs}".rstrip()
    members = kwargs.get("members", [])
    return (f"ensemble, the mean of {len(members)} networks: "
            + "; ".join(architecture(m) for m in members))


def render_markdown(card: dict[str, Any]) -> str:
    name = card.get("name", "model")
    lines = [f"# Model card: {name}" + (f" (version {card['version']})"
                                         if card.get("version") else ""), ""]
    params = card.get("parameters")
    lines += [f"- Architecture: {architecture(card)}"
              + (f", {params / 1e6:.1f} M parameters" if params else ""),
              f"- Input: prepared films of {card['input_size']} x {card['input_size']} px "
              "(pipeline below) and sex; output: bone age in months",
              f"- Weights: {card.get('weights_dtype', 'float32')} safetensors"
              + (" and an ONNX graph reading the same weights" if card.get("onnx") else ""), ""]
    again = card.get("recalibrated")
    calibrated = (f"{again['n']:,} films of {again['labels']}" if again
                  else "the validation films")
    lines += ["## Intended use", "", INTENDED_USE, "", "## Limits", ""]
    lines += [f"- {t.format(calibrated=calibrated)}" for t in LIMITS] + [""]
    if again:  # a copy made by `calibrate --out`: what changed, and what did not
        lines += ["## Recalibration", "",
                  f"A copy of `{again['from']}` recalibrated on {again['n']:,} films of "
                  f"{again['labels']} (`boneage calibrate --out`, {again['date']}): the "
                  "interval, the output correction and the \"not a hand\" reference were "
                  "refitted on them; the weights, the preprocessing and the evaluation below "
                  "are the original model's.", ""]
    io = card.get("io")
    if io:
        lines += ["## Inputs and outputs", "",
                  "| name | dtype | shape | range | units / encoding |", "|---|---|---|---|---|"]
        for kind in ("inputs", "outputs"):
            for e in io[kind]:
                enc = e.get("encoding")
                units = (", ".join(f"{k} = {v:g}" for k, v in enc.items()) if enc
                         else e.get("units", ""))
                rng = e.get("range")
                lines.append(f"| {kind[:-1]} `{e['name']}` | {e['dtype']} | "
                             f"{' x '.join(map(str, e['shape']))} | "
                             f"{f'{rng[0]:g}-{rng[1]:g}' if rng else '-'} | {units} |")
        lines.append("")
    steps = (card.get("pipeline") or {}).get("steps", [])
    lines += ["## Preprocessing (replayed exactly at inference)", ""]
    lines += [f"{i}. `{s['name']}`" + (" " + ", ".join(f"{k}={v}" for k, v in s.items()
                                                        if k != "name") if len(s) > 1 else "")
              for i, s in enumerate(steps, 1)] + [""]
    data = card.get("data") or {}
    counts = data.get("split_counts") or {}
    lines += ["## Training data", "", data.get("source", "-"), ""]
    if counts:
        lines += [f"Films: {counts.get('train', 0):,} training, {counts.get('val', 0):,} "
                  f"validation, {counts.get('test', 0):,} held out.", ""]
    held = card.get("heldout_metrics")
    if held:
        iv = held.get("interval") or {}
        lines += ["## Evaluation (held-out films, never used for training or model choice)", "",
                  f"MAE **{held['mae']:.2f}** months (95% CI {held['mae_ci95'][0]:.2f}-"
                  f"{held['mae_ci95'][1]:.2f}), RMSE {held['rmse']:.2f}, R² {held['r2']:.3f}, "
                  f"bias {held['bias']:+.2f} months, n = {held['n']:,}"
                  + (", with test-time augmentation" if held.get("tta") else "")
                  + (f"; 90% interval coverage {iv['coverage']:.1%}, mean width "
                     f"{iv['mean_width']:.1f} months" if iv.get("coverage") else "") + ".", ""]
        lines += ["By sex:", ""] + _metrics_rows(held["by_sex"]) + [""]
        lines += ["By age band (bias = mean of estimate minus true age):", ""]
        lines += _metrics_rows(held["by_age_band"]) + [""]
    full = card.get("fullres_metrics")
    if full:
        lines += [f"On full-resolution films ({full.get('set', '?')}: "
                  f"{full.get('description', '')}): MAE **{full['mae']:.2f}** months, bias "
                  f"{full.get('bias', 0):+.2f}, n = {full['n']}"
                  + (f", 90% interval coverage {full['interval_coverage']:.1%}"
                     if full.get("interval_coverage") else "")
                  + f" ({full.get('source', '')}). Reports quote this figure for films of "
                  "512 px or more.", ""]
    corr = card.get("output_correction")
    if corr:
        lines += ["## Output correction", "",
                  f"{corr['method']}: male {corr['male'][0]:+.2f} + {corr['male'][1]:.4f} x "
                  f"estimate, female {corr['female'][0]:+.2f} + {corr['female'][1]:.4f} x "
                  f"estimate (n = {corr['n']:,}"
                  + (f"; weight {corr['weight']:g} of the way to the inverse line"
                     if "weight" in corr else "") + ").", ""]
    tta = card.get("tta")
    if tta:
        views = "; ".join(f"{i}: rotation {v[0]:g} deg, zoom x{v[1]:g}, shift ({v[2]:g}, "
                          f"{v[3]:g})" for i, v in enumerate(tta["views"]))
        chosen = tta.get("chosen_on") or {}
        lines += ["## Test-time augmentation", "",
                  f"Views {views}. The estimate is the mean of views {tta['estimate']}; the "
                  "interval scales with the spread over all of them"
                  + (f". Chosen on {chosen['n']:,} calibration films: MAE "
                     f"{chosen['mae_chosen']:.2f} months, against {chosen['mae_identity']:.2f} "
                     "for the identity view alone "
                     f"and {chosen['mae_default_views']:.2f} for the mean of the 8 default views"
                     if chosen else "") + ".", ""]
    if card.get("changelog"):
        lines += ["## Changelog", ""]
        for entry in card["changelog"]:
            lines.append(f"- **{entry['version']}**: " + "; ".join(entry["changes"]))
        lines.append("")
    if card.get("terms"):
        lines += ["## Terms", "", card["terms"], ""]
    return "\n".join(lines)
