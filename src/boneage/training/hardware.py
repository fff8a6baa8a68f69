"""Pick the fastest numeric precision the hardware really supports.

bf16 autocast is about 3x faster than fp32 on CPUs with AMX, but about 10x *slower* on CPUs
without bf16 instructions (measured on an AVX2-only EPYC), so "auto" checks the CPU flags.
"""

from __future__ import annotations

import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def uses_cuda(accelerator: str) -> bool:
    import torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def pick_precision(requested: str, accelerator: str) -> str:
    if requested != "auto":
        return requested
    import torch

    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def device_description(accelerator: str) -> str:
    import torch

    if uses_cuda(accelerator):
        n = torch.cuda.device_count()
        return f"{n} x {torch.cuda.get_device_name(0)}"
    return f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"


def environment() -> dict[str, str]:
    """What a run was made with: package versions, Python, and the boneage source's git commit
    (with "+dirty" when it had uncommitted changes), so a result can be traced and redone."""
    import contextlib
    import platform
    import subprocess
    from importlib import metadata
    from pathlib import Path

    env = {"python": platform.python_version()}
    for name in ("boneage", "torch", "monai", "lightning", "onnxruntime", "numpy",
                 "opencv-python-headless"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[name] = metadata.version(name)
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=src, capture_output=True, text=True, timeout=10)
            env["git_commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass  # no git, or not a checkout: an installed package says its version above
    return env
