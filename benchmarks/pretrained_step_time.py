"""Seconds per training step of the pretrained backbones on this machine's CPU (issue #41): each
architecture at each input size (`upsample` inside the network) and freezing choice, batch 64,
channels-last, in the precision `precision: auto` picks here; forward, Huber loss, backward and
an AdamW step on random films. Writes benchmarks/results/pretrained_step_time.json.

    python benchmarks/pretrained_step_time.py [--steps 4] [--archs efficientnet_lite0 resnet18]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from boneage.models.registry import build_model
from boneage.training.hardware import pick_precision

OUT = Path(__file__).parent / "results" / "pretrained_step_time.json"


def step_time(arch: str, upsample: float, freeze: int, batch: int, steps: int,
              dtype: torch.dtype | None) -> float:
    kwargs = {"upsample": upsample} | ({"freeze": freeze} if arch.startswith("eff") else {})
    model = build_model(arch, **kwargs).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.rand(batch, 1, 100, 100).to(memory_format=torch.channels_last)
    sex = torch.randint(0, 2, (batch,)).float()
    y = torch.rand(batch) * 200
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.huber_loss(model(x, sex).float(), y, delta=15.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / steps  # the first step warms up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--archs", nargs="+", default=["efficientnet_lite0", "resnet18"])
    a = ap.parse_args()
    precision = pick_precision("auto", "cpu")
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    rows = []
    for arch in a.archs:
        for upsample in (1.0, 1.6, 2.0):
            for freeze in ((0, 4, 8) if arch.startswith("eff") else (0,)):
                s = step_time(arch, upsample, freeze, a.batch, a.steps, dtype)
                epoch_min = s * (9_486 / a.batch) / 60  # the training split of default_split.csv
                rows.append({"arch": arch, "input_px": int(100 * upsample), "freeze": freeze,
                             "s_per_step": round(s, 2), "minutes_per_epoch": round(epoch_min, 1)})
                print(rows[-1], flush=True)
    OUT.write_text(json.dumps({"batch": a.batch, "precision": precision,
                               "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
