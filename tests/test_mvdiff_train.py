"""gausslift mvdiff train / generate / eval: tiny from scratch on the one loop (resume exact after SIGKILL,
refusals, NaN rollback, the loss falling), fine-tuning view embeddings only, Min-SNR weights, batches."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _samples(root: Path, n=2, size=32, layout="flat"):
    """n six-view RGBA samples: a disc whose colour depends on the view; alpha = the disc."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for s in range(n):
        folder = root / f"sample_{s:03d}" / ("images" if layout == "images" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(6):
            disc = ((yy - size / 2) ** 2 + (xx - size / 2 - v) ** 2 < (size / 3) ** 2).astype(np.float32)
            rgb = np.ones((size, size, 3)) * rng.random(3)
            img = np.dstack([rgb[..., ::-1], disc]) * 255
            cv2.imwrite(str(folder / f"cam_{v:03d}.png"), img.astype(np.uint8))
    return root


def test_data_finds_both_layouts_and_composites(tmp_path):
    from gausslift.errors import InputError
    from gausslift.mvdiff.data import find_samples, load_sample

    a = _samples(tmp_path / "a", n=2)
    b = _samples(tmp_path / "b", n=1, layout="images")
    (tmp_path / "list.txt").write_text("b/sample_000\n")
    found = find_samples([a, tmp_path / "list.txt"])
    assert [p.name for p in found] == ["sample_000", "sample_001", "sample_000"] and found[2].parent == b
    views = load_sample(found[0], 6, 16, (1.0, 1.0, 1.0))
    assert views.shape == (6, 16, 16, 3) and views[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no 6-view samples"):
        find_samples(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        find_samples(tmp_path / "nothing")


TINY = ["--size", "32", "--channels", "16,16,32,32", "--batch", "1", "--threads", "1", "--quiet"]


def _tiny_cfg(data, **kw):
    from gausslift.mvdiff.train import MVDiffTrainConfig

    base = dict(data=[str(data)], size=32, channels=(16, 16, 32, 32), batch=1, workers=0)
    return MVDiffTrainConfig(**(base | kw))


def _iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / (a | b).sum()


def test_tiny_train_resumes_and_generates(tmp_path):
    from gausslift.cli import main
    from gausslift.mvdiff.data import load_rgba
    from gausslift.mvdiff.evaluate import silhouette
    from gausslift.mvdiff.loading import from_pretrained

    data, run = _samples(tmp_path / "data"), tmp_path / "run"
    args = ["mvdiff", "train", str(data), "--out", str(run), *TINY, "--ema-decay", "0.5"]
    assert main(args + ["--steps", "2"]) == 0
    assert (run / "checkpoint.pt").is_file() and (run / "pipeline" / "unet" / "config.json").is_file()
    resume = ["mvdiff", "train", "--out", str(run), "--steps", "3", "--resume", "--quiet"]  # the saved DATA
    assert main(resume) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    pipe = from_pretrained(run / "pipeline")
    assert pipe.views.config.mode == "learned" and pipe.vae is None and pipe.resolution == 32
    out = tmp_path / "views"
    img = tmp_path / "data" / "sample_000" / "cam_000.png"
    assert main(["mvdiff", "generate", str(img), "--pipe", str(run), "--out", str(out), "--steps", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"cam_{v:03d}.png" for v in range(6)]
    ev = tmp_path / "eval"
    code = main(["mvdiff", "eval", str(run), str(data), "--out", str(ev), "--steps", "2", "--limit", "1"])
    assert code == 0
    rep = json.loads((ev / "mvdiff_eval.json").read_text())
    assert rep["samples"] == 1 and (ev / "mvdiff_eval.png").is_file()
    # the scores recomputed: eval's draw is generate's (same seed, steps, guidance), the truth the files
    alpha = [load_rgba(data / "sample_000" / f"cam_{v:03d}.png", 32)[..., 3] for v in range(6)]
    made = [silhouette(load_rgba(out / f"cam_{v:03d}.png", 32)[..., :3]) for v in range(6)]
    assert rep["iou"] == pytest.approx(np.mean([_iou(made[v], alpha[v]) for v in range(1, 6)]), abs=0.02)
    assert rep["iou_baseline"] == pytest.approx(np.mean([_iou(alpha[0], alpha[v]) for v in range(1, 6)]))
    assert 0.6 < rep["iou_baseline"] < 0.99  # the discs move by 1..5 pixels


def test_finetune_view_embeddings_only(tmp_path):
    from gausslift.mvdiff.loading import from_pretrained, save_pretrained
    from gausslift.mvdiff.tiny import tiny_unclip_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, options, train

    save_pretrained(tiny_unclip_pipeline(), tmp_path / "init")
    before = from_pretrained(tmp_path / "init")
    cfg = MVDiffTrainConfig(data=[str(_samples(tmp_path / "data", n=1))], init=str(tmp_path / "init"),
                            view_mode="camera", trainable="views", batch=1, lr=1e-2, ema_decay=0.0,
                            workers=0)  # fmt: skip
    res = train(cfg, tmp_path / "run", options(cfg, iters=2, quiet=True), device="cpu")
    after = from_pretrained(res["pipeline"])
    assert after.views.config.mode == "camera"
    assert (after.views() - before.views()).abs().max() > 1e-4  # the camera map moved
    for a, b in zip(after.unet.parameters(), before.unet.parameters()):
        assert torch.equal(a, b)


def test_snr_weights_three_prediction_types_and_facelift():
    """Min-SNR-5 against hand-computed values: alpha_bar 0.5, 0.9, 0.2, 0.95 -> SNR 1, 9, 0.25, 19."""
    from types import SimpleNamespace

    from gausslift.errors import InputError
    from gausslift.mvdiff.train import snr_weights

    sched = SimpleNamespace(alphas_cumprod=torch.tensor([0.5, 0.9, 0.2, 0.95]),
                            config=SimpleNamespace(prediction_type="v_prediction"))  # fmt: skip
    t = torch.arange(4)
    want = {
        "epsilon": [1.0, 5 / 9, 1.0, 5 / 19],  # min(snr, 5) / snr
        "v_prediction": [1 / 2, 5 / 10, 0.25 / 1.25, 5 / 20],  # min(snr, 5) / (snr + 1)
        "sample": [1.0, 5.0, 0.25, 5.0],  # min(snr, 5)
    }
    for kind, w in want.items():
        got = snr_weights(sched, t, 5.0, kind)
        assert torch.allclose(got, torch.tensor(w), rtol=1e-6, atol=0), kind
        assert torch.allclose(snr_weights(sched, t, 5.0, kind, "facelift"), torch.tensor(want["epsilon"]))
    assert torch.allclose(snr_weights(sched, t, 5.0), torch.tensor(want["v_prediction"]))  # the config's type
    with pytest.raises(InputError, match="snr_weighting"):
        snr_weights(sched, t, 5.0, weighting="paper")
    from gausslift.mvdiff.train import MVDiffTrainConfig

    assert MVDiffTrainConfig().snr_weighting == "facelift"  # the training default: it measured better


def test_snr_weights_match_diffusers_train_text_to_image():
    """diffusers' compute_snr on a real schedule, then its train_text_to_image.py weighting per type."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from gausslift.mvdiff.train import snr_weights

    for kind in ("epsilon", "v_prediction"):
        sched = DDPMScheduler(beta_schedule="scaled_linear", prediction_type=kind)
        t = torch.tensor([0, 10, 100, 400, 999])
        snr = compute_snr(sched, t)
        ref = torch.stack([snr, 5.0 * torch.ones_like(t)], dim=1).min(dim=1)[0]
        ref = ref / snr if kind == "epsilon" else ref / (snr + 1)
        assert torch.allclose(snr_weights(sched, t, 5.0), ref.float(), rtol=1e-5), kind


def test_loss_falls_on_a_tiny_set(tmp_path):
    """20 steps on two samples, fixed seed: a fixed probe (8 draws of timestep and noise on both samples)
    falls well below the untrained model's."""
    from diffusers import DDPMScheduler

    from gausslift.mvdiff.data import load_sample
    from gausslift.mvdiff.loading import from_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import options, split_condition, train, training_loss

    data = _samples(tmp_path / "data", n=2)
    cfg = _tiny_cfg(data, batch=2, lr=1e-3, ema_decay=0.0, background="white", condition_drop=0.0)
    x = np.stack([load_sample(s, 6, 32, (1.0, 1.0, 1.0)) for s in sorted(data.iterdir())])
    inputs, targets = split_condition(torch.from_numpy(x).permute(0, 1, 4, 2, 3))

    def probe(pipe):
        sched = DDPMScheduler.from_config(pipe.scheduler.config)
        with torch.no_grad():
            gens = [torch.Generator().manual_seed(100 + k) for k in range(8)]
            return np.mean([training_loss(pipe, sched, inputs, targets, cfg, g).item() for g in gens])

    before = probe(tiny_pipeline(size=32, channels=(16, 16, 32, 32), seed=cfg.seed))  # the run's start
    res = train(cfg, tmp_path / "run", options(cfg, iters=20, quiet=True), device="cpu")
    after = probe(from_pretrained(res["pipeline"]))
    assert res["steps"] == 20 and after < 0.7 * before, (before, after)  # measured: 0.35 -> 0.18


def _params(run):
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    return state["step"], state["state"]


KILL_SCRIPT = """
import os, signal, sys
from gausslift.cli import main
from gausslift.mvdiff.train import MVDiffTask

update = MVDiffTask.update
def update_then_die(self, loss, step, lr_scale):
    if step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no finally: as a kill -9 mid-run
    return update(self, loss, step, lr_scale)
MVDiffTask.update = update_then_die
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """Killed (SIGKILL) at step 5 after its step-4 checkpoint, then --resume: the trainable weights, their EMA
    and the optimiser state at step 6 equal an uninterrupted run's bit for bit; the log has each step once.
    The killed run decodes in 2 DataLoader workers, the uninterrupted one in-process: the same batches."""
    import os
    import subprocess
    import sys

    from gausslift.cli import main

    data = _samples(tmp_path / "data", n=3)
    args = lambda run: ["mvdiff", "train", str(data), "--out", str(run), *TINY, "--steps", "6",
                        "--checkpoint-every", "2", "--set", "log_every=1", "--ema-decay", "0.9"]  # fmt: skip
    assert main(args(tmp_path / "full") + ["--workers", "0"]) == 0
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    killed = subprocess.run([sys.executable, str(script), "5", *args(tmp_path / "part"), "--workers", "2"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _params(tmp_path / "part")[0] == 4
    assert main(["mvdiff", "train", "--out", str(tmp_path / "part"), "--resume", "--steps", "6"]) == 0
    (n_full, full), (n_part, part) = _params(tmp_path / "full"), _params(tmp_path / "part")
    assert n_full == n_part == 6
    assert list(full["params"]) == list(part["params"]) and len(full["params"]) > 10
    for name, p in full["params"].items():
        assert torch.equal(p, part["params"][name]), name
        assert torch.equal(full["ema"][name], part["ema"][name]), name
    assert not torch.equal(full["ema"][name], p)  # the EMA is not the weights themselves
    for s in full["optim"]["state"]:
        assert torch.equal(full["optim"]["state"][s]["exp_avg_sq"], part["optim"]["state"][s]["exp_avg_sq"])
    assert full["ema_updates"] == part["ema_updates"] == 6
    rows = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))


def test_refusals_are_one_line(tmp_path, capsys):
    """A non-empty --out without --resume, a shape-changing resume (a shape key, or EMA on/off): exit 1 and
    one line, before anything in the run folder changes."""
    from gausslift.cli import main

    data, run = _samples(tmp_path / "data", n=1), tmp_path / "run"
    base = ["mvdiff", "train", str(data), "--out", str(run), *TINY, "--workers", "0"]
    assert main(base + ["--steps", "1"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for extra, message in [
        ([], "is not empty: add --resume"),
        (["--resume", "--channels", "16,16,32,64"], "channels ([16, 16, 32, 32] -> [16, 16, 32, 64])"),
        (["--resume", "--trainable", "views"], "changed trainable ('all' -> 'views')"),
        (["--resume", "--view-mode", "camera"], "changed view_mode ('' -> 'camera')"),
        (["--resume", "--ema-decay", "0"], "cannot resume with the EMA turned off"),
    ]:
        assert main(base + ["--steps", "2", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_refuses_weights_that_do_not_fit_by_name(tmp_path):
    """The named check behind the shape keys: the --init folder of a fine-tuning run replaced by a model of
    other widths (same path, so no config key changed) is refused, not loaded position by position."""
    from gausslift.errors import InputError
    from gausslift.mvdiff.loading import save_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import options, train

    data, init = _samples(tmp_path / "data", n=1), tmp_path / "init"
    save_pretrained(tiny_pipeline(size=32, channels=(16, 16, 32, 32)), init)
    cfg = _tiny_cfg(data, init=str(init))
    train(cfg, tmp_path / "run", options(cfg, iters=1, quiet=True), device="cpu")
    save_pretrained(tiny_pipeline(size=32, channels=(16, 16, 32, 64)), init)
    with pytest.raises(InputError, match="trainable parameters do not fit this model .*shape: unet"):
        train(cfg, tmp_path / "run", options(cfg, iters=2, resume=True, quiet=True), device="cpu")


def test_nan_is_rolled_back_and_logged(tmp_path, monkeypatch):
    from gausslift.mvdiff.train import options, train
    from gausslift.train.loop import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, "2")  # non-finite losses at steps 2, 3, 4: rolled back to step 0
    cfg = _tiny_cfg(_samples(tmp_path / "data", n=1), log_every=1)
    res = train(cfg, tmp_path / "run", options(cfg, iters=6, quiet=True), device="cpu")
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("nonfinite")] == [3, 4, 5]
    assert [(r["step"], r["lr_scale"]) for r in rows if r.get("rollback")] == [(5, 0.5)]
    assert res["rollbacks"] == 1 and res["nonfinite_skipped"] == 3
    assert any("rolled back" in e for e in res["events"])
    state = _params(tmp_path / "run")[1]
    assert all(torch.isfinite(p).all() for p in state["params"].values())
    assert state["ema_updates"] == 1  # rolled back to step 0's state, then one good step (the sixth)


def test_pipeline_export_is_atomic(tmp_path, monkeypatch):
    """A writer that dies mid-export leaves the previous pipeline/ whole; the next export cleans up after a
    writer killed outright (its temporary folder, or the old folder moved aside)."""
    from gausslift.errors import InputError
    from gausslift.mvdiff import loading
    from gausslift.mvdiff.tiny import tiny_pipeline

    root = tmp_path / "run" / "pipeline"
    a, b = (tiny_pipeline(size=32, channels=(8, 8, 16, 16), seed=s) for s in (0, 1))
    loading.save_pretrained(a, root)
    files = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def die(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(b.views, "save_pretrained", die)  # after unet/ and scheduler/ are written
    with pytest.raises(KeyboardInterrupt):
        loading.save_pretrained(b, root)
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in root.parent.iterdir()) == ["pipeline"]
    monkeypatch.undo()
    (root.parent / ".pipeline.tmp-dead").mkdir()  # a SIGKILLed writer's leftovers
    root.rename(root.parent / ".pipeline.old-dead")  # ... killed between its two renames
    loaded = loading.from_pretrained(loading.save_pretrained(b, root))
    assert sorted(p.name for p in root.parent.iterdir()) == ["pipeline"]
    assert torch.equal(loaded.unet.conv_in.weight, b.unet.conv_in.weight)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a pipeline")
    with pytest.raises(InputError, match="not a pipeline folder"):  # never replaced by an export
        loading.save_pretrained(b, tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_evaluate_scores_truth_perfectly_and_copy_as_baseline(tmp_path):
    from gausslift.mvdiff.data import composite, load_rgba
    from gausslift.mvdiff.evaluate import evaluate

    sample = _samples(tmp_path, n=1) / "sample_000"
    truth = np.stack([composite(load_rgba(sample / f"cam_{v:03d}.png", 32), (1, 1, 1)) for v in range(6)])

    class Oracle:  # a "model" that returns the true views
        num_views, resolution = 6, 32

        def __call__(self, images, **kw):
            assert images.shape == (1, *truth[0].shape) and np.array_equal(images[0], truth[0])
            return truth[None]

    res = evaluate(Oracle(), [sample], steps=1)
    assert res["iou"] > 0.99 and res["psnr"] > 60 and res["ssim"] > 0.99 and res["draws"] == 1
    assert 0.5 < res["iou_baseline"] < 0.99  # the discs shift with the view: copying is imperfect
    assert res["psnr_baseline"] < 40

    class Split(Oracle):  # three draws: the truth twice and a blank (all white) once, in one batched call
        def __call__(self, images, **kw):
            assert images.shape == (3, *truth[0].shape)
            return np.stack([truth, np.ones_like(truth), truth])

    res3 = evaluate(Split(), [sample], steps=1, draws=3)
    assert res3["draws"] == 3 and res3["iou"] > 0.99 and res3["psnr"] > 60  # the median: the majority


def test_camera_mode_reads_each_samples_angles(tmp_path):
    from gausslift.cameras import ring
    from gausslift.mvdiff.data import StepBatches, sample_angles

    sample = _samples(tmp_path, n=1) / "sample_000"
    rig = ring(6, elevation_deg=35.0, azimuths_deg=np.array([90.0, 150.0, 210.0, 270.0, 330.0, 30.0]))
    frames = [{"file_path": f"cam_{v:03d}.png", "w2c": rig.viewmat[v].tolist()} for v in range(6)]
    (sample / "opencv_cameras.json").write_text(json.dumps({"frames": frames}))
    el, az = sample_angles(sample, 6)
    np.testing.assert_allclose(el, 35.0, atol=1e-9)
    np.testing.assert_allclose(az, [0, 60, 120, 180, 240, 300], atol=1e-9)
    item = StepBatches([sample], 6, 32, batch=2, camera=True)[0]
    angles = item["angles"]
    assert angles.shape == (2, 2, 6) and torch.allclose(angles[0, 0], torch.full((6,), 35.0))
    assert "angles" not in StepBatches([sample], 6, 32, batch=2, camera=False)[0]


def test_batches_are_a_pure_function_of_seed_step_rank(tmp_path):
    """Rank shards are disjoint; a rank's batches depend only on (seed, step, rank), see each sample of its
    shard once per epoch, and come out the same from DataLoader workers as in-process."""
    from gausslift.mvdiff.data import StepBatches, batch_loader, find_samples
    from gausslift.train.dist import Dist

    samples = find_samples(_samples(tmp_path, n=5))
    shards = [Dist(rank=r, world=2).shard(samples) for r in range(2)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) + len(shards[1]) == 5
    make = lambda rank, seed=0: StepBatches(shards[rank], 6, 16, batch=2, seed=seed, rank=rank)
    b = make(0)
    draws = [i for s in range(6) for i in b.picks(s)]  # 12 draws from a shard of 3: 4 epochs
    assert all(sorted(draws[k : k + 3]) == [0, 1, 2] for k in range(0, 12, 3))
    assert [make(0, seed=1).picks(s) for s in range(6)] != [b.picks(s) for s in range(6)]
    for s in (0, 4):
        one, other = b[s], make(0)[s]  # a fresh object, out of order: the same batch
        assert one["step"] == s and torch.equal(one["images"], other["images"])
        assert torch.equal(one["index"], other["index"])
    mine = make(1)
    got = [x for _, x in zip(range(3), batch_loader(mine, 2, workers=2))]
    assert [x["step"] for x in got] == [2, 3, 4]
    for x in got:
        assert torch.equal(x["images"], mine[x["step"]]["images"])


def test_ema_decay_warms_up_as_diffusers_ema_model():
    from diffusers.training_utils import EMAModel

    from gausslift.mvdiff.train import ema_decay_at

    ref = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.999)
    for n in (1, 2, 3, 10, 100, 600, 5000, 20000):
        assert ema_decay_at(0.999, n) == pytest.approx(ref.get_decay(n), abs=1e-12), n
    assert ema_decay_at(0.999, 1) == 0.0  # the first update copies the weights
    assert ema_decay_at(0.999, 100) < 0.92  # a short run's EMA forgets the random start


def test_timestep_bias_draws_the_chosen_portion_more_often(tmp_path):
    from gausslift.errors import InputError
    from gausslift.mvdiff.train import MVDiffTrainConfig, timestep_weights

    w = timestep_weights(MVDiffTrainConfig(), 1000)
    assert torch.allclose(w, torch.full((1000,), 1e-3))
    later = timestep_weights(MVDiffTrainConfig(timestep_bias="later", timestep_bias_multiplier=4.0), 1000)
    assert later.sum().item() == pytest.approx(1.0)
    assert later[-250:].sum().item() == pytest.approx(1000 / 1750)  # 250*4 / (750 + 250*4)
    assert later[999] / later[0] == pytest.approx(4.0) and later[749] == later[0]
    early = timestep_weights(MVDiffTrainConfig(timestep_bias="earlier", timestep_bias_multiplier=3.0,
                                               timestep_bias_portion=0.1), 1000)  # fmt: skip
    assert early[:100].sum().item() == pytest.approx(300 / 1200) and early[100] == early[999]
    draws = torch.multinomial(later, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((draws >= 750).float().mean().item() - 1000 / 1750) < 0.02
    with pytest.raises(InputError, match="timestep_bias"):
        timestep_weights(MVDiffTrainConfig(timestep_bias="late"), 1000)
    with pytest.raises(InputError, match="portion"):
        timestep_weights(MVDiffTrainConfig(timestep_bias="later", timestep_bias_portion=1.5), 1000)
    from gausslift.mvdiff.train import options, train

    bad = MVDiffTrainConfig(data=[str(tmp_path / "none")], timestep_bias="late")
    with pytest.raises(InputError, match="timestep_bias must be"):  # before the (missing) data or any output
        train(bad, tmp_path / "run", options(bad, iters=1), device="cpu")
    assert not (tmp_path / "run").exists()


def test_view_classes_tell_every_resnet_block_its_view(tmp_path):
    from gausslift.mvdiff.loading import from_pretrained, save_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, training_loss

    pipe = tiny_pipeline(size=32, channels=(16, 16, 32, 32), tokens=2, view_classes=True)
    with torch.no_grad():  # identical view tokens: only the class embedding can tell the views apart
        pipe.views.embeds.zero_()
        pipe.unet.class_embedding.weight.normal_(0, 1)
    assert pipe.view_labels(None, 12).tolist() == list(range(6)) * 2
    noise = torch.randn(1, 3, 32, 32).expand(6, -1, -1, -1)  # the same noise for every view
    img = np.full((32, 32, 3), 0.5, np.float32)
    views = pipe(img, num_inference_steps=1, guidance_scale=2.0, latents=noise)[0]
    assert np.abs(views[1:] - views[:1]).max() > 1e-3
    pipe.unet.class_embedding.weight.data.zero_()  # without the classes the views are identical
    same = pipe(img, num_inference_steps=1, guidance_scale=2.0, latents=noise)[0]
    assert np.abs(same[1:] - same[:1]).max() < 1e-5
    x = torch.rand(6, 3, 32, 32)
    loss = training_loss(pipe, pipe.scheduler, x, x, MVDiffTrainConfig(batch=1, condition_drop=0.5),
                         torch.Generator().manual_seed(0))  # fmt: skip
    loss.backward()
    assert pipe.unet.class_embedding.weight.grad.abs().sum() > 0
    loaded = from_pretrained(save_pretrained(pipe, tmp_path / "p"))
    assert loaded.unet.config.num_class_embeds == 6 and loaded.view_labels(None, 6) is not None


def test_config_records_what_the_init_weights_carry(tmp_path):
    """--init PIPE: config.yaml says the loaded model's view classes, widths and resolution (not the tiny
    defaults); a resume, by the CLI (the saved config) or by the library (a config of defaults), is not
    refused for them and records the same values."""
    import yaml

    from gausslift.cli import main
    from gausslift.mvdiff.loading import save_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, options, train

    data, init, run = _samples(tmp_path / "data", n=1), tmp_path / "init", tmp_path / "run"
    save_pretrained(tiny_pipeline(size=32, channels=(16, 16, 32, 32), tokens=2, view_classes=True), init)
    want = dict(init=str(init), size=32, channels=[16, 16, 32, 32], view_classes=True)
    base = ["mvdiff", "train", "--out", str(run), "--batch", "1", "--threads", "1", "--workers", "0"]
    base.append("--quiet")
    assert main([*base, str(data), "--init", str(init), "--steps", "1"]) == 0
    saved = lambda: yaml.safe_load((run / "config.yaml").read_text())
    assert {k: saved()[k] for k in want} == want
    assert MVDiffTrainConfig().view_classes is False and MVDiffTrainConfig().size != 32  # not the defaults
    assert main([*base, "--steps", "2", "--resume"]) == 0
    assert {k: saved()[k] for k in want} == want
    cfg = MVDiffTrainConfig(data=[str(data)], init=str(init), batch=1, workers=0)  # tiny-only keys: defaults
    res = train(cfg, run, options(cfg, iters=3, resume=True, quiet=True), device="cpu")
    assert res["steps"] == 3 and {k: saved()[k] for k in want} == want
    assert torch.load(run / "checkpoint.pt", weights_only=False)["config"]["view_classes"] is True
