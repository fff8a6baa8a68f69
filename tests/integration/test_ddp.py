"""Two processes training one run with DDP on CPU (gloo), as `torchrun` starts them on a GPU
node: one run folder, written once, by global rank 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

pytest.importorskip("lightning")

from boneage.fileio import read_csv_dicts  # noqa: E402


def test_two_process_ddp_writes_one_run(small_set, tmp_path):
    images, labels = small_set
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    run = tmp_path / "run"
    with socket.socket() as sock:  # not torchrun's fixed default port, which another may hold
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(port), "-m", "boneage.cli",
         "train", "--images",
         str(images), "--labels", str(labels), "--arch", "resnet18", "--pipeline", "squash",
         "--image-size", "48", "--epochs", "2", "--batch-size", "16", "--limit", "60",
         "--accelerator", "cpu", "--devices", "2", "--workers", "1", "--out", str(run),
         "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr  # two processes really ran
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["epochs"] == 2  # said once, by rank 0
    assert proc.stdout.count("epoch 1  train loss") == 1
    rows = read_csv_dicts(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    # each rank saw half of each epoch's batches: steps count one rank's share
    train_films = sum(1 for r in read_csv_dicts(run / "split.csv") if r["split"] == "train")
    per_rank = -(-train_films // 2)
    assert int(rows[0]["step"]) == -(-per_rank // 16)
    assert (run / "best.safetensors").is_file() and (run / "state" / "last.ckpt").is_file()
