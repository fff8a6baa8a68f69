"""schemathesis, an outside fuzzer, over the live OpenAPI schema of a real `boneage serve` (issue
#31): with and without the API key, all its checks, bounded examples and seed. The only
failures allowed are the ones docs/service.md explains (ST202 on the three upload routes: a
schema cannot say "a radiograph of at least 32 x 32 pixels" or "a DICOM film", so a
schema-valid 1 x 1 PNG is refused with 422, and with 415 by /v1/dicom), and the server's log
holds no traceback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis is not installed")
EXPLAINED = {("ST202", "/v1/predict"), ("ST202", "/v1/report"), ("ST202", "/v1/dicom")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failures(output: str) -> set[tuple[str, str]]:
    """(check code, route) of every failure schemathesis reports."""
    out, route = set(), None
    for line in output.splitlines():
        m = re.search(r"_+ (?:GET|POST|HEAD|PUT|DELETE|PATCH) (/\S*) _+", line)
        if m:
            route = m.group(1)
        for code in re.findall(r"- (ST\d{3}) ", line):
            out.add((code, route))
    return out


def test_schemathesis_over_the_live_schema(model_path, tmp_path):
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "BONEAGE_API_KEY": "k3y"}
    with open(log, "w") as f:
        server = subprocess.Popen([sys.executable, "-m", "boneage", "serve", "--model",
                                   str(model_path), "--port", str(port)], stdout=f,
                                  stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.3)
        for key in ("k3y", None):
            cmd = [ST, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "12",
                   "--seed", "1", "--request-timeout", "30", "--no-color"]
            if key:
                cmd += ["-H", f"X-API-Key: {key}"]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            found = _failures(run.stdout)
            assert found <= EXPLAINED, (key, found, run.stdout[-3000:])
            assert run.returncode == 0 or found, run.stdout[-3000:]
            assert "Tested: 6" in run.stdout, run.stdout[-2000:]
    finally:
        server.terminate()
        server.wait(20)
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
