"""What the DICOM tests share: the Debian tools found on PATH, the node as a process, dcmtk's
storescp as a destination, synthetic hand films as DX files, dciodvfy's errors and the SR's
content read back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from boneage.data.synthetic import synthetic_film
from tests.helpers import write_dicom

BIRTH, STUDY = "20100301", "20200615"  # 123.5 months
SECRETS = ("Doe^Jane", "PID-4711", "ACC-4711", BIRTH)
ROUTING = Path(__file__).resolve().parents[1] / "docs" / "orthanc" / "route-hands.lua"


def tool(name: str) -> str:
    """The Debian tool on PATH (or /usr/sbin): for storescu, storescp and echoscu dcmtk's own,
    not the same-named pynetdicom scripts a virtual environment's bin puts first."""
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin"]
    for folder in folders:
        path = Path(folder) / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        if name.endswith(("scu", "scp")):
            with open(path, "rb") as f:
                if f.read(2) == b"#!":  # a Python entry point (pynetdicom's apps)
                    continue
        return str(path)
    pytest.skip(f"{name} is not installed (Debian: see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float = 60.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def films(folder: Path, n: int, sex: str = "F") -> list[Path]:
    """n synthetic hand films as DX DICOMs of one patient (one study each)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        film, _ = synthetic_film(height=320, width=256, seed=40 + i)
        out.append(write_dicom(folder / f"film{i}.dcm", film.astype(np.uint16) * 16, sex=sex,
                               age=None, birth=BIRTH, study=STUDY))
    return out


def errors_of(path: Path) -> list[str]:
    """dciodvfy's error lines for one file (warnings are allowed)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


def measured(sr, code: str) -> float | None:
    """The numeric value of the content item with concept `code`, anywhere in the SR."""
    for item in sr.get("ContentSequence", []):
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == code:
            m = item.MeasuredValueSequence[0]
            assert m.MeasurementUnitsCodeSequence[0].CodeValue in ("mo", "1")
            return float(m.NumericValue)
        found = measured(item, code)
        if found is not None:
            return found
    return None


def texts(sr) -> list[str]:
    out = []
    for item in sr.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            out.append(item.TextValue)
        elif item.ValueType == "CODE":
            out.append(item.ConceptCodeSequence[0].CodeMeaning)
        out += texts(item)
    return out


class Node:
    """`boneage dicom-node` as a process, as a department runs it."""

    def __init__(self, model: Path, spool: Path, send_to: str, log: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "boneage", "dicom-node", "--port", str(self.port),
                     "--host", "127.0.0.1", "--send-to", send_to, "--spool", str(spool),
                     "--model", str(model), "--retry-max", "1", *extra]
        self.log, self.env = log, {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        self.proc = subprocess.Popen(self.args, stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for(lambda: _listening(self.port) or self.proc.poll() is not None, 90,
                     "the node")
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
        except BaseException:
            self.stop()
            raise
        return self

    def echo(self, aet: str = "ECHOSCU") -> bool:
        return subprocess.run([tool("echoscu"), "-aet", aet, "-aec", "BONEAGE", "127.0.0.1",
                               str(self.port)], capture_output=True).returncode == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class StoreSCP:
    """dcmtk's storescp as the destination, files named by SOP Instance UID."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder, self.log, self.port = folder, log, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> StoreSCP:
        self.proc = subprocess.Popen([tool("storescp"), "-v", "-aet", "DEST", "-od",
                                      str(self.folder), "-uf", "-fe", ".dcm", str(self.port)],
                                     stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.port), 20, "storescp")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix == ".dcm")

    def stores(self) -> list[str]:
        """One line per instance stored (a result sent twice shows twice)."""
        return [ln for ln in self.log.read_text().splitlines() if "storing DICOM file" in ln]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def storescu(port: int, *files: Path, aet: str = "STORESCU", propose: tuple[str, ...] = ()
             ) -> subprocess.CompletedProcess:
    """One association, every file (`propose`: storescu's options for the transfer syntax
    it proposes, such as -xr for RLE)."""
    return subprocess.run([tool("storescu"), "-aet", aet, "-aec", "BONEAGE", *propose,
                           "127.0.0.1", str(port), *map(str, files)], capture_output=True,
                          text=True)


def predicted(model: Path, film: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "boneage", "predict", str(film), "--model",
                          str(model), "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
