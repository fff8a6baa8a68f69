"""Training throughput (images/s) per architecture, input size and precision.

    python benchmarks/train_throughput.py [--archs densenet121 resnet34_cbam] [--sizes 100 128 256]

One optimiser step = forward, Huber loss, backward, AdamW step, channels_last, as in training.
On a CUDA GPU it times fp32 and bf16/fp16 autocast there; on a CPU fp32 and bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from boneage.models.registry import build_model
from boneage.training.hardware import cpu_has_fast_bf16, device_description


def rate(arch: str, size: int, precision: str, device: str, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(arch).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    sex = torch.randint(0, 2, (batch,), device=device).float()
    y = torch.rand(batch, device=device) * 200
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss = F.huber_loss(model(x, sex).float(), y, delta=15.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, kernel selection)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["densenet121", "resnet34_cbam"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 128, 256])
    ap.add_argument("--batch", type=int, default=0, help="default: 8 on CPU, 64 on GPU")
    ap.add_argument("--steps", type=int, default=0, help="default: 2 on CPU, 20 on GPU")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = a.batch or (64 if device == "cuda" else 8)
    steps = a.steps or (20 if device == "cuda" else 2)
    precisions = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
    rows = []
    for arch in a.archs:
        for size in a.sizes:
            for prec in precisions:
                r = rate(arch, size, prec, device, batch, steps)
                rows.append({"arch": arch, "size": size, "precision": prec,
                             "images_per_s": round(r, 2)})
                print(f"{arch:<14} {size:>4} px  {prec:<5} {r:8.2f} img/s", flush=True)
    result = {"device": device_description("auto"), "cpu_fast_bf16": cpu_has_fast_bf16(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": batch,
              "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "train_throughput_gpu.json" if device == "cuda" else "train_throughput_cpu.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
