"""Re-framing one view: the subject's centre of mass at the image centre and its size ratio on target,
measured on the resampled mask, for a distorted off-centre source; facelift framing; roll."""

import cv2
import numpy as np
import pytest

from gausslift.cameras import Camera, look_at, make_K
from gausslift.preprocess.center import mask_centroid
from gausslift.preprocess.reframe import aim_rotation, reframe_view


def _src():
    eye = np.array([0.4, -2.6, 0.9])
    cam = Camera(make_K(420.0, 420.0, 330.0, 250.0), look_at(eye, np.array([0.5, 0.2, 0.3])), 640, 480)
    return cam.with_(dist=np.array([-0.28, 0.07, 0.001, 0.0005, 0.0]))


def _mask(cam):
    m = np.zeros((cam.height, cam.width), np.uint8)
    uv, _ = cam.project(np.zeros((1, 3)))
    cv2.ellipse(m, (int(uv[0, 0]), int(uv[0, 1])), (70, 35), 30, 0, 360, 255, -1)
    return m


@pytest.mark.parametrize("scale", [0.2, 0.3, 0.45])
def test_pixel_framing_centres_and_sizes(scale):
    src = _src()
    rf = reframe_view(src, _mask(src), size=256, framing="pixel", target_scale=scale)
    com = mask_centroid(rf.mask)
    assert np.abs(com - 128).max() < 0.3
    assert abs(rf.size_ratio - scale) < 0.002
    K = rf.camera.K
    assert K[0, 0] == K[1, 1] and np.allclose(K[:2, 2], 128) and not rf.camera.has_distortion
    assert np.allclose(rf.camera.center, src.center)  # same centre, only rotated and zoomed


def test_facelift_framing_looks_at_origin():
    src = _src()
    rf = reframe_view(src, _mask(src), size=512, framing="facelift")
    d = np.linalg.norm(src.center)
    assert rf.camera.K[0, 0] == pytest.approx(548.9937744140625 * d / 2.7)
    assert np.allclose(rf.camera.project(np.zeros((1, 3)))[0], 256)
    # world up (+z) points up in the image
    up = rf.camera.project(np.array([[0, 0, 0.1]]))[0]
    assert up[0, 1] < 256 and abs(up[0, 0] - 256) < 1e-6


def test_roll_fallback_for_a_camera_looking_straight_down():
    R = aim_rotation(np.array([0, 0, -1.0]), up_hint=np.array([0, 1.0, 0]))
    assert np.allclose(R @ R.T, np.eye(3)) and np.allclose(R[2], [0, 0, -1])
    assert np.allclose(-R[1], [0, 1, 0])  # image up = the hint
