"""DICOM films: pixels through the modality and VOI LUTs, MONOCHROME1 inverted, and only the
header fields bone age needs (sex, age, study date, and whether the header says this is a hand
radiograph). No other patient data leaves this module.

Hostile files are stopped before they cost memory: a deflated data set is inflated as a count
first (a 1.5 MB file can inflate to gigabytes), the header's frames x rows x columns x samples x
bytes are checked against one budget, and only the first frame is ever decoded. Colour films are
turned to grey by luminance; films too small to be radiographs are refused."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError, TooLarge

DAYS_PER_MONTH = 365.25 / 12
# decoded pixel data of every frame (the header's claim), and a deflated data set once inflated
MAX_DICOM_BYTES = int(os.environ.get("BONEAGE_MAX_DICOM_BYTES", 1 << 30))
MAX_INFLATED_BYTES = int(os.environ.get("BONEAGE_MAX_INFLATED_BYTES", 512 << 20))
DEFLATED = b"1.2.840.10008.1.2.1.99"
RADIOGRAPHY = {"CR", "DX", "RG", "DR", "OT", ""}  # OT: secondary capture, often scanned films
HAND_PARTS = ("HAND", "WRIST", "FINGER", "EXTREMITY", "UPPER LIMB", "UPPERLIMB", "ARM", "")


@dataclass(frozen=True)
class DicomFilm:
    pixels: np.ndarray  # 2-D uint16, bright = dense (bone), display-ready
    male: bool | None
    age_months: float | None
    study_date: date | None = None
    notes: list[str] = field(default_factory=list)  # what the header says against a hand film
    patient_sex: str | None = None  # PatientSex as written (M, F, O, or anything else)
    height_cm: float | None = None  # PatientSize (metres in DICOM), in centimetres
    weight_kg: float | None = None  # PatientWeight, in kilograms
    patient_id: str | None = None  # PatientID: groups a child's films (never logged)


def _parse_age(value: str) -> float | None:
    """DICOM AS value ('010Y', '006M', '012W', '005D') to months."""
    v = (value or "").strip().upper()
    if len(v) < 2 or not v[:-1].isdigit():
        return None
    n, unit = int(v[:-1]), v[-1]
    return {"Y": n * 12.0, "M": float(n), "W": n * 7 / DAYS_PER_MONTH, "D": n / DAYS_PER_MONTH}.get(
        unit
    )


def _parse_date(value: str) -> date | None:
    """DA (YYYYMMDD), or the old ACR-NEMA form some modalities still write (YYYY.MM.DD,
    YYYY-MM-DD); None for anything else, such as 20200230."""
    v = (value or "").strip().replace("-", "").replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        return date(int(v[:4]), int(v[4:6]), int(v[6:8]))
    except (ValueError, IndexError):
        return None


def _check_inflated_size(data: bytes, name: str) -> None:
    """For a deflated data set, count its inflated size (in 1 MB steps, nothing kept) and refuse
    it past MAX_INFLATED_BYTES, before pydicom inflates it whole."""
    if DEFLATED not in data[:4096]:
        return
    # the file meta group (never deflated) ends after (0002,0000)'s group length
    if data[132:136] != b"\x02\x00\x00\x00":
        raise BoneAgeError(f"{name}: deflated DICOM without a file meta group length: refused")
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, chunk = 0, data[start:]
    try:
        while chunk:
            total += len(inflater.decompress(chunk, 1 << 20))
            if total > MAX_INFLATED_BYTES:
                raise TooLarge(f"{name}: deflated DICOM inflates to over "
                                   f"{MAX_INFLATED_BYTES >> 20} MB: refused (set "
                                   "BONEAGE_MAX_INFLATED_BYTES to raise the limit)")
            chunk = inflater.unconsumed_tail
    except zlib.error:
        raise BoneAgeError(f"{name}: corrupt deflated DICOM") from None


def _check_header(ds, name: str, header_only: bool = False) -> None:
    """frames x rows x columns x samples x bytes per sample against one budget, from the
    header alone; and a size that a radiograph can have (`header_only`: `ds` was read without
    its pixels, as the DICOM node reads a film before acknowledging it)."""
    from boneage.data.images import _check_pixels

    def num(tag: str, default: int) -> int:
        try:
            return int(ds.get(tag, default) or default)
        except (TypeError, ValueError):
            raise BoneAgeError(f"{name}: DICOM {tag} is not a number") from None

    rows, cols = num("Rows", 0), num("Columns", 0)
    frames, samples = num("NumberOfFrames", 1), num("SamplesPerPixel", 1)
    bits = num("BitsAllocated", 16)
    if not header_only and not any(
            k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise BoneAgeError(f"{name}: DICOM holds no image (no pixel data)")
    if rows * cols == 0:
        raise BoneAgeError(f"{name}: DICOM holds no image (no rows or columns)")
    _check_pixels(cols, rows, name, samples, max(1, (bits + 7) // 8))  # the frame decoded
    claimed = max(frames, 1) * rows * cols * max(samples, 1) * max(1, (bits + 7) // 8)
    if claimed > MAX_DICOM_BYTES:
        raise TooLarge(f"{name}: DICOM claims {frames} frame(s) of {cols}x{rows}x{samples}, "
                           f"{claimed >> 20} MB of pixels, over the limit of "
                           f"{MAX_DICOM_BYTES >> 20} MB: refused")


def header_notes(ds) -> list[str]:
    """Warnings from the header: not a radiograph (Modality) or not a hand (BodyPartExamined)."""
    notes = []
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in RADIOGRAPHY:
        notes.append(f"DICOM Modality is {modality}, not a radiograph (CR/DX): the estimate is "
                     "not meaningful")
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if not any(p == part or (p and p in part) for p in HAND_PARTS):
        notes.append(f"DICOM BodyPartExamined is {part}, not a hand or wrist: the estimate is "
                     "not meaningful")
    return notes


_QUIET = {"depth": 0, "level": logging.NOTSET}
_QUIET_LOCK = threading.Lock()


@contextmanager
def _quiet_pydicom():
    """pydicom logs (with tracebacks) and warns about files it can still read or will refuse;
    what the user needs is our one line, so its chatter is held back while we decode. Counted,
    so that decodes in several threads (the service's pool) restore the level only when the
    last one ends."""
    logger = logging.getLogger("pydicom")
    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            _QUIET["level"] = logger.level
            logger.setLevel(logging.CRITICAL + 1)
        _QUIET["depth"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                logger.setLevel(_QUIET["level"])


def _undecodable(ds, error: Exception) -> str:
    """Why the pixels could not be read, in one line: for compressed pixel data, its
    compression and each installed decoder's reason (pydicom lists them on lines of their
    own, which a one-line message would otherwise cut off)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()] or [type(error).__name__]
    if syntax is None or not syntax.is_compressed:
        return f"DICOM has no decodable pixel data ({lines[0][:120]})"
    reasons = "; ".join(ln[:120] for ln in lines[1:4]) or lines[0][:160]
    return (f"DICOM pixel data compressed as {syntax.name}, which no installed decoder reads "
            f"({reasons}); an uncompressed export (Explicit VR Little Endian) reads everywhere")


def decode_dicom(data: bytes, name: str = "image") -> DicomFilm:
    with _quiet_pydicom():
        try:
            return _decode_dicom(data, name)
        except BoneAgeError:
            raise
        except Exception as e:  # an element pydicom parses only when it is read (a wrong
            # length, an unknown VR) breaks a header field, a LUT or the pixel data's setup
            detail = (str(e).splitlines() or [""])[0][:100]
            raise BoneAgeError(f"{name}: unreadable DICOM ({type(e).__name__}: {detail})"
                               ) from None


def _decode_dicom(data: bytes, name: str) -> DicomFilm:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    except ImportError:  # pragma: no cover - pydicom is a core dependency
        raise BoneAgeError("reading DICOM needs pydicom: pip install pydicom") from None
    _check_inflated_size(data, name)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ds.get("Rows", 0)  # elements are parsed lazily: a broken header fails here, not later
    except Exception as e:
        raise BoneAgeError(f"{name}: unreadable DICOM ({type(e).__name__})") from None
    _check_header(ds, name)
    try:
        arr = pixel_array(ds, index=0)  # the first frame only, whatever the file holds
    except Exception as e:
        raise BoneAgeError(f"{name}: {_undecodable(ds, e)}") from None
    colour = arr.ndim == 3
    if colour:  # RGB (pydicom turns YBR into RGB): grey by luminance; no LUTs apply
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        arr = apply_modality_lut(arr, ds)
        arr = apply_voi_lut(arr, ds, index=0)
    if arr.ndim != 2:
        raise BoneAgeError(f"{name}: DICOM pixel data of shape {arr.shape} is not one image")
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        arr = 1.0 - arr
    pixels = np.round(arr * 65535).astype(np.uint16)

    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    male = {"M": True, "F": False}.get(sex)
    notes = header_notes(ds)
    # the age from the birth and study dates (to the day), else PatientAge (whole units)
    raw_seen = str(ds.get("StudyDate", "") or ds.get("AcquisitionDate", "") or "").strip()
    seen = _parse_date(raw_seen)
    if raw_seen and seen is None:
        notes.append("DICOM StudyDate is unreadable (not YYYYMMDD): no age computed from it")
    raw_born = str(ds.get("PatientBirthDate", "") or "").strip()
    born = _parse_date(raw_born)
    if raw_born and born is None:
        notes.append("DICOM PatientBirthDate is unreadable (not YYYYMMDD): no age computed "
                     "from it")
    age = None
    if born and seen and seen >= born:
        age = (seen - born).days / DAYS_PER_MONTH
    elif born and seen:
        notes.append("DICOM StudyDate is before PatientBirthDate: no age computed")
    raw_age = str(ds.get("PatientAge", "") or "").strip()
    if age is None:
        age = _parse_age(raw_age)
        if raw_age and age is None:
            notes.append("DICOM PatientAge is unreadable (not like 010Y): no age taken from it")
    if colour:
        notes.append("a colour DICOM: hand radiographs are greyscale")
    height = None
    try:
        size = float(ds.get("PatientSize", "") or 0)
        if 0.3 <= size <= 2.3:  # metres, as DICOM writes it
            height = round(size * 100, 1)
        elif size:
            notes.append(f"DICOM PatientSize {size:g} is not a height in metres: not used")
    except (TypeError, ValueError):
        notes.append("DICOM PatientSize is unreadable: not used")
    weight = None
    try:
        kg = float(ds.get("PatientWeight", "") or 0)
        if 1.0 <= kg <= 200.0:  # kilograms, as DICOM writes it
            weight = round(kg, 1)
        elif kg:
            notes.append(f"DICOM PatientWeight {kg:g} is not a weight in kilograms: not used")
    except (TypeError, ValueError):
        notes.append("DICOM PatientWeight is unreadable: not used")
    return DicomFilm(pixels=pixels, male=male, age_months=age, study_date=seen, notes=notes,
                     patient_sex=sex or None, height_cm=height, weight_kg=weight,
                     patient_id=str(ds.get("PatientID", "") or "").strip()[:64] or None)


def film_dataset(pixels: np.ndarray, bits_stored: int = 16, **tags: Any) -> Any:
    """A grey film (H x W, stored as 16-bit) as a DX hand DICOM data set with its file meta, a
    new study, series and instance; `tags` set or override any attribute (PatientSex="F").
    What the benchmarks and tests wrap real and drawn films in."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                         meta.MediaStorageSOPInstanceUID)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined = "DX", "HAND"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds
