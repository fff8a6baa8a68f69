"""The node's front door: limits checked on the wire, before pynetdicom buffers anything.

pynetdicom reads a PDU's 6-byte header, then as many bytes as that header claims, into memory,
whoever sends them and however slowly; the allow-lists are checked only once an association is
negotiated. A hostile or broken peer could so hold every association slot with a trickle, or
make the node buffer a gigabyte. Here, in the order a connection meets them:

- at accept, a host outside `--allow-host` is closed at once, and one host holds at most
  `max_per_host` associations (a trickling peer cannot starve the others; the slot is given
  back when the association's thread ends);
- a PDU longer than `max_pdu_bytes` is refused from its header, before its body is read;
- a PDU must arrive whole within `pdu_seconds` of its first byte;
- the data set of one C-STORE is counted as its fragments arrive and refused past
  `max_dataset_bytes`.

A refusal closes the connection (the peer sees the association aborted) and is one log line.
The defaults are in `Limits` and in docs/dicom.md."""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

log = logging.getLogger("boneage.dicomnode")

P_DATA_TF = 0x04


@dataclass(frozen=True)
class Limits:
    """What one peer may ask of the node (settings: `boneage dicom-node --help`)."""

    max_pdu_bytes: int = 1 << 20  # a PDU header claiming more is refused unread
    max_dataset_bytes: int = 256 << 20  # one film's data set, counted as it arrives
    pdu_seconds: float = 10.0  # from a PDU's first byte to its last
    max_per_host: int = 8  # connections open at once from one address


def server_class(limits: Limits, allow_hosts: list[str]) -> type:
    """pynetdicom's threaded server with the guard: for `AE.make_server(server_class=...)`."""
    from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

    slots = Slots(limits.max_per_host)
    logging.getLogger("pynetdicom.dul").addFilter(_after_refusal)

    class Handler(RequestHandler):
        def _create_association(self) -> Any:
            host = self.client_address[0]
            try:
                assoc = super()._create_association()
            except BaseException:
                slots.give(host)
                raise
            guard(assoc.dul.socket, limits, host)
            run = assoc.run

            def counted() -> None:  # the association's thread: its slot while it lives
                try:
                    run()
                finally:
                    slots.give(host)

            assoc.run = counted
            return assoc

    class Server(ThreadedAssociationServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, request_handler=Handler, **kwargs)

        def verify_request(self, request: Any, client_address: Any) -> bool:
            host = client_address[0]
            if allow_hosts and host not in allow_hosts:
                log.warning("connection from %s closed: host not in the allow-list", host)
                return False
            if not slots.take(host):
                log.warning("connection from %s closed: %d already open from that host",
                            host, limits.max_per_host)
                return False
            return True

    return Server


class Slots:
    """Associations open per host, taken at accept and given back when the association's
    thread ends."""

    def __init__(self, per_host: int) -> None:
        self.per_host, self.held, self.lock = per_host, {}, threading.Lock()

    def take(self, host: str) -> bool:
        with self.lock:
            if self.held.get(host, 0) >= self.per_host:
                return False
            self.held[host] = self.held.get(host, 0) + 1
            return True

    def give(self, host: str) -> None:
        with self.lock:
            self.held[host] -= 1


class Refused(OSError):
    """A peer past a limit: pynetdicom treats an OSError from the socket as the connection
    closed (its event 17) and aborts the association."""


def guard(sock: Any, limits: Limits, host: str) -> None:
    """Give an accepted AssociationSocket the limits (its `recv` replaced for this one
    socket; pynetdicom creates the socket itself, so a subclass cannot be passed in)."""
    state = {"header": True, "type": 0, "deadline": 0.0, "dataset": 0}
    plain_recv = sock.recv

    def recv(nr_bytes: int) -> bytearray:
        # pynetdicom reads a PDU as recv(6), then recv(length from those 6 bytes)
        if state["header"]:
            state["deadline"] = time.monotonic() + limits.pdu_seconds
        elif nr_bytes > limits.max_pdu_bytes:
            _refuse(host, f"a PDU of {nr_bytes} bytes claimed (limit {limits.max_pdu_bytes})")
        data = _timed(sock, plain_recv, nr_bytes, state["deadline"], host)
        if state["header"] and len(data) == 6:
            state["type"] = data[0]
        elif not state["header"] and state["type"] == P_DATA_TF:
            total, last = _count_dataset(data, state["dataset"])
            if total > limits.max_dataset_bytes:
                _refuse(host, f"a data set over {limits.max_dataset_bytes >> 20} MB")
            state["dataset"] = 0 if last else total
        state["header"] = not state["header"]
        return data

    sock.recv = recv


def _timed(sock: Any, plain_recv: Any, nr_bytes: int, deadline: float, host: str
           ) -> bytearray:
    """`plain_recv` with the raw socket's time-out set to what is left of the PDU's time."""
    raw, left = sock.socket, deadline - time.monotonic()
    if left <= 0:
        _refuse(host, "a PDU not completed in time")
    before = raw.gettimeout()
    raw.settimeout(left)
    try:
        return plain_recv(nr_bytes)
    except TimeoutError:
        _refuse(host, "a PDU not completed in time")
        raise
    finally:
        with contextlib.suppress(OSError):  # closed meanwhile
            raw.settimeout(before)


def _count_dataset(body: bytes, so_far: int) -> tuple[int, bool]:
    """The data-set bytes of one C-STORE so far, and whether its last fragment came: each
    presentation data value item is a 4-byte length, a context ID and a header whose bit 0
    says command (1) or data set (0) and bit 1 the last fragment (PS3.8 9.3.1, E.2)."""
    at, last = 0, False
    while at + 6 <= len(body):
        (length,) = struct.unpack(">L", body[at:at + 4])
        header = body[at + 5]
        if not header & 1:
            so_far += max(length - 2, 0)
            last = bool(header & 2)
        at += 4 + length
    return so_far, last


_refused = threading.local()


def _refuse(host: str, what: str) -> NoReturn:
    log.warning("association from %s aborted: %s", host, what)
    _refused.now = True
    raise Refused(what)


def _after_refusal(record: logging.LogRecord) -> bool:
    """pynetdicom's own lines about a connection this guard has just cut (in that
    association's thread): the guard's one line says it already."""
    return not getattr(_refused, "now", False)
