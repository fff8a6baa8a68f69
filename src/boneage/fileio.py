"""Atomic writes: a crash or Ctrl-C never leaves a half-written file behind."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the mode a plain open() would give new files


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file (from mkstemp, beside `path`) the mode a plain open()
    would, and rename it into place in one step."""
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_folder(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary folder (from mkdtemp, beside `path`) into place in one step,
    with the mode a plain mkdir would give it; `path` must be absent or an empty folder."""
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
    if Path(path).is_dir():
        Path(path).rmdir()
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, data: bytes, sync: bool = False) -> None:
    """`sync`: on disk before this returns (the file, then its folder's entry), for a spool
    whose files stand for a promise made to someone else (a film acknowledged, a result owed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    publish(tmp, path)
    if sync:
        sync_folder(path.parent)


def sync_folder(folder: str | Path) -> None:
    """A folder's entries (a rename, an unlink) on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """NaN and infinities (an R² of one film, say) as null: JSON has no NaN."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN), anything unknown as its string."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kwargs)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def atomic_write_csv(
    path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def file_sha256(path: str | Path) -> str:
    """A file's sha256, read in 1 MiB pieces (weights, graphs, label files of any size)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_text(path: str | Path, what: str = "text file") -> str:
    """A text file someone hands us (a config, a card, a pipeline, a split, labels), or one
    line naming it: a binary or unreadable file is the user's to fix, not a traceback."""
    from boneage.errors import BoneAgeError

    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is no byte
    except UnicodeDecodeError:
        raise BoneAgeError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as e:
        raise BoneAgeError(f"{path}: cannot read this {what} ({e.strerror or e})") from None


def read_csv_dicts(path: str | Path, what: str = "CSV file") -> list[dict[str, str]]:
    import io

    return list(csv.DictReader(io.StringIO(read_text(path, what), newline="")))


def ensure_writable_dir(path: str | Path) -> Path:
    """Create the folder (and parents) and check that we can write in it."""
    from boneage.errors import BoneAgeError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BoneAgeError(f"{p}: cannot write here ({e.strerror or e})") from None
    return p
