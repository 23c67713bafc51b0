"""``gausslift track``: keypoint maps, DLT, initialisation, the fit and the CLI, on synthetic data.

The default tests use a test-made articulated mouse (27 joints with MAMMAL's joint names, so the
model's joint limits and the DANNCE keypoint rows apply) in the real file layout. A known smooth
sequence is posed, its keypoints projected into 4 cameras with OpenCV distortion, 20% dropped and
2 px noise added; the tracker sees 3 cameras. ``realdata`` repeats the fit with the real MAMMAL model
and the shipped SLEAP map.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from gausslift.cameras import K_to_opencv, matrix_to_rodrigues, ring
from gausslift.errors import InputError
from gausslift.subjects import MammalMouse
from gausslift.subjects.mammal import MOUSE_FILE
from gausslift.track import Observations, TrackOptions, load_map, load_observations, track
from gausslift.track.init import similarity_init, umeyama
from gausslift.track.output import model_keypoints
from gausslift.track.posing import KeypointModel
from gausslift.track.skeleton import build_map
from gausslift.track.triangulate import triangulate

torch.set_num_threads(1)

# name, parent, rest position (z up, nose towards -y, the mouse's left at +x)
JOINTS = [
    ("root", None, (0, 0, 0)), ("lumbar_vertebrae_1", "root", (0, 0.1, 0.12)),
    ("lumbar_vertebrae_0", "lumbar_vertebrae_1", (0, 0.1, 0.12)),
    ("tail_0", "lumbar_vertebrae_0", (0, 0.17, 0.1)), ("tail_1", "tail_0", (0, 0.3, 0.06)),
    ("tail_2", "tail_1", (0, 0.45, 0.03)), ("tail_3", "tail_2", (0, 0.6, 0.02)),
    ("tail_3_end", "tail_3", (0, 0.75, 0.01)),
    ("lumbar_vertebrae_2", "lumbar_vertebrae_1", (0, 0.02, 0.13)),
    ("thoracic_vertebrae_0", "lumbar_vertebrae_2", (0, -0.13, 0.18)),
    ("cervical_vertebrae_0", "thoracic_vertebrae_0", (0, -0.22, 0.09)),
    ("skull", "cervical_vertebrae_0", (0, -0.28, 0.12)), ("snout", "skull", (0, -0.42, 0.05)),
    ("ear_l", "skull", (0.07, -0.29, 0.14)), ("ear_r", "skull", (-0.07, -0.29, 0.14)),
]
for s, x in (("l", 1), ("r", -1)):
    JOINTS += [(f"femur_{s}", "lumbar_vertebrae_1", (0.05 * x, 0.15, 0.09)),
               (f"tibia_{s}", f"femur_{s}", (0.14 * x, 0.06, 0.07)),
               (f"hind_paw_{s}", f"tibia_{s}", (0.1 * x, 0.23, 0.05)),
               (f"humerus_{s}", "thoracic_vertebrae_0", (0.07 * x, -0.26, 0.08)),
               (f"ulna_{s}", f"humerus_{s}", (0.095 * x, -0.17, 0.09)),
               (f"fore_paw_{s}", f"ulna_{s}", (0.115 * x, -0.26, 0.03))]
GROUPS = {"lumbar": 0, "thoracic": 1, "cervical": 1, "skull": 2, "snout": 2, "ear": 3, "tail_0": 12,
          "tail_1": 12, "tail_2": 20, "tail_3": 20, "femur": 4, "tibia": 5, "hind": 6, "humerus": 7,
          "ulna": 8, "fore": 9}
PER = 8  # vertices per joint


def write_toy_mouse(folder, seed: int = 0):
    """An articulated mouse in the ``mammal_mouse.npz`` layout with the 22 DANNCE keypoint rows."""
    rng = np.random.default_rng(seed)
    names = [j[0] for j in JOINTS]
    parents = np.array([-1 if p is None else names.index(p) for _, p, _ in JOINTS], np.int32)
    joints = np.array([j[2] for j in JOINTS], np.float32)
    J = len(names)
    ang = np.linspace(0, 2 * np.pi, PER, endpoint=False)
    ring_ = np.stack([np.cos(ang), np.sin(ang), 0.5 * np.sin(2 * ang)], 1) * 0.025
    verts = (np.repeat(joints, PER, 0) + np.tile(ring_, (J, 1)) + rng.normal(0, 0.003, (J * PER, 3)))
    owner = np.repeat(np.arange(J), PER)
    w = np.zeros((J * PER, J), np.float32)
    w[np.arange(J * PER), owner] = 0.75
    w[np.arange(J * PER), np.where(parents[owner] < 0, owner, parents[owner])] += 0.25
    faces = np.array([[j * PER, j * PER + i, j * PER + i + 1] for j in range(J) for i in range(1, PER - 1)],
                     np.int32)
    group = np.array([next((g for k, g in GROUPS.items() if n.startswith(k)), -1) for n in names], np.int32)
    jid = {n: i for i, n in enumerate(names)}
    snout = list(range(jid["snout"] * PER, jid["snout"] * PER + 3))
    rows = [("J", ["ear_l"]), ("J", ["ear_r"]), ("V", snout),
            ("J", ["cervical_vertebrae_0"]), ("V", [jid["lumbar_vertebrae_2"] * PER + 2]),
            ("J", ["lumbar_vertebrae_0", "tail_0"]), ("J", ["tail_1", "tail_2"]), ("J", ["tail_3_end"])]
    for s in ("l", "r"):
        rows += [("J", [f"fore_paw_{s}"]), ("V", [jid[f"fore_paw_{s}"] * PER + 1]), ("J", [f"ulna_{s}"]),
                 ("J", [f"humerus_{s}"])]
    for s in ("l", "r"):
        rows += [("V", [jid[f"hind_paw_{s}"] * PER]), ("J", [f"hind_paw_{s}"]), ("J", [f"tibia_{s}"])]
    ids = -np.ones((len(rows), 9), np.int32)
    for k, (t, v) in enumerate(rows):
        v = [jid[x] for x in v] if t == "J" else v
        ids[k, :len(v)] = v
    path = folder / MOUSE_FILE
    np.savez(path, vertices=verts.astype(np.float32), faces=faces, joints=joints, parents=parents,
             joint_names=np.array(names), weights=w, bone_length_group=group,
             keypoint_type=np.array([r[0] for r in rows]), keypoint_ids=ids)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return MammalMouse(write_toy_mouse(tmp_path_factory.mktemp("toy")))


SCALE, SHIFT = 140.0, np.array([100.0, 40.0, 0.0])  # mm per model unit, where the mouse walks


def cameras(n=4):
    """A ring aimed 60 mm beside the mouse, with the real rig's strong barrel distortion (k1 -0.3)."""
    cams = ring(n, radius=400.0, elevation_deg=50.0, fov_deg=45.0, size=(1280, 1024),
                target=(160, 40, 20))
    out = [cams[i] for i in range(n)]
    for c in out:
        c.dist = np.array([-0.3, 0.05, 0.0, 0.0, 0.0])
    return out


def synthetic(subject, kmap, T=16, seed=0, noise=2.0, drop=0.2):
    """(observations of 4 cameras, true node positions [T,K,3], true pixels [C,T,K,2], true params)."""
    rng = np.random.default_rng(seed)
    names = list(kmap.nodes)
    seq = subject.sample_sequence(rng, T)
    with torch.no_grad():
        Xm = KeypointModel(subject, kmap, names)(seq).double().numpy()
    drift = np.cumsum(rng.normal(0, 0.5, (T, 3)), 0) * [1, 1, 0]
    X = SCALE * Xm + SHIFT + drift[:, None]
    cams = cameras()
    uv = np.stack([c.project(X.reshape(-1, 3))[0].reshape(T, -1, 2) for c in cams])
    obs2d = uv + rng.normal(0, noise, uv.shape)
    miss = rng.random(obs2d.shape[:3]) < drop
    obs2d[miss] = np.nan
    obs = Observations([f"cam{i}" for i in range(len(cams))], cams, names, obs2d, (~miss).astype(float),
                       np.arange(T), units="mm")
    return obs, X, uv, seq, drift


def _heldout_px(cam, X, truth):
    p = cam.project(X.reshape(-1, 3))[0].reshape(truth.shape)
    return float(np.nanmedian(np.linalg.norm(p - truth, axis=-1)))


# ---------------------------------------------------------------------- pieces
def test_subset_posing_matches_the_full_model(toy):
    kmap = load_map("dannce", toy)
    km = KeypointModel(toy, kmap, list(kmap.nodes))
    assert km.sub is not toy and km.sub.v_template.shape[0] < toy.num_vertices
    params = toy.sample_params(np.random.default_rng(1), 3)
    with torch.no_grad():
        full = toy(params).keypoints
        mine = km(params)
    assert torch.allclose(mine, full, atol=1e-5)


def test_offsets_turn_with_their_anchor_triangle(toy):
    spec = {"nodes": {"a": {"joints": ["skull"], "offset": [0.0, 0.0, 0.05]}}}
    km = KeypointModel(toy, build_map(spec, toy, "t"), ["a"])
    p = toy.zero_params(1)
    with torch.no_grad():
        rest = km(p)[0, 0].numpy()
        p["pose"][0, 0] = torch.tensor([0.0, 0.0, np.pi / 2])  # root yaw 90 deg
        turned = km(p)[0, 0].numpy()
    skull = toy.rest_joints[toy.joint_names.index("skull")].numpy()
    assert np.allclose(rest, skull + [0, 0, 0.05], atol=1e-5)
    Rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    assert np.allclose(turned, Rz @ (skull + [0, 0, 0.05]), atol=1e-4)


def test_dlt_is_exact_on_clean_distorted_projections():
    cams = cameras()
    X = np.random.default_rng(0).normal([100, 40, 20], 20, (5, 7, 3))
    uv = np.stack([c.project(X.reshape(-1, 3))[0].reshape(5, 7, 2) for c in cams])
    uv[0, 0, 0] = np.nan  # three views left
    uv[1:, 1, 1] = np.nan  # one view left: not triangulated
    Y, views = triangulate(cams, uv)
    assert views[0, 0] == 3 and views[1, 1] == 1 and np.isnan(Y[1, 1]).all()
    ok = views >= 2
    assert np.abs(Y[ok] - X[ok]).max() < 1e-6


def test_similarity_init_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    P = rng.normal(0, 0.2, (9, 3))
    F = 4
    Rs = [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(F)]
    Rs = [R * np.linalg.det(R) for R in Rs]
    t = rng.normal(0, 50, (F, 3))
    Y = np.stack([130 * P @ R.T + tt for R, tt in zip(Rs, t)])
    Y[1] = np.nan  # no point in frame 1: copies a neighbour
    s, R, tt = similarity_init(P, Y, np.full(Y.shape[:2], 2), np.ones(9, bool))
    assert abs(s - 130) < 1e-6
    assert np.allclose(R[0], Rs[0], atol=1e-9) and np.allclose(tt[3], t[3], atol=1e-6)
    assert np.allclose(R[1], R[0]) or np.allclose(R[1], R[2])
    s1, R1, _ = umeyama(P, Y[0], np.ones(9))
    assert abs(s1 - 130) < 1e-6 and np.allclose(R1, Rs[0])


# ---------------------------------------------------------------------- the fit
def _fit(subject, kmap, T=16, seed=0, **kw):
    obs, X, uv, seq, drift = synthetic(subject, kmap, T, seed)
    train = obs.select(cameras=obs.cameras[:3])
    res = track(subject, kmap, train, TrackOptions(**kw))
    return obs, X, uv, seq, drift, res


def test_tracker_recovers_known_keypoints_and_beats_triangulation(toy):
    kmap = load_map("dannce", toy)
    obs, X, uv, seq, drift, res = _fit(toy, kmap)
    err = np.linalg.norm(res.points3d - X, axis=-1)  # mm; the toy mouse is ~150 mm long
    dlt_err = np.linalg.norm(res.init_points3d - X, axis=-1)
    assert np.median(err) < 0.6 and err.max() < 5.0, (np.median(err), err.max())
    assert np.median(err) < 0.8 * np.nanmedian(dlt_err)
    # held-out camera: the tracked nodes land nearer the truth than the 3-view triangulation does
    cam, truth = obs.camera_models[3], uv[3]
    assert _heldout_px(cam, res.points3d, truth) < 0.8 * _heldout_px(cam, res.init_points3d, truth)
    # the posed model's joints (from the written parameters) against the true joints
    with torch.no_grad():
        true_j = toy(seq).joints.double().numpy() * SCALE + SHIFT + drift[:, None]
        p = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in res.params.items()}
        fit_j = toy(p).joints.double().numpy()
    W = res.world_from_subject
    fit_j = np.einsum("tij,tkj->tki", W[:, :3, :3], fit_j) + W[:, None, :3, 3]
    je = np.linalg.norm(fit_j - true_j, axis=-1)
    assert np.median(je) < 2.0, np.median(je)


def test_without_optimisation_the_same_check_fails(toy):
    """The thresholds above are not loose: the initialisation alone misses them."""
    kmap = load_map("dannce", toy)
    obs, X, uv, seq, drift, res = _fit(toy, kmap, iters=0, rigid_iters=0)
    assert np.median(np.linalg.norm(res.points3d - X, axis=-1)) > 1.0


def test_written_parameters_reproduce_the_track(toy, tmp_path):
    from gausslift.track import write_track

    kmap = load_map("dannce", toy)
    obs, X, uv, seq, drift, res = _fit(toy, kmap, T=6, iters=60, rigid_iters=20, fit_offsets=False)
    train = obs.select(cameras=obs.cameras[:3])
    rep = write_track(tmp_path / "t", toy, res, train, TrackOptions(), "dannce")
    z = np.load(tmp_path / "t" / "params.npz")
    assert set(z.files) == {"pose", "bone_lengths", "scale", "translation", "world_from_subject",
                            "keypoints3d", "keypoints2d", "keypoints_visible"}
    params = {k: torch.as_tensor(z[k]) for k in toy.param_shapes}
    assert toy.check_params(params) == 6
    for k in toy.param_shapes:  # the file holds the track's parameters and pose, unchanged
        assert np.array_equal(z[k], np.asarray(res.params[k], np.float32)), k  # stored as float32
    assert np.array_equal(z["world_from_subject"], res.world_from_subject)
    # posing the model with what was written gives the tracked nodes (without offsets the DANNCE nodes
    # are the model's own keypoints)
    from types import SimpleNamespace

    written = SimpleNamespace(params={k: z[k] for k in toy.param_shapes},
                              world_from_subject=z["world_from_subject"])
    assert np.abs(model_keypoints(toy, written) - res.points3d).max() < 1e-3
    assert np.abs(z["keypoints3d"] - res.points3d).max() < 1e-3
    assert set(rep["keypoint_error"]) == {"cam0", "cam1", "cam2"} and len(rep["per_frame"]) == 6
    assert (tmp_path / "t" / "meta.json").is_file() and (tmp_path / "t" / "track.npz").is_file()


def test_silhouette_iou_against_ingest_style_masks(toy, tmp_path):
    """Masks rendered from the true mesh give IoU 1; a track 15 mm off gives less."""
    import json

    from gausslift.cameras import Camera, look_at, make_K
    from gausslift.io.facelift import write
    from gausslift.meshrender import render_mask
    from gausslift.scene import Scene, View
    from gausslift.track.silhouette import silhouette_iou

    params = {k: v.numpy() for k, v in toy.sample_params(np.random.default_rng(2), 2).items()}
    W = np.tile(np.diag([SCALE, SCALE, SCALE, 1.0]), (2, 1, 1))
    W[:, :3, 3] = SHIFT
    T = np.diag([0.01, 0.01, 0.01, 1.0])  # world_from_capture: mm -> normalised
    T[:3, 3] = -0.01 * SHIFT
    with torch.no_grad():
        V = toy({k: torch.as_tensor(v) for k, v in params.items()}).vertices.double().numpy()
    samples = []
    for t in range(2):
        v = V[t] * SCALE * 0.01  # = T applied to the world points V * SCALE + SHIFT
        views, masks = [], []
        for i, eye in enumerate(([2.7, 0, 1.0], [0, 2.7, 1.0])):
            cam = Camera(make_K(600.0, 600.0, 128, 128), look_at(np.array(eye)), 256, 256)
            masks.append(render_mask(v, toy.faces.numpy(), cam.K, cam.viewmat, 256, 256).astype(np.float32))
            views.append(View(f"cam_{i:03d}", cam, meta={"source": {"camera": f"c{i}", "frame": t}}))
        write(Scene(views, world_from_capture=T), tmp_path / f"frame_{t:06d}",
              images=[np.zeros((256, 256, 3), np.float32)] * 2, masks=masks)
        samples.append({"id": f"frame_{t:06d}", "frame": t, "path": f"frame_{t:06d}"})
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": samples}))
    good = silhouette_iou(toy, params, W, np.arange(2), tmp_path)
    assert set(good["per_camera"]) == {"c0", "c1"} and len(good["per_frame"]) == 2
    assert min(d["median"] for d in good["per_camera"].values()) > 0.97, good
    W[:, 0, 3] += 15.0
    off = silhouette_iou(toy, params, W, np.arange(2), tmp_path)
    assert max(d["median"] for d in off["per_camera"].values()) < 0.9, (good, off)


# ---------------------------------------------------------------------- maps
def test_unmapped_nodes_are_named_in_one_error(toy):
    kmap = load_map("dannce", toy)
    with pytest.raises(InputError) as e:
        kmap.select(["nose", "Withers", "tail_root", "Hock"])
    msg = str(e.value)
    assert "Withers" in msg and "Hock" in msg and "nose" not in msg.split("node(s)")[1] and "\n" not in msg


def test_yaml_skeleton_map_loads(toy, tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("nodes:\n"
                 "  snout: {keypoint: nose}\n"
                 "  withers: {joints: [thoracic_vertebrae_0]}\n"
                 "  back_mid: {vertices: [3, 4], offset: [0.0, 0.0, 0.02], fit_offset: false}\n"
                 "ignore: [camera_led]\n")
    kmap = load_map(str(f), toy)
    assert kmap.name == "lab" and set(kmap.nodes) == {"snout", "withers", "back_mid"}
    assert kmap.nodes["withers"].kind == "J" and kmap.nodes["back_mid"].ids == [3, 4]
    assert not kmap.nodes["back_mid"].fit_offset and kmap.nodes["back_mid"].offset[2] == 0.02
    assert kmap.select(["withers", "camera_led", "snout"]) == ["withers", "snout"]
    f.write_text("nodes:\n  withers: {joints: [no_such_joint]}\n")
    with pytest.raises(InputError, match="no_such_joint"):
        load_map(str(f), toy)


# ---------------------------------------------------------------------- CLI
def _toml(a) -> str:
    return "[" + ", ".join(repr(float(x)) for x in np.ravel(a)) + "]"


def write_session(root, cams, names, labels=None):
    """An anipose session: calibration.toml and, per camera with ``labels[cam]`` [F,K,2] (internal
    pixels), a SLEAP ``<cam>/<cam>.analysis.h5``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (n, c) in enumerate(zip(names, cams)):
        K = K_to_opencv(c.K)
        lines += [f"[cam_{i}]", f'name = "{n}"', f"size = [{c.width}, {c.height}]",
                  f"matrix = [{', '.join(_toml(r) for r in K)}]", f"distortions = {_toml(c.dist)}",
                  f"rotation = {_toml(matrix_to_rodrigues(c.R))}", f"translation = {_toml(c.t)}", ""]
        (root / n).mkdir(exist_ok=True)
    (root / "calibration.toml").write_text("\n".join(lines) + "\n")
    for n, xy in (labels or {}).items():
        with h5py.File(root / n / f"{n}.analysis.h5", "w") as f:
            f["tracks"] = np.transpose((xy - 0.5)[:, None], (1, 3, 2, 0))  # [tracks, 2, nodes, frames]
            f["node_names"] = np.array([k.encode() for k in NODE_NAMES])
            f["point_scores"] = np.where(np.isfinite(xy[..., 0]), 0.9, 0.0).T[None]
    return root


NODE_NAMES = ["nose", "neck", "tail_root", "left_ear_tip", "right_ear_tip", "body_middle", "tail_middle",
              "left_shoulder", "right_shoulder", "left_hip", "right_hip"]


def _cli(args, capsys):
    from gausslift.cli import main

    rc = main(["track", *args])
    return rc, capsys.readouterr()


@pytest.fixture
def toy_env(toy, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(toy.source.parent))


def test_cli_tracks_a_sleap_session(toy, toy_env, tmp_path, capsys):
    kmap = build_map({n: {"keypoint": n} for n in NODE_NAMES}, toy, "t")
    obs, X, uv, seq, drift = synthetic(toy, kmap, T=6, seed=3)
    sess = write_session(tmp_path / "s", obs.camera_models, obs.cameras,
                         {c: obs.points2d[i] for i, c in enumerate(obs.cameras)})
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t"), "--cameras", "cam0,cam1,cam2", "--iters", "80",
                    "--keypoints", "dannce", "--frames", "1:5"], capsys)
    assert rc == 0, out.err
    assert "4 frames x 3 cameras" in out.out
    got = load_observations(sess)
    assert got.names == NODE_NAMES and np.allclose(got.points2d, obs.points2d, equal_nan=True)
    assert np.allclose(got.confidence[np.isfinite(got.points2d[..., 0])], 0.9)
    z = np.load(tmp_path / "t" / "params.npz")
    assert z["pose"].shape[0] == 4 and z["keypoints2d"].shape[1] == 3
    tracked = np.load(tmp_path / "t" / "track.npz")["points3d"]
    assert np.median(np.linalg.norm(tracked - X[1:5], axis=-1)) < 2.0


def test_cli_session_without_keypoints(toy_env, tmp_path, capsys):
    sess = write_session(tmp_path / "s", cameras(3), ["a", "b", "c"])
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t")], capsys)
    assert rc == 1 and "--masks INGEST_DIR" in out.err and "masks alone" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_cli_single_usable_camera(toy_env, tmp_path, capsys):
    cams = cameras(2)
    xy = cams[0].project(np.random.default_rng(0).normal([100, 40, 20], 20, (3 * 11, 3)))[0].reshape(3, 11, 2)
    sess = write_session(tmp_path / "s", cams, ["a", "b"], {"a": xy})
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t")], capsys)
    assert rc == 1 and "at least two" in out.err and "'a'" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_cli_unreadable_keypoint_file(toy_env, tmp_path, capsys):
    sess = write_session(tmp_path / "s", cameras(3), ["a", "b", "c"])
    bad = sess / "b" / "b.analysis.h5"
    bad.write_bytes(b"not an hdf5 file")
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t")], capsys)
    assert rc == 1 and str(bad) in out.err and len(out.err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- the loop


@pytest.mark.realdata
def test_real_mouse_tracks_the_sleap_skeleton(shared_data):
    path = shared_data / "meshes" / MOUSE_FILE
    if not path.is_file():
        pytest.skip(f"MAMMAL mouse model not found at {path}")
    subject = MammalMouse(path)
    kmap = load_map("sleap", subject)
    obs, X, uv, seq, drift, res = _fit(subject, kmap)
    err = np.linalg.norm(res.points3d - X, axis=-1)
    dlt_err = np.linalg.norm(res.init_points3d - X, axis=-1)
    assert np.median(err) < 0.6 and np.median(err) < 0.8 * np.nanmedian(dlt_err)
    cam, truth = obs.camera_models[3], uv[3]
    assert _heldout_px(cam, res.points3d, truth) < 0.8 * _heldout_px(cam, res.init_points3d, truth)
