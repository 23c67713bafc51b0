"""Camera conventions: conversions from other tools, look_at, projection with and without distortion
(against cv2), image edits moving pixels exactly like the image, batching and rigs."""

import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gausslift import cameras as C
from gausslift.cameras import Camera, make_K


def _rand_pose(rng):
    R = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    return R, rng.normal(size=3)


def _points_in_front(cam: Camera, rng, n=40, depth=(2.0, 5.0)):
    """World points that project inside the image (built in camera space, then moved to world)."""
    uv = rng.uniform([2, 2], [cam.width - 2, cam.height - 2], (n, 2))
    z = rng.uniform(*depth, n)
    x = (uv[:, 0] - cam.K[0, 2]) / cam.K[0, 0] * z
    y = (uv[:, 1] - cam.K[1, 2]) / cam.K[1, 1] * z
    pc = np.stack([x, y, z], 1)
    return (pc - cam.t) @ cam.R  # R^T (pc - t)


# ---------------------------------------------------------------------------------------------------
# conventions
def test_opengl_c2w_both_ways(rng):
    R, t = _rand_pose(rng)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R, t
    V = C.viewmat_from_opengl_c2w(c2w)
    assert np.allclose(C.opengl_c2w_from_viewmat(V), c2w)
    assert np.allclose(C.viewmat_from_opengl_c2w(c2w[:3]), V)  # 3x4 accepted
    # a point 2 units in front of the OpenGL camera (its -z) and 1 unit up (+y)
    X = t + R @ np.array([0.0, 1.0, -2.0])
    cam = Camera(make_K(100, 100, 50, 50), V, 100, 100)
    uv, z = cam.project(X[None])
    assert np.isclose(z[0], 2.0) and np.isclose(uv[0, 0], 50) and uv[0, 1] < 50  # up is image-up
    assert np.allclose(cam.center, t)


def test_llff_columns(rng):
    R, t = _rand_pose(rng)  # an OpenGL camera-to-world: columns right, up, back
    llff = np.stack([-R[:, 1], R[:, 0], R[:, 2], t], 1)  # columns down, right, back, translation
    gl = C.opengl_c2w_from_llff(llff)
    assert np.allclose(gl[:3, :3], R) and np.allclose(gl[:3, 3], t) and np.allclose(gl[3], [0, 0, 0, 1])
    batch = C.opengl_c2w_from_llff(np.stack([llff, llff]))
    assert batch.shape == (2, 4, 4)


def test_matlab_row_vectors_transposed_K_one_based(rng):
    R, t = _rand_pose(rng)
    K_internal = make_K(300, 310, 160.2, 120.7)
    # MATLAB: [u v w] = [X 1] [r; t] K_m with K_m = K'; pixel (1, 1) is the centre of the first pixel
    K_m = (K_internal + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])).T
    r = R.T
    V = C.viewmat_from_matlab(r, t[None])
    Kc = C.K_from_matlab(K_m)
    assert np.allclose(Kc, K_internal) and np.allclose(C.K_to_matlab(Kc), K_m)
    cam = Camera(Kc, V, 320, 240)
    X = _points_in_front(cam, rng)
    h = (X @ r + t) @ K_m
    uv_matlab = h[:, :2] / h[:, 2:]
    uv, _ = cam.project(X)
    assert np.abs(uv - (uv_matlab - 0.5)).max() < 1e-9


def test_rodrigues_matches_cv2(rng):
    vecs = [rng.normal(size=3) for _ in range(5)] + [
        np.zeros(3),
        np.array([1e-14, 0, 0]),
        np.array([0, np.pi, 0]),
    ]
    for v in vecs:
        ours = C.rodrigues_to_matrix(v)
        ref, _ = cv2.Rodrigues(v.reshape(3, 1))
        assert np.abs(ours - ref).max() < 1e-12
    batch = np.stack(vecs)
    assert C.rodrigues_to_matrix(batch).shape == (len(vecs), 3, 3)
    back = C.rodrigues_to_matrix(C.matrix_to_rodrigues(C.rodrigues_to_matrix(batch[:5])))
    assert np.allclose(back, C.rodrigues_to_matrix(batch[:5]))


@pytest.mark.parametrize("with_dist", [False, True])
def test_opencv_K_and_distortion_match_cv2_project_points(rng, with_dist):
    K_cv = np.array([[400.0, 0, 319.5], [0, 410.0, 239.5], [0, 0, 1]])
    dist = np.array([-0.2, 0.05, 0.001, -0.002, 0.01]) if with_dist else np.zeros(5)
    R, t = _rand_pose(rng)
    cam = Camera(C.K_from_opencv(K_cv), C.viewmat_from_Rt(R, t), 640, 480, dist)
    assert np.allclose(cam.K[:2, 2], [320.0, 240.0]) and np.allclose(C.K_to_opencv(cam.K), K_cv)
    X = _points_in_front(cam.with_(dist=None), rng)
    rvec, _ = cv2.Rodrigues(R)
    ref, _ = cv2.projectPoints(X, rvec, t, K_cv, dist)
    uv, _ = cam.project(X)
    assert np.abs(uv - (ref[:, 0] + 0.5)).max() < 1e-9  # cv2 pixel centres at 0, ours at +0.5
    if with_dist:
        assert np.abs(uv - cam.project(X, distort=False)[0]).max() > 1.0


def test_look_at(rng):
    eye, target = np.array([2.0, -3.0, 1.0]), np.array([0.1, 0.2, -0.3])
    up = np.array([0.0, 0.0, 1.0])
    cam = Camera(make_K(50, 50, 32, 24), C.look_at(eye, target, up), 64, 48)
    uv, z = cam.project(np.stack([target, target + 0.1 * up, eye + cam.R[0]]))
    assert np.allclose(uv[0], [32, 24]) and np.isclose(z[0], np.linalg.norm(target - eye))
    assert uv[1, 1] < 24 and abs(uv[1, 0] - 32) < 1e-9  # up is image-up
    assert np.allclose(cam.center, eye) and np.isclose(np.linalg.det(cam.R), 1.0)
    assert np.allclose(cam.forward, (target - eye) / np.linalg.norm(target - eye))
    with pytest.raises(ValueError):
        C.look_at(np.array([0, 0, 2.0]), (0, 0, 0), up)


@pytest.mark.parametrize("with_dist", [False, True])
def test_project_unproject_round_trip(rng, with_dist):
    dist = [0.1, -0.03, 0.002, 0.001, 0.005] if with_dist else None
    cam = Camera(make_K(120, 118, 80.3, 59.6), C.look_at(np.array([0.5, -4, 1.0])), 160, 120, dist)
    X = _points_in_front(cam.with_(dist=None), rng, depth=(1.0, 8.0))
    uv, z = cam.project(X)
    assert np.abs(cam.unproject(uv, z) - X).max() < 1e-9
    # rays through the pixels pass through the points
    o, d = cam.rays(uv)
    assert np.allclose(np.linalg.norm(d, axis=-1), 1)
    v = X - o
    assert np.abs(v - (v * d).sum(-1, keepdims=True) * d).max() < 1e-9
    behind = cam.center - 2 * cam.forward
    assert np.all(np.isnan(cam.project(behind[None])[0]))


# ---------------------------------------------------------------------------------------------------
# image edits: render a blob at a projected point, edit the image, and find it where the edited K says
def _blob_image(cam: Camera, X: np.ndarray, sigma=2.0) -> np.ndarray:
    u0, v0 = cam.project(X[None])[0][0]
    j, i = np.mgrid[0 : cam.height, 0 : cam.width] + 0.5  # pixel centres
    return np.exp(-((i - u0) ** 2 + (j - v0) ** 2) / (2 * sigma**2))


def _centroid(img: np.ndarray) -> np.ndarray:
    j, i = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
    return np.array([(img * i).sum(), (img * j).sum()]) / img.sum()


def test_resize_crop_pad_move_pixels_like_the_image():
    cam = Camera(make_K(60, 60, 41.3, 29.8), C.look_at(np.array([3.0, 1.0, 0.5])), 80, 64)
    X = np.array([0.05, -0.1, 0.08])
    img = _blob_image(cam, X)
    assert np.abs(_centroid(img) - cam.project(X[None])[0][0]).max() < 1e-6
    # box downsampling by 2 keeps first moments: exact in the +0.5 convention
    small = cv2.resize(img, (40, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(_centroid(small) - cam.resized(40, 32).project(X[None])[0][0]).max() < 1e-6
    # upsampling 3x by nearest neighbour
    big = np.repeat(np.repeat(img, 3, 0), 3, 1)
    assert np.abs(_centroid(big) - cam.resized(240, 192).project(X[None])[0][0]).max() < 1e-6
    crop = img[10:50, 17:70]
    c = cam.cropped(17, 10, 53, 40)
    assert (c.width, c.height) == (53, 40)
    assert np.abs(_centroid(crop) - c.project(X[None])[0][0]).max() < 1e-6
    pad = np.pad(img, ((3, 4), (5, 6)))
    p = cam.padded(5, 3, 6, 4)
    assert (p.width, p.height) == (91, 71)
    assert np.abs(_centroid(pad) - p.project(X[None])[0][0]).max() < 1e-6


# ---------------------------------------------------------------------------------------------------
def test_batched_cameras(rng):
    cams = [Camera(make_K(50 + k, 50, 20, 15), C.look_at(rng.normal(size=3) * 3), 40, 30) for k in range(3)]
    batch = Camera.stack(cams)
    assert len(batch) == 3 and batch.batch_shape == (3,) and batch.K.shape == (3, 3, 3)
    X = rng.normal(size=(7, 3)) * 0.3
    uv, z = batch.project(X)  # points shared by the batch
    assert uv.shape == (3, 7, 2) and z.shape == (3, 7)
    for k, c in enumerate(batch):
        assert np.allclose(uv[k], c.project(X)[0]) and np.allclose(uv[k], cams[k].project(X)[0])
    per = batch.project(np.stack([X, X + 0.1, X - 0.1]))  # per-camera points
    assert np.allclose(per[0][1], cams[1].project(X + 0.1)[0])
    assert batch.center.shape == (3, 3) and np.allclose(batch[1:].center, batch.center[1:])
    assert batch.resized(80, 60).K.shape == (3, 3, 3)
    with pytest.raises(ValueError):
        Camera.stack([cams[0], cams[1].resized(20, 15)])
    with pytest.raises(TypeError):
        len(cams[0])


def test_ring_geometry():
    rig = C.ring(8, radius=2.0, elevation_deg=30.0, fov_deg=60.0, size=(64, 48))
    assert len(rig) == 8
    uv, z = rig.project(np.zeros((1, 3)))
    assert np.allclose(uv, [32, 24]) and np.allclose(z, 2.0)
    assert np.allclose(np.linalg.norm(rig.center, axis=-1), 2.0)
    assert np.allclose(rig.center[:, 2], 2.0 * np.sin(np.radians(30)))
    assert np.allclose(rig.fov_x_deg, 60.0)
    az = np.degrees(np.arctan2(rig.center[:, 1], rig.center[:, 0])) % 360
    assert np.allclose(az, np.arange(8) * 45.0)
    up = rig.project(np.array([[0, 0, 0.1]]))[0]
    assert np.all(up[:, 0, 1] < 24)  # world +z is image-up


def test_facelift_rigs():
    tr = C.facelift_training_ring()
    assert len(tr) == 32 and tr.width == 512 and np.allclose(tr.K[:, 0, 0], C.FACELIFT_FOCAL)
    assert np.isclose(C.FACELIFT_FOCAL, 256 / np.tan(np.radians(25)))
    assert np.allclose(np.linalg.norm(tr.center, axis=-1), 2.7)
    inf = C.facelift_inference_rig()
    az = np.degrees(np.arctan2(inf.center[:, 1], inf.center[:, 0])) % 360
    assert np.allclose(az, np.array(C.FACELIFT_INFERENCE_AZIMUTHS) % 360)


@pytest.mark.realdata
def test_facelift_training_ring_equals_sample(shared_data):
    js = shared_data / "facelift_head" / "gslrm_sample_000" / "opencv_cameras.json"
    frames = json.loads(js.read_text())["frames"]
    ring = C.facelift_training_ring()
    w2c = np.array([f["w2c"] for f in frames])
    K = np.array([make_K(f["fx"], f["fy"], f["cx"], f["cy"]) for f in frames])
    assert np.abs(ring.viewmat - w2c).max() < 1e-6
    assert np.abs(ring.K - K).max() < 1e-6
    X = np.random.default_rng(0).uniform(-0.8, 0.8, (200, 3))
    uv = ring.project(X)[0]
    uv_ref = Camera(K, w2c, 512, 512).project(X)[0]
    assert np.abs(uv - uv_ref).max() < 1e-3  # measured 2.1e-4 px (the file stores w2c to ~1e-7)
    loc = np.array([f["blender_camera_location"] for f in frames])
    assert np.abs(ring.center - loc).max() < 1e-6


def test_ring_about_any_up_axis():
    from gausslift.cameras import ring

    target = np.array([1.0, 2.0, 3.0])
    up = np.array([0.0, -1.0, 0.0])
    r = ring(8, 2.0, 30.0, target=target, up=up)
    off = r.center - target
    np.testing.assert_allclose(np.linalg.norm(off, axis=1), 2.0, atol=1e-12)
    np.testing.assert_allclose(np.degrees(np.arcsin(off @ up / 2.0)), 30.0, atol=1e-9)
    # each camera looks at the target with `up` pointing up in its image (-y of the camera)
    np.testing.assert_allclose(np.einsum("ni,ni->n", r.forward, -off / 2.0), 1.0, atol=1e-12)
    assert np.all(-r.R[:, 1, :] @ up > 0)


def test_nearest_point_to_rays():
    from gausslift.cameras import nearest_point_to_rays

    p = np.array([0.3, -0.2, 1.5])
    o = np.array([[2.0, 0, 0], [0, 3.0, 1], [-1.0, -2, 4]])
    assert np.allclose(nearest_point_to_rays(o, p - o), p, atol=1e-12)
    # weights: a far-off third ray pulls the point only as much as it is weighted
    o2 = np.vstack([o, [[5.0, 5, 5]]])
    d2 = np.vstack([p - o, [[1.0, 0, 0]]])
    assert np.allclose(nearest_point_to_rays(o2, d2, weights=[1, 1, 1, 0]), p, atol=1e-12)
    assert not np.allclose(nearest_point_to_rays(o2, d2), p, atol=1e-3)
    assert nearest_point_to_rays([[0, 0, 0], [1.0, 0, 0]], [[0, 0, 1.0], [0, 0, 1.0]]) is None
