"""``gausslift video4d`` on a small synthetic session: a test-made articulated mouse (the toy of
test_track) walks in front of 3 cameras; the session is written as anipose writes one (calibration.toml,
<camera>/<camera>.avi, SLEAP ``.analysis.h5`` labels projected from the true keypoints)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from test_track import NODE_NAMES, SCALE, SHIFT, write_session, write_toy_mouse

from gausslift.cameras import ring
from gausslift.cli import main
from gausslift.meshrender import render_mesh
from gausslift.subjects import MammalMouse
from gausslift.track.posing import KeypointModel
from gausslift.track.skeleton import build_map
from gausslift.video4d import STAGES, Video4DOptions, video4d

torch.set_num_threads(1)
T = 8


def _cameras(n=3):
    cams = ring(n, radius=260.0, elevation_deg=50.0, fov_deg=45.0, size=(240, 192), target=(140, 40, 20))
    out = [cams[i] for i in range(n)]
    for c in out:
        c.dist = np.zeros(5)
    return out


def write_solid_mouse(folder):
    """The toy mouse of test_track with a solid body: a closed ellipsoid from the snout to the tail base
    (a UV sphere), each vertex skinned to its nearest joints, so that it has a silhouette."""
    path = write_toy_mouse(folder)
    z = dict(np.load(path))
    nu, nv = 24, 12
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, nu, endpoint=False), np.linspace(0.1, np.pi - 0.1, nv))
    pts = np.stack(
        [0.07 * np.sin(v) * np.cos(u), -0.13 + 0.3 * np.cos(v), 0.1 + 0.06 * np.sin(v) * np.sin(u)], -1
    )
    verts = np.concatenate([pts.reshape(-1, 3), [[0, -0.43, 0.1], [0, 0.17, 0.1]]]).astype(np.float32)
    faces = []
    for i in range(nv - 1):
        for j in range(nu):
            a, b, c, d = i * nu + j, i * nu + (j + 1) % nu, (i + 1) * nu + j, (i + 1) * nu + (j + 1) % nu
            faces += [[a, c, b], [b, c, d]]
    top, bot = len(verts) - 2, len(verts) - 1
    faces += [[top, j, (j + 1) % nu] for j in range(nu)]
    faces += [[bot, (nv - 1) * nu + (j + 1) % nu, (nv - 1) * nu + j] for j in range(nu)]
    d = np.linalg.norm(verts[:, None] - z["joints"][None], axis=-1)
    near = np.argsort(d, 1)[:, :2]
    w = np.zeros((len(verts), len(z["joints"])), np.float32)
    w[np.arange(len(verts)), near[:, 0]] = 0.7
    w[np.arange(len(verts)), near[:, 1]] += 0.3
    z.update(vertices=verts, faces=np.array(faces, np.int32), weights=w)
    np.savez(path, **z)
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("v4d")
    mouse = MammalMouse(write_solid_mouse(root))
    rng = np.random.default_rng(0)
    seq = mouse.sample_sequence(rng, T)
    kmap = build_map({n: {"keypoint": n} for n in NODE_NAMES}, mouse, "t")
    with torch.no_grad():
        Xm = KeypointModel(mouse, kmap, NODE_NAMES)(seq).double().numpy()
        V = mouse(seq).vertices.double().numpy()
    walk = np.linspace(0, 1, T)[:, None] * [70.0, 30.0, 0.0]  # mm: the mouse walks (a background model)
    X = SCALE * Xm + SHIFT + walk[:, None]
    V = SCALE * V + SHIFT + walk[:, None]
    cams = _cameras()
    names = ["a", "b", "c"]
    labels = {n: c.project(X.reshape(-1, 3))[0].reshape(T, -1, 2) for n, c in zip(names, cams)}
    sess = write_session(root / "s", cams, names, labels)
    faces = mouse.faces.numpy()
    yy, xx = np.mgrid[0:192, 0:240]
    for i, (n, c) in enumerate(zip(names, cams)):
        bg = 0.15 + 0.05 * np.sin(xx / (4.0 + i)) * np.cos(yy / 6.0)
        vw = cv2.VideoWriter(str(sess / n / f"{n}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (240, 192))
        vw.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        for t in range(T):
            fr = render_mesh(V[t], faces, c.K, c.viewmat, 240, 192)
            shade = 0.45 + 0.45 * np.abs(fr.normals[..., 2]) if fr.normals is not None else 0.8
            img = np.where(fr.mask, shade, bg)
            vw.write(cv2.cvtColor(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        vw.release()
    return {"session": sess, "meshes": root, "centres_mm": np.median(V[[0, T - 1]], axis=1)}


@pytest.fixture
def env(session, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(session["meshes"]))
    return session


def _opts(**kw):
    base = dict(size=64, avatar_iters=30, threads=1, track_set=["iters=60", "rigid_iters=20"], fps=5.0)
    return Video4DOptions(**(base | kw))


def test_video4d_runs_every_stage_and_writes_the_outputs(env, tmp_path):
    out = tmp_path / "v"
    state = video4d(env["session"], out, _opts(), quiet=True)
    assert all(state["stages"][s]["done"] for s in STAGES)
    assert sorted(p.name for p in (out / "ply").iterdir()) == [f"frame_{t:06d}.ply" for t in range(T)]
    for name in ("orbit.mp4", "compare_a.mp4", "compare_b.mp4", "compare_c.mp4", "report.html", "eval.json"):
        assert (out / name).stat().st_size > 0, name
    ev = json.loads((out / "eval.json").read_text())
    # 3 cameras, every 3rd held out (camera a), the last 20% of 8 frames (2) held out
    assert ev["novel_view"]["views"] == 6 and ev["reenactment"]["views"] == 2
    assert ev["reenactment_train_cameras"]["views"] == 4
    assert {r["split"] for r in ev["per_view"]} == {"novel_view", "reenactment", "reenactment_train_cameras"}
    page = (out / "report.html").read_text()
    assert "(b) held-out frames, training cameras" in page and page.count("<svg") >= 4
    # the tracked mesh sits on the mouse in ingest's images (the track's world moved into each sample's),
    # and so does the avatar in the held-out camera (0.91, 0.91, 0.76 and 0.64 when written)
    assert min(state["stages"]["track"]["silhouette_iou"].values()) > 0.7
    assert state["figures"]["avatar"]["novel_view"]["mask_iou"] > 0.5
    # the per-frame .ply files share frame 0's world: the mouse walks in them as in the capture
    from gausslift.splats import load_ply
    from gausslift.track.masks import ingest_samples

    c0, c7 = (load_ply(out / "ply" / f"frame_{t:06d}.ply").means.median(0).values.numpy() for t in (0, T - 1))
    first = min(ingest_samples(out / "ingest"))  # frame 0's normalised world, where the .ply files live
    W0 = np.asarray(json.loads((ingest_samples(out / "ingest")[first] / "opencv_cameras.json").read_text())
                    ["world_from_capture"])  # fmt: skip
    true = W0[:3, :3] @ (env["centres_mm"][1] - env["centres_mm"][0])  # the true mesh's move, there
    assert np.linalg.norm((c7 - c0) - true) < 0.35 * np.linalg.norm(true), (c7 - c0, true)


def test_a_rerun_skips_finished_stages_and_resumes_the_stopped_one(env, tmp_path, monkeypatch):
    import gausslift.video4d.stages as S

    ref = tmp_path / "ref"
    video4d(env["session"], ref, _opts(), quiet=True)
    out = tmp_path / "run"
    real = S.stage_avatar

    def stop(*a, **k):  # the avatar stage is interrupted (as by Ctrl-C) as it starts
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "stage_avatar", stop)
    with pytest.raises(KeyboardInterrupt):
        video4d(env["session"], out, _opts(), quiet=True)
    state = json.loads((out / "video4d.json").read_text())
    assert [s for s in STAGES if state["stages"].get(s, {}).get("done")] == ["ingest", "track", "sequence"]
    assert not state["stages"]["avatar"].get("done")
    track_mtime = (out / "track" / "params.npz").stat().st_mtime_ns
    monkeypatch.setattr(S, "stage_avatar", real)
    state = video4d(env["session"], out, _opts(), quiet=True)
    assert all(state["stages"][s]["done"] for s in STAGES)
    assert (out / "track" / "params.npz").stat().st_mtime_ns == track_mtime  # not redone
    a, b = (torch.load(r / "avatar" / "avatar.pt", weights_only=False) for r in (ref, out))
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k


def test_sigkill_during_the_avatar_stage_then_rerun_gives_the_same_avatar(env, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gausslift",
        "video4d",
        str(env["session"]),
        "--out",
        str(out),
        "--size",
        "64",
        "--avatar-iters",
        "60",
        "--threads",
        "1",
        "--track-set",
        "iters=60",
        "--track-set",
        "rigid_iters=20",
        "--fps",
        "5",
        "--avatar-set",
        "checkpoint_every=10",
        "--quiet",
    ]
    ref_opts = _opts(avatar_iters=60, avatar_set=["checkpoint_every=10"])
    ref = tmp_path / "ref"
    video4d(env["session"], ref, ref_opts, quiet=True)
    errs = open(tmp_path / "err", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errs)
    ck, deadline = out / "avatar" / "checkpoint.pt", time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                step = torch.load(ck, weights_only=False)["step"]
            except Exception:
                step = 0
            if step >= 20:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "err").read_text()
    finally:
        proc.kill()
        proc.wait()
        errs.close()
    state = json.loads((out / "video4d.json").read_text())
    assert not state["stages"].get("avatar", {}).get("done")
    assert main(cmd[3:]) == 0
    a, b = (torch.load(r / "avatar" / "avatar.pt", weights_only=False) for r in (ref, out))
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    assert (
        json.loads((out / "eval.json").read_text())["novel_view"]
        == json.loads((ref / "eval.json").read_text())["novel_view"]
    )


def test_bad_input_gives_one_line(env, tmp_path, capsys):
    assert main(["video4d", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "no such session folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["video4d", str(env["session"]), "--out", str(busy)]) == 1
    assert "not empty and not a video4d run" in capsys.readouterr().err


def _started(out, stage) -> bool:
    """Has ``stage`` started (its first files exist) while not being recorded as done?"""
    try:
        state = json.loads((out / "video4d.json").read_text())
    except (OSError, ValueError):
        return False
    if state["stages"].get(stage, {}).get("done"):
        return False
    probe = {
        "ingest": out / "ingest",
        "track": out / "track" / "checkpoint.pt",
        "avatar": out / "avatar" / "checkpoint.pt",
        "outputs": out / "ply" / "frame_000000.ply",
    }[stage]
    return probe.exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ingest", "track", "avatar", "outputs"])
def test_sigkill_in_each_stage_then_rerun_gives_the_same_outputs(env, tmp_path, stage):
    """A SIGKILL while ``stage`` runs, then the same command again: the same track, avatar, figures and
    per-frame .ply as an uninterrupted run."""
    args = ["--size", "64", "--avatar-iters", "60", "--threads", "1", "--track-set", "iters=200",
            "--track-set", "rigid_iters=40", "--track-set", "checkpoint_every=5", "--fps", "5",
            "--avatar-set", "checkpoint_every=5", "--quiet"]  # fmt: skip
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main(["video4d", str(env["session"]), "--out", str(ref), *args]) == 0
    cmd = [sys.executable, "-m", "gausslift", "video4d", str(env["session"]), "--out", str(out), *args]
    errs = open(tmp_path / "err", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errs)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline and not _started(out, stage):
            time.sleep(0.005)
        err = (tmp_path / "err").read_text()
        assert proc.poll() is None, f"the run ended before {stage} was caught: {err}"
    finally:
        proc.kill()
        proc.wait()
        errs.close()
    state = json.loads((out / "video4d.json").read_text())
    assert not state["stages"].get(stage, {}).get("done")
    assert main(["video4d", str(env["session"]), "--out", str(out), *args]) == 0
    for f in ("track/params.npz",):
        a, b = (np.load(r / f) for r in (ref, out))
        assert all(np.array_equal(a[k], b[k]) for k in a.files), f
    a, b = (torch.load(r / "avatar" / "avatar.pt", weights_only=False) for r in (ref, out))
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
    ea, eb = (json.loads((r / "eval.json").read_text()) for r in (ref, out))
    assert ea["per_view"] == eb["per_view"]
    for t in (0, T - 1):
        f = f"ply/frame_{t:06d}.ply"
        assert (ref / f).read_bytes() == (out / f).read_bytes(), f


def test_a_session_without_keypoints_tracks_from_the_masks(env, tmp_path):
    import shutil

    sess = tmp_path / "nokp"
    shutil.copytree(env["session"], sess, ignore=shutil.ignore_patterns("*.analysis.h5"))
    state = video4d(sess, tmp_path / "v", _opts(), quiet=True)
    tr = state["stages"]["track"]
    assert all(state["stages"][s]["done"] for s in STAGES)
    assert any("mask" in w for w in tr["warnings"]), tr["warnings"]
    assert min(tr["silhouette_iou"].values()) > 0.5, tr["silhouette_iou"]
