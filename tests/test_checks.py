"""Each calibration check fires on a scene crafted to have its problem, and stays silent on a clean one."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from gausslift.cameras import Camera, look_at, make_K, ring
from gausslift.checks import (
    check_scene,
    distortion_fold,
    reprojection_errors,
    subject_point,
)
from gausslift.scene import Keypoints, Scene, View

S = 64  # image size of the crafted rigs


def clean_scene(n=6, keypoints=False, seed=0, noise=0.3):
    cams = ring(n, radius=3.0, elevation_deg=15.0, fov_deg=50.0, size=S, target=(0.2, -0.1, 0.3))
    views = [View(f"cam{i}", c) for i, c in enumerate(cams)]
    scene = Scene(views, format="test")
    if keypoints:
        rng = np.random.default_rng(seed)
        pts = rng.normal(0, 0.2, (4, 6, 3)) + [0.2, -0.1, 0.3]
        obs = {v.name: v.camera.project(pts)[0] + rng.normal(0, noise, (4, 6, 2)) for v in views}
        scene.keypoints = Keypoints(pts, obs)
    return scene


def with_camera(scene, i, **kw):
    views = list(scene.views)
    views[i] = replace(views[i], camera=views[i].camera.with_(**kw))
    return replace(scene, views=views, warnings=list(scene.warnings))


def only(warnings, *needles):
    return [w for w in warnings if all(n in w for n in needles)]


def test_clean_rig_has_no_warning():
    assert check_scene(clean_scene()) == []
    assert check_scene(clean_scene(keypoints=True)) == []


def test_reader_warnings_come_first_and_once():
    s = clean_scene()
    s.warnings = ["x.png: image file is missing; view skipped", "x.png: image file is missing; view skipped"]
    assert check_scene(s) == ["x.png: image file is missing; view skipped"]


def test_duplicate_cameras_are_named():
    s = clean_scene()
    s = with_camera(s, 4, K=s.views[1].camera.K, viewmat=s.views[1].camera.viewmat)
    w = check_scene(s)
    assert len(only(w, "'cam1' and 'cam4'", "identical")) == 1 and len(w) == 1
    # near-identical: 0.001 of the rig size apart
    s2 = clean_scene()
    V = s2.views[1].camera.viewmat.copy()
    V[0, 3] += 1e-4
    s2 = with_camera(s2, 4, K=s2.views[1].camera.K, viewmat=V)
    assert only(check_scene(s2), "'cam1' and 'cam4'", "near-identical")


def test_same_camera_at_different_frames_is_not_a_duplicate():
    s = clean_scene(2)
    v = s.views[0]
    s.views = [replace(v, name="f0", meta={"frame": 0}), replace(v, name="f1", meta={"frame": 1})]
    assert not only(check_scene(s), "identical")


def test_camera_turned_away_and_behind():
    s = clean_scene()
    eye, fwd = s.views[2].camera.center, s.views[2].camera.forward
    side = np.cross(fwd, [0, 0, 1]) / np.linalg.norm(np.cross(fwd, [0, 0, 1]))
    away = look_at(eye, eye + np.cos(0.7) * fwd + np.sin(0.7) * side)  # 40 deg off, half FOV is 25
    behind = look_at(s.views[5].camera.center, 2 * s.views[5].camera.center)  # looks outward
    s = with_camera(with_camera(s, 2, viewmat=away), 5, viewmat=behind)
    w = check_scene(s)
    assert only(w, "'cam2' does not face the subject: it is 40 deg off")
    assert only(w, "'cam5' has the subject behind it")
    assert len(w) == 2  # the robust subject estimate is not dragged off by the two bad cameras
    p = subject_point(s)
    np.testing.assert_allclose(p, [0.2, -0.1, 0.3], atol=1e-6)


def test_subject_from_keypoints_when_present():
    s = clean_scene(keypoints=True)
    np.testing.assert_allclose(subject_point(s), np.nanmean(s.keypoints.points3d.reshape(-1, 3), 0))


@pytest.mark.parametrize(
    "K, needle",
    [
        (make_K(np.nan, 60, 32, 32), "NaN"),
        (make_K(-60, 60, 32, 32), "not positive"),
        (make_K(60, 60, 200, 32), "principal point (200, 32) lies outside"),
        (make_K(90, 60, 32, 32), "fx/fy = 1.500"),
        (np.array([[60.0, 8.0, 32], [0, 60, 32], [0, 0, 1]]), "skew 8 px"),
    ],
)
def test_degenerate_intrinsics(K, needle):
    s = with_camera(clean_scene(), 3, K=K)
    w = check_scene(s)
    assert only(w, "'cam3'", needle), w
    assert not [x for x in w if "'cam3'" not in x], w


def test_small_skew_is_not_flagged():
    K = np.array([[60.0, 0.2, 32], [0, 60, 32], [0, 0, 1]])
    assert check_scene(with_camera(clean_scene(), 3, K=K)) == []


def test_non_rigid_rotation():
    s = clean_scene()
    V = s.views[0].camera.viewmat.copy()
    V[:3, :3] *= 1.1
    assert only(check_scene(with_camera(s, 0, viewmat=V)), "'cam0'", "not orthonormal")


def test_distortion_that_folds_inside_the_image():
    s = with_camera(clean_scene(), 1, dist=[-0.6, 0, 0, 0, 0])
    w = check_scene(s)
    assert only(w, "'cam1'", "turns back") and len(w) == 1
    # a mild distortion does not fold; the fold radius is where d(r_d)/dr = 0: r^2 = 1/(3|k1|)
    assert distortion_fold(with_camera(s, 1, dist=[-0.05, 0, 0, 0, 0]).views[1].camera) is None
    cam = Camera(make_K(100, 100, 100, 100), np.eye(4), 200, 200, [-0.5, 0, 0, 0, 0])
    r = np.sqrt(1 / 1.5)
    px, frac = distortion_fold(cam)
    assert px == pytest.approx(100 * r * (1 - 0.5 * r * r), rel=1e-3) and 0 < frac < 1


def _png(path, w, h):
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))
    return path


def test_image_mask_and_video_sizes(tmp_path):
    s = clean_scene(3)
    s.views[0].image = _png(tmp_path / "a.png", S, S)
    s.views[1].image = _png(tmp_path / "b.jpg", S + 2, S)
    s.views[1].mask = _png(tmp_path / "bm.png", S, S - 1)
    s.views[2].image = tmp_path / "gone.png"
    vw = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (S, S + 16))
    vw.write(np.zeros((S + 16, S, 3), np.uint8))
    vw.release()
    s.views[0].meta["video"] = tmp_path / "v.avi"
    w = check_scene(s)
    assert only(w, "'cam1'", "b.jpg is 66x64 but its calibration is 64x64")
    assert only(w, "'cam1'", "mask bm.png is 64x63")
    assert only(w, "'cam2'", "gone.png is missing")
    assert only(w, "'cam0'", "video v.avi is 64x80")
    assert not only(w, "a.png")
    assert len(w) == 4
    assert check_scene(s, media=False) == []


def test_reprojection_errors_numbers_and_flag():
    s = clean_scene(keypoints=True)
    s.keypoints.points2d["cam3"] = s.keypoints.points2d["cam3"] + [3.0, 4.0]  # 5 px off
    s.keypoints.points2d["cam0"][1, 2] = np.nan
    errs = reprojection_errors(s)
    assert errs["cam3"]["median_px"] == pytest.approx(5.0, abs=0.4) and errs["cam3"]["n"] == 24
    assert errs["cam0"]["n"] == 23 and errs["cam0"]["max_px"] < 1.5
    assert set(errs) == {v.name for v in s.views}
    # 5 px in a 64 px image is > 1% of the diagonal; the rest of the rig is exact
    w = check_scene(s)
    assert len(w) == 1 and only(w, "'cam3'", "reprojection error of the keypoints: median")


def test_calibration_board_points_are_checked_too():
    s = clean_scene(keypoints=True)
    board = Keypoints(s.keypoints.points3d, {k: v.copy() for k, v in s.keypoints.points2d.items()})
    board.points2d["cam1"] += 6.0
    s.meta["board"] = board
    w = check_scene(s)
    assert len(w) == 1 and only(w, "'cam1'", "reprojection error of the calibration-board corners")
    assert reprojection_errors(s, "board")["cam1"]["median_px"] > 8
    assert reprojection_errors(s)["cam1"]["median_px"] < 1


def test_exact_labels_are_reported_as_uninformative():
    w = check_scene(clean_scene(keypoints=True, noise=0.0))
    assert len(w) == 1 and only(w, "keypoints: the 2D points of all 6 views equal")


def test_labels_beyond_the_image():
    s = clean_scene(keypoints=True)
    s.keypoints.points2d["cam2"][0, 0] = [-40.0, 10.0]
    w = check_scene(s)
    assert only(w, "'cam2'", "2D keypoints span", "beyond its 64x64 image")


def test_truncated_images_are_named(tmp_path):
    """A PNG or JPEG cut short keeps a valid header (so its size reads), but has no end marker."""
    s = clean_scene(3)
    s.views[0].image = _png(tmp_path / "a.png", S, S)
    s.views[1].image = _png(tmp_path / "b.jpg", S, S)
    s.views[2].image = _png(tmp_path / "c.png", S, S)
    assert check_scene(s) == []  # whole files: nothing to say
    for name in ("a.png", "b.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    w = check_scene(s)
    assert only(w, "'cam0'", "a.png is truncated")  # the PNG header alone gives its size
    jpg = only(w, "'cam1'", "b.jpg is")  # a JPEG's size needs a decode, which may fail first
    assert jpg and ("truncated" in jpg[0] or "not readable" in jpg[0])
    assert len(w) == 2
