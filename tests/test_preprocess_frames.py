"""Frame selection and sequential video decoding that keeps only the frames asked for."""

import cv2
import numpy as np
import pytest

from gausslift.errors import InputError
from gausslift.preprocess.frames import (
    VideoStream,
    parse_frames,
    read_image_u8,
    read_video_frames,
    sample_indices,
    video_info,
)


def test_parse_frames():
    assert parse_frames("0:120:20", 120) == [0, 20, 40, 60, 80, 100]
    assert parse_frames(None, 3) == [0, 1, 2]
    assert parse_frames("::50", 120) == [0, 50, 100]
    assert parse_frames("3,1", 5) == [3, 1]
    for bad in ("a:b", "0,9", "10:20", "1:2:3:4"):
        with pytest.raises(InputError):
            parse_frames(bad, 5)


def _video(path, n=12, w=64, h=48):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for i in range(n):
        vw.write(np.full((h, w, 3), 10 + 20 * i, np.uint8))  # frame index readable from its grey level
    vw.release()


def test_video_frames_by_index(tmp_path):
    p = tmp_path / "v.avi"
    _video(p)
    assert video_info(p)[1:] == (64, 48)
    got = read_video_frames(p, [7, 2, 11])
    assert sorted(got) == [2, 7, 11]
    for i, f in got.items():
        assert f.ndim == 2 and abs(int(np.median(f)) - (10 + 20 * i)) <= 3  # grey video comes back grey
    s = VideoStream(p)
    assert sorted(s.read([1, 3])) == [1, 3] and sorted(s.read([5])) == [5]
    assert abs(int(np.median(s.read([0])[0])) - 10) <= 3  # going back reopens
    s.close()
    with pytest.raises(InputError):
        read_video_frames(p, [30])
    with pytest.raises(InputError):
        read_video_frames(tmp_path / "missing.avi", [0])


def test_sample_indices_and_images(tmp_path):
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, 10, include=[7]) == [0, 1, 2, 7]
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 2] = 200  # red in BGR order on disk
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    assert read_image_u8(tmp_path / "c.png")[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(InputError):
        read_image_u8(tmp_path / "nope.png")


def test_given_mask_folder_picks_frames_by_number(tmp_path):
    from gausslift.cameras import Camera, make_K
    from gausslift.preprocess.sources import open_source, read_chunk
    from gausslift.scene import View

    img = tmp_path / "cam.png"
    cv2.imwrite(str(img), np.zeros((6, 8), np.uint8))
    (tmp_path / "masks" / "cam").mkdir(parents=True)
    for i in (0, 5, 10):  # sparse, numbered files: frame 5 is mask_0005.png, not the 6th file
        cv2.imwrite(str(tmp_path / "masks" / "cam" / f"mask_{i:04d}.png"), np.full((6, 8), 20 * i, np.uint8))
    view = View("cam", Camera(make_K(5.0, 5.0, 4.0, 3.0), np.eye(4), 8, 6), image=img)
    src = open_source(view, str(tmp_path / "masks"), 25, 1, [0])
    read_chunk(src, [5, 10])
    assert src.given[5][0, 0] == 100 and src.given[10][0, 0] == 200
    with pytest.raises(InputError):
        read_chunk(src, [7])
    with pytest.raises(InputError):
        open_source(View("other", view.camera, image=img), str(tmp_path / "masks"), 25, 1, [0])
