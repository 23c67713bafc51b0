"""Shared reader helpers: header-only image sizes agree with decoding, path resolution, clear errors."""

import cv2
import numpy as np
import pytest

from gausslift.errors import InputError
from gausslift.io.common import (
    as_matrix,
    as_number,
    find_by_stem,
    image_header,
    list_images,
    load_json,
    resolve_image,
)


@pytest.mark.parametrize(
    "name,shape,dtype,params",
    [
        ("g.png", (13, 17), np.uint8, []),
        ("c.png", (13, 17, 3), np.uint8, []),
        ("a.png", (13, 17, 4), np.uint8, []),
        ("a16.png", (13, 17, 4), np.uint16, []),
        ("c.jpg", (21, 34, 3), np.uint8, []),
        ("g.jpg", (21, 34), np.uint8, []),
        ("p.jpg", (21, 34, 3), np.uint8, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ("b.bmp", (9, 11, 3), np.uint8, []),
    ],
)
def test_image_header_matches_decoding(tmp_path, rng, name, shape, dtype, params):
    img = (rng.uniform(size=shape) * np.iinfo(dtype).max).astype(dtype)
    p = tmp_path / name
    assert cv2.imwrite(str(p), img, params)
    dec = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    w, h, c = image_header(p)
    assert (w, h) == (dec.shape[1], dec.shape[0]) == (shape[1], shape[0])
    assert c == (1 if dec.ndim == 2 else dec.shape[2])


def test_image_header_of_broken_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "y.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    (tmp_path / "z.png").write_bytes(b"")
    for n in ("x.png", "y.jpg", "z.png", "missing.png"):
        assert image_header(tmp_path / n) is None


def test_resolve_and_find(tmp_path):
    (tmp_path / "train").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "r_0.png"), np.zeros((2, 2), np.uint8))
    assert resolve_image(tmp_path, "./train/r_0") == tmp_path / "train" / "r_0.png"
    assert resolve_image(tmp_path, "train/r_0.png") == tmp_path / "train" / "r_0.png"
    assert resolve_image(tmp_path, "train/../train/r_0") == tmp_path / "train" / "r_0.png"
    assert not resolve_image(tmp_path, "train/r_9").exists()
    assert find_by_stem(tmp_path / "train", "r_0") == tmp_path / "train" / "r_0.png"
    assert find_by_stem(tmp_path / "train", "r_0.jpg") == tmp_path / "train" / "r_0.png"
    assert find_by_stem(tmp_path / "train", "r_1") is None
    (tmp_path / "train" / ".hidden.png").write_bytes(b"")
    (tmp_path / "train" / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path / "train")] == ["r_0.png"]


def test_json_and_matrix_errors(tmp_path):
    p = tmp_path / "a.json"
    with pytest.raises(InputError, match="missing"):
        load_json(p)
    p.write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        load_json(p)
    p.write_text('{"a": [1, 2,')
    with pytest.raises(InputError, match="not valid JSON") as e:
        load_json(p)
    assert str(p) in str(e.value)
    p.write_text('{"a": NaN}')  # Python's json accepts NaN; the matrix check catches it
    with pytest.raises(InputError, match="NaN"):
        as_matrix([[load_json(p)["a"], 0], [0, 1]], (2, 2), p, "m")
    with pytest.raises(InputError, match=r"shape \[3\], expected 2x2"):
        as_matrix([1, 2, 3], (2, 2), p, "m")
    with pytest.raises(InputError, match="not a numeric"):
        as_matrix([[1, "a"], [0, 1]], (2, 2), p, "m")
    assert as_matrix([[1, 2, 3, 4]] * 5, (-1, 4), p, "m").shape == (5, 4)
    with pytest.raises(InputError, match="positive"):
        as_number(-1, p, "w", positive=True)
    with pytest.raises(InputError, match="not a number"):
        as_number("x", p, "w")
