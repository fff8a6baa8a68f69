"""The DICOM node under a real batch, beside `boneage predict` on the same films:

    python benchmarks/dicom_node.py [--films 25] [--model default] [--outage 60] [--kill]
                                    [--no-heatmap] [--at-once]

25 full-resolution films of ../shared/data/rsna-val-fullres, wrapped as DX DICOMs (PatientSex
from the labels), are sent by dcmtk's `storescu` in one association to `boneage dicom-node`,
whose results go to dcmtk's `storescp`. Measured: the time from the send to the last result
stored at the destination, films per second, the node's peak memory (VmHWM); beside it, in the
same run, `boneage predict FILMS --dicom-out DIR` (the same work: estimate, heatmap, SR and SC)
and plain `boneage predict FILMS`, each timed from start to exit.

--outage S: the destination is down for the first S seconds of the batch (then started);
--kill: the node is killed (-9) once its first results are written, and started again;
--at-once: each film by its own storescu association, all 25 started together.
Either way, every result must arrive once: the script counts storescp's stores per instance.
Writes benchmarks/results/dicom_node[_outage|_kill|_no_heatmap|_at_once].json (KEEP=1 keeps the
folder of films, spool and logs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BONEAGE_DATA", ROOT.parent / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def wrap_films(n: int, folder: Path) -> list[Path]:
    """The first n labelled films as DX DICOMs (16-bit, MONOCHROME2, one study each)."""
    from boneage.data.dicom import film_dataset
    from boneage.data.labels import read_labels

    src = DATA / "rsna-val-fullres"
    rows = list(read_labels(src / "labels.csv", require_age=False, require_images=False))[:n]
    out = []
    for row in rows:
        img = cv2.imread(str(src / f"{row.id}.png"), cv2.IMREAD_GRAYSCALE)
        ds = film_dataset(img.astype(np.uint16) * 16, 12, PatientID=f"RSNA-{row.id}",
                          PatientName="Anonymous^", PatientSex="M" if row.male else "F")
        path = folder / f"{row.id}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def dcmtk(name: str) -> str:
    """dcmtk's binary, not pynetdicom's same-named script that an activated virtual
    environment puts first on PATH."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            with open(path, "rb") as f:
                if f.read(2) != b"#!":
                    return str(path)
    raise SystemExit(f"{name} is not installed (Debian dcmtk)")


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", type=int, default=25)
    ap.add_argument("--model", default="default")
    ap.add_argument("--outage", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--at-once", action="store_true",
                    help="each film by its own storescu, all started together")
    ap.add_argument("--no-heatmap", action="store_true",
                    help="the node's result images without the heatmap")
    a = ap.parse_args()
    storescu, storescp = dcmtk("storescu"), dcmtk("storescp")
    if not (DATA / "rsna-val-fullres").is_dir():
        raise SystemExit(f"{DATA}/rsna-val-fullres is not here (set BONEAGE_DATA)")
    tmp = Path(tempfile.mkdtemp(prefix="dicom-node-bench-"))
    (tmp / "films").mkdir()
    films = wrap_films(a.films, tmp / "films")
    boneage = [sys.executable, "-m", "boneage"]
    port, dest_port = free_port(), free_port()
    dest_dir = tmp / "dest"
    dest_dir.mkdir()
    dest_log = tmp / "storescp.log"

    def start_dest() -> subprocess.Popen:
        p = subprocess.Popen([storescp, "-v", "-aet", "DEST", "-od", str(dest_dir), "-uf",
                              "-fe", ".dcm", str(dest_port)], stdout=dest_log.open("a"),
                             stderr=subprocess.STDOUT)
        wait_for(lambda: listening(dest_port), 20, "storescp")
        return p

    def start_node() -> subprocess.Popen:
        p = subprocess.Popen([*boneage, "dicom-node", "--host", "127.0.0.1", "--port",
                              str(port), "--send-to", f"DEST@127.0.0.1:{dest_port}", "--spool",
                              str(tmp / "spool"), "--model", a.model, "--retry-max", "5",
                              *(["--no-heatmap"] if a.no_heatmap else [])],
                             stdout=(tmp / "node.log").open("a"), stderr=subprocess.STDOUT)
        wait_for(lambda: listening(port), 120, "the node")
        return p

    dest = None if a.outage else start_dest()
    node = start_node()
    outbox = tmp / "spool" / "outbox"
    peak = 0.0
    t0 = time.perf_counter()
    groups = [[f] for f in films] if a.at_once else [films]
    senders = [subprocess.Popen([storescu, "-aec", "BONEAGE", "127.0.0.1", str(port),
                                 *map(str, group)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for group in groups]
    for s in senders:
        peak = max(peak, peak_mb(node.pid))
        if s.wait():
            raise SystemExit(f"storescu failed: {s.stderr.read().strip()[:300]}")
    acknowledged = time.perf_counter() - t0
    killed = False
    expected = 2 * len(films)
    while len(list(dest_dir.glob("*.dcm"))) < expected or any(outbox.glob("*.dcm")):
        peak = max(peak, peak_mb(node.pid))
        now = time.perf_counter() - t0
        if a.kill and not killed and any(outbox.glob("*.dcm")):
            node.send_signal(signal.SIGKILL)
            node.wait()
            killed = True
            node = start_node()
        if dest is None and now >= a.outage:
            dest = start_dest()
        if now > 1800:
            raise SystemExit("timed out: results missing")
        time.sleep(0.05)
    total = time.perf_counter() - t0
    peak = max(peak, peak_mb(node.pid))
    node.send_signal(signal.SIGTERM)
    node.wait(60)
    dest.terminate()
    stores = Counter(line.rsplit("/", 1)[-1] for line in dest_log.read_text().splitlines()
                     if "storing DICOM file" in line)
    # beside it: predict on the same films, the same work, then the estimate alone
    t_dicom = timed([*boneage, "predict", *map(str, films), "--model", a.model, "--dicom-out",
                     str(tmp / "predict-out"), "--format", "csv", "--out",
                     str(tmp / "p1.csv")])
    t_plain = timed([*boneage, "predict", *map(str, films), "--model", a.model, "--format",
                     "csv", "--out", str(tmp / "p2.csv")])
    n = len(films)
    report = {
        "films": n, "model": a.model, "outage_s": a.outage, "killed": killed,
        "associations": len(groups),
        "node_heatmap": not a.no_heatmap,
        "results_expected": expected, "results_stored": len(stores),
        "stored_more_than_once": sum(1 for c in stores.values() if c > 1),
        "all_acknowledged_s": round(acknowledged, 2),
        "send_to_last_result_s": round(total, 2),
        "node_s_per_film": round(total / n, 3), "films_per_s": round(n / total, 3),
        "node_peak_mb": round(peak, 1),
        "predict_dicom_out_s": round(t_dicom, 2),
        "predict_dicom_out_s_per_film": round(t_dicom / n, 3),
        "predict_plain_s": round(t_plain, 2),
        "predict_plain_s_per_film": round(t_plain / n, 3),
        "node_vs_predict_dicom_out": round(total / t_dicom, 2),
        "machine": f"{os.cpu_count()} CPU cores",
    }
    name = "dicom_node" + ("_outage" if a.outage else "") + ("_kill" if a.kill else "") + (
        "_no_heatmap" if a.no_heatmap else "") + ("_at_once" if a.at_once else "")
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for k, v in report.items():
        print(f"{k:32} {v}")
    print(f"-> {out.relative_to(ROOT)}")
    if not os.environ.get("KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(tmp)


if __name__ == "__main__":
    main()
