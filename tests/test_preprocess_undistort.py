"""The single resampling map: undistortion + rotation/zoom, pixel-centre convention, the distortion fold."""

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from gausslift.cameras import Camera, look_at, make_K
from gausslift.preprocess.undistort import (
    apply_homography,
    homography,
    max_valid_radius2,
    pinhole_project,
    remap_maps,
    remap_maps_numpy,
    source_positions,
    undistort_points,
)


def _cam(dist=(-0.25, 0.06, 0.001, -0.002, 0.0), w=160, h=120):
    K = make_K(150.0, 152.0, 83.0, 57.5)
    K[0, 1] = 0.7  # a little skew, as DANNCE calibrations have
    return Camera(K, look_at(np.array([0.0, -300, 50]), np.zeros(3)), w, h, np.array(dist))


def test_map_equals_reference_formula():
    src = _cam()
    R = Rotation.from_rotvec([0.05, -0.1, 0.2]).as_matrix()
    K_out = make_K(120.0, 120.0, 50.0, 40.0)
    mx, my = remap_maps(src, R, K_out, 100, 80)
    uv = np.stack(np.meshgrid(np.arange(100) + 0.5, np.arange(80) + 0.5), -1)
    pos, ok = source_positions(src, R, K_out, uv)
    assert ok.all()
    assert np.abs(pos[..., 0] - 0.5 - mx).max() < 1e-3 and np.abs(pos[..., 1] - 0.5 - my).max() < 1e-3


def test_identity_map_reproduces_the_image_exactly():
    """No distortion, R = I, same K: remap must return the input (pixel centres handled right)."""
    src = _cam(dist=(0, 0, 0, 0, 0))
    img = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)
    mx, my = remap_maps(src, np.eye(3), src.K, 160, 120)
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR)
    assert np.array_equal(out[1:-1, 1:-1], img[1:-1, 1:-1])


def test_zoom_about_centre_keeps_centre_fixed():
    """Doubling f about a principal point at the image centre samples the centre pixel exactly."""
    src = Camera(make_K(100.0, 100.0, 32.0, 32.0), np.eye(4), 64, 64)
    mx, my = remap_maps(src, np.eye(3), make_K(200.0, 200.0, 32.0, 32.0), 64, 64)
    # output pixel centre 32.5 -> source 32.25 (+0.5 convention) -> remap coordinate 31.75
    assert np.isclose(mx[0, 32], 31.75, atol=1e-5) and np.isclose(my[32, 0], 31.75, atol=1e-5)


def test_homography_maps_undistorted_source_to_output():
    src = _cam()
    R = Rotation.from_rotvec([0.02, 0.1, -0.05]).as_matrix()
    K_out = make_K(200.0, 200.0, 64.0, 64.0)
    H = homography(src.K, R, K_out)
    pts = np.random.default_rng(1).normal(scale=30, size=(20, 3))
    out_cam = Camera(K_out, np.eye(4), 128, 128)
    out_cam.viewmat[:3, :3] = R @ src.R
    out_cam.viewmat[:3, 3] = -(R @ src.R) @ src.center
    a = apply_homography(H, pinhole_project(src, pts))
    b = out_cam.project(pts)[0]
    assert np.abs(a - b).max() < 1e-8
    # and raw (distorted) observations undistort onto the same pinhole points
    raw = src.project(pts)[0]
    assert np.abs(undistort_points(src, raw) - pinhole_project(src, pts)).max() < 1e-6


def test_samples_beyond_the_distortion_fold_are_invalid():
    d = np.array([-0.3, 0, 0, 0, 0])
    r2 = max_valid_radius2(d)
    assert 0.9 / (3 * 0.3) < r2 < 1 / (3 * 0.3)  # the fold of r (1 + k1 r^2) is at r^2 = 1 / (3 |k1|)
    src = Camera(make_K(100.0, 100.0, 50.0, 50.0), np.eye(4), 100, 100, d)
    # a wide output view: its corners see rays beyond the fold -> marked outside
    mx, my = remap_maps(src, np.eye(3), make_K(20.0, 20.0, 50.0, 50.0), 100, 100)
    assert mx[0, 0] < -1000 and mx[50, 50] > 0
    assert max_valid_radius2(np.zeros(5)) == 25.0


def test_map_agrees_with_opencv_initUndistortRectifyMap():
    """An independent reference: OpenCV's own undistort+rectify map (pixel centres at integers, so both
    K are shifted by -0.5) must give the same sampling positions wherever ours is valid."""
    src = _cam()
    src = src.with_(K=src.K * np.array([[1, 0, 1], [1, 1, 1], [1, 1, 1]]))  # no skew for OpenCV
    R = Rotation.from_rotvec([0.04, -0.08, 0.1]).as_matrix()
    K_out = make_K(130.0, 130.0, 48.0, 48.0)
    mx, my = remap_maps_numpy(src, R, K_out, 96, 96)  # ours, not OpenCV's (remap_maps may call it)
    shift = np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    cx, cy = cv2.initUndistortRectifyMap(src.K - shift, src.dist, R, K_out - shift, (96, 96), cv2.CV_32FC1)
    ok = mx > -1000
    assert ok.mean() > 0.9
    assert np.abs(mx - cx)[ok].max() < 2e-3 and np.abs(my - cy)[ok].max() < 2e-3


def test_fast_maps_are_opencv_only_where_every_sample_is_valid(monkeypatch):
    """Without skew and with every output pixel inside the valid region, remap_maps takes OpenCV's
    initUndistortRectifyMap; it must match our formula (source_positions) at every pixel. A view whose
    corners see beyond the distortion fold or behind the camera falls back to the numpy maps."""
    src = _cam()
    src = src.with_(K=src.K * np.array([[1, 0, 1], [1, 1, 1], [1, 1, 1]]))
    R = Rotation.from_rotvec([0.03, -0.06, 0.1]).as_matrix()
    K_out = make_K(140.0, 140.0, 40.0, 36.0)
    import gausslift.preprocess.undistort as U

    with monkeypatch.context() as mp:  # the fast path must not fall back to numpy here
        mp.setattr(U, "remap_maps_numpy", lambda *a: (_ for _ in ()).throw(AssertionError("numpy path")))
        mx, my = remap_maps(src, R, K_out, 80, 72)
    uv = np.stack(np.meshgrid(np.arange(80) + 0.5, np.arange(72) + 0.5), -1)
    pos, ok = source_positions(src, R, K_out, uv)
    assert ok.all()
    assert np.abs(pos[..., 0] - 0.5 - mx).max() < 1e-3 and np.abs(pos[..., 1] - 0.5 - my).max() < 1e-3
    nx, ny = remap_maps_numpy(src, R, K_out, 80, 72)
    assert np.abs(nx - mx).max() < 1e-3 and np.abs(ny - my).max() < 1e-3
    # beyond the fold at the corners: invalid samples are marked (OpenCV's map would wrap them back)
    src = src.with_(dist=np.array([-0.3, 0.0, 0.0, 0.0, 0.0]))
    wide = make_K(15.0, 15.0, 40.0, 36.0)
    mx, _ = remap_maps(src, R, wide, 80, 72)
    _, ok = source_positions(src, R, wide, uv)
    assert not ok.all() and np.array_equal(mx > -1000, ok)
    # behind the camera: a view turned 100 degrees away
    away = Rotation.from_rotvec([0.0, np.radians(100), 0.0]).as_matrix()
    mx, _ = remap_maps(Camera(make_K(100.0, 100.0, 40.0, 36.0), np.eye(4), 80, 72), away, K_out, 80, 72)
    assert (mx < -1000).any()
