from __future__ import annotations

import cv2
import numpy as np
import pytest

from boneage.data import images
from boneage.data.images import decode_image, read_image
from boneage.errors import BoneAgeError
from tests.helpers import png_header


def test_png_8_and_16_bit(tmp_path):
    a8 = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    a16 = (np.arange(64 * 48) * 20).astype(np.uint16).reshape(48, 64)
    cv2.imwrite(str(tmp_path / "a.png"), a8)
    cv2.imwrite(str(tmp_path / "b.png"), a16)
    assert np.array_equal(read_image(tmp_path / "a.png"), a8)
    b = read_image(tmp_path / "b.png")
    assert b.dtype == np.uint16 and np.array_equal(b, a16)


def test_rgb_encoded_gray_jpeg_becomes_one_channel(tmp_path):
    g = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    cv2.imwrite(str(tmp_path / "c.jpg"), cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
    out = read_image(tmp_path / "c.jpg")
    assert out.ndim == 2 and out.shape == (64, 64)
    assert np.abs(out.astype(int) - g).mean() < 3


def test_suffix_does_not_matter(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.full((40, 40), 7, np.uint8))
    (tmp_path / "x.jpg").write_bytes((tmp_path / "x.png").read_bytes())
    assert read_image(tmp_path / "x.jpg")[0, 0] == 7


def test_too_small_for_a_radiograph(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.full((5, 500), 7, np.uint8))
    with pytest.raises(BoneAgeError, match="500x5 pixels, too small"):
        read_image(tmp_path / "x.png")


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello, I am a text file")
    with pytest.raises(BoneAgeError, match="not an image"):
        read_image(tmp_path / "a.png")


def test_truncated_png(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 64),
                                                                            dtype=np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    with pytest.raises(BoneAgeError, match="truncated PNG"):
        decode_image(data[:60], "a.png")


def test_damaged_png_is_our_one_line_and_not_libpngs(capfd):
    """libpng prints its own lines to the process's stderr (not Python's) for a damaged PNG:
    those are caught by the chunk check before OpenCV sees the file."""
    img = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    data = cv2.imencode(".png", img)[1].tobytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40  # inside the pixel data: the IDAT chunk's checksum fails
    cases = {"truncated PNG": data[: len(data) * 2 // 3],
             "IDAT chunk fails its checksum": bytes(flipped)}
    for why, bad in cases.items():
        with pytest.raises(BoneAgeError, match=why):
            decode_image(bad, "a.png")
    assert capfd.readouterr().err == ""
    # bytes after the last chunk (some writers pad files) are not damage
    assert np.array_equal(decode_image(data + b"\0" * 16, "a.png"), img)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BoneAgeError, match="no such file"):
        read_image(tmp_path / "none.png")
    with pytest.raises(BoneAgeError, match="is a folder"):
        read_image(tmp_path)


def test_decompression_bomb_rejected_before_decoding():
    with pytest.raises(BoneAgeError, match="over the limit"):
        decode_image(png_header(100_000, 100_000), "bomb.png")


def test_jpeg_header_info(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((37, 91), np.uint8))
    assert images.header_info((tmp_path / "a.jpg").read_bytes(), "jpeg") == (91, 37, 1, 1)
