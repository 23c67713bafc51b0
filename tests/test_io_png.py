"""PNG reading prints nothing for files with duplicate eXIf chunks (the FaceLift sample's), keeps every
pixel, and still reports real decode errors."""

import zlib

import cv2
import numpy as np
import pytest

from gausslift.errors import InputError
from gausslift.io.common import image_header
from gausslift.scene import decode_image, read_image_file, strip_png_exif


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")


def _png_with_two_exif(img: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".png", img)
    assert ok
    data = enc.tobytes()
    ihdr_end = 8 + 12 + 13
    exif = _chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00")
    return data[:ihdr_end] + exif + exif + data[ihdr_end:]


@pytest.fixture
def exif_png(tmp_path, rng):
    img = (rng.uniform(size=(11, 13, 4)) * 65535).astype(np.uint16)  # BGRA as OpenCV stores it
    path = tmp_path / "dup_exif.png"
    path.write_bytes(_png_with_two_exif(img))
    return path, img


def test_duplicate_exif_png_reads_silently_with_exact_pixels(exif_png, capfd):
    path, bgra = exif_png
    # the file really provokes libpng's warning when decoded as is (so this test can fail)
    raw = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    assert "eXIf" in capfd.readouterr().err
    np.testing.assert_array_equal(raw, bgra)

    img = read_image_file(path)
    header = image_header(path)
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""
    assert header == (13, 11, 4)
    np.testing.assert_array_equal(img, bgra[..., [2, 1, 0, 3]].astype(np.float32) / 65535.0)


def test_strip_keeps_other_chunks_and_non_png_bytes():
    data = _png_with_two_exif(np.zeros((3, 4, 3), np.uint8))
    stripped = strip_png_exif(data)
    assert b"eXIf" not in stripped and len(data) - len(stripped) == 2 * (12 + 10)
    assert b"IHDR" in stripped and b"IDAT" in stripped and b"IEND" in stripped
    assert strip_png_exif(b"\xff\xd8 not a png eXIf") == b"\xff\xd8 not a png eXIf"


def test_broken_png_is_still_an_error(exif_png, tmp_path):
    path, _ = exif_png
    broken = tmp_path / "broken.png"
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated inside the image data
    with pytest.raises(InputError, match="not a readable image"):
        read_image_file(broken)
    assert decode_image(b"") is None
