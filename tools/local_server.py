"""Start `boneage serve` in a child process on a free loopback port and wait until /health
answers: for the browser test, the load test, and scripts that drive the API end to end."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from boneage.errors import BoneAgeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(*serve_args: str, timeout_s: float = 60.0
                 ) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, server process); the server is stopped on leaving."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the log goes to a file, not a pipe: a busy server would fill a pipe and block
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "boneage.cli", "serve", "--port",
                                 str(port), *serve_args], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        proc.wait(10)
                        log.seek(0)
                        tail = log.read().decode(errors="replace")[-2000:]
                        raise BoneAgeError(f"the server did not start: {tail}") from None
                    time.sleep(0.25)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
