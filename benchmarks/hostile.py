"""Hostile inputs at full size, against the CLI and a running server (loopback only, bounded):

    python benchmarks/hostile.py [--model default] [--only bomb server slow]

1. A deflated DICOM of 1,500 frames of 1000x1000 (about 1.5 MB on disk, 1.5 GB inflated):
   `boneage predict` on it (time, peak memory of the process), then the same upload to
   `boneage serve` (status, server memory before and after).
2. A 300 MB body sent chunked (no Content-Length): how much had been sent when the 413 came.
3. 16 concurrent 62 MB uploads: statuses and the server's peak memory (workers 1, queue 8).
4. Nine slow clients (a few bytes every 0.5 s each) while real uploads come and go: each real
   upload's status and time against the same upload alone (workers 1, queue 2).
5. A 616 kB PNG that decodes to 8,900 x 8,900 16-bit RGBA (634 MB): status, time and the
   server's memory before and at its peak.
Writes benchmarks/results/hostile.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_test import multipart  # noqa: E402


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def deflated_bomb(path: Path, frames: int = 1500, side: int = 1000) -> int:
    """Write the bomb by streaming zeros through zlib (never 1.5 GB in memory)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.PatientSex, ds.Modality = "F", "DX"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = io.BytesIO()
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(body)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    n = frames * side * side
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + n.to_bytes(4, "little")
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(head.getvalue())
        f.write(z.compress(body.getvalue() + pixel_header))
        zeros = b"\0" * (1 << 24)
        for _ in range(n // len(zeros)):
            f.write(z.compress(zeros))
        f.write(z.compress(b"\0" * (n % len(zeros))))
        f.write(z.flush())
    return n


def post(url: str, body: bytes, ctype: str, timeout: float = 300) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError):
        # the server answered (503) and closed before taking the body: the client, still
        # sending, sees the connection reset
        return 0


def chunked_until_refused(url: str, total_mb: int = 300) -> tuple[bytes, int]:
    u = urlparse(url)
    sent = 0
    with socket.create_connection((u.hostname, u.port)) as sk:
        sk.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        piece = b"\0" * (1 << 20)
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        try:
            while sent < total_mb and not select.select([sk], [], [], 0)[0]:
                sk.sendall(chunk)
                sent += 1
        except OSError:
            pass
        sk.settimeout(30)
        return sk.recv(200), sent


def slow_client(url: str, stop, boundary: str = "b") -> None:
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
        while not stop.is_set():
            try:
                s.sendall(b"-" * 8)
            except OSError:
                return
            if select.select([s], [], [], 0.5)[0]:
                return  # answered (cut off): a real attacker would reconnect


def slow_clients(url: str, film: bytes) -> dict:
    """Real uploads timed alone, then with nine slow clients sending."""
    import threading

    body, ctype = multipart({"sex": "F"}, film)

    def timed() -> tuple[int, float]:
        t0 = time.perf_counter()
        return post(url + "/v1/predict", body, ctype), round(time.perf_counter() - t0, 2)

    alone = [timed() for _ in range(3)]
    stop = threading.Event()
    threads = [threading.Thread(target=slow_client, args=(url, stop), daemon=True)
               for _ in range(9)]
    for t in threads:
        t.start()
    time.sleep(2)
    try:
        during = [timed() for _ in range(5)]
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    return {"alone": alone, "with_nine_slow_clients": during,
            "worst_extra_seconds": round(max(s for _, s in during) - max(s for _, s in alone),
                                         2)}


def rgba_bomb() -> bytes:
    """A real 8,900 x 8,900 16-bit RGBA PNG of zeros (about 616 kB), written row by row."""
    raw = zlib.compressobj(9)
    row = b"\0" + b"\0" * (8900 * 8)
    data = b"".join(raw.compress(row) for _ in range(8900)) + raw.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (len(payload).to_bytes(4, "big") + kind + payload
                + zlib.crc32(kind + payload).to_bytes(4, "big"))

    ihdr = (8900).to_bytes(4, "big") * 2 + bytes([16, 6, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def bomb_cli(model: str, bomb: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "boneage.cli", "predict", str(bomb), "--sex", "F",
                        "--model", model], capture_output=True, text=True)
    return {"seconds": round(time.perf_counter() - t0, 2), "exit": p.returncode,
            "stderr": p.stderr.strip().splitlines()[-2:],
            "peak_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def server_scenarios(model: str, bomb: Path, res: dict) -> None:
    """The DICOM bomb uploaded, a 300 MB chunked body, 16 concurrent 62 MB uploads."""
    from tools.local_server import local_server

    with local_server("--model", model, "--workers", "1", "--queue", "8",
                      timeout_s=120) as (url, proc):
        before = memory_mb(proc.pid)
        body, ctype = multipart({"sex": "F"}, bomb.read_bytes())
        t0 = time.perf_counter()
        status = post(url + "/v1/predict", body, ctype)
        res["bomb"]["server"] = {"status": status, "seconds": round(time.perf_counter() - t0, 2),
                                 "rss_mb_before": round(before),
                                 "peak_mb": round(memory_mb(proc.pid, "VmHWM"))}
        answer, sent = chunked_until_refused(url)
        res["chunked_300mb"] = {"answer": answer.split(b"\r\n")[0].decode(),
                                "mb_sent_before_answer": sent}
        big, ctype = multipart({"sex": "F"}, b"\x89PNG\r\n\x1a\n" + b"\0" * (62 << 20))
        before = memory_mb(proc.pid)
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: post(url + "/v1/predict", big, ctype), range(16)))
        res["concurrent_62mb_x16"] = {
            "note": "status 0: connection reset while sending, after an early 503",
            "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
            "rss_mb_before": round(before), "peak_mb": round(memory_mb(proc.pid, "VmHWM")),
            "rss_mb_after": round(memory_mb(proc.pid))}


def slow_scenarios(model: str, res: dict) -> None:
    """The 16-bit RGBA PNG bomb, then nine slow clients beside real uploads."""
    from tools.local_server import local_server

    with local_server("--model", model, "--workers", "1", "--queue", "8",
                      timeout_s=120) as (url, proc):
        bomb_png = rgba_bomb()
        body, ctype = multipart({"sex": "F"}, bomb_png)
        before = memory_mb(proc.pid)
        t0 = time.perf_counter()
        status = post(url + "/v1/predict", body, ctype)
        res["rgba_png_bomb"] = {"file_kb": round(len(bomb_png) / 1024), "status": status,
                                "seconds": round(time.perf_counter() - t0, 2),
                                "rss_mb_before": round(before),
                                "peak_mb": round(memory_mb(proc.pid, "VmHWM"))}
    with local_server("--model", model, "--workers", "1", "--queue", "2",
                      timeout_s=120) as (url, proc):
        res["slow_clients"] = slow_clients(url, (ROOT / "examples/phantom-hand.png").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/hostile.json"))
    ap.add_argument("--only", nargs="+", choices=("bomb", "server", "slow"),
                    help="bomb: 1 against the CLI; server: 1-3 against the server; slow: 4-5 "
                         "(default: all; the other figures of the file are kept)")
    a = ap.parse_args()
    want = set(a.only or ("bomb", "server", "slow"))
    sys.path.insert(0, str(ROOT))  # tools/ beside benchmarks/
    out = Path(a.out)
    res: dict = json.loads(out.read_text()) if a.only and out.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        if want & {"bomb", "server"}:
            bomb = Path(tmp) / "bomb.dcm"
            inflated = deflated_bomb(bomb)
            res["bomb"] = {**res.get("bomb", {}),
                           "file_mb": round(bomb.stat().st_size / 2**20, 2),
                           "inflated_mb": round(inflated / 2**20)}
            if "bomb" in want:
                res["bomb"]["cli"] = bomb_cli(a.model, bomb)
            if "server" in want:
                server_scenarios(a.model, bomb, res)
        if "slow" in want:
            slow_scenarios(a.model, res)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in res if k in ("rgba_png_bomb", "slow_clients")}
                     if a.only == ["slow"] else res, indent=2))


if __name__ == "__main__":
    main()
