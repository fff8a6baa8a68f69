"""Load test of `boneage serve` on loopback: bounded, stops by itself.

    python benchmarks/load_test.py [--model default] [--requests 1000] [--clients 8]
                                   [--large-uploads 16] [--large-mb 62]

Starts the server on a free 127.0.0.1 port (workers 2, queue 8), sends --requests predictions
of a real film from --clients concurrent clients while a monitor polls /health every 50 ms (a
soak: 1,000 by default), and reports p50/p95 latency, throughput, the status counts (503s are
the deliberate back-pressure), /health p95 during the load, and the server's resident memory
after the first 50 requests and at the end. Then --large-uploads concurrent uploads of
--large-mb MB each (not real films: each read whole, then refused as undecodable, or turned
away before its body when the queue is full), with the server's peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ (the loopback server helper) beside benchmarks/

from tools.local_server import local_server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def multipart(fields: dict[str, str], file_bytes: bytes) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="f.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + file_bytes + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def pctl(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--requests", type=int, default=1000, help="1,000: a soak")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--large-uploads", type=int, default=16)
    ap.add_argument("--large-mb", type=int, default=62)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    a = ap.parse_args()
    film = (Path(a.data) / "raw-samples/rsna-fullres/1418.png").read_bytes()
    with local_server("--model", a.model, "--workers", "2", "--queue", "8",
                      timeout_s=120) as (url, proc):
        body, ctype = multipart({"sex": "F", "chronological_age_months": "130"}, film)
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        mem = {}
        lock = threading.Lock()

        def one(i: int) -> None:
            req = urllib.request.Request(url + "/v1/predict", data=body,
                                         headers={"Content-Type": ctype})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            dt = time.perf_counter() - t0
            with lock:
                statuses[code] += 1
                if code == 200:
                    latencies.append(dt)
                if sum(statuses.values()) == 50:
                    mem["after_50"] = rss_mb(proc.pid)

        health: list[float] = []
        stop = threading.Event()

        def monitor() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    urllib.request.urlopen(url + "/health", timeout=5).read()
                    health.append(time.perf_counter() - t0)
                except OSError:
                    health.append(float("inf"))
                time.sleep(0.05)

        mon = threading.Thread(target=monitor)
        mon.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as pool:
            list(pool.map(one, range(a.requests)))
        wall = time.perf_counter() - t0
        stop.set()
        mon.join()
        mem["end"] = rss_mb(proc.pid)
        big, big_type = multipart({"sex": "F"}, b"\x89PNG\r\n\x1a\n" + b"\0" * (a.large_mb << 20))

        def upload(_: int) -> int:
            req = urllib.request.Request(url + "/v1/predict", data=big,
                                         headers={"Content-Type": big_type})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
            except (urllib.error.URLError, ConnectionError):
                return 0  # answered (503) and closed before the body was taken

        with ThreadPoolExecutor(max(1, a.large_uploads)) as pool:
            large = Counter(pool.map(upload, range(a.large_uploads)))
        mem["peak"] = peak_mb(proc.pid)
        mem["after_large"] = rss_mb(proc.pid)
    res = {
        "requests": a.requests, "clients": a.clients, "statuses": dict(statuses),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(pctl(latencies, 0.95), 3),
        "throughput_per_s": round(statuses[200] / wall, 2),
        "health_p95_ms": round(pctl(health, 0.95) * 1000, 1), "health_checks": len(health),
        "rss_mb_after_50": round(mem.get("after_50", float("nan")), 1),
        "rss_mb_end": round(mem["end"], 1),
    }
    res["rss_growth"] = round(res["rss_mb_end"] / res["rss_mb_after_50"] - 1, 3)
    res["large_uploads"] = {"n": a.large_uploads, "mb_each": a.large_mb,
                            "statuses": {str(k): v for k, v in sorted(large.items())},
                            "server_peak_mb": round(mem["peak"], 1),
                            "rss_mb_after": round(mem["after_large"], 1)}
    errors = {k: v for k, v in statuses.items() if k not in (200, 503)}
    print(json.dumps(res, indent=2))
    print("errors other than deliberate 503s:", errors or "none")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load_test.json").write_text(json.dumps({"model": a.model, **res}, indent=2) + "\n")


if __name__ == "__main__":
    main()
