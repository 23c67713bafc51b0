"""Avatar data, fitting, evaluation, reenactment and bad input, on tiny test-written sequences.

Ground-truth images come from a random 'teacher' avatar bound to the same mesh (so they are exactly
representable); a short fit must get closer to them than its initialisation, on held-out cameras
and frames."""

import json

import cv2
import numpy as np
import pytest
import torch
from _subjects_fixtures import write_tiny_flame, write_tiny_ict

from gausslift import binding as B
from gausslift.avatar import model as M
from gausslift.avatar.animate import animate
from gausslift.avatar.evaluate import evaluate_run
from gausslift.avatar.trainer import AvatarConfig, AvatarTrainer
from gausslift.cameras import K_from_fov, look_at, opengl_c2w_from_viewmat
from gausslift.cli import main
from gausslift.errors import InputError
from gausslift.io.sequence import check_against_subject, read_sequence
from gausslift.subjects import FlameHead, load_subject

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def teacher(subject, seed=0):
    g = torch.Generator().manual_seed(seed)
    faces_idx = torch.as_tensor(M.bound_faces(subject))
    binding = torch.arange(len(faces_idx)).repeat(3)
    loc = B.init_local(binding, 0.6)
    loc["means"] += 0.3 * torch.randn(loc["means"].shape, generator=g)
    n = len(binding)
    colour = torch.tensor([1.2, 0.3, -0.8]) + 0.3 * torch.randn(n, 1, 3, generator=g)
    p = {**loc, "opacities": torch.full((n,), 2.0), "sh0": colour, "shN": torch.zeros(n, 0, 3)}
    return p, binding, subject.faces[faces_idx]


def render_teacher(subject, tp, params, wfs, cam):
    p, binding, faces = tp
    verts = M.pose_vertices(subject, params, torch.as_tensor(wfs, dtype=torch.float32)[None])[0]
    vm = torch.as_tensor(cam[0], dtype=torch.float32)[None]
    K = torch.as_tensor(cam[1], dtype=torch.float32)[None]
    rgb, alpha, _ = M.render(p, binding, verts, faces, vm, K, SIZE, SIZE, 0, torch.ones(3), "cpu")
    rgba = torch.cat([rgb[0], alpha[0]], -1).clamp(0, 1).numpy()
    return (rgba * 255 + 0.5).astype(np.uint8)


def ring_cams(n, dist, height=0.0):
    out = []
    for i in range(n):
        a = 2 * np.pi * i / n
        vm = look_at(np.array([dist * np.sin(a), height, dist * np.cos(a)]), up=(0.0, 1.0, 0.0))
        out.append((vm, K_from_fov(50, SIZE, SIZE)))
    return out


def frame_params(subject, T, rng):
    p = {k: torch.zeros(T, *s) for k, s in subject.param_shapes.items()}
    if "expression" in p:
        p["expression"] = torch.as_tensor(
            np.linspace(0, 1, T)[:, None] * rng.uniform(0, 0.8, p["expression"].shape[1]), dtype=torch.float32
        )
    if "jaw" in p:
        p["jaw"][:, 0] = torch.linspace(0, 0.3, T)
    return p


def write_vhap(root, subject, T=5, C=4, seed=0):
    rng = np.random.default_rng(seed)
    tp = teacher(subject, seed)
    params = frame_params(subject, T, rng)
    cams = ring_cams(C, 0.35)
    (root / "images").mkdir(parents=True)
    (root / "fg_masks").mkdir()
    (root / "flame_param").mkdir()
    frames = []
    for t in range(T):
        fp = {k: params[k][t : t + 1] for k in params}
        np.savez(
            root / "flame_param" / f"{t:05d}.npz",
            shape=fp["shape"][0].numpy(),
            expr=fp["expression"].numpy(),
            rotation=fp["rotation"].numpy(),
            neck_pose=fp["neck"].numpy(),
            jaw_pose=fp["jaw"].numpy(),
            eyes_pose=fp["eyes"].numpy(),
            translation=fp["translation"].numpy(),
        )
        for c, (vm, K) in enumerate(cams):
            rgba = render_teacher(subject, tp, fp, np.eye(4), (vm, K))
            name = f"{t:05d}_{c:02d}.png"
            cv2.imwrite(str(root / "images" / name), cv2.cvtColor(rgba[..., :3], cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "fg_masks" / name), rgba[..., 3])
            frames.append(
                {
                    "timestep_index": t,
                    "camera_index": c,
                    "file_path": f"images/{name}",
                    "fg_mask_path": f"fg_masks/{name}",
                    "flame_param_path": f"flame_param/{t:05d}.npz",
                    "transform_matrix": opengl_c2w_from_viewmat(vm).tolist(),
                    "fl_x": K[0, 0],
                    "fl_y": K[1, 1],
                    "cx": K[0, 2],
                    "cy": K[1, 2],
                    "w": SIZE,
                    "h": SIZE,
                }
            )
    # VHAP splits by camera/time; the avatar trainer ignores them and merges everything
    (root / "transforms_train.json").write_text(
        json.dumps({"frames": [f for f in frames if f["camera_index"]]})
    )
    (root / "transforms_val.json").write_text(
        json.dumps({"frames": [f for f in frames if not f["camera_index"]]})
    )
    return params


def write_synth(root, subject, T=5, C=8, seed=0):
    rng = np.random.default_rng(seed)
    tp = teacher(subject, seed)
    params = frame_params(subject, T, rng)
    wfs = np.repeat(np.diag([0.01, 0.01, 0.01, 1.0])[None], T, 0)  # cm -> normalised world
    cams = ring_cams(C, 0.6, 0.05)
    for t in range(T):
        fr = root / f"frame_{t:04d}"
        (fr / "images").mkdir(parents=True)
        rows = []
        for c, (vm, K) in enumerate(cams):
            rgba = render_teacher(subject, tp, {k: v[t : t + 1] for k, v in params.items()}, wfs[t], (vm, K))
            cv2.imwrite(str(fr / "images" / f"cam_{c:03d}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            rows.append(
                {
                    "w": SIZE,
                    "h": SIZE,
                    "fx": K[0, 0],
                    "fy": K[1, 1],
                    "cx": K[0, 2],
                    "cy": K[1, 2],
                    "w2c": vm.tolist(),
                    "file_path": f"images/cam_{c:03d}.png",
                }
            )
        (fr / "opencv_cameras.json").write_text(json.dumps({"frames": rows}))
    np.savez(root / "params.npz", world_from_subject=wfs, **{k: v.numpy() for k, v in params.items()})
    (root / "meta.json").write_text(json.dumps({"model": "ict", "frames": T}))
    return params


@pytest.fixture
def flame(tmp_path):
    return FlameHead(write_tiny_flame(tmp_path), n_shape=4, n_expression=3, shape_block=4)


def test_vhap_sequence_trains_and_reenacts(tmp_path, flame):
    params = write_vhap(tmp_path / "vhap", flame)
    seq = read_sequence(tmp_path / "vhap")
    assert (seq.format, seq.num_frames, seq.num_cameras) == ("vhap", 5, 4)
    assert np.allclose(seq.params["jaw"][:, 0], params["jaw"][:, 0].numpy())
    cfg = AvatarConfig(
        iters=50,
        backend="cpu",
        holdout_cameras=4,
        gaussians_per_face=3,
        sh_degree=0,
        lambda_temporal=0.01,
        adaptive_densify_ratio=0.5,
        lr_sh0=0.02,
        threads=1,
    )
    run = tmp_path / "run"
    tr = AvatarTrainer(seq, flame, cfg, run)
    assert tr.split["test_frames"] == [4] and tr.split["test_cameras"] == [0]
    assert all(t < 4 and c != 0 for t, c in tr.pairs)  # training never sees held-out data
    tr.start()  # the initial avatar, exported beside the run (a fresh fit needs an empty folder)
    tr.save_avatar(tmp_path / "init")
    tr._write_info({}, tmp_path / "init")
    before = evaluate_run(tmp_path / "init", backend="cpu", subject=flame)
    info = tr.fit(progress=False)
    assert info["finished"] and info["iters"] == 50 and info["rollbacks"] == 0
    after = evaluate_run(run, backend="cpu", subject=flame)
    for split in ("novel_view", "reenactment"):
        assert after[split]["psnr"] > before[split]["psnr"] + 3.0, (split, before[split], after[split])
        print(split, before[split]["psnr"], after[split]["psnr"])
    # reenactment with new parameters (jaw opened further than any training frame)
    new = {
        "jaw": np.tile([[0.4, 0, 0]], (3, 1)).astype(np.float32),
        "expression": np.zeros((3, 3), np.float32),
    }
    np.savez(tmp_path / "new.npz", **new)
    res = animate(
        run, tmp_path / "new.npz", tmp_path / "anim", camera=1, ply=True, backend="cpu", subject=flame
    )
    assert res["frames"] == 3
    assert sorted(p.name for p in (tmp_path / "anim").iterdir()) == [
        "animation.mp4",
        "frame_0000.ply",
        "frame_0000.png",
        "frame_0001.ply",
        "frame_0001.png",
        "frame_0002.ply",
        "frame_0002.png",
    ]


def test_cli_fit_resume_eval_animate_on_a_synth_layout(tmp_path, monkeypatch, capsys):
    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    seq = tmp_path / "seq"
    write_synth(seq, load_subject("ict"))
    run = tmp_path / "run"
    common = [
        "--backend",
        "cpu",
        "--quiet",
        "--set",
        "sh_degree=0",
        "--set",
        "log_every=5",
        "--set",
        "threads=1",
    ]
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--iters", "15", *common]) == 0
    info = json.loads((run / "avatar.json").read_text())
    assert info["test_cameras"] == [0] and info["test_frames"] == [4] and info["subject"] == "ict"
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--resume", "--quiet"]) == 0  # already done
    assert json.loads((run / "avatar.json").read_text())["iters"] == 15
    capsys.readouterr()
    assert main(["avatar", "eval", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["novel_view"]["views"] == 4 and res["reenactment"]["views"] == 1
    assert {"psnr_var", "static_change", "jitter", "mask_iou"} <= set(res["novel_view"])
    assert (
        main(
            ["avatar", "animate", str(run), "--params", str(seq / "params.npz"), "--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert len(list((tmp_path / "a").glob("frame_*.png"))) == 5


def test_bad_input_errors(tmp_path, flame, monkeypatch, capsys):
    write_vhap(tmp_path / "vhap", flame, T=3, C=2)
    # missing FLAME file, and FLAME data without one
    assert (
        main(
            [
                "avatar",
                "fit",
                str(tmp_path / "vhap"),
                "--out",
                str(tmp_path / "r"),
                "--subject",
                f"flame:{tmp_path / 'nope.pkl'}",
            ]
        )
        == 1
    )
    assert "nope.pkl" in capsys.readouterr().err
    assert main(["avatar", "fit", str(tmp_path / "vhap"), "--out", str(tmp_path / "r")]) == 1
    assert "model file" in capsys.readouterr().err
    # parameters of the wrong length
    z = dict(np.load(tmp_path / "vhap/flame_param/00001.npz"))
    z["expr"] = np.zeros((1, 5), np.float32)
    np.savez(tmp_path / "vhap/flame_param/00001.npz", **z)
    with pytest.raises(InputError, match="changes shape"):
        read_sequence(tmp_path / "vhap")
    for t in (0, 2):
        np.savez(tmp_path / f"vhap/flame_param/{t:05d}.npz", **z)
    with pytest.raises(InputError, match="expression.*per-frame shape"):
        check_against_subject(read_sequence(tmp_path / "vhap"), flame)
    # mismatched cameras and frames: timestep 2 lacks camera 1
    js = json.loads((tmp_path / "vhap/transforms_train.json").read_text())
    js["frames"] = [f for f in js["frames"] if f["timestep_index"] != 2]
    (tmp_path / "vhap/transforms_train.json").write_text(json.dumps(js))
    with pytest.raises(InputError, match="timestep 2 has cameras"):
        read_sequence(tmp_path / "vhap")
    # a synth sequence whose parameters have the wrong number of frames
    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    seq = tmp_path / "syn"
    write_synth(seq, load_subject("ict"), T=3, C=2)
    z = dict(np.load(seq / "params.npz"))
    z["expression"] = z["expression"][:2]
    np.savez(seq / "params.npz", **z)
    with pytest.raises(InputError, match="'expression' has 2 frames but the sequence has 3"):
        read_sequence(seq)


def test_param_noise_only_touches_training_frames_and_is_seed_independent(tmp_path, flame):
    write_vhap(tmp_path / "vhap", flame)
    seq = read_sequence(tmp_path / "vhap")
    a, b = (
        AvatarTrainer(seq, flame, AvatarConfig(param_noise=0.05, seed=s, holdout_cameras=4), tmp_path / "r")
        for s in (0, 1)
    )
    for k in ("jaw", "expression", "rotation"):
        truth = torch.as_tensor(seq.params[k])
        assert (a.all_params[k][:4] - truth[:4]).abs().max() > 0.01  # noisy training frames
        assert torch.equal(a.all_params[k][4:], truth[4:])  # held-out frames untouched
        assert torch.equal(a.all_params[k], b.all_params[k])  # the same draw for every seed
    assert torch.equal(a.all_params["shape"], torch.as_tensor(seq.params["shape"]))  # per-subject


def test_tracking_learning_rates_by_kind(tmp_path, flame):
    """GaussianAvatars' rates: coefficients 1e-3, rotations 1e-5, translation 1e-6, one group each."""
    write_vhap(tmp_path / "vhap", flame)
    tr = AvatarTrainer(
        read_sequence(tmp_path / "vhap"), flame, AvatarConfig(holdout_cameras=4), tmp_path / "r"
    )
    tr.start()
    lrs = {g["name"]: g["lr"] for g in tr.extra_opt.param_groups}
    assert lrs == {
        "expression": 1e-3,
        "rotation": 1e-5,
        "neck": 1e-5,
        "jaw": 1e-5,
        "eyes": 1e-5,
        "translation": 1e-6,
    }
    assert M.param_lr("pose", AvatarConfig(lr_pose=3e-4)) == 3e-4  # the mouse's joint rotations
    # a step keeps them (the loop's rollback scale multiplies them: tests/test_avatar_loop.py)
    loss, _ = tr.loss(0)
    tr.update(loss, 0, 1.0)
    assert {g["name"]: g["lr"] for g in tr.extra_opt.param_groups} == lrs
