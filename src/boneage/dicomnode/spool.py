"""The node's durable spool: what it has promised lives on disk until the promise is kept.

    incoming/<film uid>.dcm   a film acknowledged to its sender (Success), not yet assessed
    staging/<film uid>/       its two results, written before the film leaves incoming/
    outbox/SR_<uid>.dcm ...   a result owed to the destination, not yet acknowledged by it
    failed/                   what the destination refused for good, or a film that broke
                              the node (kept for a person to look at, never retried)

Every file is written whole (temporary file, fsync, rename, fsync of the folder) before the
step that depends on it: a film is acknowledged only once it is in incoming/; it leaves
incoming/ only once both its results are in outbox/; a result leaves outbox/ only once the
destination answered Success. A film's results reach outbox/ (where the sender sees them)
only after the film has left incoming/, through staging/: a node killed in between never
assesses a film again whose results were already sent. A node killed at any point finds its
work again on restart; the one window left (the destination stored a result, the node died
before removing it) re-sends an instance with the same UIDs, which a PACS stores once."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_bytes, sync_folder

UID = re.compile(r"^[0-9.]{1,64}$")  # what a UID can be written as: digits and dots


def safe_name(uid: str) -> str:
    """A UID as a file name (a malformed one as its hash: never a path)."""
    return uid if UID.match(uid) else "x" + hashlib.sha256(uid.encode()).hexdigest()[:40]


class Spool:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.incoming, self.staging, self.outbox, self.failed = (
            self.root / n for n in ("incoming", "staging", "outbox", "failed"))
        try:
            for folder in (self.incoming, self.staging, self.outbox, self.failed):
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / ".write-test"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as e:
            raise BoneAgeError(f"{self.root}: the spool folder cannot be written "
                               f"({e.strerror or e})") from None

    def receive(self, uid: str, data: bytes) -> Path:
        """Keep a received film (on disk before its sender hears Success)."""
        path = self.incoming / f"{safe_name(uid)}.dcm"
        atomic_write_bytes(path, data, sync=True)
        return path

    def films(self) -> list[Path]:
        """Films waiting to be assessed, oldest first."""
        return _oldest_first(self.incoming.glob("*.dcm"))

    def post(self, film: Path, files: dict[str, bytes]) -> list[Path]:
        """A film's results (by file name) owed to the destination, and the film done: the
        results are staged, the film removed, then the results moved to the outbox."""
        stage = self.staging / film.stem
        stage.mkdir(exist_ok=True)
        for name, data in files.items():
            atomic_write_bytes(stage / name, data, sync=True)
        self.remove(film)
        return self._release(stage)

    def _release(self, stage: Path) -> list[Path]:
        paths = []
        for path in sorted(stage.glob("*.dcm")):
            target = self.outbox / path.name
            path.replace(target)
            paths.append(target)
        sync_folder(self.outbox)
        stage.rmdir()
        sync_folder(self.staging)
        return paths

    def recover(self) -> int:
        """After a stop: results staged for a film that has left incoming/ go to the outbox;
        those of a film still waiting are dropped (it will be assessed again); a file half
        written when the node was killed (never acknowledged, never posted) is removed."""
        for folder in (self.incoming, self.outbox, *self.staging.iterdir()):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
        released = 0
        for stage in sorted(p for p in self.staging.iterdir() if p.is_dir()):
            if (self.incoming / f"{stage.name}.dcm").exists():
                for path in stage.iterdir():
                    path.unlink()
                stage.rmdir()
            else:
                released += len(self._release(stage))
        return released

    def results(self) -> list[Path]:
        """Results waiting to be sent, oldest first."""
        return _oldest_first(self.outbox.glob("*.dcm"))

    def remove(self, path: Path) -> None:
        """A promise kept: a film assessed, a result acknowledged."""
        path.unlink(missing_ok=True)
        sync_folder(path.parent)

    def set_aside(self, path: Path) -> Path:
        """Into failed/, for a person to look at."""
        target = self.failed / path.name
        path.replace(target)
        sync_folder(path.parent)
        return target


def _oldest_first(paths) -> list[Path]:
    found = []
    for p in paths:
        try:
            found.append((p.stat().st_mtime, p.name, p))
        except FileNotFoundError:  # removed meanwhile
            continue
    return [p for _, _, p in sorted(found)]
