"""Recalibrate the bundled model's 90% interval by age band of the estimate and sex (issue #41),
from the predictions `boneage evaluate --tta` made of the validation thumbnails (the films the
interval was calibrated on before; the networks, their output correction and the interval
without test-time views stay as they are), then record the held-out figures.

    boneage evaluate --model default --images DATA/boneage-training-dataset \
        --labels VAL_LABELS.csv --tta --out runs/eval-v7-val
    python tools/band_calibration.py --val runs/eval-v7-val --version 7.2 --change "..."
    boneage evaluate --model default ... TEST_LABELS.csv --tta --out runs/eval-v7.2-test
    python tools/band_calibration.py --record-heldout runs/eval-v7.2-test \
        --record-fullres runs/eval-v7.2-fullres

(VAL_LABELS / TEST_LABELS: the rows of boneage-training-dataset.csv in the val / test split of
benchmarks/results/default_split.csv.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from interval_bands import read  # noqa: E402

from boneage.inference.uncertainty import calibrate  # noqa: E402
from boneage.models.checkpoint import BUNDLED, read_card, write_card  # noqa: E402

WEIGHTS = BUNDLED / "default.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", help="evaluate --tta folder of the validation thumbnails")
    ap.add_argument("--version")
    ap.add_argument("--change", action="append", default=[])
    ap.add_argument("--record-heldout", help="evaluate --tta folder of the held-out films")
    ap.add_argument("--record-fullres", help="evaluate --tta folder of rsna-val-fullres")
    a = ap.parse_args()
    card = read_card(WEIGHTS)
    if a.val:
        d = read(a.val)
        old = card["calibration"]
        cal = calibrate(d["y"], d["m"], d["s"], coverage=old["coverage"],
                        n_views=old["tta_views"], bands=True, male=d["male"])
        cal["single"] = old["single"]  # the interval without test-time views stays
        cal.update(labels=old.get("labels"), subset=old.get("subset"), failed=old.get("failed"))
        card["calibration"] = cal
        if a.version:
            card["version"] = a.version
            card["changelog"] = [{"version": a.version, "changes": a.change}] + card.get(
                "changelog", [])
        print(json.dumps({k: v for k, v in cal.items() if k != "single"}, indent=1))
    if a.record_heldout:
        m = json.loads((Path(a.record_heldout) / "metrics.json").read_text())
        card["heldout_metrics"]["interval"] = m["interval"]
        assert abs(m["mae"] - card["heldout_metrics"]["mae"]) < 0.01, "other estimates?"
    if a.record_fullres:
        m = json.loads((Path(a.record_fullres) / "metrics.json").read_text())
        card["fullres_metrics"]["interval_coverage"] = m["interval"]["coverage"]
        assert abs(m["mae"] - card["fullres_metrics"]["mae"]) < 0.01, "other estimates?"
    write_card(WEIGHTS, card)
    print(f"{WEIGHTS.with_suffix('.json')}: version {card['version']}, coverage held out "
          f"{card['heldout_metrics']['interval']['coverage']}, full resolution "
          f"{card['fullres_metrics'].get('interval_coverage')}")


if __name__ == "__main__":
    main()
