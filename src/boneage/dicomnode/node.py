"""The DICOM node: a Storage SCP that takes hand films from a PACS or a modality and sends the
bone age back into the same study, as a Structured Report and a Secondary Capture image.

Three threads, joined only through the spool (spool.py):
- the SCP (pynetdicom, behind guard.py's limits on the wire) writes each film to incoming/
  and answers Success once it is on disk: a slow model never times out a sender. A data set
  it cannot parse is answered 0xC210 (cannot understand), one over the size limits or
  arriving while the spool is full 0xA700 (out of resources); a host outside the allow-list
  is closed at accept, a calling AE title outside it rejected at association; SOP classes
  other than CR, DX and Secondary Capture are refused at association (no presentation
  context);
- the assessor takes films from incoming/, oldest first, and writes their two results to
  outbox/ (a film that cannot be assessed gets results saying "not assessed" and why), then
  removes the film; a spool that cannot be written keeps the film for a later try;
- the sender sends outbox/ to the destination, removing each result once the destination
  stored it (Success or Warning), keeping it while the destination is down or out of
  resources (0xA7xx), retrying with doubling waits up to `retry_max` seconds, and setting
  aside in failed/ what it refuses for good (a failure status, or no presentation context
  for the result's SOP class).

A thread that dies is logged and started again: the node never goes on acknowledging films
that nothing assesses or sends. Logs hold SOP Instance UIDs, counts and statuses, never
names, patient IDs or dates."""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boneage.dicomnode.guard import Limits, server_class
from boneage.dicomnode.spool import UID, Spool
from boneage.errors import BoneAgeError, TooLarge

log = logging.getLogger("boneage.dicomnode")

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210
BATCH = 8  # films assessed together when several wait
FULL_RETRY = 5.0  # seconds between tries to write results while the spool is full


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242."""
        aet, at, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and aet and host and port.isdigit()) or not 0 < int(port) < 65536:
            raise BoneAgeError(f"--send-to {text!r}: give AET@HOST:PORT (e.g. "
                               "ORTHANC@127.0.0.1:4242)")
        return cls(check_ae_title(aet, "--send-to"), host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(aet: str, what: str = "--ae-title") -> str:
    """1-16 printable ASCII characters, not all spaces, no backslash (PS3.5 AE VR)."""
    if not 0 < len(aet) <= 16 or not aet.strip() or "\\" in aet or not all(
            32 <= ord(ch) < 127 for ch in aet):
        raise BoneAgeError(f"{what} {aet!r}: an AE title is 1-16 printable ASCII characters")
    return aet


def storage_classes() -> list[str]:
    """The films a hand radiograph arrives as: CR, DX (for presentation and for processing)
    and the Secondary Capture family (scanned and exported films)."""
    from pynetdicom import sop_class as s

    return [s.ComputedRadiographyImageStorage, s.DigitalXRayImageStorageForPresentation,
            s.DigitalXRayImageStorageForProcessing, s.SecondaryCaptureImageStorage,
            s.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
            s.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            s.MultiFrameTrueColorSecondaryCaptureImageStorage]


def transfer_syntaxes() -> list[str]:
    """The uncompressed and deflated syntaxes, and each compressed one an installed pydicom
    decoder reads (so no film is accepted that could not be read)."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    syntaxes = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian,
                uid.DeflatedExplicitVRLittleEndian, uid.ExplicitVRBigEndian]
    for ts in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
               uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
               uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless):
        try:
            if get_decoder(ts).is_available:
                syntaxes.append(ts)
        except Exception:  # no decoder registered for it
            continue
    return syntaxes


class Node:
    def __init__(self, model: Any, spool: Spool, destination: Destination,
                 ae_title: str = "BONEAGE", host: str = "0.0.0.0", port: int = 11112,
                 uid_root: str | None = None, allow_aets: list[str] | None = None,
                 allow_hosts: list[str] | None = None, retry_max: float = 60.0,
                 heatmap: bool = True, max_associations: int = 32,
                 limits: Limits | None = None,
                 sleep: Callable[[float], bool] | None = None) -> None:
        """`sleep(seconds)`: how the sender waits between tries (True when stopping); the
        node's own stop event by default, a controllable clock in tests."""
        from boneage.inference.dicom_results import UID_ROOT

        self.model, self.spool, self.destination = model, spool, destination
        self.ae_title, self.host, self.port = check_ae_title(ae_title), host, port
        self.uid_root = uid_root or UID_ROOT
        self.allow_aets, self.allow_hosts = allow_aets or [], allow_hosts or []
        self.retry_max, self.heatmap = retry_max, heatmap
        self.max_associations = max_associations  # each holds at most one film in memory
        self.limits = limits or Limits()
        self.films: queue.Queue[Path] = queue.Queue()
        self.stopping = threading.Event()
        self.sleep = sleep or self.stopping.wait
        self.spool_full = threading.Event()  # results cannot be written: refuse new films
        self.results_waiting = threading.Event()
        self.server = None
        self.threads: list[threading.Thread] = []
        self.counts = {"received": 0, "assessed": 0, "not assessed": 0, "sent": 0,
                       "refused": 0, "restarted": 0}

    # ------------------------------------------------------------------------- receiving
    def on_rejected(self, event: Any) -> None:
        rq = event.assoc.requestor
        log.warning("association from %s (calling AE title %r) rejected", rq.address,
                    str(rq.ae_title)[:16])

    def on_echo(self, event: Any) -> int:
        return SUCCESS  # a host outside --allow-host was closed at accept (guard.py)

    def on_store(self, event: Any) -> int:
        """Keep the film and say Success; say why not where it cannot be kept."""
        from boneage.data.dicom import _check_header
        from boneage.inference.dicom_results import source_header

        uid = str(event.request.AffectedSOPInstanceUID or "")
        if self.spool_full.is_set():
            log.error("C-STORE %s refused (0xA700): the spool is full", uid[:64])
            self.counts["refused"] += 1
            return OUT_OF_RESOURCES
        try:
            data = event.encoded_dataset(include_meta=True)
            header = source_header(data, "received film")
            if str(header.get("SOPInstanceUID", "")) != uid:
                raise BoneAgeError("the data set's SOP Instance UID is not the request's")
            for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                if not UID.match(str(header.get(key, ""))):
                    raise BoneAgeError(f"{key} is not a UID (digits and dots, at most 64)")
            try:  # frames x rows x columns claimed, before the film is kept
                _check_header(header, "received film", header_only=True)
            except TooLarge:
                raise
            except BoneAgeError:  # no image: assessed as "not assessed", with its reason
                pass
        except TooLarge as e:
            log.warning("C-STORE %s refused (0xA700): %s", uid[:64], e)
            self.counts["refused"] += 1
            return OUT_OF_RESOURCES
        except Exception as e:  # noqa: BLE001 - whatever a sender sends, one status back
            log.warning("C-STORE %s refused (0xC210): %s", uid[:64], str(e)[:160])
            self.counts["refused"] += 1
            return CANNOT_UNDERSTAND
        try:
            path = self.spool.receive(uid, data)
        except OSError as e:
            log.error("C-STORE %s refused (0xA700): the spool cannot be written (%s)", uid,
                      e.strerror or e)
            return OUT_OF_RESOURCES
        self.counts["received"] += 1
        log.info("received %s (%d kB); %d film(s) waiting", uid, len(data) >> 10,
                 self.films.qsize() + 1)
        self.films.put(path)
        return SUCCESS

    # ------------------------------------------------------------------------- assessing
    def assess_waiting(self, paths: list[Path]) -> None:
        """Films from incoming/ to their two results each in outbox/ (the network runs on
        them together, as `predict` does on a chunk)."""
        from boneage.inference.dicom_results import assess_many, assessment_files

        items, kept = [], []
        for path in dict.fromkeys(paths):  # a film received twice is queued twice
            try:
                items.append((path.read_bytes(), path.stem))
                kept.append(path)
            except FileNotFoundError:  # already done
                continue
        if not items:
            return
        started = time.perf_counter()
        try:
            assessed = assess_many(self.model, items, heatmap=self.heatmap)
        except Exception as e:  # noqa: BLE001 - one broken batch must not stop the node
            log.error("%d film(s) could not be assessed together (%s): one at a time",
                      len(items), type(e).__name__)
            if len(kept) > 1:
                for path in kept:
                    self.assess_waiting([path])
            else:
                self._set_aside(kept[0], e)
            return
        for path, a in zip(kept, assessed, strict=True):
            uid = path.stem
            try:
                if isinstance(a, Exception):
                    raise a
                files = assessment_files(self.model, a, self.uid_root)
            except Exception as e:  # noqa: BLE001 - one broken film must not stop the node
                self._set_aside(path, e)
                continue
            try:
                self.spool.post(path, files)
            except OSError as e:  # the spool's disk is full: keep the film, refuse new ones
                self._spool_full(path, e)
                continue
            self.spool_full.clear()
            self.counts["assessed" if a.result is not None else "not assessed"] += 1
            if a.result is None:
                log.info("film %s not assessed: %s", uid, a.reason)
            else:
                log.info("film %s assessed: 2 results to send", uid)
            self.results_waiting.set()
        log.info("%d film(s) in %.1f s", len(kept), time.perf_counter() - started)

    def _spool_full(self, path: Path, error: OSError) -> None:
        if not self.spool_full.is_set():
            log.error("results of %s cannot be written (%s): films are refused (0xA700) "
                      "until the spool has room; those received are kept", path.stem,
                      error.strerror or type(error).__name__)
        self.spool_full.set()
        self.films.put(path)
        self.stopping.wait(FULL_RETRY)

    def _set_aside(self, path: Path, error: Exception) -> None:
        kept = self.spool.set_aside(path)
        log.error("film %s could not be assessed (%s); kept in %s", path.stem,
                  type(error).__name__, kept.parent)

    def _assessor(self) -> None:
        while not self.stopping.is_set():
            try:
                paths = [self.films.get(timeout=0.5)]
            except queue.Empty:  # nothing kept back for want of space: let films in again
                self.spool_full.clear()
                continue
            while len(paths) < BATCH:  # what else is waiting, up to one chunk
                try:
                    paths.append(self.films.get_nowait())
                except queue.Empty:
                    break
            self.assess_waiting(paths)

    # --------------------------------------------------------------------------- sending
    def send_waiting(self) -> bool:
        """Send what outbox/ holds in one association; False when the destination could not
        be reached, broke off or is out of resources (try again later), True when every
        result was stored or set aside."""
        import pydicom
        from pynetdicom import AE
        from pynetdicom.status import code_to_category

        files = self.spool.results()
        if not files:
            return True
        from boneage.inference.dicom_results import SC_CLASS, SR_CLASS

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for cls in (SR_CLASS, SC_CLASS):  # a destination may take Implicit VR only
            ae.add_requested_context(cls, [pydicom.uid.ExplicitVRLittleEndian,
                                           pydicom.uid.ImplicitVRLittleEndian])
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            return False
        taken = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        try:
            for path in files:
                if self.stopping.is_set():
                    return True
                try:
                    ds = pydicom.dcmread(path)
                except FileNotFoundError:
                    continue
                except Exception as e:  # noqa: BLE001 - a damaged spool file: set aside
                    self._refused(path, f"unreadable ({type(e).__name__})")
                    continue
                if str(ds.SOPClassUID) not in taken:
                    self._refused(path, f"{d} takes no {ds.SOPClassUID.name}")
                    continue
                try:
                    status = assoc.send_c_store(ds)
                except Exception as e:  # noqa: BLE001 - this result cannot be sent as it is
                    self._refused(path, f"cannot be sent ({type(e).__name__})")
                    continue
                code = getattr(status, "Status", None)
                if code is None:  # no answer: the association broke
                    return False
                kind = code_to_category(code)
                if kind in ("Success", "Warning"):  # stored (a warning is still stored)
                    self.spool.remove(path)
                    self.counts["sent"] += 1
                    log.info("sent %s to %s (status 0x%04X)", path.stem, d, code)
                elif 0xA700 <= code <= 0xA7FF:  # out of resources: transient (PS3.4 B.2.3)
                    log.warning("%s out of resources (status 0x%04X): %s kept for a later "
                                "try", d, code, path.stem)
                    return False
                else:
                    self._refused(path, f"refused (status 0x{code:04X})")
            return True
        finally:
            if assoc.is_established:
                assoc.release()

    def _refused(self, path: Path, why: str) -> None:
        kept = self.spool.set_aside(path)
        self.counts["refused"] += 1
        log.error("result %s %s: kept in %s", path.stem, why, kept.parent)

    def _sender(self) -> None:
        backoff = Backoff(self.retry_max)
        while not self.stopping.is_set():
            self.results_waiting.clear()
            if self.send_waiting():
                backoff.reset()
                if not self.spool.results():
                    self.results_waiting.wait(1.0)
                continue
            wait = backoff.next()
            log.warning("destination %s not reachable or busy: %d result(s) kept, next try "
                        "in %.0f s", self.destination, len(self.spool.results()), wait)
            if self.sleep(wait):
                return

    def _supervised(self, target: Callable[[], None]) -> Callable[[], None]:
        """`target` run until the node stops: an exception is logged and the loop started
        again a second later, never a thread silently gone."""
        def run() -> None:
            while not self.stopping.is_set():
                try:
                    target()
                except Exception as e:  # noqa: BLE001 - logged, and the work goes on
                    self.counts["restarted"] += 1
                    log.error("the %s stopped (%s: %s): started again", target.__name__[1:],
                              type(e).__name__, str(e)[:160])
                    self.stopping.wait(1.0)
        return run

    # ------------------------------------------------------------------------ the server
    def start(self) -> None:
        """Listen, and resume what a previous run left in the spool."""
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        released = self.spool.recover()
        if released:
            log.info("resuming: %d staged result(s) released to the outbox", released)
        for path in self.spool.films():
            self.films.put(path)
        left = (self.films.qsize(), len(self.spool.results()))
        if any(left):
            log.info("resuming: %d film(s) to assess, %d result(s) to send", *left)
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        if self.allow_aets:
            ae.require_calling_aet = self.allow_aets
        ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        for cls in storage_classes():
            ae.add_supported_context(cls, syntaxes)
        handlers = [(evt.EVT_C_ECHO, self.on_echo), (evt.EVT_C_STORE, self.on_store),
                    (evt.EVT_REJECTED, self.on_rejected)]
        try:  # as AE.start_server(block=False) does, with the guarded server class
            self.server = ae.make_server((self.host, self.port), evt_handlers=handlers,
                                         server_class=server_class(self.limits,
                                                                   self.allow_hosts))
        except OSError as e:
            raise BoneAgeError(f"cannot listen on {self.host}:{self.port} "
                               f"({e.strerror or e})") from None
        ae._servers.append(self.server)  # its shutdown() removes it from there
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="dicom-accept").start()
        for target in (self._assessor, self._sender):
            t = threading.Thread(target=self._supervised(target), daemon=True,
                                 name=target.__name__)
            t.start()
            self.threads.append(t)
        log.info("DICOM node %s listening on %s:%d, results to %s", self.ae_title, self.host,
                 self.port, self.destination)

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(timeout=30)
        log.info("stopped: %s", ", ".join(f"{v} {k}" for k, v in self.counts.items()))


class Backoff:
    """Waits between tries while the destination is down: 1, 2, 4 ... seconds, never more
    than `cap`."""

    def __init__(self, cap: float, first: float = 1.0) -> None:
        self.cap, self.first = cap, first
        self.wait = min(first, cap)

    def next(self) -> float:
        wait = self.wait
        self.wait = min(self.wait * 2, self.cap)
        return wait

    def reset(self) -> None:
        self.wait = min(self.first, self.cap)


def quiet_pynetdicom() -> None:
    """pynetdicom's own lines at WARNING, never the identifiers of a request, and pydicom's
    per-value advice not at all."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's advice on each invalid value a sender wrote (a line per value, per film): the
    # node copies what is valid and says what it could not use in the film's results
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
