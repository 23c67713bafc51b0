"""The fit trainer (a Task of gausslift.train.loop) on a tiny synthetic capture: it learns, resumes bit for
bit, rolls back NaNs with a lower learning rate, plans a minutes budget once, keeps its schedules
functions of the step, and rejects bad input before writing anything."""

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
from gausslift.train.loop import CHECKPOINT, Loop, LoopOptions


def _cfg(**kw):
    cfg = FitConfig(iters=40, init_num_points=150, log_every=10, snapshot_every=10, checkpoint_minutes=100)
    # the tests of this file check the default strategy's state and edits (the kind before issue 26;
    # the MCMC kind, today's default, is tested in test_strategy_speed.py and in the resume test here)
    cfg.strategy = dataclasses.replace(cfg.strategy, max_gaussians=400, kind="default")
    return dataclasses.replace(cfg, **kw)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return blob_scene(tmp_path_factory.mktemp("blob"), n_views=6, size=16)


def _psnr_all(tr):
    from gausslift.fit.data import pixels
    from gausslift.fit.model import render_params

    out = []
    for v in tr.data:
        with torch.no_grad():
            r, _, _ = render_params(tr.params, v.viewmat[None], v.K[None], 16, 16, 0, tr.bg, "auto")
        gt = pixels(v.image) * pixels(v.mask) + tr.bg * (1 - pixels(v.mask))
        out.append(-10 * math.log10(float(((r[0] - gt) ** 2).mean())))
    return float(np.mean(out))


def _loaded(scene, run, cfg):
    """A trainer holding the state saved in ``run``'s checkpoint."""
    tr = Trainer(scene, cfg, run)
    tr.start()
    tr.load_state_dict(torch.load(run / CHECKPOINT, weights_only=False)["state"])
    return tr


def _rows(run):
    import json

    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_training_improves_and_writes_a_run(scene, tmp_path, rasterizer):  # noqa: F811
    tr = Trainer(scene, _cfg(), tmp_path / "run")
    tr.start()
    before = _psnr_all(tr)
    res = Trainer(scene, _cfg(), tmp_path / "run").fit(progress=False)
    assert res["iters"] == 40 and res["finished"] and res["stopped_by"] == "steps"
    for f in ("splats.ply", "config.yaml", "run.json", "checkpoint.pt", "log.csv", "log.jsonl"):
        assert (tmp_path / "run" / f).is_file(), f
    ck = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert ck["task"] == "fit" and ck["step"] == 40 and ck["total"] == 40
    assert set(ck["state"]) == {"params", "optim", "strategy", "gen", "perm", "pos", "c2f_finest",
                                 "sh_reached", "strategy_meta"}  # named
    assert _psnr_all(_loaded(scene, tmp_path / "run", _cfg())) > before + 1.0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0] == "step,elapsed_s,loss,psnr,num_gaussians,sh_degree,lr_means"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 10, 20, 30, 40]
    assert all(math.isfinite(float(x)) for r in rows[1:] for x in r.split(","))


@pytest.mark.parametrize("kind", ["mcmc", "default"])  # today's default, and the one before issue 26
def test_resume_matches_an_uninterrupted_run(scene, tmp_path, rasterizer, kind):  # noqa: F811
    def cfg(**kw):
        c = _cfg(**kw)
        c.strategy = dataclasses.replace(c.strategy, kind=kind)
        return c

    full = Trainer(scene, cfg(iters=20), tmp_path / "a")
    full.fit(progress=False)
    cut = Trainer(scene, cfg(iters=20, checkpoint_every=8), tmp_path / "b")
    update = cut.update

    def dies(loss, step, lr_scale):
        if step == 11:  # killed after its step-8 checkpoint and its row of step 10
            raise SystemExit("killed")
        return update(loss, step, lr_scale)

    cut.update = dies
    with pytest.raises(SystemExit):
        cut.fit(progress=False)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["step"] == 8
    resumed = Trainer(scene, cfg(iters=20), tmp_path / "b")
    assert resumed.fit(resume=True, progress=False)["iters"] == 20
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k]), k  # bit for bit
    assert set(full.sstate) == set(resumed.sstate) == ({"grad2d", "count"} if kind == "default" else set())
    for k in full.sstate:
        assert torch.equal(full.sstate[k], resumed.sstate[k]), k
    assert [r["step"] for r in _rows(tmp_path / "b")] == [r["step"] for r in _rows(tmp_path / "a")]


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
    assert res["nan_rollbacks"] == 0 and res["nan_skipped_steps"] == 1 and tr.loop.lr_scale == 1.0
    assert any("skipped" in e for e in res["events"])
    assert [r["step"] for r in _rows(tmp_path / "run") if r.get("nonfinite")] == [12]
    assert all(torch.isfinite(p).all() for p in tr.params.values())


def test_nans_in_a_row_roll_back_and_lower_the_learning_rate(scene, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    _poison(monkeypatch, {12, 13, 14})
    cfg = _cfg(iters=16, nan_skip_limit=3)
    tr = Trainer(scene, cfg, tmp_path / "run")
    loaded = []
    load = tr.load_state_dict
    tr.load_state_dict = lambda st: loaded.append(st["params"]["means"].clone()) or load(st)
    res = tr.fit(progress=False)
    assert res["nan_rollbacks"] == 1 and tr.loop.lr_scale == 0.5 and res["nan_skipped_steps"] == 3
    assert len(loaded) == 1  # the snapshot of step 10 (snapshot_every 10) came back
    lrs = {k: o.param_groups[0]["lr"] for k, o in tr.optimizers.items()}
    assert lrs["quats"] == 0.5 * cfg.lr_quats and lrs["opacities"] == 0.5 * cfg.lr_opacities  # lr scaled
    back = [r for r in _rows(tmp_path / "run") if r.get("rollback")]
    assert len(back) == 1 and back[0]["lr_scale"] == 0.5
    assert all(torch.isfinite(p).all() for p in tr.params.values())


def test_non_finite_parameters_at_the_end_are_not_the_result(scene, tmp_path, rasterizer):  # noqa: F811
    """A NaN in parameters that no loss showed (the last step's update) is rolled back before the final
    checkpoint and export, as the snapshot check does mid-run."""
    from gausslift.fit.runs import load_splats

    tr = Trainer(scene, _cfg(iters=12), tmp_path / "run")
    update = tr.update

    def poisons_the_last(loss, step, lr_scale):
        stats = update(loss, step, lr_scale)
        if step == 11:
            with torch.no_grad():
                tr.params["scales"][0] = float("nan")
        return stats

    tr.update = poisons_the_last
    res = tr.fit(progress=False)
    assert res["nan_rollbacks"] == 1 and tr.finite()
    assert all(torch.isfinite(v).all() for v in load_splats(tmp_path / "run" / "splats.ply").values())
    st = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["state"]
    assert torch.isfinite(st["params"]["scales"]).all()


def test_budget_plans_the_run_length_and_re_plans_at_most_three_times(scene, tmp_path, rasterizer):  # noqa: F811
    cfg = _cfg(iters=10**6, minutes=0.25, warmup_seconds=1.0)
    tr = Trainer(scene, cfg, tmp_path / "run")
    planned = []
    plan = tr.plan
    tr.plan = lambda total: planned.append(total) or plan(total)
    res = tr.fit(progress=False)
    assert res["train_seconds"] <= 0.25 * 60 + 5
    kept = sum(e.startswith("kept the plan") for e in res["events"])
    assert 1 <= len(planned) <= 4 and len(planned) + kept <= 4  # the plan, then re-plans at 25 / 50 / 75 %
    assert 0 < tr.total == planned[-1] == res["planned_iters"] < 10**6
    assert tr.strategy.schedule.refine_stop <= tr.total
    if res["iters"] > tr.total:  # time left after the plan: more steps at the schedules' end, same plan
        assert any("schedules' end values" in e for e in res["events"])


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


def test_coarse_to_fine_levels(scene, tmp_path, monkeypatch):
    from gausslift.fit.data import downscaled, pixels

    tr = Trainer(scene, _cfg(iters=100, c2f_min_size=16, c2f_half=0.3, c2f_full=0.6), tmp_path / "run")
    assert tr._level(50) == 4  # not planned yet (a minutes budget's warm-up): the coarsest
    tr.plan(100)
    monkeypatch.setattr("time.perf_counter", lambda: 1e9)  # a function of the step and the plan alone
    assert [tr._level(s) for s in (0, 29, 30, 59, 60, 99)] == [4, 4, 2, 2, 1, 1]
    half = downscaled(tr.data[0], 2)
    assert half.image.shape == (8, 8, 3) and half.mask.shape == (8, 8, 1)
    assert torch.allclose(half.K[:2], tr.data[0].K[:2] / 2)
    assert abs(float(half.image.mean()) - float(pixels(tr.data[0].image).mean())) < 0.02
    assert _cfg(c2f_min_size=17).c2f_min_size == 17 and not Trainer(scene, _cfg(), tmp_path)._c2f()


def test_a_re_plan_never_sends_coarse_to_fine_back(scene, tmp_path):
    """A re-plan that lengthens the run moves the stage boundaries past the step; the fit stays at the
    finest level it has trained at, and that floor survives a checkpoint (a resume goes on at it)."""
    tr = Trainer(scene, _cfg(iters=100, c2f_min_size=16, c2f_half=0.3, c2f_full=0.6), tmp_path / "run")
    tr.start()
    tr.plan(100)
    tr.loss(60)  # trains at full resolution
    tr._batch = None
    tr.plan(200)  # step 60 is now at 30 %: the half-resolution stage by the fractions alone
    assert [tr._level(s) for s in (60, 119, 120, 199)] == [1, 1, 1, 1]
    st = tr.state_dict()
    other = Trainer(scene, _cfg(iters=100, c2f_min_size=16, c2f_half=0.3, c2f_full=0.6), tmp_path / "b")
    other.start()
    other.plan(200)
    assert other._level(60) == 2  # a fresh fit on the same plan: the fractions' level
    other.load_state_dict(st)
    assert other._level(60) == 1
    tr.start()  # a fresh start forgets the floor
    assert tr._level(60) == 2
    assert tr.speed_factor() > 0


def test_a_re_plan_never_lowers_the_sh_degree(scene, tmp_path):
    """Lengthening the run lengthens the SH interval; the degree stays at the highest trained, and that
    floor survives a checkpoint."""
    cfg = _cfg(iters=100, sh_degree=3, sh_degree_interval=1000, schedule_ref_iters=30_000)
    tr = Trainer(scene, cfg, tmp_path / "run")
    tr.start()
    tr.plan(300)  # one degree every 10 steps
    tr.loss(35)
    tr._batch = None
    assert tr.sh_reached == 3
    tr.plan(900)  # every 30 steps: step 36 would be degree 1 by the interval alone
    assert tr._sh(36) == 3
    other = Trainer(scene, cfg, tmp_path / "b")
    other.start()
    other.plan(900)
    assert other._sh(36) == 1
    other.load_state_dict(tr.state_dict())
    assert other._sh(36) == 3
    tr.start()  # a fresh start forgets it
    tr.plan(900)
    assert tr._sh(36) == 1


def test_views_are_kept_as_8_bit_and_read_back_exactly(scene, tmp_path):
    """The trainer keeps 8-bit images and masks as uint8 (a quarter of the memory; 16-bit ones as uint16)
    and reads back the float32 values the image reader gives, bit for bit; other values stay float32."""
    from gausslift.fit.data import _store, load_views, pixels, train_views

    tr = Trainer(scene, _cfg(), tmp_path / "run")
    full = load_views(train_views(scene))  # the reader's float32 values
    assert all(d.image.dtype == torch.uint8 and d.mask.dtype == torch.uint8 for d in tr.data)
    for a, b in zip(tr.data, full):
        assert b.image.dtype == torch.float32
        assert torch.equal(pixels(a.image), b.image) and torch.equal(pixels(a.mask), b.mask)
    k = np.arange(256, dtype=np.float32) / np.float32(255)
    assert _store(k, True).dtype == torch.uint8 and torch.equal(pixels(_store(k, True)), torch.from_numpy(k))
    off = k.copy()
    off[7] = np.nextafter(off[7], np.float32(1))  # one value one ulp off k/255: kept as float32
    assert _store(off, True).dtype == torch.float32 and torch.equal(_store(off, True), torch.from_numpy(off))
    assert _store(k, False).dtype == torch.float32
    k16 = np.arange(0, 65536, 7).astype(np.float32) / np.float32(65535)  # a 16-bit file's values
    assert _store(k16, True).dtype == torch.uint16
    assert torch.equal(pixels(_store(k16, True)), torch.from_numpy(k16))
    assert pixels(None) is None


def test_ctrl_c_writes_a_resumable_checkpoint(scene, tmp_path, rasterizer):  # noqa: F811
    import signal

    tr = Trainer(scene, _cfg(iters=10), tmp_path / "run")
    update = tr.update

    def interrupted(loss, step, lr_scale):
        if step == 5:
            signal.raise_signal(signal.SIGINT)
        return update(loss, step, lr_scale)

    tr.update = interrupted
    # Ctrl-C as under a terminal, also where the suite runs with SIGINT ignored (nohup, a background job)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            tr.fit(progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop restored it
    finally:
        signal.signal(signal.SIGINT, old)
    ck = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
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
    st = load_checkpoint(tmp_path / "run" / "checkpoint.pt", map_location="meta")["state"]
    assert st["params"]["means"].device.type == "meta" and st["strategy"]["grad2d"].device.type == "meta"
    assert st["optim"]["means"]["state"][0]["exp_avg"].device.type == "meta"
    # a checkpoint whose tensors come in on another device resumes on this trainer's device
    back = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]
    tr2 = Trainer(scene, _cfg(iters=6, device="cpu"), tmp_path / "run")
    tr2.start()
    tr2.load_state_dict(back)
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


def _count_reads(monkeypatch, where):
    """Record (caller file, loop step) of every read of a tensor value to the host by gausslift code
    (on CUDA each is a device sync; torch's own reads, e.g. Adam's CPU step, are not counted)."""
    import sys

    reads = []
    for name in ("item", "__float__", "__bool__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **kw):
            f = sys._getframe(1).f_code.co_filename
            if "gausslift" in f:
                reads.append((f.split("gausslift")[-1], where()))
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_step_loop_reads_one_boolean_per_step_between_logs(scene, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    """loss / update return device tensors; between logs the only host read of a step is the loop's
    guard (one boolean), as gsplat syncs inside every rasterisation anyway."""
    tr = Trainer(scene, _cfg(iters=12, log_every=100, snapshot_every=0), tmp_path / "run")
    tr.start()
    tr.plan(12)
    loss, terms = tr.loss(0)
    assert isinstance(loss, torch.Tensor) and all(isinstance(terms[k], torch.Tensor) for k in ("l1", "ssim"))
    stats = tr.update(loss, 0, 1.0)
    assert isinstance(stats["psnr"], torch.Tensor)
    tr = Trainer(scene, _cfg(iters=12, log_every=100, snapshot_every=0), tmp_path / "run")
    opts = LoopOptions(iters=12, quiet=True, log_every=100, checkpoint_minutes=0)
    lp = Loop(tr, tmp_path / "run", opts)
    reads = _count_reads(monkeypatch, lambda: lp.step)
    lp.run()  # no refinement in 12 steps (refine_every is 50 after scaling): no edits to count
    assert tr.strategy.schedule.refine_start > 12
    between = [r for r in reads if 1 < r[1] < 12]  # steps 2..11: neither logged nor checkpointed
    assert between and all(f.endswith("train/loop.py") for f, _ in between), between
    per_step = [s for _, s in between]
    assert per_step == sorted(set(per_step)) == list(range(2, 12))  # one read per step


@pytest.mark.parametrize("grow_scale3d", [100.0, 0.0])  # every candidate duplicates / splits
def test_step_loop_creates_every_tensor_on_the_trainer_device(scene, tmp_path, monkeypatch, grow_scale3d):
    """With the default device set to 'meta', a tensor created without an explicit device in the step
    loop (views, backgrounds, losses, densification, the loop's guard, logging, checkpoints, exports)
    would land on meta and fail against the trainer's CPU tensors: this is how the CUDA placement is
    checked on a CPU machine."""
    import gausslift.metrics.image as metrics_image

    def window(size=11, sigma=1.5, dtype=torch.float32, device=None):  # the metric builds its window on
        x = torch.arange(size, dtype=torch.float64, device=device) - size // 2  # the host, then moves it
        g = torch.exp(-(x**2) / (2 * sigma**2))
        return (g / g.sum()).to(dtype)

    monkeypatch.setattr(metrics_image, "gaussian_window", window)
    cfg = _cfg(iters=30, device="cpu", log_every=5, snapshot_every=5)
    cfg.strategy = dataclasses.replace(cfg.strategy, refine_start_iter=0, refine_every=2, min_refine_every=2,
                                       reset_every=6, grow_grad2d=0.0, grow_scale3d=grow_scale3d,
                                       prune_opa=0.09)  # fmt: skip
    tr = Trainer(scene, cfg, tmp_path / "run")
    edits = {"dupli": 0, "split": 0, "prune": 0, "reset": 0}
    update = tr.update

    def counted(loss, step, lr_scale):
        stats = update(loss, step, lr_scale)
        for k in edits:
            edits[k] += stats.get(k, 0)
        return stats

    tr.update = counted
    start = tr.start

    def start_on_the_host():  # the initial Gaussians are made on the host (then moved): not the loop
        with torch.device("cpu"):
            start()

    tr.start = start_on_the_host
    with torch.device("meta"):
        res = tr.fit(progress=False)
        assert tr.finite()
    assert res["iters"] == 30 and res["nan_skipped_steps"] == 0
    assert edits["dupli" if grow_scale3d else "split"] > 0 and edits["prune"] > 0 and edits["reset"] > 0
    rows = [r for r in _rows(tmp_path / "run") if "loss" in r]
    assert rows and all(isinstance(r["loss"], float) and math.isfinite(r["psnr"]) for r in rows)
    assert {p.device.type for p in tr.params.values()} == {"cpu"}
