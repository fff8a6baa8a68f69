from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from boneage.data.dicom import decode_dicom  # noqa: E402
from boneage.data.images import read_image  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from tests.helpers import (  # noqa: E402
    damage_bits_allocated,
    undecodable_jpeg_dicom,
    write_dicom,
)


def test_monochrome1_is_inverted_and_header_read(tmp_path):
    px = np.zeros((32, 32), np.uint16)
    px[8:24, 8:24] = 4000  # dense square: dark on a MONOCHROME1 display
    film = decode_dicom(write_dicom(tmp_path / "a.dcm", px, "MONOCHROME1").read_bytes())
    assert film.pixels[16, 16] < film.pixels[0, 0]  # inverted: the square is now dark
    assert film.male is False
    assert film.age_months == 120


def test_voi_window_applied(tmp_path):
    px = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (32, 1))
    film = decode_dicom(write_dicom(tmp_path / "a.dcm", px, window=(1000, 200)).read_bytes())
    row = film.pixels[0]
    # values below 900 all map to black, above 1100 to white
    assert row[px[0] < 850].max() == 0 and row[px[0] > 1150].min() == 65535


def test_age_from_dates_and_reader_integration(tmp_path):
    px = np.full((32, 32), 100, np.uint16)
    p = write_dicom(tmp_path / "b.dcm", px, sex="M", age=None, birth="20200101",
                    study="20260101")
    film = decode_dicom(p.read_bytes())
    assert film.male is True and film.age_months == pytest.approx(72, abs=0.1)
    assert read_image(p).shape == (32, 32)


def test_dates_win_over_patient_age(tmp_path):
    """The birth and study dates give the age to the day; PatientAge ('006Y') only where
    they are missing: a child of 6 y 11 m is not read as 72 months."""
    px = np.full((32, 32), 100, np.uint16)
    both = write_dicom(tmp_path / "c.dcm", px, age="006Y", birth="20100301", study="20170201")
    assert decode_dicom(both.read_bytes()).age_months == pytest.approx(83.0, abs=0.1)
    only_age = write_dicom(tmp_path / "d.dcm", px, age="006Y")
    assert decode_dicom(only_age.read_bytes()).age_months == 72


def test_garbage_after_dicm_preamble():
    data = b"\0" * 128 + b"DICM" + b"\x01\x02garbage"
    with pytest.raises(BoneAgeError, match="DICOM"):
        decode_dicom(data, "x.dcm")


def test_damaged_header_element_is_one_line(tmp_path):
    # pydicom parses elements when they are read: a wrong length surfaced as a traceback
    data = damage_bits_allocated(write_dicom(tmp_path / "a.dcm", np.zeros((64, 64))).read_bytes())
    with pytest.raises(BoneAgeError, match=r"^x\.dcm: unreadable DICOM \(BytesLength") as e:
        decode_dicom(data, "x.dcm")
    assert "\n" not in str(e.value)


def test_undecodable_compression_is_named_with_each_decoders_reason(tmp_path):
    data = undecodable_jpeg_dicom(tmp_path / "j.dcm").read_bytes()
    with pytest.raises(BoneAgeError, match="compressed as JPEG Extended") as e:
        decode_dicom(data, "j.dcm")
    msg = str(e.value)
    assert "\n" not in msg and "no installed decoder reads" in msg
    assert "pillow" in msg.lower()  # the decoders' own reasons, not cut off at the first line
