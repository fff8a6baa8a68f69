"""Reading films: PNG/JPEG (8- or 16-bit, RGB-encoded grayscale) and DICOM, into one 2-D array.

Formats are recognised by their magic bytes, not their suffix, so a mislabelled file is read
correctly and a non-image is rejected with a clear message. Image dimensions are checked from the
header before decoding, which guards against decompression bombs.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from boneage.errors import BoneAgeError, TooLarge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
MAX_PIXELS = int(os.environ.get("BONEAGE_MAX_PIXELS", 80_000_000))  # ~9000 x 9000
# what decoding one image may allocate: width x height x channels x bytes per sample, read from
# the header (a 616 kB 16-bit RGBA PNG of 8,900 x 8,900 asks for 634 MB)
MAX_DECODE_BYTES = int(os.environ.get("BONEAGE_MAX_DECODE_BYTES", 256 << 20))
MAX_SIDE = 65_535  # JPEG's and DICOM's own limit; libpng refuses (and prints) past 1,000,000

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> str | None:
    """'png', 'jpeg', 'dicom' or None, from the first bytes of a file."""
    if data.startswith(_PNG):
        return "png"
    if data.startswith(_JPEG):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type (a palette decodes to RGB)


def header_info(data: bytes, fmt: str) -> tuple[int, int, int, int] | None:
    """(width, height, channels, bytes per sample) read from a PNG or JPEG header without
    decoding the pixels."""
    if fmt == "png" and len(data) >= 26:
        w, h = struct.unpack(">II", data[16:24])
        depth, colour = data[24], data[25]
        return w, h, _PNG_CHANNELS.get(colour, 4), 2 if depth == 16 else 1
    if fmt == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h, data[i + 9], 2 if data[i + 4] > 8 else 1
            i += 2 + seg_len
    return None


MIN_SIDE = 32  # pixels: a smaller picture is no radiograph


def _check_pixels(w: int, h: int, name: str, channels: int = 1, sample_bytes: int = 1
                  ) -> None:
    """From the header, before any decoding: a decompression bomb (by pixels, by side, and by
    the bytes decoding would allocate) or a picture too small."""
    if min(w, h) < MIN_SIDE:
        raise BoneAgeError(f"{name}: image is {w}x{h} pixels, too small for a radiograph")
    if w * h > MAX_PIXELS:
        raise TooLarge(
            f"{name}: image is {w}x{h} pixels, over the limit of {MAX_PIXELS:,} "
            "(set BONEAGE_MAX_PIXELS to raise it)"
        )
    need = w * h * max(channels, 1) * max(sample_bytes, 1)
    if need > MAX_DECODE_BYTES:
        raise TooLarge(f"{name}: decoding this {w}x{h} image ({channels} channel(s) of "
                       f"{8 * sample_bytes} bits) would take {need >> 20} MB, over the limit of "
                       f"{MAX_DECODE_BYTES >> 20} MB (set BONEAGE_MAX_DECODE_BYTES to raise it)")
    if max(w, h) > MAX_SIDE:
        raise TooLarge(f"{name}: image is {w}x{h} pixels, a side over {MAX_SIDE:,}: no "
                       "radiograph is that long")


def _check_png_chunks(data: bytes, name: str) -> None:
    """A truncated PNG, or one whose chunks fail their checksums, is refused here: handed to
    OpenCV, libpng would print its own lines to the terminal beside our one line (it writes to
    stderr itself)."""
    import zlib

    i, n = len(_PNG), len(data)
    while True:
        if i + 12 > n:
            raise BoneAgeError(f"{name}: truncated PNG (the file ends before its last chunk)")
        length = struct.unpack(">I", data[i : i + 4])[0]
        kind, end = data[i + 4 : i + 8], i + 8 + length
        if end + 4 > n or not kind.isalpha():
            raise BoneAgeError(f"{name}: damaged or truncated PNG (a chunk runs past the end of "
                               "the file, or its name is not one)")
        stored = struct.unpack(">I", data[end : end + 4])[0]
        if zlib.crc32(data[i + 4 : end]) != stored:
            raise BoneAgeError(f"{name}: damaged PNG (its {kind.decode()} chunk fails its "
                               "checksum)")
        if kind == b"IEND":
            return
        i = end + 4


COLOUR_NOTE = "a colour picture, not a radiograph: the estimate is not meaningful"


def decode_image(data: bytes, name: str = "image", notes: list[str] | None = None
                 ) -> np.ndarray:
    """Decode PNG/JPEG/DICOM bytes to a 2-D uint8 or uint16 array (DICOM: display-ready).
    `notes`, when given, collects what the file says against it being a hand radiograph."""
    fmt = sniff_format(data)
    if fmt is None:
        raise BoneAgeError(f"{name}: not an image (expected PNG, JPEG or DICOM)")
    if fmt == "dicom":
        from boneage.data.dicom import decode_dicom

        d = decode_dicom(data, name)
        if notes is not None:
            notes += d.notes
        return d.pixels
    info = header_info(data, fmt)
    if info is None:
        raise BoneAgeError(f"{name}: unreadable {fmt.upper()} header (truncated or corrupt file)")
    w, h, channels, sample_bytes = info
    _check_pixels(w, h, name, channels, sample_bytes)
    if fmt == "png":
        _check_png_chunks(data, name)
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BoneAgeError(f"{name}: corrupt {fmt.upper()} data, could not decode")
    if notes is not None and is_colour(img):
        notes.append(COLOUR_NOTE)
    return to_gray(img)


def is_colour(img: np.ndarray) -> bool:
    """Really colour, not grey stored as RGB (JPEG leaves a few levels between channels)."""
    if img.ndim != 3 or img.shape[2] < 3:
        return False
    c = img[::4, ::4, :3].astype(np.int32)
    return float(np.mean(np.abs(c[..., 0] - c[..., 1]) + np.abs(c[..., 1] - c[..., 2]))) > 12


def to_gray(img: np.ndarray) -> np.ndarray:
    """One channel: RGB-encoded grayscale (and colour, by luminance) to 2-D, alpha dropped."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        c = img[:, :, :3]
        if np.array_equal(c[:, :, 0], c[:, :, 1]) and np.array_equal(c[:, :, 1], c[:, :, 2]):
            return np.ascontiguousarray(c[:, :, 0])
        import cv2

        return cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)
    raise BoneAgeError(f"unsupported image shape {img.shape}")


def read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise BoneAgeError(f"{p}: no such file")
    if p.is_dir():
        raise BoneAgeError(f"{p}: is a folder, expected an image file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise BoneAgeError(f"{p}: cannot read ({e.strerror or e})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read a film from disk as a 2-D uint8/uint16 array."""
    return decode_image(read_bytes(path), str(path))


def _why_not_an_image(p: Path) -> str | None:
    """None for a readable PNG/JPEG/DICOM (by content: PACS exports often have no suffix),
    else the reason to skip it."""
    try:
        if p.is_symlink() and not p.exists():
            return "broken or looping link"
        if not p.is_file():
            return "not a regular file"
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if sniff_format(head) else "not an image"


def list_images(folder: str | Path, skipped: dict[str, list[str]] | None = None) -> list[Path]:
    """Image files directly in a folder, recognised by their content, sorted by name. Hidden
    files and subfolders are passed over; every other file that is not an image is recorded in
    `skipped` (reason -> names) when given."""
    d = Path(folder)
    if not d.is_dir():
        raise BoneAgeError(f"{d}: no such folder")
    found = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or (p.is_dir() and not p.is_symlink()):
            continue
        why = _why_not_an_image(p)
        if why is None:
            found.append(p)
        elif skipped is not None:
            skipped.setdefault(why, []).append(p.name)
    return found


def skipped_summary(folder: str | Path, skipped: dict[str, list[str]]) -> str | None:
    """One line: how many files of a folder were skipped, and why (a few names each)."""
    if not skipped:
        return None
    parts = []
    for why, names in skipped.items():
        shown = ", ".join(repr(n)[1:-1] for n in names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{len(names)} {why} ({shown})")
    total = sum(len(v) for v in skipped.values())
    return f"{folder}: skipped {total} file(s): " + "; ".join(parts)
