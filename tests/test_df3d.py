"""DeepFly3D results (``df3d_result*.pkl`` + ``camera_N.mp4``): DeepFly3D's conventions (R/tvec
world-to-camera, OpenCV K, points2d normalised (row, column), zeros unseen, points3d vs
points3d_wo_procrustes), per-camera reprojection errors in ``inspect``, a safe unpickler, and ingest of
the near-orthographic rig (f = 16,000 px at 118 mm) with the consistency proof intact."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
from _captures import df3d_rig, fly_points, render_ellipsoid, write_deepfly3d

from gausslift.cameras import Camera, make_K
from gausslift.checks import check_scene, reprojection_errors
from gausslift.cli.inspect import summary
from gausslift.errors import InputError
from gausslift.io import detect_format, read_scene
from gausslift.preprocess.ingest import IngestOptions, ingest
from gausslift.preprocess.normalize import transform_camera, transform_points
from gausslift.preprocess.undistort import apply_homography, pinhole_project


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    root = tmp_path_factory.mktemp("df3d") / "trial"
    cams = df3d_rig(3)
    pts = fly_points(3, 12)
    write_deepfly3d(root, cams, pts, frames=3, hidden=[(0, 1, 4), (2, 0, 0), (1, 2, 3)])
    return root, cams, pts


def _pkl(root):
    return next((root / "df3d").glob("df3d_result*.pkl"))


def test_reads_cameras_and_points_in_internal_convention(capture):
    root, cams, pts = capture
    for where in (root, root / "df3d", _pkl(root)):
        assert detect_format(where) == "deepfly3d"
    scene = read_scene(root)
    assert scene.format == "deepfly3d" and scene.names == ["camera_0", "camera_1", "camera_2"]
    assert scene.meta["units"] == "mm" and scene.meta["camera_ordering"] == [0, 1, 2]
    for v, cam in zip(scene.views, cams):
        assert (v.camera.width, v.camera.height) == (320, 160)
        np.testing.assert_allclose(v.camera.K, cam.K, atol=1e-9)  # OpenCV intr + 0.5
        np.testing.assert_allclose(v.camera.viewmat, cam.viewmat, atol=1e-12)
        assert v.meta["video"] == root / f"camera_{v.meta['index']}.mp4" and v.image is None
    kp = scene.keypoints
    np.testing.assert_allclose(kp.points3d, pts)  # the cameras' world, not the Procrustes copy
    for v, cam in zip(scene.views, cams):
        uv, _ = cam.project(pts.reshape(-1, 3))
        got = kp.points2d[v.name].reshape(-1, 2)
        seen = np.all(np.isfinite(got), axis=1)
        np.testing.assert_allclose(got[seen], uv[seen], atol=1e-6)  # (row, col) / (H, W) undone
    for name, f, j in [("camera_0", 1, 4), ("camera_2", 0, 0), ("camera_1", 2, 3)]:
        assert np.isnan(kp.points2d[name][f, j]).all()
    assert sum(np.isnan(p).any(-1).sum() for p in kp.points2d.values()) == 3
    errs = reprojection_errors(scene)
    assert all(e["max_px"] < 1e-6 for e in errs.values())


def test_frame_images_without_videos(tmp_path):
    cams = df3d_rig(3)
    write_deepfly3d(tmp_path / "t", cams, fly_points(1, 6), frames=2, video=False)
    scene = read_scene(tmp_path / "t" / "df3d")
    assert [v.image.name for v in scene.views] == [f"camera_{k}_img_0.jpg" for k in range(3)]
    assert all("video" not in v.meta for v in scene.views)


def _rewrite(root, edit):
    p = _pkl(root)
    data = pickle.loads(p.read_bytes())
    edit(data)
    p.write_bytes(pickle.dumps(data))


def test_inspect_reports_reprojection_error_per_camera_in_pixels(tmp_path):
    cams = df3d_rig(3)
    pts = fly_points(2, 10)
    root = write_deepfly3d(tmp_path / "t", cams, pts, frames=1)
    shift = 0.01  # mm along camera 1's x axis: f * 0.01 / 118 = 1.36 px at the fly

    def move(data):
        data[1]["tvec"] = data[1]["tvec"] + np.array([shift, 0, 0])

    _rewrite(root, move)
    scene = read_scene(root)
    out = summary(scene, check_scene(scene, media=False))  # what `gausslift inspect` prints
    errs = reprojection_errors(scene)
    depth = np.median((pts.reshape(-1, 3) @ cams[1].viewmat[:3, :3].T + cams[1].viewmat[:3, 3])[:, 2])
    assert errs["camera_1"]["median_px"] == pytest.approx(16000 * shift / depth, rel=0.02)
    assert errs["camera_0"]["max_px"] < 1e-6 and errs["camera_2"]["max_px"] < 1e-6
    assert "camera_1: reprojection median 1.3" in out and "format: deepfly3d" in out


def test_only_procrustes_points_warns(tmp_path):
    root = write_deepfly3d(tmp_path / "t", df3d_rig(3), fly_points(1, 6), frames=1)
    _rewrite(root, lambda d: d.pop("points3d_wo_procrustes"))
    scene = read_scene(root)
    assert any("points3d_wo_procrustes" in w for w in scene.warnings)
    assert max(e["median_px"] for e in reprojection_errors(scene).values()) > 10  # not the cameras' world


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_is_unpickled_safely_and_errors_name_the_problem(tmp_path, capsys):
    root = write_deepfly3d(tmp_path / "t", df3d_rig(3), fly_points(1, 4), frames=1)
    _rewrite(root, lambda d: d.update({"evil": _Evil()}))
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        read_scene(root)
    assert "pwned" not in capsys.readouterr().out
    root2 = write_deepfly3d(tmp_path / "u", df3d_rig(3), fly_points(1, 4), frames=1)
    _rewrite(root2, lambda d: d[2].pop("R"))
    with pytest.raises(InputError, match="camera 2 has no R"):
        read_scene(root2)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "camera_0.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="closest format: deepfly3d .*no df3d_result"):
        read_scene(tmp_path / "v")


def _sample(folder):
    js = json.loads((folder / "opencv_cameras.json").read_text())
    out = []
    for fr in js["frames"]:
        cam = Camera(make_K(fr["fx"], fr["fy"], fr["cx"], fr["cy"]), np.asarray(fr["w2c"]), fr["w"], fr["h"])
        out.append((fr, cam, cv2.imread(str(folder / fr["file_path"]), cv2.IMREAD_UNCHANGED)))
    return np.asarray(js["world_from_capture"]), out


def test_near_orthographic_rig_ingests_consistently(capture, tmp_path):
    root, cams, pts = capture
    man = ingest(root, tmp_path / "o", IngestOptions(size=128, frames="0:3:2"))
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [s["frame"] for s in man["samples"]] == [0, 2] and len(man["cameras"]) == 3
    by_name = {f"camera_{k}": c for k, c in enumerate(cams)}
    worst, ious = 0.0, []
    for s in man["samples"]:
        T, views = _sample(tmp_path / "o" / s["path"])
        dists = [np.linalg.norm(cam.center) for _, cam, _ in views]
        assert abs(np.median(dists) - 2.7) <= 0.1
        P = pts.reshape(-1, 3)
        for fr, cam_n, rgba in views:
            src = by_name[fr["source"]["camera"]]
            a = apply_homography(np.asarray(fr["source"]["homography"]), pinhole_project(src, P))
            b = cam_n.project(transform_points(T, P))[0]
            worst = max(worst, float(np.abs(a - b).max()))
            # on pixels: the written image shows the fly where the written camera sees it (the fly's
            # green channel is >= 0.28, the background's 0.1), and the mask covers it
            _, hit = render_ellipsoid(transform_camera(cam_n, np.linalg.inv(T)))
            fg, alpha = rgba[..., 1] > 0.19 * 255, rgba[..., 3] >= 128
            ious.append(((fg & hit).sum() / (fg | hit).sum(), (alpha & hit).sum() / (alpha | hit).sum()))
    assert worst <= 0.5, worst
    assert min(i for i, _ in ious) > 0.95 and min(a for _, a in ious) > 0.5, ious
    sr = rep["summary"]["size_ratio_after"]
    assert abs(sr["mean"] - 0.30) <= 0.03 and sr["n"] == 6


def test_image_size_without_media(tmp_path):
    root = write_deepfly3d(tmp_path / "t", df3d_rig(3), fly_points(1, 4), frames=1)
    for p in root.glob("camera_*.mp4"):
        p.unlink()
    scene = read_scene(root)  # no video, no image_shape: DeepFly3D's 960x480 with a warning
    assert all((v.camera.width, v.camera.height) == (960, 480) for v in scene.views)
    assert any("assumed 960x480" in w for w in scene.warnings)
    _rewrite(root, lambda d: d.update({"image_shape": [320, 160]}))  # [W, H], as df3d's Core stores it
    scene = read_scene(root)
    assert all((v.camera.width, v.camera.height) == (320, 160) for v in scene.views)
    assert not any("assumed" in w for w in scene.warnings)
    assert max(e["max_px"] for e in reprojection_errors(scene).values()) < 1e-6
