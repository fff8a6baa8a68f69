"""Helpers shared by several test modules (plain functions; the fixtures built on them live
in conftest.py), so no test module imports another."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from contextlib import contextmanager

import cv2
import numpy as np

from boneage.data.synthetic import synthetic_film


def make_test_model(folder):
    """A small untrained model with the seed pipeline at 64 px: for plumbing, not accuracy."""
    import torch

    from boneage.models.checkpoint import save_checkpoint
    from boneage.models.registry import build_model
    from boneage.preprocess.steps import seed_pipeline

    torch.manual_seed(0)
    card = {"arch": "resnet18", "model_kwargs": {}, "input_size": 64,
            "pipeline": seed_pipeline(64).to_dict(), "target_norm": {"mean": 120.0, "std": 40.0}}
    return save_checkpoint(build_model("resnet18").eval(), card, folder / "m.safetensors")


def make_calibration_set(folder, n: int = 12):
    """n synthetic films and labels.csv, enough to calibrate an interval."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,boneage,male"]
    for i in range(n):
        film, _ = synthetic_film(height=300, width=240, seed=10 + i)
        cv2.imwrite(str(folder / f"c{i}.png"), film)
        lines.append(f"c{i},{60 + 10 * i},{i % 2}")
    (folder / "cal.csv").write_text("\n".join(lines) + "\n")
    return folder / "cal.csv"


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", sex="F", age="010Y",
                window=None, birth=None, study=None, **extra):
    """A 12-bit DX hand film of one made-up patient (the name, ID and accession number that
    no log may show); `extra` sets any other attribute (PatientWeight="31.5")."""
    from boneage.data.dicom import film_dataset

    tags = {"PhotometricInterpretation": photometric, "PatientName": "Doe^Jane",
            "PatientID": "PID-4711", "AccessionNumber": "ACC-4711", "PatientSex": sex}
    for key, value in (("PatientAge", age), ("PatientBirthDate", birth), ("StudyDate", study)):
        if value:
            tags[key] = value
    if window:
        tags["WindowCenter"], tags["WindowWidth"] = window
    film_dataset(pixels, 12, **tags, **extra).save_as(path, enforce_file_format=True)
    return path


def dicom_bytes(pixels: np.ndarray, frames: int = 1, deflate: bool = False, **tags) -> bytes:
    """A DICOM of `frames` copies of `pixels` (uint16), optionally deflated, with extra tags."""
    import io

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from boneage.data.dicom import film_dataset

    ds = film_dataset(pixels, PatientSex="F", **tags)
    if deflate:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * frames
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def damage_bits_allocated(data: bytes) -> bytes:
    """An explicit-VR DICOM whose BitsAllocated (a US, 2 bytes) claims and holds 3: pydicom
    reads the file and fails only when the element is parsed."""
    tag = b"\x28\x00\x00\x01US\x02\x00"
    i = data.index(tag)
    return data[:i] + b"\x28\x00\x00\x01US\x03\x00" + data[i + 8:i + 10] + b"\x00" + data[i + 10:]


def undecodable_jpeg_dicom(path, bits_stored: int = 12):
    """A DICOM whose pixel data is 12-bit JPEG Extended (which neither Pillow nor GDCM
    decodes) holding junk."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGExtended12Bit

    p = write_dicom(path, np.zeros((64, 64), np.uint16))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc1" + bytes(200) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(p, enforce_file_format=True)
    return p


def png_header(w: int, h: int, depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


@contextmanager
def running(app, **protocol_settings):
    """The app under a real uvicorn (with our header-deadline protocol) on a loopback port."""
    import socket

    import uvicorn

    from boneage.service import protocol

    saved = {k: getattr(protocol, k) for k in protocol_settings}
    for k, v in protocol_settings.items():
        setattr(protocol, k, v)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           http=protocol.HeaderDeadlineProtocol))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(10)
        for k, v in saved.items():
            setattr(protocol, k, v)
