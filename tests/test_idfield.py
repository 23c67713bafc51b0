"""idfield (issue 22): prep outputs, the UV-to-triangle binding against the avatar binding, the generator's
demodulation, and (slow) a tiny model that learns two identities, fitting a known code, resume after SIGKILL.
Tiny data are made here (synth heads, 64^2, a 4-camera frontal rig) from the real ICT FaceKit model, so the
tests that use it are marked ``realdata`` (its UV layout and face region are what they check; no test-made
model has them); the FLAME path runs on a test-made model in the default run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gausslift.errors import InputError, MissingWeightsError


@pytest.fixture(scope="module")
def ict():
    from gausslift.subjects import load_subject

    try:
        return load_subject("ict")
    except MissingWeightsError as e:  # absent: skip; a file that does not load is a failure
        pytest.skip(f"ICT FaceKit not found ({e})")


@pytest.fixture(scope="module")
def tiny_data(ict, tmp_path_factory):
    """Two synth identities, 2 frames, 4 frontal cameras at 64^2, prepared."""
    from gausslift.idfield.prep import prep
    from gausslift.synth import SynthOptions, generate

    root = tmp_path_factory.mktemp("idf")
    opts = SynthOptions(kind="head", n=2, size=64, frames=2, rig="frontal:4:40", target_scale=0.5, seed=3,
                        workers=1)
    generate(opts, root / "data", progress_bar=False)
    prep(root / "data", progress_bar=False)
    return root / "data"


def tiny_cfg(**kw):
    from gausslift.idfield.config import IdFieldConfig

    base = dict(res=24, const_res=3, channels=[32, 32, 16, 16], code_dim=8, w_dim=32, frames=2, views=2,
                lr=5e-3, lr_code=3e-2, snapshot_minutes=0.0, iters=200, log_every=10)
    return IdFieldConfig(**(base | kw))


# ------------------------------------------------------------------------------------------- fast
@pytest.mark.realdata
def test_prep_writes_meshes_masks_and_masked_images_without_touching_inputs(tiny_data):
    from gausslift.io.meshply import read_ply

    prep = tiny_data / "idfield"
    listing = json.loads((prep / "prep.json").read_text())
    assert len(listing["identities"]) == 2 and len(listing["frames"]) == 4
    fr = prep / listing["frames"][0]
    v, f = read_ply(fr / "mesh.ply")
    vf, ff = read_ply(fr / "face.ply")
    assert len(f) > len(ff) > 0 and len(v) > len(vf) and ff.max() < len(vf)
    import cv2

    src = tiny_data / listing["frames"][0]
    for k in range(4):
        m = cv2.imread(str(fr / "masks" / f"cam_{k:03d}.png"), cv2.IMREAD_GRAYSCALE)
        img = cv2.imread(str(fr / "masked" / f"cam_{k:03d}.png"))
        rgba = cv2.imread(str(src / "images" / f"cam_{k:03d}.png"), cv2.IMREAD_UNCHANGED)
        assert m.any(), "the face must be seen by every frontal camera"
        assert (img[m == 0] == 0).all()  # black outside the face
        assert (rgba[..., 3][m > 0] > 0).all()  # the face lies inside the head's silhouette
        assert (m > 0).sum() < (rgba[..., 3] > 0).sum()  # ... and is smaller than it


@pytest.mark.realdata
def test_prep_names_a_bad_file(tiny_data, tmp_path):
    import shutil

    from gausslift.idfield.prep import prep

    bad = tmp_path / "bad"
    shutil.copytree(tiny_data / "head_000000", bad / "head_000000")
    p = bad / "head_000000" / "frame_0001" / "params.npz"
    before = (bad / "head_000000" / "frame_0000" / "params.npz").read_bytes()
    p.write_bytes(b"not an npz")
    with pytest.raises(InputError) as e:
        prep(bad, progress_bar=False)
    assert "frame_0001/params.npz" in str(e.value)
    assert (bad / "head_000000" / "frame_0000" / "params.npz").read_bytes() == before


@pytest.mark.realdata
def test_uv_layout_texels_lie_in_their_triangles(ict):
    from gausslift.idfield.uvmap import build_layout

    L = build_layout(ict, 48)
    assert L.n > 500
    assert (L.bary > -1e-5).all() and np.allclose(L.bary.sum(1), 1, atol=1e-5)
    uv = (L.bary[:, :, None] * L.uv_norm[L.face]).sum(1) * L.res  # texel centre from the barycentrics
    assert np.abs(uv - (L.texel + 0.5)).max() < 1e-3


@pytest.mark.realdata
def test_uv_binding_matches_the_avatar_binding(ict):
    """Gaussians made on the face region's sub-mesh equal GaussianAvatars' local_to_world on the subject's
    full face list (the binding remapped to it), and a zero offset puts a Gaussian at its texel's
    barycentric surface point of the posed triangle."""
    from gausslift.binding import face_frames, local_to_world
    from gausslift.idfield import field as fd
    from gausslift.idfield.uvmap import build_layout

    L = build_layout(ict, 32)
    with torch.no_grad():
        rest = ict(ict.zero_params(1)).vertices[0].numpy()
        posed = ict(ict.sample_params(np.random.default_rng(1), 1)).vertices[0]
    region = fd.Region(L, ict.faces.numpy(), rest)
    g = torch.Generator().manual_seed(0)
    raw = {k: torch.randn(L.n, n, generator=g) * 0.3 for k, n in fd.ATTRS.items()}
    ours = fd.gaussians(raw, region, region.select(posed))
    loc = fd.local_gaussians(raw, region, region.select(posed))
    full_binding = torch.as_tensor(L.region_faces[L.face])
    means, quats, scales = local_to_world(loc, full_binding, face_frames(posed, ict.faces))
    assert torch.allclose(ours["means"], means, atol=1e-5)
    assert torch.allclose(ours["quats"], quats, atol=1e-5)
    assert torch.allclose(ours["scales"], scales, rtol=1e-4)
    # zero offset: the barycentric point of the texel in the posed parent triangle (numpy, independent)
    raw0 = raw | {"offset": torch.zeros(L.n, 3)}
    m0 = fd.gaussians(raw0, region, region.select(posed))["means"].numpy()
    tri = posed.numpy()[ict.faces.numpy()[L.region_faces[L.face]]]
    assert np.abs(m0 - (L.bary[:, :, None] * tri).sum(1)).max() < 1e-5


def test_modulated_conv_demodulates():
    from gausslift.idfield.generator import modconv

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 12, 12, generator=g)
    w = torch.randn(8, 16, 3, 3, generator=g)
    s = torch.rand(2, 16, generator=g) * 4 + 0.1
    y = modconv(x, w, s)
    # demodulation: each output channel's weights have unit norm, so a unit-variance input gives ~unit output
    assert 0.7 < float(y[:, :, 2:-2, 2:-2].std()) < 1.3
    y2 = modconv(x, w, s * 10.0)
    assert torch.allclose(y, y2, atol=1e-4)  # a style scaled as a whole is demodulated away
    y3 = modconv(x, w, s, demod=False)
    assert not torch.allclose(y, y3, atol=1e-2)


# ------------------------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def two_ids(tiny_data, ict, tmp_path_factory):
    from gausslift.idfield.data import load_dataset
    from gausslift.idfield.model import load_model
    from gausslift.idfield.train import IdFieldTask
    from gausslift.train.device import set_threads
    from gausslift.train.loop import Loop, LoopOptions

    set_threads(1)
    run = tmp_path_factory.mktemp("idf_run") / "run"
    frames = load_dataset(tiny_data)
    Loop(IdFieldTask(tiny_cfg(iters=300), frames, ict, run), run, LoopOptions(iters=300, quiet=True)).run()
    return load_model(run, ict), frames, run


@pytest.mark.slow
@pytest.mark.realdata
def test_tiny_model_learns_two_identities_and_tells_them_apart(two_ids):
    from gausslift.idfield import field as fd

    model, frames, _ = two_ids
    assert len(model.names) == 2
    err = np.zeros((2, 2))  # err[true identity, code used]
    for f in frames:
        i = model.names.index(f.identity)
        img, mask, vm, K = f.torch_views(range(len(f.Ks)))
        for j in range(2):
            with torch.no_grad():
                g = model.gaussians(model.codes[j], torch.as_tensor(f.verts))
                rgb, _ = fd.render(g, vm, K, img.shape[2], img.shape[1])
            err[i, j] += float(((rgb - img).abs().sum(-1) * mask).sum() / mask.sum())
    # each identity is rendered better by its own code than by the other's, by a clear margin
    assert err[0, 0] < 0.8 * err[0, 1] and err[1, 1] < 0.8 * err[1, 0], err


@pytest.mark.slow
@pytest.mark.realdata
def test_fit_recovers_a_known_code(two_ids):
    from gausslift.idfield import field as fd
    from gausslift.idfield.fit import FitConfig, Target, fit

    model, frames, _ = two_ids
    f = [x for x in frames if x.identity == model.names[1]][0]
    k = 1
    true = model.codes[1].detach()
    img, _, vm, K = f.torch_views([k])
    with torch.no_grad():
        g = model.gaussians(true, torch.as_tensor(f.verts))
        rgb, alpha = fd.render(g, vm, K, img.shape[2], img.shape[1])
    mask = (alpha[0, ..., 0] > 0.5).float().numpy()
    t = Target(rgb[0].numpy() * mask[..., None], mask, f.viewmats[k], f.Ks[k])
    res = fit(model, [t], FitConfig(iters=120, code_prior=1e-4), lm2d=f.keypoints2d[k])
    code, other, mean = res["code"], model.codes[0].detach(), model.mean_code()
    d_true, d_other = float((code - true).norm()), float((code - other).norm())
    # the images identify the code along the direction that tells the identities apart: the fit starts at
    # the mean (lam = 0.5 between the other identity, 0, and the true one, 1) and must get near 1
    ax = true - other
    lam = float((code - other) @ ax / (ax @ ax))
    assert lam > 0.85 and d_true < d_other and d_true < float((mean - true).norm()), (lam, d_true, d_other)


@pytest.mark.slow
@pytest.mark.realdata
def test_interpolation_scores_both_face_masks(two_ids, tmp_path):
    from gausslift.idfield.interpolate import _outline, _own_mask, interpolate
    from gausslift.idfield.views import show_cameras

    model, frames, run = two_ids
    vms, Ks = show_cameras([270.0, 230.0, 310.0], 64)
    verts = torch.as_tensor(frames[0].verts)
    for c in range(3):
        occluded = _own_mask(model, verts, vms[c], Ks[c], 64) > 0.5
        outline = _outline(model, verts, vms[c], Ks[c], 64) > 0.5
        assert occluded.sum() > 50 and not (occluded & ~outline).any()  # the mask lies inside the outline
    r = interpolate(run, model.names[0], model.names[1], 3, tmp_path / "interp", size=64)
    assert len(r["iou"]) == len(r["iou_outline"]) == 3
    assert r["iou_outline_min"] == min(r["iou_outline"]) and r["iou_min"] == min(r["iou"])
    assert (tmp_path / "interp" / "step_02.ply").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_fit_and_animate_cli_write_their_outputs(two_ids, tiny_data, tmp_path):
    from gausslift.cli import main

    _, frames, run = two_ids
    f = frames[0]
    src = json.loads((f.folder / "frame.json").read_text())["source"]
    fit = tmp_path / "fit"
    assert main(["idfield", "fit", str(run), str(f.folder / "masked" / "cam_001.png"), "--mask",
                 str(f.folder / "masks" / "cam_001.png"), "--camera", f"{src}/opencv_cameras.json",
                 "--view", "1", "--iters", "10", "--out", str(fit), "--threads", "1"]) == 0
    for name in ("gaussians.ply", "mesh.ply", "params.npz", "turntable.mp4", "render.png", "fit.json"):
        assert (fit / name).stat().st_size > 0, name
    with np.load(fit / "params.npz") as d:
        assert d["code"].shape == (1, 8) and d["world_from_subject"].shape == (1, 4, 4)
    anim = tmp_path / "anim"
    assert main(["idfield", "animate", str(run), str(fit), "--params", f"{src}/../params.npz",
                 "--out", str(anim), "--size", "32"]) == 0
    assert len(list(anim.glob("frame_*.png"))) == 2 and (anim / "animation.mp4").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_train_resumes_after_sigkill_bit_identically(tiny_data, tmp_path):
    def args(run, *extra):
        return [sys.executable, "-m", "gausslift", "idfield", "train", str(tiny_data), "--out", str(run),
                "--iters", "40", "--threads", "1", "--quiet", *[f"--set={k}={v}" for k, v in sets.items()],
                *extra]

    sets = {"res": 24, "const_res": 3, "channels": "[32,32,16,16]", "code_dim": 8, "w_dim": 32,
            "snapshot_minutes": 0, "checkpoint_every": 10, "log_every": 1}
    ref = tmp_path / "ref"
    subprocess.run(args(ref), check=True, capture_output=True)
    run = tmp_path / "run"
    errs = open(tmp_path / "killed.err", "w")
    proc = subprocess.Popen(args(run), stdout=subprocess.DEVNULL, stderr=errs)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"]
            except (OSError, IndexError, ValueError, KeyError):
                last = 0
            if last >= 23:
                break
            time.sleep(0.01)
        assert proc.poll() is None, (tmp_path / "killed.err").read_text()
    finally:
        proc.kill()  # SIGKILL: no handler, no final checkpoint
        proc.wait()
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert 0 < ck["step"] < 40
    subprocess.run(args(run, "--resume"), check=True, capture_output=True)
    a = torch.load(ref / "checkpoint.pt", weights_only=False)["state"]
    b = torch.load(run / "checkpoint.pt", weights_only=False)["state"]
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert torch.equal(a["codes"], b["codes"])
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(steps) == len(set(steps))  # no duplicated rows after the resume


def test_frontal_rig_faces_the_front():
    from gausslift.synth.rigs import parse_rig

    spec = parse_rig("frontal:16")
    c = spec.centres()
    assert c.shape == (16, 3) and np.allclose(np.linalg.norm(c, axis=1), 2.7)
    az = np.degrees(np.arctan2(c[:, 1], c[:, 0])) % 360
    assert np.all(np.abs(az - 270) <= 75 + 1e-6)  # every camera within +-75 deg of the front (-y)
    assert np.allclose(np.degrees(np.arcsin(c[:, 2] / 2.7)), np.repeat([-5.0, 30.0], 8))
    with pytest.raises(InputError):
        parse_rig("frontal:15")


def test_flame_takes_the_same_code_path(tmp_path):
    """A tiny FLAME-layout model (shape instead of identity coefficients), given a planar UV layout: the
    texel layout, the generator's Gaussians on the posed mesh and a few fitting steps run, and the fit
    moves FLAME's shape coefficients."""
    from _subjects_fixtures import write_tiny_flame

    from gausslift.idfield.config import IdFieldConfig
    from gausslift.idfield.fit import FitConfig, Target, fit
    from gausslift.idfield.model import IdField
    from gausslift.subjects.flame import FlameHead

    s = FlameHead(write_tiny_flame(tmp_path), n_shape=4, n_expression=3, shape_block=4)
    v = s.v_template.numpy()
    s.uv = torch.as_tensor((v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], 0), dtype=torch.float32)
    s.face_uv = s.faces.clone()
    cfg = IdFieldConfig(subject="flame", region="skin", res=16, const_res=4, channels=[8, 8, 8], code_dim=4,
                        w_dim=8)
    world = {"scale": 10.0, "rotation": np.eye(3).tolist(), "distance": 2.7}
    model = IdField.fresh(cfg, s, ["a", "b"], world)
    assert model.layout.n > 10
    from gausslift.cameras import look_at

    vm = look_at(np.array([0.0, 0.0, 2.7]), up=(0.0, 1.0, 0.0))
    K = np.array([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]])
    img = np.full((32, 32, 3), 0.5, np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    res = fit(model, [Target(img * mask[..., None], mask, vm, K)], FitConfig(iters=3, origin_prior=0.0))
    assert res["pose"].id_key == "shape" and "shape" in res["pose"].keys
    assert float(res["pose"].coeffs["shape"].detach().abs().sum()) > 0
    with torch.no_grad():
        g = model.gaussians(res["code"], res["pose"].vertices()[0])
    assert g["means"].shape == (model.layout.n, 3) and torch.isfinite(g["means"]).all()


@pytest.mark.realdata
def test_landmark_fit_puts_the_mesh_centre_where_synth_does(tiny_data, ict):
    """Synth puts the middle of the posed mesh's box at the origin; the fit's origin prior pulls that same
    point there, which fixes the head's depth from one view better than pulling the neutral centre."""
    from gausslift.idfield.data import by_identity, load_dataset
    from gausslift.idfield.evaluate import frontal_camera
    from gausslift.idfield.fit import FitConfig, Pose, init_from_landmarks
    from gausslift.idfield.model import world_stats

    frames = load_dataset(tiny_data)
    world = world_stats(np.stack([f.world_from_subject for f in frames]), np.ones(len(frames)))
    errs = {"bbox": [], "neutral": []}
    for fr in by_identity(frames).values():
        f0 = fr[0]
        k = frontal_camera(f0)
        u = f0.verts[Pose(ict, world).used.numpy()]
        assert np.abs(0.5 * (u.min(0) + u.max(0))).max() < 1e-5
        for origin, cfg in (("bbox", FitConfig()), ("neutral", FitConfig(origin="neutral", origin_prior=1.0,
                                                                          lm_iters=60))):
            pose = Pose(ict, world)
            init_from_landmarks(pose, f0.keypoints2d[k], f0.viewmats[k], f0.Ks[k], cfg)
            with torch.no_grad():
                v = pose.vertices()[0].numpy()
            errs[origin].append(float(np.linalg.norm(v - f0.verts, axis=1).mean()))
    print(errs)
    assert np.mean(errs["bbox"]) < 0.04 and np.mean(errs["bbox"]) < np.mean(errs["neutral"])


def test_eval_and_fit_take_fit_settings_and_name_a_bad_one(tmp_path):
    """`idfield eval/fit --set KEY=VALUE` override gausslift.idfield.fit.FitConfig; a bad key is one error
    line naming it (before any model is read), never a traceback."""
    from gausslift.config import apply_overrides
    from gausslift.idfield.fit import FitConfig

    cfg = apply_overrides(FitConfig(), ["origin=neutral", "lm_iters=60"])
    assert (cfg.origin, cfg.lm_iters) == ("neutral", 60) and FitConfig().origin == "bbox"
    for verb in (["eval", str(tmp_path / "run"), "--data", str(tmp_path)],
                 ["fit", str(tmp_path / "run"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]):
        r = subprocess.run([sys.executable, "-m", "gausslift", "idfield", *verb, "--set", "nope=1"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "unknown config key 'nope'" in r.stderr, (verb[0], r.stderr)
        assert "Traceback" not in r.stderr
