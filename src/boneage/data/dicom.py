"""DICOM films: pixels through the modality and VOI LUTs, MONOCHROME1 inverted, and only the
header fields bone age needs (sex, age). No other patient data leaves this module."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date

import numpy as np

from boneage.errors import BoneAgeError

DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class DicomFilm:
    pixels: np.ndarray  # 2-D uint16, bright = dense (bone), display-ready
    male: bool | None
    age_months: float | None
    study_date: date | None = None


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
    v = (value or "").strip()
    try:
        return date(int(v[:4]), int(v[4:6]), int(v[6:8]))
    except (ValueError, IndexError):
        return None


def decode_dicom(data: bytes, name: str = "image") -> DicomFilm:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a core dependency
        raise BoneAgeError("reading DICOM needs pydicom: pip install pydicom") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    except Exception as e:
        raise BoneAgeError(f"{name}: unreadable DICOM ({type(e).__name__})") from None
    from boneage.data.images import _check_pixels

    _check_pixels(cols, rows, name)
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise BoneAgeError(
            f"{name}: DICOM has no decodable pixel data ({str(e).splitlines()[0][:120]})"
        ) from None
    if arr.ndim == 3:  # multi-frame or colour: take the first frame / convert to gray
        arr = arr.mean(axis=-1) if ds.get("SamplesPerPixel", 1) == 3 else arr[0]
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        arr = 1.0 - arr
    pixels = np.round(arr * 65535).astype(np.uint16)

    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    male = {"M": True, "F": False}.get(sex)
    age = _parse_age(str(ds.get("PatientAge", "") or ""))
    seen = _parse_date(str(ds.get("StudyDate", "") or ds.get("AcquisitionDate", "") or ""))
    if age is None:
        born = _parse_date(str(ds.get("PatientBirthDate", "") or ""))
        if born and seen and seen >= born:
            age = (seen - born).days / DAYS_PER_MONTH
    return DicomFilm(pixels=pixels, male=male, age_months=age, study_date=seen)
