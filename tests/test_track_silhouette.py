"""The silhouette term of ``gausslift track`` and tracking from masks alone, on small synthetic sequences.

A test-made articulated mouse (``test_track.write_toy_mouse``, its vertex rings inflated 3x so that its
silhouette is a body, not specks) is posed along a known smooth sequence. Its keypoints are projected
into 4 distorted 1280x1024 cameras (as in ``test_track``); its masks, without the tail (ingest's grabCut
masks miss the thin tail), are rendered with :func:`gausslift.meshrender.render_mask` into an
ingest-style folder: per frame a FaceLift sample whose ``world_from_capture`` (mm -> normalised units,
centred on the mouse) differs from frame to frame, and 4 virtual 128² pinholes named after the tracked
cameras. Real-data checks are ``realdata``.
"""

# ruff: noqa: F811  (the toy fixtures are imported from test_track and named as test arguments)
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_track import PER, SCALE, SHIFT, _cli, cameras, write_session, write_toy_mouse  # noqa: F401

from gausslift.subjects import MammalMouse
from gausslift.track import Observations, TrackOptions, load_map, mask_observations, track
from gausslift.track.masks import load_masks
from gausslift.track.posing import KeypointModel

torch.set_num_threads(1)
# one torch and one numba thread: numba's idle pool after the mask renders otherwise spins against torch
pytestmark = pytest.mark.usefixtures("one_thread")

LEFT_LEG = ["left_foot", "left_knee", "left_hip"]  # the toy's nodes on femur_l / tibia_l / hind_paw_l
LEG_JOINTS = ["tibia_l", "hind_paw_l"]
MASK_SIZE, FOCAL, NORM = 128, 400.0, 0.005  # mask pixels, their focal length; normalised units per mm


@pytest.fixture(scope="module")
def fat(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fat")
    path = write_toy_mouse(folder)
    d = dict(np.load(path))
    owner = np.repeat(np.arange(len(d["joints"])), PER)
    d["vertices"] = (d["joints"][owner] + 3.0 * (d["vertices"] - d["joints"][owner])).astype(np.float32)
    np.savez(path, **d)
    return MammalMouse(path)


def _sequence(subject, T, seed, bend=0.0):
    """A smooth sequence; ``bend`` (radians) folds the left hind leg forward at the hip and knee."""
    seq = subject.sample_sequence(np.random.default_rng(seed), T)
    if bend:
        for j, sign in (("femur_l", 1.0), ("tibia_l", -1.0)):
            seq["pose"][:, subject.joint_names.index(j), 0] += sign * bend
    drift = np.cumsum(np.random.default_rng(seed + 1).normal(0, 0.5, (T, 3)), 0) * [1, 1, 0]
    return seq, drift


def _keypoints(subject, kmap, seq, drift, drop=(), seed=0):
    names = list(kmap.nodes)
    T = drift.shape[0]
    with torch.no_grad():
        Xm = KeypointModel(subject, kmap, names)(seq).double().numpy()
    X = SCALE * Xm + SHIFT + drift[:, None]
    cams = cameras()
    uv = np.stack([c.project(X.reshape(-1, 3))[0].reshape(T, -1, 2) for c in cams])
    uv = uv + np.random.default_rng(seed).normal(0, 1.0, uv.shape)
    for n in drop:
        uv[:, :, names.index(n)] = np.nan
    ok = np.isfinite(uv).all(-1).astype(float)
    return Observations([f"cam{i}" for i in range(4)], cams, names, uv, ok, np.arange(T), units="mm")


def _write_ingest(subject, seq, drift, folder, cams=("cam0", "cam1", "cam2", "cam3")):
    """An ingest-style output of masks of the posed mesh without its tail (see the module docstring),
    closed with a 7 px disc as the toy's rings leave gaps (a blocky grabCut mask, as on real data)."""
    import cv2

    from gausslift.cameras import Camera, look_at, make_K
    from gausslift.io.facelift import write
    from gausslift.meshrender import render_mask
    from gausslift.scene import Scene, View

    with torch.no_grad():
        V = subject(seq).vertices.double().numpy() * SCALE + SHIFT + drift[:, None]
    faces = subject.faces.numpy()
    faces = faces[~subject.regions["tail"][faces].all(1)]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    eyes = ([2.7, 0, 1.2], [0, 2.7, 1.2], [-1.9, -1.9, 1.2], [0.3, 0.2, 2.7])
    samples = []
    for t in range(V.shape[0]):
        centre = V[t].mean(0)
        A = np.diag([NORM, NORM, NORM, 1.0])
        A[:3, 3] = -NORM * centre
        v = V[t] @ A[:3, :3].T + A[:3, 3]
        views, masks = [], []
        for i, name in enumerate(cams):
            cam = Camera(make_K(FOCAL, FOCAL, MASK_SIZE / 2, MASK_SIZE / 2), look_at(np.array(eyes[i])),
                         MASK_SIZE, MASK_SIZE)
            m = render_mask(v, faces, cam.K, cam.viewmat, MASK_SIZE, MASK_SIZE).astype(np.uint8)
            masks.append(cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel).astype(np.float32))
            views.append(View(f"cam_{i:03d}", cam, meta={"source": {"camera": name, "frame": t}}))
        write(Scene(views, world_from_capture=A), folder / f"frame_{t:06d}",
              images=[np.zeros((MASK_SIZE, MASK_SIZE, 3), np.float32)] * len(cams), masks=masks)
        samples.append({"id": f"frame_{t:06d}", "frame": t, "path": f"frame_{t:06d}"})
    (folder / "manifest.json").write_text(json.dumps({"samples": samples}))
    return folder


def _joints_world(subject, params, W):
    with torch.no_grad():
        p = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in params.items()}
        j = subject(p).joints.double().numpy()
    return np.einsum("tij,tkj->tki", W[:, :3, :3], j) + W[:, None, :3, 3]


def _true_joints(subject, seq, drift):
    with torch.no_grad():
        return subject(seq).joints.double().numpy() * SCALE + SHIFT + drift[:, None]


# the toy's masks are 128 px (2 px Cauchy scale) and its mesh has 150 non-tail vertices: the term's weight
# is 1 here (the real session's default, 0.3, was chosen against 1280x1024 SLEAP labels; at 0.2 the leg
# below came to 5.9 mm)
OPTS = dict(rigid_iters=40, iters=200, silhouette_points=150, silhouette_res=MASK_SIZE,
            silhouette_samples=48, silhouette_px=2.0, w_silhouette=1.0)


# ---------------------------------------------------------------------- pieces
def test_masks_map_the_track_world_into_each_sample(fat, tmp_path):
    """The true mesh, through the loaded projection, lands inside the masks (the outside distance
    is ~0), and moved 30 mm (~22 mask pixels) it does not."""
    from gausslift.track.silhouette import SilhouetteTerm

    seq, drift = _sequence(fat, 3, seed=0)
    ing = _write_ingest(fat, seq, drift, tmp_path / "ingest")
    m = load_masks(ing, np.arange(3), ["cam0", "cam2", "nope"], res=MASK_SIZE, samples=48)
    assert m.cameras == ["cam0", "cam2"] and bool(m.present.all())
    term = SilhouetteTerm(fat, m, points=150, robust_px=2.0)
    assert not fat.regions["tail"][term.vids].any()
    with torch.no_grad():
        X = term.model_points(seq).double() * SCALE + torch.as_tensor(SHIFT + drift)[:, None]
        good = term(X)
        off = term(X + torch.tensor([0, 30.0, 0], dtype=torch.float64))  # across both views
    assert good["outside"] < 0.15 and good["cover"] < 0.6, (good, off)
    assert off["outside"] > 1.0 + 5 * good["outside"] and off["cover"] > 0.5 + 2 * good["cover"], (good, off)


# ---------------------------------------------------------------------- the term
def test_silhouette_recovers_a_leg_the_keypoints_do_not_see(fat, tmp_path):
    """The left hind leg is bent and none of its nodes is labelled: keypoints alone leave it in the
    rest pose (its joints > 6 mm off; 9.8 mm when written); with the masks it follows them (< 0.4x
    that, and < 4 mm; 1.7 mm when written)."""
    T = 6
    kmap = load_map("dannce", fat)
    seq, drift = _sequence(fat, T, seed=1, bend=0.6)
    obs = _keypoints(fat, kmap, seq, drift, drop=LEFT_LEG)
    m = load_masks(_write_ingest(fat, seq, drift, tmp_path / "ingest"), np.arange(T), obs.cameras,
                   res=MASK_SIZE, samples=48)
    truth = _true_joints(fat, seq, drift)
    leg = [fat.joint_names.index(j) for j in LEG_JOINTS]
    errs = {}
    for on in (False, True):
        res = track(fat, kmap, obs, TrackOptions(silhouette=on, **OPTS), masks=m)
        fit = _joints_world(fat, res.params, res.world_from_subject)
        errs[on] = float(np.median(np.linalg.norm(fit[:, leg] - truth[:, leg], axis=-1)))
        body = [i for i, n in enumerate(fat.joint_names)
                if not n.startswith(("tail", "femur", "tibia", "hind"))]
        assert np.median(np.linalg.norm(fit[:, body] - truth[:, body], axis=-1)) < 3.0
    print("left-leg joint error (mm), without / with the term:", errs)
    assert errs[False] > 6.0, errs  # the check can fail: without the term the leg stays wrong
    assert errs[True] < 0.4 * errs[False] and errs[True] < 4.0, errs


# ---------------------------------------------------------------------- masks alone
def test_masks_alone_recover_the_pose_roughly(fat, tmp_path):
    """No keypoint at all: the similarity comes from the masks' visual hull (which of its 24 axis
    layouts is chosen by the silhouette), then the term, priors and smoothness. The body's joints land
    within 4 mm (1.6 mm when written; the toy's body is ~85 mm long without the tail) and the nose
    points the true way. The choice matters: the other layouts put the body > 10 mm off."""
    from gausslift.track.init import mask_init

    T = 4
    kmap = load_map("dannce", fat)
    seq, drift = _sequence(fat, T, seed=2)
    obs = _keypoints(fat, kmap, seq, drift, drop=list(kmap.nodes))
    assert not np.isfinite(obs.points2d).any()
    m = load_masks(_write_ingest(fat, seq, drift, tmp_path / "ingest"), np.arange(T), obs.cameras,
                   res=MASK_SIZE, samples=48)
    truth = _true_joints(fat, seq, drift)
    body = [i for i, n in enumerate(fat.joint_names) if not n.startswith("tail")]
    res = track(fat, kmap, obs, TrackOptions(**{**OPTS, "rigid_iters": 30, "iters": 120}, mask_init_steps=20),
                masks=m)
    fit = _joints_world(fat, res.params, res.world_from_subject)
    err = float(np.median(np.linalg.norm(fit[:, body] - truth[:, body], axis=-1)))
    sn, t0 = fat.joint_names.index("snout"), fat.joint_names.index("tail_0")
    nose, true_nose = fit[:, sn] - fit[:, t0], truth[:, sn] - truth[:, t0]
    cos = (nose * true_nose).sum(-1) / np.linalg.norm(nose, axis=-1) / np.linalg.norm(true_nose, axis=-1)
    print("masks alone: body joint error (mm)", err, "nose direction cos", cos)
    assert err < 4.0 and cos.min() > 0.8, (err, cos)
    # the check can fail: the hull's axis layouts the silhouette did not choose are far off
    from gausslift.track.silhouette import SilhouetteTerm

    rest = SilhouetteTerm(fat, m, 150).rest
    s0, cands = mask_init(m.P.numpy(), m.present.reshape(T, -1).numpy(), m.masks, rest)
    rest_j = _joints_world(fat, {k: v.numpy() for k, v in fat.zero_params(T).items()}, np.eye(4)[None])
    errs = []
    for R, t in cands:
        j = s0 * np.einsum("tij,tkj->tki", R, rest_j) + t[:, None]
        errs.append(float(np.median(np.linalg.norm(j[:, body] - truth[:, body], axis=-1))))
    assert sorted(errs)[len(errs) // 2] > 10.0, errs


def test_cli_tracks_from_masks_alone_with_a_warning(fat, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(fat.source.parent))
    T = 4
    seq, drift = _sequence(fat, T, seed=3)
    sess = write_session(tmp_path / "s", cameras(), ["cam0", "cam1", "cam2", "cam3"])
    ing = _write_ingest(fat, seq, drift, tmp_path / "ingest")
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t"), "--masks", str(ing), "--iters", "40",
                    "--set", "rigid_iters=20", "--set", f"silhouette_res={MASK_SIZE}",
                    "--set", "silhouette_points=150", "--set", "silhouette_samples=48",
                    "--set", "mask_init_steps=20"], capsys)
    assert rc == 0, out.err
    assert "warning: no 2D keypoint files found: tracking from the masks of" in out.err
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert set(rep["silhouette_iou"]["per_camera"]) == {"cam0", "cam1", "cam2", "cam3"}
    assert "silhouette term" in rep["silhouette_note"]
    assert any("tracking from the masks of" in w for w in rep["warnings"])
    z = np.load(tmp_path / "t" / "params.npz")
    assert z["pose"].shape[0] == T and z["world_from_subject"].shape == (T, 4, 4)
    # the obs helper gives every camera and the ingested frames, with no label
    o = mask_observations(sess, __import__("gausslift.io", fromlist=["read_scene"]).read_scene(sess), ing,
                          ["nose"])
    assert o.num_frames == T and not np.isfinite(o.points2d).any()


def test_cli_without_keypoints_or_masks_names_the_masks_flag(tmp_path, capsys, fat, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(fat.source.parent))
    sess = write_session(tmp_path / "s", cameras(3), ["a", "b", "c"])
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t")], capsys)
    assert rc == 1 and "--masks" in out.err and len(out.err.strip().splitlines()) == 1


def test_bad_masks_folder_is_one_line(tmp_path, capsys, fat, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(fat.source.parent))
    sess = write_session(tmp_path / "s", cameras(3), ["a", "b", "c"])
    (tmp_path / "empty").mkdir()
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t"), "--masks", str(tmp_path / "empty")], capsys)
    assert rc == 1 and str(tmp_path / "empty") in out.err and len(out.err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.slow
def test_real_session_silhouette_term_raises_iou(shared_data, tmp_path):
    """The minimal session, 3 cameras, 24 frames: the term raises the median IoU per camera above the
    keypoint-only track's, and keeps the keypoint error."""
    from gausslift.preprocess.ingest import IngestOptions, ingest
    from gausslift.subjects import load_subject
    from gausslift.track import load_observations, track_session

    sess = shared_data / "mouse_minimal_session"
    if not sess.is_dir():
        pytest.skip(f"{sess} not found")
    subject = load_subject("mouse")
    obs = load_observations(sess).select(cameras=["back", "mid", "top"], frames=list(range(24)))
    ingest(sess, tmp_path / "ingest", IngestOptions(workers=1, frames="0:24"))
    reps = {}
    for on in (False, True):
        _, reps[on] = track_session(obs, tmp_path / f"t{on}", subject, "sleap",
                                    TrackOptions(silhouette=on), masks=tmp_path / "ingest")
    for c in ("back", "mid", "top"):
        assert reps[True]["silhouette_iou"]["per_camera"][c]["median"] > \
            reps[False]["silhouette_iou"]["per_camera"][c]["median"] + 0.05
        px = {on: reps[on]["keypoint_error"][c]["median_px"] for on in (False, True)}
        assert px[True] < px[False] + 1.0, px
