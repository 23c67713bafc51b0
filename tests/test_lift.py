"""`gausslift lift`: the whole chain with tiny random models saved the way their loaders expect (FaceLift's
pipeline folder layout; a GS-LRM run checkpoint), on test-made images, a sample and a 3-frame video. FAST
leaves the defaults (input view 0, five draws) to each test; tests of FaceLift's behaviour ask for it."""

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gausslift.cameras import facelift_inference_rig
from gausslift.errors import InputError, MissingWeightsError
from gausslift.framing import size_ratio
from gausslift.lift import FACELIFT, LiftOptions, lift
from gausslift.lift.chain import initial_noise, load_lrm, load_pipeline, shrink_rgba, split_white
from gausslift.lift.inputs import foreground, frame_input, open_input

FAST = dict(steps=1, guidance=1.0, device="cpu", frame_size=64, turntable_frames=3, turntable_size=32,
            sheet_tile=32, backend="cpu", verbose=False)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy networks: one torch thread (with two, OpenMP's spinning on a shared, loaded CPU made each
    tiny convolution about 100x slower, measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny FaceLift-structure pipeline (unCLIP, VAE, CLIP; 32^2) in FaceLift's folder layout, a tiny
    pixel-space one as a `mvdiff train` run (RUN/pipeline), and a tiny GS-LRM run folder."""
    # skip only without the optional `diffusion` extra; gausslift's own modules are plain imports, so
    # an import error in them fails here instead of skipping every lift test
    pytest.importorskip("diffusers")
    from gausslift.config import save_config, to_dict
    from gausslift.lrm.config import train_config
    from gausslift.lrm.train import CKPT, FORMAT
    from gausslift.models.gslrm import GSLRM
    from gausslift.mvdiff.loading import save_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline, tiny_unclip_pipeline
    from gausslift.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("models")
    save_pretrained(tiny_unclip_pipeline(), root / "pipe")
    shutil.rmtree(root / "pipe" / "view_conditioning")  # as FaceLift's pipeckpts: no marker, no learned
    (root / "pipe" / "gausslift_mvdiff.json").unlink()  # views; clr_embeds.pt copied into the folder
    save_pretrained(tiny_pipeline(size=32, channels=(8, 16, 16, 16)), root / "mvrun" / "pipeline")
    cfg = train_config("tiny", ["model.d=64", "model.n_layers=1", "model.image_size=32"])
    torch.manual_seed(0)
    model = GSLRM(cfg.model)
    (root / "lrm").mkdir()
    save_config(cfg, root / "lrm" / "config.yaml")  # a run folder: config.yaml next to checkpoint.pt
    state = dict(format=FORMAT, step=0, model=model.state_dict(), config=to_dict(cfg))
    save_checkpoint(root / "lrm" / CKPT, state)
    small = ["model.d=64", "model.n_layers=1", "model.image_size=32"]
    hcfg = train_config("tiny", [*small, "model.hull_depth=0.2"])
    torch.manual_seed(0)
    (root / "lrm_hull").mkdir()
    save_config(hcfg, root / "lrm_hull" / "config.yaml")
    state = dict(format=FORMAT, step=0, model=GSLRM(hcfg.model).state_dict(), config=to_dict(hcfg))
    save_checkpoint(root / "lrm_hull" / CKPT, state)
    return root


def _disc(path: Path, size=(96, 80), centre=(34, 50), radius=18, alpha=True) -> Path:
    """A coloured disc (RGBA: alpha is the disc) off-centre on a grey background."""
    h, w = size
    yy, xx = np.mgrid[:h, :w] + 0.5
    inside = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    img = np.full((h, w, 4), 128, np.uint8)
    img[inside, :3] = (40, 90, 220)  # BGR
    img[..., 3] = np.where(inside, 255, 0) if alpha else 255
    cv2.imwrite(str(path), img if alpha else img[..., :3])
    return path


def _png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_lift_image_writes_the_whole_chain(models, tmp_path):
    out = tmp_path / "out"
    res = lift(_disc(tmp_path / "disc.png"), models / "pipe", models / "lrm", out, LiftOptions(**FAST))
    inp = _png(out / "input.png")
    assert inp.shape == (64, 64, 4)
    assert abs(size_ratio(inp[..., 3]) - 0.3) < 0.01  # framed to size 0.3 ...
    ys, xs = np.nonzero(inp[..., 3] > 127)
    assert abs(xs.mean() + 0.5 - 32) < 1.5 and abs(ys.mean() + 0.5 - 32) < 1.5  # ... centred
    assert res["frames"][0]["mask_method"] == "alpha" and abs(res["frames"][0]["size_ratio"] - 0.3) < 0.01
    from gausslift.io import read_scene

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = read_scene(out / "views")
    assert scene.warnings == [] and [v.name for v in scene.views] == [f"cam_{k:03d}" for k in range(6)]
    rig = facelift_inference_rig().resized(32, 32)
    for k, v in enumerate(scene.views):
        np.testing.assert_allclose(v.camera.viewmat, rig.viewmat[k], atol=1e-9)
        np.testing.assert_allclose(v.camera.K, rig.K[k], atol=1e-9)
        assert (v.camera.width, v.camera.height) == (32, 32) and _png(v.image).shape == (32, 32, 4)
    assert [v.meta["frame_extra"]["view"] for v in scene.views][:2] == ["front", "front_right"]
    from gausslift.splats import load_ply

    assert len(load_ply(out / "splats.ply")) == res["lrm_metrics"]["n_gaussians"] > 0
    assert (out / "turntable.mp4").stat().st_size > 0
    assert sorted(p.name for p in (out / "renders").iterdir()) == [f"cam_{k:03d}.png" for k in range(6)]
    assert _png(out / "contact_sheet.png").shape == (2 * 32, 7 * 32, 3)
    saved = json.loads((out / "lift.json").read_text())
    assert saved["kind"] == "image" and saved["views"][0] == "cam_000"
    # the defaults: the framed input as view 0, five draws
    assert (saved["options"]["first_view"], saved["options"]["draws"]) == ("input", 5)
    # unseen_*: views 1-5 of metrics.json by hand; mean_*: all six
    per_view = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "iou"):
        vals = [per_view[key][f"cam_{k:03d}"] for k in range(6)]
        assert saved["lrm_metrics"][f"unseen_{key}"] == pytest.approx(sum(vals[1:]) / 5, rel=1e-9)
        assert saved["lrm_metrics"][f"mean_{key}"] == pytest.approx(sum(vals) / 6, rel=1e-9)
    assert res["lrm_metrics"] == saved["lrm_metrics"]


def test_first_view_input_hands_the_framed_input_to_gs_lrm(models, tmp_path):
    """first_view="input": view 0 of the written sample is input.png shrunk to the views' size (its
    composite over white and its alpha), views 1-5 are the generated ones, unchanged (same seed; one
    draw in both)."""
    from gausslift.io import read_scene

    disc = _disc(tmp_path / "disc.png")
    res = lift(disc, models / "pipe", models / "lrm", tmp_path / "gen", LiftOptions(**FAST, **FACELIFT))
    assert (res["options"]["first_view"], res["options"]["draws"]) == ("generated", 1)
    opts = LiftOptions(**FAST, first_view="input", draws=1)
    res = lift(disc, models / "pipe", models / "lrm", tmp_path / "inp", opts)
    assert res["options"]["first_view"] == "input"
    want = shrink_rgba(_png(tmp_path / "inp" / "input.png").astype(np.float32) / 255, 32)
    got = [_png(v.image).astype(np.float32) / 255 for v in read_scene(tmp_path / "inp" / "views").views]
    ref = [_png(v.image).astype(np.float32) / 255 for v in read_scene(tmp_path / "gen" / "views").views]
    over = lambda x: x[..., :3] * x[..., 3:] + 1 - x[..., 3:]
    np.testing.assert_allclose(over(got[0]), over(want), atol=2 / 255)
    np.testing.assert_allclose(got[0][..., 3], want[..., 3], atol=1 / 255)
    assert np.abs(over(ref[0]) - over(want)).max() > 0.1  # the random model's view 0 is not the input
    for k in range(1, 6):
        np.testing.assert_array_equal(got[k], ref[k])
    with pytest.raises(InputError, match="first_view must be one of generated, input"):
        lift(disc, models / "pipe", models / "lrm", tmp_path / "bad", LiftOptions(**FAST, first_view="both"))


def test_draws_share_the_first_noise_and_fuse(models, tmp_path):
    """initial_noise: the first draw's noise does not depend on the count; lift with 3 draws runs and
    records them; a non-positive count is one clear error."""
    pipe = load_pipeline(models / "mvrun", "cpu")
    n1, n3 = initial_noise(pipe, 4), initial_noise(pipe, 4, draws=3)
    assert n3.shape[0] == 3 * n1.shape[0] and torch.equal(n3[: n1.shape[0]], n1)
    disc = _disc(tmp_path / "disc.png")
    res = lift(disc, models / "mvrun", models / "lrm", tmp_path / "d3", LiftOptions(**FAST, draws=3))
    assert res["options"]["draws"] == 3 and (tmp_path / "d3" / "splats.ply").is_file()
    with pytest.raises(InputError, match="draws must be at least 1"):
        lift(disc, models / "mvrun", models / "lrm", tmp_path / "d0", LiftOptions(**FAST, draws=0))


def test_hull_tolerance_reaches_the_hull_model_and_is_refused_without_a_hull(models, tmp_path):
    from gausslift.splats import load_ply

    disc = _disc(tmp_path / "disc.png")
    lrm = models / "lrm_hull"
    lift(disc, models / "mvrun", lrm, tmp_path / "t0", LiftOptions(**FAST))
    res = lift(disc, models / "mvrun", lrm, tmp_path / "t5", LiftOptions(**FAST, hull_tolerance=5))
    assert res["options"]["hull_tolerance"] == 5
    a, b = (load_ply(tmp_path / t / "splats.ply") for t in ("t0", "t5"))
    assert len(a) == len(b) and not torch.allclose(a.means, b.means)  # the looser hull moved Gaussians
    with pytest.raises(InputError, match="hull_tolerance must be at least 0"):
        lift(disc, models / "mvrun", lrm, tmp_path / "x", LiftOptions(**FAST, hull_tolerance=-1))
    with pytest.raises(InputError, match="hull_tolerance needs a GS-LRM"):
        lift(disc, models / "mvrun", models / "lrm", tmp_path / "x", LiftOptions(**FAST, hull_tolerance=1))


def test_shrink_rgba_averages_the_composite_over_white():
    rng = np.random.default_rng(1)
    rgba = rng.uniform(0, 1, (16, 16, 4)).astype(np.float32)
    rgba[:8, :8, 3] = 0.0  # a transparent corner with arbitrary colour: must not leak in
    small = shrink_rgba(rgba, 4)
    over = lambda x: x[..., :3] * x[..., 3:] + 1 - x[..., 3:]
    np.testing.assert_allclose(over(small), over(rgba).reshape(4, 4, 4, 4, 3).mean((1, 3)), atol=1e-5)
    np.testing.assert_allclose(small[..., 3], rgba[..., 3].reshape(4, 4, 4, 4).mean((1, 3)), atol=1e-6)
    assert np.all(small[:2, :2, :3] == 1.0)


def test_generated_views_survive_the_sample_round_trip():
    """Compositing the written sample over white gives back the generated image (8-bit)."""
    rng = np.random.default_rng(0)
    views = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    views[0, :4] = 1.0  # pure background
    views[1, :2] = 0.97  # near-white: partial alpha
    rgb, alpha = split_white(views)
    assert alpha[0, :4].max() == 0 and 0 < alpha[1, 0, 0] < 1 and alpha[1, 4:].min() > 0
    back = rgb * alpha[..., None] + (1 - alpha[..., None])
    np.testing.assert_allclose(back, views, atol=1e-5)
    q = lambda a: np.round(a * 255) / 255
    np.testing.assert_allclose(q(rgb) * q(alpha)[..., None] + 1 - q(alpha)[..., None], views, atol=2.5 / 255)


def test_lift_video_shares_noise_and_writes_sequence(models, tmp_path):
    """A 3-frame mp4 (the disc moves), frames 0:3, our segmentation: per-frame outputs, flicker figures."""
    video = tmp_path / "clip.mp4"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (80, 64))
    frames = []
    for i in range(3):
        yy, xx = np.mgrid[:64, :80] + 0.5
        img = np.full((64, 80, 3), 235, np.uint8)
        img[(xx - 30 - 4 * i) ** 2 + (yy - 34) ** 2 <= 14**2] = (30, 60, 200)
        frames.append(img)
        wr.write(img)
    wr.release()
    out = tmp_path / "vid"
    res = lift(video, models / "mvrun", models / "lrm", out, LiftOptions(frames="0:3", **FAST))
    ids = [f["id"] for f in res["frames"]]
    assert ids == ["frame_000000", "frame_000001", "frame_000002"]
    for f in res["frames"]:
        assert f["mask_method"] in ("background", "grabcut") and abs(f["size_ratio"] - 0.3) < 0.02
        assert (out / f["id"] / "splats.ply").is_file() and (out / f["id"] / "contact_sheet.png").is_file()
        assert len(list((out / f["id"] / "views" / "images").glob("cam_*.png"))) == 6
    seq = json.loads((out / "sequence.json").read_text())
    # (background_change needs background pixels in the generated views: None with random weights)
    assert seq["n_frames"] == 3 and seq["temporal_psnr_var"] is not None and "background_change" in seq
    assert (out / "turntable.mp4").stat().st_size > 0
    man = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in man["samples"]] == [f"{i}/views" for i in ids]


def test_shared_noise_makes_identical_frames_identical(models, tmp_path):
    """Same input, same seed -> the same views (the noise is fixed, not advanced between frames); another
    seed -> other views."""
    from gausslift.lift.chain import generate_views

    pipe = load_pipeline(models / "mvrun")
    cond = np.full((32, 32, 3), 0.5, np.float32)
    o = LiftOptions(**FAST, draws=1)
    a = generate_views(pipe, cond, o, initial_noise(pipe, 0))
    b = generate_views(pipe, cond, o, initial_noise(pipe, 0))
    c = generate_views(pipe, cond, LiftOptions(**{**FAST, "seed": 1}, draws=1), initial_noise(pipe, 1))
    assert a.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_lift_sample_uses_its_view_and_camera(models, tmp_path):
    """A FaceLift-layout sample input: the chosen view's alpha is the foreground."""
    from gausslift.io.facelift import write
    from gausslift.scene import View

    cam = facelift_inference_rig().resized(64, 64)
    rgb = np.full((64, 64, 3), 0.2, np.float32)
    mask = np.zeros((64, 64), np.float32)
    mask[20:40, 24:44] = 1.0
    write([View("cam_000", cam[0]), View("cam_001", cam[1])], tmp_path / "s", images=[rgb, rgb],
          masks=[mask, np.zeros_like(mask)])  # fmt: skip
    fr = next(open_input(tmp_path / "s").frames)
    w = frame_input(fr, foreground(fr), 64)
    assert abs(w.size_ratio - 0.3) < 0.01
    res = lift(tmp_path / "s", models / "mvrun", models / "lrm", tmp_path / "o", LiftOptions(**FAST))
    assert res["kind"] == "sample" and res["frames"][0]["source"].endswith(":cam_000")
    with pytest.raises(InputError, match="foreground .* is empty"):  # view cam_001 has an empty alpha
        o = LiftOptions(**FAST, view="cam_001")
        lift(tmp_path / "s", models / "pipe", models / "lrm", tmp_path / "o2", o)


def test_segmentation_finds_a_disc_without_alpha(tmp_path):
    fr = next(open_input(_disc(tmp_path / "d.png", alpha=False)).frames)
    assert fr.alpha is None
    mr = foreground(fr)
    yy, xx = np.mgrid[:96, :80] + 0.5
    truth = (xx - 34) ** 2 + (yy - 50) ** 2 <= 18**2
    m = mr.mask > 127
    assert mr.method == "grabcut" and (m & truth).sum() / (m | truth).sum() > 0.85


def test_specks_are_dropped_from_the_foreground():
    """A 3x3 speck far from the subject (as ingest's grabCut leaves on the real mouse frames) is removed
    before framing; the subject's soft edge stays."""
    from gausslift.lift.inputs import Frame

    alpha = np.zeros((60, 60), np.uint8)
    alpha[20:40, 25:45] = 255
    alpha[20:40, 24] = 100  # soft edge, connected
    alpha[2:5, 2:5] = 255  # speck
    mr = foreground(Frame("f", np.zeros((60, 60, 3), np.uint8), alpha, None, "test"))
    assert mr.mask[2:5, 2:5].max() == 0 and (mr.mask[20:40, 24] == 100).all()
    assert (mr.mask[20:40, 25:45] == 255).all() and "specks" in mr.note


def test_rig_cameras_default_and_from_a_sample(tmp_path):
    from gausslift.io.facelift import write
    from gausslift.lift.chain import rig_cameras
    from gausslift.scene import View

    rig = rig_cameras(6, 64)
    np.testing.assert_allclose(rig.K[0, 0, 0], facelift_inference_rig().K[0, 0, 0] / 8)
    cams = facelift_inference_rig().resized(128, 128)
    views = [View(f"v{k}", cams[k]) for k in (1, 0, 2, 3, 4, 5)]  # another order
    write(views, tmp_path / "rig", images=[np.zeros((128, 128, 3), np.float32)] * 6)
    got = rig_cameras(6, 32, tmp_path / "rig" / "opencv_cameras.json")
    np.testing.assert_allclose(got.viewmat[0], cams.viewmat[1], atol=1e-9)
    np.testing.assert_allclose(got.K[0, 0, 0], cams.K[1, 0, 0] / 4)
    with pytest.raises(InputError, match="6 cameras for a 4-view"):
        rig_cameras(4, 32, tmp_path / "rig")
    with pytest.raises(InputError, match="give their cameras"):
        rig_cameras(4, 32)


def test_bad_inputs_give_one_clear_error(models, tmp_path):
    o = LiftOptions(**FAST)
    img = _disc(tmp_path / "disc.png")
    with pytest.raises(MissingWeightsError, match="nowhere.*does not exist"):
        lift(img, tmp_path / "nowhere", models / "lrm", tmp_path / "o", o)
    broken = tmp_path / "broken_pipe"
    broken.mkdir()
    (broken / "unet").mkdir()
    with pytest.raises(MissingWeightsError, match="missing unet/config.json"):
        load_pipeline(broken)
    no_embeds = tmp_path / "no_embeds"
    shutil.copytree(models / "pipe", no_embeds)
    (no_embeds / "clr_embeds.pt").rename(tmp_path / "clr_embeds.pt")
    with pytest.raises(MissingWeightsError, match="missing clr_embeds.pt"):
        load_pipeline(no_embeds)
    assert load_pipeline(no_embeds, view_embeds=tmp_path / "clr_embeds.pt").num_views == 6
    with pytest.raises(MissingWeightsError, match="view embeddings: .*nope.pt does not exist"):
        load_pipeline(no_embeds, view_embeds=tmp_path / "nope.pt")
    with pytest.raises(MissingWeightsError, match="checkpoint.pt is missing"):
        load_lrm(tmp_path)
    with pytest.raises(MissingWeightsError, match="GS-LRM weights.*does not exist"):
        load_lrm(tmp_path / "none.pt")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        lift(bad, models / "pipe", models / "lrm", tmp_path / "o", o)
    with pytest.raises(InputError, match="input not found"):
        lift(tmp_path / "missing.png", models / "pipe", models / "lrm", tmp_path / "o", o)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((32, 32, 4), np.uint8))  # fully transparent
    with pytest.raises(InputError, match="foreground .* is empty"):
        lift(empty, models / "pipe", models / "lrm", tmp_path / "o", o)
    with pytest.raises(InputError, match="mask not found"):
        o = LiftOptions(**FAST, mask=str(tmp_path / "m"))
        lift(img, models / "pipe", models / "lrm", tmp_path / "o", o)
    assert not (tmp_path / "o" / "splats.ply").exists()


def test_cli_lift_frames_folder_with_masks(models, tmp_path, capsys):
    """The CLI on a folder of frames with a folder of given masks; the frame whose mask is empty is
    skipped (listed in lift.json), the others are lifted."""
    from gausslift.cli import main

    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        _disc(tmp_path / "frames" / f"f{i}.png", alpha=False)
        m = np.zeros((96, 80), np.uint8)
        if i == 0:
            m[35:65, 20:50] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"m{i}.png"), m)
    out = tmp_path / "o"
    rc = main(["lift", str(tmp_path / "frames"), "--mask", str(tmp_path / "masks"), "--mvdiff",
               str(models / "mvrun"), "--lrm", str(models / "lrm" / "checkpoint.pt"), "--out", str(out),
               "--steps", "1", "--frame-size", "64", "--turntable-frames", "2", "--turntable-size", "32",
               "--device", "cpu", "--backend", "cpu", "--threads", "1"])  # fmt: skip
    assert rc == 0 and (out / "f0" / "splats.ply").is_file() and not (out / "f1").exists()
    res = json.loads((out / "lift.json").read_text())
    assert res["kind"] == "folder" and res["frames"][0]["mask_method"] == "given"
    assert [s["id"] for s in res["skipped"]] == ["f1"]
    assert abs(size_ratio(_png(out / "f0" / "input.png")[..., 3]) - 0.3) < 0.01
    assert "1 frames" in capsys.readouterr().out
    rc = main(["lift", str(tmp_path / "frames"), "--mvdiff", str(tmp_path / "x"), "--lrm", "y", "--out", "z"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_cli_defaults_are_the_measured_settings_and_facelift_is_one_flag(monkeypatch, capsys):
    """`lift` passes first_view="input", draws=5 to the chain by default; --facelift passes FaceLift's
    ("generated", 1); explicit options that agree with --facelift are accepted, ones that contradict it
    are a one-line error before anything runs."""
    import gausslift.lift
    from gausslift.cli import main

    seen = []

    def fake(inp, mvdiff, lrm, out, opts):
        seen.append((opts.first_view, opts.draws))
        m = dict(mean_psnr=1.0, mean_iou=0.5, unseen_psnr=1.0, unseen_iou=0.5)
        return dict(lrm_metrics=m, frames=[{}], kind="image", views=[f"cam_{k:03d}" for k in range(6)])

    monkeypatch.setattr(gausslift.lift, "lift", fake)
    base = ["lift", "x.png", "--mvdiff", "m", "--lrm", "l", "--out", "o"]
    for extra, want in [
        ([], ("input", 5)),
        (["--facelift"], ("generated", 1)),
        (["--facelift", "--draws", "1", "--first-view", "generated"], ("generated", 1)),
        (["--draws", "3"], ("input", 3)),
        (["--first-view", "generated"], ("generated", 5)),
    ]:
        assert main(base + extra) == 0, extra
        assert seen.pop() == want, extra
    assert "over the unseen views 1-5" in capsys.readouterr().out
    for extra, clash in [
        (["--facelift", "--draws", "5"], "--draws 5"),
        (["--facelift", "--first-view", "input"], "--first-view input"),
    ]:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--facelift means --first-view generated --draws 1" in err
        assert f"contradicts {clash}" in err
    assert not seen
    assert LiftOptions().first_view == "input" and LiftOptions().draws == 5  # the library's defaults too


def test_lift_help_states_the_defaults_and_their_cost(capsys):
    from gausslift.cli import main

    with pytest.raises(SystemExit):
        main(["lift", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--first-view input --draws 5" in text and "--facelift" in text
    assert "18 s against 4 s per mouse" in text and "5x slower" in text


def test_sequence_unseen_metrics_are_the_frames_mean(models, tmp_path):
    """A sequence's lift.json unseen_* is the mean over frames of each frame's views 1-5 (FaceLift's
    behaviour here: one draw per frame keeps it quick)."""
    (tmp_path / "frames").mkdir()
    for i in range(2):
        _disc(tmp_path / "frames" / f"f{i}.png", centre=(34 + 3 * i, 50))
    out = tmp_path / "o"
    res = lift(tmp_path / "frames", models / "mvrun", models / "lrm", out, LiftOptions(**FAST, **FACELIFT))
    assert (res["options"]["first_view"], res["options"]["draws"]) == ("generated", 1)
    for key in ("psnr", "iou"):
        per_frame = []
        for f in ("f0", "f1"):
            m = json.loads((out / f / "metrics.json").read_text())[key]
            per_frame.append(sum(m[f"cam_{k:03d}"] for k in range(1, 6)) / 5)
        assert res["lrm_metrics"][f"unseen_{key}"] == pytest.approx(sum(per_frame) / 2, rel=1e-9)
