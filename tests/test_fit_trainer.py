"""The trainer on a tiny synthetic capture: it learns, resumes exactly, rolls back NaNs, and rejects
bad input before writing anything."""

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
from test_fit_support import blob_scene, rasterizer  # noqa: F401  (fixture)

from gausslift.errors import InputError
from gausslift.fit.config import FitConfig
from gausslift.fit.trainer import Trainer


def _cfg(**kw):
    cfg = FitConfig(iters=40, init_num_points=150, log_every=10, snapshot_every=10, checkpoint_minutes=100)
    cfg.strategy = dataclasses.replace(cfg.strategy, max_gaussians=400)
    return dataclasses.replace(cfg, **kw)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return blob_scene(tmp_path_factory.mktemp("blob"), n_views=6, size=16)


def _psnr_all(tr):
    from gausslift.fit.model import render_params

    out = []
    for v in tr.data:
        with torch.no_grad():
            r, _, _ = render_params(tr.params, v.viewmat[None], v.K[None], 16, 16, 0, tr.bg, "auto")
        gt = v.image * v.mask + tr.bg * (1 - v.mask)
        out.append(-10 * math.log10(float(((r[0] - gt) ** 2).mean())))
    return float(np.mean(out))


def test_training_improves_and_writes_a_run(scene, tmp_path, rasterizer):  # noqa: F811
    tr = Trainer(scene, _cfg(), tmp_path / "run")
    tr._fresh()
    before = _psnr_all(tr)
    res = Trainer(scene, _cfg(), tmp_path / "run").fit(progress=False)
    assert res["iters"] == 40 and res["finished"]
    for f in ("splats.ply", "config.yaml", "run.json", "checkpoint.pt", "log.csv", "log.jsonl"):
        assert (tmp_path / "run" / f).is_file(), f
    tr2 = Trainer(scene, _cfg(), tmp_path / "run")
    tr2._restore(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False))
    assert _psnr_all(tr2) > before + 1.0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 1 + 4


def test_resume_matches_an_uninterrupted_run(scene, tmp_path, rasterizer):  # noqa: F811
    full = Trainer(scene, _cfg(iters=20), tmp_path / "a")
    full.fit(progress=False)
    cut = Trainer(scene, _cfg(iters=20), tmp_path / "b")
    cut._fresh()
    cut.good, cut.events = cut._state(), []
    cut.out.mkdir(parents=True)
    while cut.step < 8:
        cut.train_step()
        cut.step += 1
    cut.save_checkpoint()  # as if killed right after a checkpoint at step 8
    resumed = Trainer(scene, _cfg(iters=20), tmp_path / "b")
    resumed.fit(resume=True, progress=False)
    assert resumed.step == 20
    for k in full.params:
        assert torch.allclose(full.params[k], resumed.params[k], atol=1e-5), k


def _poison(monkeypatch, bad_calls):
    import gausslift.fit.trainer as trainer_mod

    real = trainer_mod.compute_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        loss, parts = real(*a, **kw)
        return (loss * float("nan") if calls["n"] in bad_calls else loss), parts

    monkeypatch.setattr(trainer_mod, "compute_loss", poisoned)


def test_one_nan_loss_skips_its_step(scene, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    _poison(monkeypatch, {12})
    tr = Trainer(scene, _cfg(iters=16), tmp_path / "run")
    res = tr.fit(progress=False)
    assert res["nan_rollbacks"] == 0 and res["nan_skipped_steps"] == 1 and tr.lr_factor == 1.0
    assert any("skipped" in e for e in res["events"])
    assert all(torch.isfinite(p).all() for p in tr.params.values())


def test_nans_in_a_row_roll_back_and_lower_the_learning_rate(scene, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    _poison(monkeypatch, {12, 13, 14})
    tr = Trainer(scene, _cfg(iters=16, nan_skip_limit=3), tmp_path / "run")
    res = tr.fit(progress=False)
    assert res["nan_rollbacks"] == 1 and tr.lr_factor == 0.5 and res["nan_skipped_steps"] == 3
    assert all(torch.isfinite(p).all() for p in tr.params.values())


def test_budget_plans_the_run_length(scene, tmp_path, rasterizer):  # noqa: F811
    cfg = _cfg(iters=10**6, minutes=0.25, warmup_seconds=1.0)
    tr = Trainer(scene, cfg, tmp_path / "run")
    res = tr.fit(progress=False)
    assert res["train_seconds"] <= 0.25 * 60 + 5
    assert tr.planned and tr.total < 10**6
    assert tr.strategy.schedule.refine_stop <= tr.total


def test_bad_input_is_one_error_and_nothing_written(scene, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="no views"):
        Trainer(scene.subset([]), _cfg(), out)
    wrong = dataclasses.replace(scene.views[0], camera=scene.views[0].camera.resized(20, 20))
    with pytest.raises(InputError, match="16x16 but its camera is 20x20"):
        Trainer(scene.subset([wrong] + scene.views[1:]), _cfg(), out)
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((16, 16), np.uint8))
    masked = dataclasses.replace(scene.views[1], mask=black)
    with pytest.raises(InputError, match="all black"):
        Trainer(scene.subset([masked] + scene.views[2:]), _cfg(), out)
    assert not out.exists()


def test_coarse_to_fine_levels(scene, tmp_path):
    from gausslift.fit.data import downscaled

    tr = Trainer(scene, _cfg(iters=100, c2f_min_size=16, c2f_half=0.3, c2f_full=0.6), tmp_path / "run")
    tr.total = 100
    got = []
    for step in (0, 29, 30, 59, 60, 99):
        tr.step = step
        got.append(tr._level())
    assert got == [4, 4, 2, 2, 1, 1]
    half = downscaled(tr.data[0], 2)
    assert half.image.shape == (8, 8, 3) and half.mask.shape == (8, 8, 1)
    assert torch.allclose(half.K[:2], tr.data[0].K[:2] / 2)
    assert abs(float(half.image.mean()) - float(tr.data[0].image.mean())) < 0.02
    assert _cfg(c2f_min_size=17).c2f_min_size == 17 and not Trainer(scene, _cfg(), tmp_path)._c2f()


def test_ctrl_c_writes_a_resumable_checkpoint(scene, tmp_path, rasterizer):  # noqa: F811
    import os
    import signal

    tr = Trainer(scene, _cfg(iters=10), tmp_path / "run")
    step = tr.train_step

    def interrupted():
        if tr.step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return step()

    tr.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        tr.fit(progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 6 and (tmp_path / "run" / "splats.ply").is_file()
    resumed = Trainer(scene, _cfg(iters=10), tmp_path / "run")
    assert resumed.fit(resume=True, progress=False)["iters"] == 10


def test_device_placement_and_device_independent_checkpoint(scene, tmp_path, rasterizer):  # noqa: F811
    from gausslift.fit.checkpoint import load_checkpoint

    tr = Trainer(scene, _cfg(iters=6, device="cpu"), tmp_path / "run")
    res = tr.fit(progress=False)
    assert res["device"] == "cpu" and tr.device == torch.device("cpu")
    dev = {p.device for p in tr.params.values()} | {v.device for v in tr.sstate.values()}
    dev |= {v.image.device for lvl in tr.levels.values() for v in lvl}
    assert dev == {torch.device("cpu")}
    # every tensor of the file is a CPU tensor, and map_location puts them anywhere (meta: not the CPU)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt", map_location="meta")
    assert ck["params"]["means"].device.type == "meta" and ck["strategy"]["grad2d"].device.type == "meta"
    assert ck["optim"]["means"]["state"][0]["exp_avg"].device.type == "meta"
    # a checkpoint whose tensors come in on another device resumes on this trainer's device
    back = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    tr2 = Trainer(scene, _cfg(iters=6, device="cpu"), tmp_path / "run")
    tr2._restore(back)
    assert all(torch.equal(tr2.params[k], tr.params[k]) for k in tr.params)
    m = tr2.optimizers["means"].state[tr2.params["means"]]["exp_avg"]
    m0 = tr.optimizers["means"].state[tr.params["means"]]["exp_avg"]
    assert m.device == torch.device("cpu") and torch.equal(m, m0)


def test_unavailable_device_is_one_error_before_writing(scene, tmp_path):
    from gausslift.train.device import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="use --device cpu"):
        Trainer(scene, _cfg(device="cuda"), tmp_path / "run")
    with pytest.raises(DeviceError, match="CUDA only"):
        Trainer(scene, _cfg(backend="gsplat"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_step_loop_reads_nothing_back_between_logs(scene, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    """train_step returns device tensors; Tensor.item / float / bool are called only at log steps
    (and for the guard's one boolean per step)."""
    tr = Trainer(scene, _cfg(iters=30, log_every=10), tmp_path / "run")
    tr._fresh()
    tr.good, tr.events = tr._state(), []
    stats = tr.train_step()
    assert isinstance(stats["loss"], torch.Tensor) and isinstance(stats["mse"], torch.Tensor)
    assert all(isinstance(v, torch.Tensor) for k, v in stats.items() if k in ("l1", "ssim"))
    import sys

    reads = {"n": 0}
    for name in ("item", "__float__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **kw):  # reads by our code (torch's Adam reads its CPU step)
            if "gausslift" in sys._getframe(1).f_code.co_filename:
                reads["n"] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    tr.step = 1
    for _ in range(5):  # no refinement at these steps (refine_start is far): only the guard reads
        tr.train_step()
        tr.step += 1
    assert reads["n"] == 0


@pytest.mark.parametrize("grow_scale3d", [100.0, 0.0])  # every candidate duplicates / splits
def test_step_loop_creates_every_tensor_on_the_trainer_device(scene, tmp_path, monkeypatch, grow_scale3d):
    """With the default device set to 'meta', a tensor created without an explicit device in the step
    loop (views, backgrounds, losses, densification, logging, checkpoint) would land on meta and fail
    against the trainer's CPU tensors: this is how the CUDA placement is checked on a CPU machine."""
    import gausslift.metrics.image as metrics_image

    def window(size=11, sigma=1.5, dtype=torch.float32, device=None):  # the metric builds its window on
        x = torch.arange(size, dtype=torch.float64, device=device) - size // 2  # the host, then moves it
        g = torch.exp(-(x**2) / (2 * sigma**2))
        return (g / g.sum()).to(dtype)

    monkeypatch.setattr(metrics_image, "gaussian_window", window)
    cfg = _cfg(iters=30, device="cpu")
    cfg.strategy = dataclasses.replace(cfg.strategy, refine_start_iter=0, refine_every=2, min_refine_every=2,
                                       reset_every=6, grow_grad2d=0.0, grow_scale3d=grow_scale3d,
                                       prune_opa=0.09)  # fmt: skip
    tr = Trainer(scene, cfg, tmp_path / "run")
    tr._fresh()
    tr.good, tr.events = tr._state(), []
    tr.out.mkdir(parents=True)
    edits = {"dupli": 0, "split": 0, "prune": 0, "reset": 0}
    with torch.device("meta"):
        for _ in range(11):
            stats = tr.train_step()
            tr.step += 1
            for k in edits:
                edits[k] += stats.get(k, 0)
        row = tr._row(stats, len(tr.params["means"]))
        tr.save_checkpoint()
        assert tr._finite()
    assert edits["dupli" if grow_scale3d else "split"] > 0 and edits["prune"] > 0 and edits["reset"] > 0
    assert isinstance(row["loss"], float) and math.isfinite(row["psnr"])
    assert {p.device.type for p in tr.params.values()} == {"cpu"}
