"""GS-LRM training: configs, schedule, a short run's files, exact resume, non-finite guard, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import gausslift
from gausslift.config import save_config
from gausslift.errors import InputError
from gausslift.lrm.config import LRMTrainConfig, train_config
from gausslift.lrm.losses import LRMLoss
from gausslift.lrm.train import LRMTask, load_model, lr_at, read_log, train

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "batch=2", "warmup_steps=2", "log_every=1", "val_every=2", "val_samples=1",
        "image_every=2", "checkpoint_every=2", "backend=cpu", "workers=0"]  # fmt: skip


def tiny(*extra) -> LRMTrainConfig:
    return train_config("tiny", TINY + list(extra))


def params(run) -> dict[str, torch.Tensor]:
    return load_model(run)[0].state_dict()


def test_presets_yaml_and_overrides(tmp_path):
    assert train_config("tiny").model.d == 256 and train_config("base").model.n_layers == 12
    fl = train_config("facelift")
    assert fl.model.image_size == 512 and fl.model.d == 1024 and fl.model.grad_checkpoint
    cfg = train_config("tiny", ["lr=3e-4", "data.num_input_views=4", "loss.ssim=0.5"])
    assert (cfg.lr, cfg.data.num_input_views, cfg.loss.ssim) == (3e-4, 4, 0.5)
    assert tuple(cfg.betas) == (0.9, 0.95) and cfg.weight_decay == 0.05
    save_config(cfg, tmp_path / "c.yaml")
    back = train_config(str(tmp_path / "c.yaml"))
    assert back == cfg
    with pytest.raises(InputError, match="unknown config key"):
        train_config("tiny", ["data.nope=1"])
    with pytest.raises(InputError, match="no target views"):
        train_config("tiny", ["data.num_views=5", "data.targets_include_inputs=false"])
    with pytest.raises(InputError, match="background"):
        train_config("tiny", ["data.background=green"])
    with pytest.raises(InputError, match="not a config"):
        train_config("huge")


def test_mouse_preset_carries_the_measured_recipe():
    m, tiny = train_config("mouse"), train_config("tiny")
    assert (m.model.hull_depth, m.model.pixel_mlp, m.model.scale_bias) == (0.2, 32, 3.9)
    assert m.model.d == tiny.model.d and m.model.n_layers == tiny.model.n_layers  # the tiny network
    assert (m.data.num_views, m.data.num_input_views, m.data.targets_include_inputs) == (8, 5, False)
    assert (m.loss.mask, m.batch, m.lr, m.warmup_steps, m.precision) == (1.0, 2, 4e-4, 50, "auto")
    assert tiny.model.hull_depth == 0 and tiny.data.targets_include_inputs  # FaceLift's stay as they were
    assert train_config("mouse", ["batch=4"]).batch == 4


def test_lr_warmup_then_cosine_over_the_planned_steps():
    cfg = LRMTrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(cfg, 0, 100) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 100) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.09)))
    assert lr_at(cfg, 50, 100) == pytest.approx(5e-4)
    assert lr_at(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(cfg, 4, 0) == pytest.approx(5e-4) and lr_at(cfg, 50, 0) == 1e-3  # not planned: the ramp only


def test_minutes_schedule_follows_the_planned_steps_not_the_clock(tmp_path, monkeypatch):
    """--minutes: the warm-up ramp until the loop has planned the step count, then warm-up + cosine over
    that count, whatever the clock does afterwards (here the machine gets 3x slower after the plan)."""
    from gausslift.train import loop as L

    clock = {"t": 0.0}
    monkeypatch.setattr(L.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(L.Budget, "elapsed", lambda self: self.elapsed0 + clock["t"] - self.t0)
    real = LRMTask.loss

    def timed(self, step):
        clock["t"] += 1.0 if self.total == 0 else 3.0
        return real(self, step)

    monkeypatch.setattr(LRMTask, "loss", timed)
    cfg = tiny("val_every=0", "image_every=0", "checkpoint_every=0", "warmup_steps=20", "lr=1e-3", "batch=1")
    run = train(cfg, [SAMPLE], tmp_path / "run", minutes=0.5, progress_bar=False)
    result = json.loads((run / "run.json").read_text())["result"]
    total = result["planned_steps"]
    assert result["stopped_by"] == "time" and 15 < total < 30 and result["steps"] < total
    lrs = {r["step"]: r["lr"] for r in read_log(run) if "lr" in r}
    planned_at = min(s for s in lrs if lrs[s] != pytest.approx(lr_at(cfg, s - 1, 0)))
    assert 13 <= planned_at <= 16  # the first 13 steps time the machine
    for s, lr in lrs.items():  # row s logs the update of step s - 1
        assert lr == pytest.approx(lr_at(cfg, s - 1, 0 if s < planned_at else total)), s


def test_loss_terms_and_warmup():
    from gausslift.lrm.config import LossConfig

    fn = LRMLoss(LossConfig(l2=1.0, masked_l2=1.0, ssim=0.5, mask=0.1, l2_warmup_steps=5))
    r, t = torch.rand(2, 3, 16, 16, 3), torch.rand(2, 3, 16, 16, 3)
    a, m = torch.rand(2, 3, 16, 16), (torch.rand(2, 3, 16, 16) > 0.5).float()
    _, early = fn(r, a, t, m, step=0)
    total, late = fn(r, a, t, m, step=5)
    assert set(early) == {"l2", "masked_l2", "mask"} and set(late) == {"l2", "masked_l2", "ssim", "mask"}
    want = late["l2"] + late["masked_l2"] + 0.5 * late["ssim"] + 0.1 * late["mask"]
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert late["l2"].item() == pytest.approx(((r - t) ** 2).mean().item(), rel=1e-6)
    assert fn(t, m, t, m)[1]["masked_l2"].item() == 0.0 and fn(t, m, t, m)[1]["mask"].item() == 0.0


def _independent_scores(model, sample, cfg):
    """Novel-view PSNR and mask IoU of ``model`` on ``sample``, computed here (not by validate())."""
    from gausslift.lrm.data import validation_batches
    from gausslift.models.gslrm import render_gaussians

    (b,) = list(validation_batches([sample], cfg.data, 32, cfg.model.patch_size, cfg.seed))
    with torch.no_grad():
        g = model.eval()(b.in_images, b.in_Ks, b.in_viewmats, b.in_masks)
        rgb, alpha = render_gaussians(g, b.Ks, b.viewmats, 32, 32, background=b.backgrounds, backend="cpu")
    rgb = rgb.clamp(0, 1)[0].double()
    mse = ((rgb - b.images[0].double()) ** 2).mean(dim=(1, 2, 3))
    a, m = alpha[0] >= 0.5, b.masks[0] >= 0.5
    iou = (a & m).sum(dim=(1, 2)).double() / (a | m).sum(dim=(1, 2)).double()
    return float((-10 * torch.log10(mse)).mean()), float(iou.mean())


def test_short_run_writes_everything(tmp_path):
    run = train(tiny(), [SAMPLE, SAMPLE], tmp_path / "run", val=[SAMPLE], steps=3, progress_bar=False)
    for f in ("config.yaml", "run.json", "checkpoint.pt", "log.jsonl", "log.csv"):
        assert (run / f).is_file(), f
    assert any((run / "tb").iterdir())
    assert train_config(str(run / "config.yaml")) == tiny()
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["format"] == "gausslift-run" and state["task"] == "lrm" and state["step"] == 3
    assert set(state["state"]) == {"model", "optim"}  # named state; no GradScaler
    assert {"rng", "budget", "guard", "lr_scale"} <= set(state["loop"])
    rows = read_log(run)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train_rows)
    assert all(r["psnr"] == pytest.approx(-10 * math.log10(r["l2"]), rel=1e-5) for r in train_rows)
    val = [r for r in rows if "val_psnr" in r]
    assert [r["step"] for r in val] == [2, 3]
    model, info = load_model(run)
    assert info["step"] == 3 and info["format"] == "gausslift-run" and not model.training
    # the final validation row scores the saved model: recomputed here, independently of validate()
    p, iou = _independent_scores(model, SAMPLE, tiny())
    assert val[-1]["val_psnr"] == pytest.approx(p, abs=1e-3)
    assert val[-1]["val_iou"] == pytest.approx(iou, abs=1e-6)
    assert json.loads((run / "run.json").read_text())["result"]["steps"] == 3


def _dies_at(monkeypatch, at: int):
    real = LRMTask.update

    def update(self, loss, step, lr_scale):
        if step == at:
            raise RuntimeError("killed")
        return real(self, loss, step, lr_scale)

    monkeypatch.setattr(LRMTask, "update", update)
    return real


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """A run that dies after its step-2 checkpoint, resumed, ends bit-identical to an uninterrupted one;
    the dead run decoded its batches in a loader process, the others in the training process."""
    cfg = tiny("val_every=0", "image_every=0")
    full = train(cfg, [SAMPLE], tmp_path / "full", steps=4, progress_bar=False)
    real = _dies_at(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny("val_every=0", "image_every=0", "workers=1"), [SAMPLE], tmp_path / "part", steps=4,
              progress_bar=False)  # fmt: skip
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["step"] == 2
    assert [r["step"] for r in read_log(tmp_path / "part") if "loss" in r] == [1, 2, 3]
    monkeypatch.setattr(LRMTask, "update", real)
    part = train(None, [SAMPLE], tmp_path / "part", steps=4, resume=True, progress_bar=False)
    a, b = params(full), params(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_log(part) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # row 3 of the dead run dropped, logged once


def test_nan_at_step_k_is_rolled_back_and_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_FAULT_NAN", "1")  # non-finite losses at steps 1 and 2 (max_nonfinite 2)
    cfg = tiny("max_nonfinite=2", "val_every=0", "image_every=0", "checkpoint_every=0")
    run = train(cfg, [SAMPLE], tmp_path / "run", steps=6, progress_bar=False)
    rows = read_log(run)
    assert [r["step"] for r in rows if r.get("nonfinite")] == [2, 3]
    assert [(r["step"], r["lr_scale"]) for r in rows if r.get("rollback")] == [(3, 0.5)]
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert sorted(lrs) == [1, 4, 5, 6]
    assert lrs[4] == pytest.approx(0.5 * lr_at(cfg, 3, 6)) and lrs[1] == pytest.approx(lr_at(cfg, 0, 6))
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["loop"]["guard"]["skipped"] == 2 and state["loop"]["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in state["state"]["model"].values())
    events = json.loads((run / "run.json").read_text())["result"]["events"]
    assert any("rolled back" in e for e in events)


def test_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="training length"):
        train(tiny(), [SAMPLE], tmp_path / "a", progress_bar=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny(), [SAMPLE], tmp_path / "b", steps=1, resume=True, progress_bar=False)
    train(tiny("val_every=0"), [SAMPLE], tmp_path / "c", steps=1, progress_bar=False)
    before = (tmp_path / "c" / "checkpoint.pt").read_bytes()
    with pytest.raises(InputError, match="not empty: add --resume"):
        train(tiny(), [SAMPLE], tmp_path / "c", steps=1, progress_bar=False)
    with pytest.raises(InputError, match=r"changed model.d \(64 -> 128\)"):
        train(tiny("val_every=0", "model.d=128"), [SAMPLE], tmp_path / "c", steps=2, resume=True,
              progress_bar=False)  # fmt: skip
    with pytest.raises(InputError, match=r"changed model.d_head \(32 -> 16\)"):  # same shapes, other heads
        train(tiny("val_every=0", "model.d_head=16"), [SAMPLE], tmp_path / "c", steps=2, resume=True,
              progress_bar=False)  # fmt: skip
    assert (tmp_path / "c" / "checkpoint.pt").read_bytes() == before
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        train(tiny(), [SAMPLE], tmp_path / "d", steps=1, init=junk, progress_bar=False)
    with pytest.raises(InputError, match="not a GS-LRM run"):
        load_model(tmp_path)


def test_resume_may_change_other_keys(tmp_path):
    run = train(tiny("val_every=0"), [SAMPLE], tmp_path / "r", steps=1, progress_bar=False)
    train(tiny("val_every=0", "lr=5e-4", "weight_decay=0.1", "model.image_size=48"), [SAMPLE], run, steps=2,
          resume=True, progress_bar=False)  # fmt: skip
    cfg = train_config(str(run / "config.yaml"))
    assert (cfg.lr, cfg.weight_decay, cfg.model.image_size) == (5e-4, 0.1, 48)
    groups = torch.load(run / "checkpoint.pt", weights_only=False)["state"]["optim"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]  # the new config's, not the saved one's


def test_reads_runs_written_before_the_loop(tmp_path):
    """``format: gausslift-lrm`` (model and config at the top): load_model, --init and lrm eval's config
    read it; resuming it is refused in one line."""
    from gausslift.config import to_dict
    from gausslift.lrm.eval import run_config
    from gausslift.lrm.train import FORMAT, init_weights
    from gausslift.models.gslrm import GSLRM
    from gausslift.train.checkpoint import save_checkpoint

    cfg = tiny("model.sh_degree=1")
    torch.manual_seed(3)
    src = GSLRM(cfg.model)
    old = tmp_path / "old"
    old.mkdir()
    save_checkpoint(old / "checkpoint.pt", dict(format=FORMAT, step=7, model=src.state_dict(), opt={},
                                                config=to_dict(cfg), world_size=1))  # fmt: skip
    model, info = load_model(old)
    assert info["step"] == 7 and info["format"] == FORMAT and model.cfg.sh_degree == 1
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
    assert run_config(old / "checkpoint.pt") == cfg
    fresh = GSLRM(cfg.model)
    init_weights(fresh, old)
    assert torch.equal(fresh.patch_embed.weight, src.patch_embed.weight)
    with pytest.raises(InputError, match="before the one training loop.*--init"):
        train(None, [SAMPLE], old, steps=8, resume=True, progress_bar=False)
    other = tmp_path / "other"
    other.mkdir()
    save_checkpoint(other / "checkpoint.pt", {"format": "gausslift-run", "task": "fit", "step": 1,
                                              "config": {}, "state": {"params": {}}})  # fmt: skip
    with pytest.raises(InputError, match="'fit' run, not of a GS-LRM run"):
        load_model(other)


def test_init_from_facelift_checkpoint(tmp_path):
    from gausslift.lrm.facelift_ckpt import facelift_state_dict
    from gausslift.models.gslrm import GSLRM

    cfg = tiny()
    torch.manual_seed(7)
    src = GSLRM(cfg.model)
    torch.save({"model": facelift_state_dict(src)}, tmp_path / "ckpt_0000.pt")
    run = train(cfg, [SAMPLE], tmp_path / "run", steps=1, init=tmp_path / "ckpt_0000.pt", progress_bar=False)
    first = read_log(run)[0]
    assert first["step"] == 1
    got = params(run)
    moved = sum(float((got[k] - v).abs().max()) for k, v in src.state_dict().items())
    assert 0 < moved < 1e-2 * len(got)  # started from the given weights, one small step away
    with pytest.raises(InputError, match="does not fit"):
        train(tiny("model.d=128"), [SAMPLE], tmp_path / "bad", steps=1, init=tmp_path / "ckpt_0000.pt",
              progress_bar=False)  # fmt: skip


def test_checkpoint_copied_out_of_its_run_still_loads(tmp_path):
    from gausslift.lrm.eval import run_config

    cfg = tiny("model.sh_degree=1")
    run = train(cfg, [SAMPLE], tmp_path / "run", val=[], steps=1, progress_bar=False)
    alone = tmp_path / "elsewhere" / "checkpoint.pt"
    alone.parent.mkdir()
    shutil.copy(run / "checkpoint.pt", alone)
    model, info = load_model(alone)
    assert info["kind"] == "run" and model.cfg.sh_degree == 1
    assert run_config(alone) == cfg  # the config stored in the checkpoint, no config.yaml needed
    junk = tmp_path / "junk" / "checkpoint.pt"
    junk.parent.mkdir()
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="checkpoint.pt"):
        load_model(junk)


def test_task_batches_follow_the_steps_past_the_plan():
    """The task's loader yields data.batch(step) for each step, also past the planned count and after a
    jump (a loader is reopened where the steps do not follow on)."""
    from gausslift.lrm.data import find_samples

    task = LRMTask(tiny("workers=1"), find_samples(SAMPLE), [])
    task.start()
    task.plan(2)
    try:
        for step in (0, 1, 2, 3, 7):
            assert task._batch(step).target_names == task.data.batch(step).target_names, step
    finally:
        task.close()
    assert task._batches is None
