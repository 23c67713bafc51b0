"""Readers of real multi-camera rigs (anipose, DANNCE, MAMMAL) on small rigs the tests write in each
format's own convention (projections computed independently: cv2 for OpenCV, MATLAB's row-vector
formula for DANNCE), plus broken inputs that must give a clear InputError or a warning."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from gausslift.cameras import look_at, matrix_to_rodrigues
from gausslift.checks import reprojection_errors
from gausslift.errors import InputError
from gausslift.io import detect_format, read_scene

W, H = 96, 80
NAMES = ["back", "mid", "side", "top"]


# ---------------------------------------------------------------------------------------------------
# synthetic rigs: OpenCV-convention K (pixel centres at 0), world-to-camera R, t in mm
def rig(n=4, seed=0):
    rng = np.random.default_rng(seed)
    az = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    eyes = np.stack([300 * np.cos(az), 300 * np.sin(az), 150 + 20 * np.arange(n)], -1)
    cams = []
    for i, eye in enumerate(eyes):
        V = look_at(eye, (5.0, -3.0, 10.0))
        K = np.array([[110.0 + 5 * i, 0, W / 2 - 0.5 + i], [0, 112.0 + 5 * i, H / 2 - 0.5 - i], [0, 0, 1]])
        dist = np.array([-0.05 * (i + 1), 0.01, 0.002 * i, -0.001, 0.0])
        cams.append(dict(K=K, R=V[:3, :3], t=V[:3, 3], dist=dist))
    pts = rng.normal(0, 15, (5, 7, 3)) + [5.0, -3.0, 10.0]  # 5 frames x 7 joints
    return cams, pts


def cv2_project(c, pts):
    uv, _ = cv2.projectPoints(pts.reshape(-1, 3), matrix_to_rodrigues(c["R"]), c["t"], c["K"], c["dist"])
    return uv.reshape(pts.shape[:-1] + (2,))


def write_video(path: Path, w=W, h=H, frames=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for _ in range(frames):
        vw.write(np.full((h, w, 3), 80, np.uint8))
    vw.release()


def _toml_list(a):
    a = np.asarray(a)
    if a.ndim == 1:
        return "[ " + ", ".join(repr(float(x)) if np.isfinite(x) else "nan" for x in a) + ",]"
    return "[ " + ", ".join(_toml_list(r) for r in a) + ",]"


def write_anipose(root: Path, cams, pts=None, videos=True, names=NAMES, sizes=None):
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, c) in enumerate(zip(names, cams)):
        w, h = sizes[i] if sizes else (W, H)
        lines += [
            f"[cam_{i}]",
            f'name = "{name}"',
            f"size = [ {w}, {h},]",
            f"matrix = {_toml_list(c['K'])}",
            f"distortions = {_toml_list(c['dist'])}",
            f"rotation = {_toml_list(matrix_to_rodrigues(c['R']))}",
            f"translation = {_toml_list(c['t'])}",
            "",
        ]
        if videos:
            write_video(root / name / f"session_{name}.avi")
    lines.append("[metadata]")
    (root / "calibration.toml").write_text("\n".join(lines) + "\n")
    if pts is not None:
        with h5py.File(root / "points3d.h5", "w") as f:
            f["tracks"] = pts[:, None]  # [frames, tracks, nodes, 3]
        for name, c in zip(names, cams):
            xy = cv2_project(c, pts)  # [F, J, 2] OpenCV pixels
            xy[0, 0] = np.nan  # an unlabelled point
            with h5py.File(root / name / f"{name}.analysis.h5", "w") as f:
                f["tracks"] = np.transpose(xy[:, None], (1, 3, 2, 0))  # SLEAP: [tracks, 2, nodes, frames]
                f["node_names"] = np.array([f"j{k}".encode() for k in range(pts.shape[1])])
    return root


def matlab_project(c, pts):
    """DANNCE/Label3D's own projection: x = X r + t (row vectors), MATLAB distortion, [x y 1] K',
    1-based pixels."""
    r, t, Kt = c["R"].T, c["t"], (c["K"] + [[0, 0, 1], [0, 0, 1], [0, 0, 0]]).T  # OpenCV -> 1-based
    P = pts.reshape(-1, 3) @ r + t
    x, y = P[:, 0] / P[:, 2], P[:, 1] / P[:, 2]
    k1, k2, p1, p2, k3 = c["dist"]
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uv = np.stack([xd, yd, np.ones_like(xd)], -1) @ Kt
    return uv[:, :2].reshape(pts.shape[:-1] + (2,))


def write_dannce(root: Path, cams, pts, names=None, videos=False, mutate=None):
    root.mkdir(parents=True, exist_ok=True)
    names = names or [f"Camera{i + 1}" for i in range(len(cams))]
    params = np.empty((len(cams), 1), dtype=object)
    labels = np.empty((len(cams), 1), dtype=object)
    F = pts.shape[0]
    for i, c in enumerate(cams):
        Kt = (c["K"] + [[0, 0, 1], [0, 0, 1], [0, 0, 0]]).T
        d = c["dist"]
        params[i, 0] = {
            "K": Kt,
            "r": c["R"].T,
            "t": c["t"][None],
            "RDistort": np.array([[d[0], d[1], d[4]]]),
            "TDistort": np.array([[d[2], d[3]]]),
        }
        labels[i, 0] = {
            "data_2d": matlab_project(c, pts).reshape(F, -1),
            "data_3d": pts.reshape(F, -1),
            "data_sampleID": np.arange(1, F + 1)[None] * 10,
        }
        if videos:
            write_video(root / "videos" / names[i] / "0.avi", w=W + 8, h=H)
    camnames = np.empty((1, len(cams)), dtype=object)
    for i, n in enumerate(names):
        camnames[0, i] = n
    mat = {"params": params, "camnames": camnames, "labelData": labels}
    if mutate:
        mutate(mat)
    scipy.io.savemat(root / "label3d_dannce.mat", mat)
    return root


def write_mammal(root: Path, cams, column_t=False, videos=False, obj=None):
    root.mkdir(parents=True, exist_ok=True)
    data = (
        obj
        if obj is not None
        else [
            {"K": c["K"], "R": c["R"], "T": c["t"].reshape(3, 1) if column_t else c["t"].copy()} for c in cams
        ]
    )
    with open(root / "new_cam.pkl", "wb") as f:
        pickle.dump(data, f)
    if videos:
        for i in range(len(cams)):
            write_video(root / "videos_undist" / f"{i}.mp4", w=W, h=H)
            write_video(root / "simpleclick_undist" / f"{i}.mp4", w=W, h=H)
    return root


# ---------------------------------------------------------------------------------------------------
# anipose
def test_anipose_cameras_project_like_opencv(tmp_path):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    assert detect_format(root) == "anipose"
    scene = read_scene(root)
    assert scene.format == "anipose" and scene.names == NAMES and not scene.warnings
    for v, c in zip(scene.views, cams):
        assert (v.camera.width, v.camera.height) == (W, H) and v.image is None
        assert v.meta["video"].name == f"session_{v.name}.avi"
        uv, _ = v.camera.project(pts.reshape(-1, 3))
        np.testing.assert_allclose(uv, cv2_project(c, pts).reshape(-1, 2) + 0.5, atol=1e-6)


def test_anipose_keypoints_axis_order_and_pixel_convention(tmp_path):
    cams, pts = rig()
    scene = read_scene(write_anipose(tmp_path / "s", cams, pts) / "calibration.toml")
    kp = scene.keypoints
    assert kp.points3d.shape == (5, 7, 3) and kp.names == [f"j{k}" for k in range(7)]
    np.testing.assert_allclose(kp.points3d, pts)
    assert np.isnan(kp.points2d["mid"][0, 0]).all()
    errs = reprojection_errors(scene)
    assert set(errs) == set(NAMES)
    for e in errs.values():
        assert e["n"] == 34 and e["max_px"] < 1e-6


def test_anipose_calibration_board_record(tmp_path):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    corners = pts[:3]  # 3 board frames x 7 corners
    det = np.stack([cv2_project(c, corners) for c in cams])
    det[2] += 9.0  # the third camera's detections disagree with its calibration
    with h5py.File(root / "calibration.metadata.h5", "w") as f:
        f["detected_corners"] = det
        f["triangulated_corners"] = corners
    scene = read_scene(root)
    errs = reprojection_errors(scene, "board")
    assert errs["back"]["max_px"] < 1e-6 and errs["top"]["max_px"] < 1e-6
    assert errs["side"]["median_px"] == pytest.approx(9 * np.sqrt(2))
    with h5py.File(root / "calibration.metadata.h5", "w") as f:
        f["detected_corners"] = det[:3]
        f["triangulated_corners"] = corners
    scene = read_scene(root)
    assert "board" not in scene.meta and any("board ignored" in w for w in scene.warnings)


def test_anipose_missing_video_and_bad_tracks_warn(tmp_path):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    (root / "top" / "session_top.avi").unlink()
    with h5py.File(root / "side" / "side.analysis.h5", "w") as f:
        f["tracks"] = np.zeros((1, 2, 3, 5))  # 3 nodes instead of 7
    scene = read_scene(root)
    assert "video" not in scene.view("top").meta
    assert any("top" in w and "no video" in w for w in scene.warnings)
    assert any("side.analysis.h5" in w for w in scene.warnings)
    assert "side" not in scene.keypoints.points2d and "back" in scene.keypoints.points2d


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda t: t.replace("matrix = [ [ 110.0", "matrix = [ [ nan"), "matrix"),
        (lambda t: t.replace("size = [ 96, 80,]", "size = [ 96,]", 1), "size"),
        (lambda t: t.replace("rotation", "rotashun", 1), "rotation"),
        (lambda t: t.replace("[cam_0]", "[cam_0", 1), "TOML"),
        (lambda t: "", "no [cam_*]"),
        (lambda t: t.replace('name = "mid"', 'name = "back"'), "repeat"),
        (lambda t: t.replace("distortions = [", 'distortions = [ "x",', 1), "distortions"),
        (lambda t: t.replace("translation = [", "translation = [ 1.0,", 1), "translation"),
    ],
)
def test_anipose_broken_calibration_is_a_clear_error(tmp_path, edit, needle):
    cams, _ = rig()
    root = write_anipose(tmp_path / "s", cams, videos=False)
    toml = root / "calibration.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(InputError) as e:
        read_scene(root)
    assert needle in str(e.value) and "calibration.toml" in str(e.value) and "\n" not in str(e.value)


def test_anipose_garbled_points3d_is_a_clear_error(tmp_path):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    (root / "points3d.h5").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="points3d.h5"):
        read_scene(root)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_scene(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------------
# DANNCE
def test_dannce_matches_matlab_projection(tmp_path):
    cams, pts = rig(n=3)
    root = write_dannce(tmp_path / "d", cams, pts)
    assert detect_format(root) == "dannce"
    scene = read_scene(root / "label3d_dannce.mat")
    assert scene.names == ["Camera1", "Camera2", "Camera3"]
    assert any("assumed 1152x1024" in w for w in scene.warnings)
    ref = {v.name: matlab_project(c, pts) - 0.5 for v, c in zip(scene.views, cams)}  # 1-based -> +0.5
    for v in scene.views:
        uv, _ = v.camera.project(pts.reshape(-1, 3))
        np.testing.assert_allclose(uv, ref[v.name].reshape(-1, 2), atol=1e-6)
        np.testing.assert_allclose(scene.keypoints.points2d[v.name], ref[v.name], atol=1e-9)
    np.testing.assert_allclose(scene.keypoints.points3d, pts)


def test_dannce_tangential_distortion_is_not_swapped(tmp_path):
    cams, pts = rig(n=2)
    for c in cams:
        c["dist"] = np.array([0.0, 0.0, 0.02, -0.03, 0.0])
    scene = read_scene(write_dannce(tmp_path / "d", cams, pts))
    np.testing.assert_allclose(scene.views[0].camera.dist, [0, 0, 0.02, -0.03, 0])
    assert max(e["max_px"] for e in reprojection_errors(scene).values()) < 1e-6


def test_dannce_video_gives_the_image_size(tmp_path):
    cams, pts = rig(n=2)
    scene = read_scene(write_dannce(tmp_path / "d", cams, pts, videos=True))
    assert not scene.warnings
    for v in scene.views:
        assert (v.camera.width, v.camera.height) == (W + 8, H)
        assert v.meta["video"].name == "0.avi"


def _nan_K(mat):
    mat["params"][1, 0]["K"] = np.full((3, 3), np.nan)


def _bad_r(mat):
    mat["params"][0, 0]["r"] = np.eye(2)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (_nan_K, "Camera2' K contains NaN"),
        (_bad_r, "Camera1' r has 4 values"),
        (lambda m: m.pop("params"), "no 'params'"),
        (lambda m: m.__setitem__("camnames", np.array([["a", "b"]], dtype=object)), "camnames"),
    ],
)
def test_dannce_broken_mat_is_a_clear_error(tmp_path, mutate, needle):
    cams, pts = rig(n=3)
    root = write_dannce(tmp_path / "d", cams, pts, mutate=mutate)
    with pytest.raises(InputError) as e:
        read_scene(root)
    assert needle in str(e.value) and "label3d_dannce.mat" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"MATLAB garbage" * 20])
def test_dannce_empty_or_garbled_file(tmp_path, content):
    (tmp_path / "label3d_dannce.mat").write_bytes(content)
    with pytest.raises(InputError, match="label3d_dannce.mat"):
        read_scene(tmp_path)


# ---------------------------------------------------------------------------------------------------
# MAMMAL
@pytest.mark.parametrize("column_t", [False, True])
def test_mammal_projects_like_opencv(tmp_path, column_t):
    cams, pts = rig(n=3)
    for c in cams:
        c["dist"] = np.zeros(5)  # MAMMAL's videos are undistorted
    root = write_mammal(tmp_path / "m", cams, column_t=column_t, videos=True)
    assert detect_format(root) == "mammal"
    scene = read_scene(root)
    assert scene.names == ["0", "1", "2"] and not scene.warnings
    for v, c in zip(scene.views, cams):
        assert (v.camera.width, v.camera.height) == (W, H) and v.meta["mask_video"].is_file()
        uv, _ = v.camera.project(pts.reshape(-1, 3))
        np.testing.assert_allclose(uv, cv2_project(c, pts).reshape(-1, 2) + 0.5, atol=1e-6)


def test_mammal_without_video_assumes_a_size_and_says_so(tmp_path):
    cams, _ = rig(n=2)
    scene = read_scene(write_mammal(tmp_path / "m", cams))
    assert (scene.views[0].camera.width, scene.views[0].camera.height) == (1152, 1024)
    assert any("assumed 1152x1024" in w for w in scene.warnings)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "obj, needle",
    [
        ({"K": 1}, "list of camera dicts"),
        ([{"K": np.eye(3), "R": np.eye(3)}], "no 'T'"),
        ([{"K": np.eye(3) * np.nan, "R": np.eye(3), "T": np.zeros(3)}], "NaN"),
        ([{"K": np.eye(3), "R": np.eye(3), "T": np.zeros(4)}], "'T' has shape [4]"),
        ([_Evil()], "refusing to load"),
        ([], "no cameras"),
    ],
)
def test_mammal_broken_pickle_is_a_clear_error(tmp_path, obj, needle, capsys):
    root = write_mammal(tmp_path / "m", [], obj=obj)
    with pytest.raises(InputError) as e:
        read_scene(root)
    assert needle in str(e.value) and "new_cam.pkl" in str(e.value)
    assert "never run" not in capsys.readouterr().out


def test_mammal_truncated_pickle(tmp_path):
    cams, _ = rig(n=2)
    p = write_mammal(tmp_path / "m", cams) / "new_cam.pkl"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(InputError, match="not a readable camera pickle"):
        read_scene(p)


# ---------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_anipose_and_dannce_sessions(shared_data):
    s = read_scene(shared_data / "mouse_minimal_session")
    assert s.names == NAMES and s.keypoints.points3d.shape == (120, 15, 3)
    d = read_scene(shared_data / "dannce_calib/demo/markerless_mouse_1")
    assert len(d.views) == 6 and d.keypoints.points3d.shape[1] == 22


def test_a_two_node_sleap_export_is_refused_not_misread(tmp_path):
    """With 2 nodes, [tracks, 2, nodes, frames] and [frames, nodes, 2, tracks] both have size 2 at axes 1
    and 2: one clear error instead of scrambled frames and tracks."""
    from gausslift.errors import InputError
    from gausslift.io.anipose import read_sleap_analysis

    p = tmp_path / "two.analysis.h5"
    with h5py.File(p, "w") as f:
        f["tracks"] = np.zeros((5, 2, 2, 1))  # untransposed: 5 frames, 2 nodes, xy, 1 track
    with pytest.raises(InputError, match="cannot be told apart"):
        read_sleap_analysis(p)
    with h5py.File(p, "w") as f:
        f["tracks"] = np.arange(1 * 2 * 3 * 5, dtype=float).reshape(1, 2, 3, 5)  # default layout, 3 nodes
    t = read_sleap_analysis(p)
    assert t.shape == (5, 1, 3, 2) and t[4, 0, 2, 1] == np.arange(30.0).reshape(1, 2, 3, 5)[0, 1, 2, 4]
