"""GS-LRM training: configs, schedule, a short run's files, exact resume, non-finite guard, errors."""

from __future__ import annotations

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
from gausslift.lrm.train import load_model, lr_at, read_log, train

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "batch=2", "warmup_steps=2", "log_every=1", "val_every=2", "val_samples=1",
        "image_every=2", "checkpoint_every=2", "backend=cpu"]  # fmt: skip


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


def test_lr_warmup_then_cosine():
    cfg = LRMTrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(5e-4)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.0, abs=1e-12)


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


def test_short_run_writes_everything(tmp_path):
    run = train(tiny(), [SAMPLE, SAMPLE], tmp_path / "run", val=[SAMPLE], steps=3, progress_bar=False)
    for f in ("config.yaml", "run.json", "checkpoint.pt", "log.jsonl", "log.csv"):
        assert (run / f).is_file(), f
    assert any((run / "tb").iterdir())
    assert train_config(str(run / "config.yaml")) == tiny()
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and {"model", "opt", "scaler", "rng", "budget", "guard"} <= set(state)
    rows = read_log(run)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train_rows)
    val = [r for r in rows if "val_psnr" in r]
    assert [r["step"] for r in val] == [2, 3] and all(0 <= r["val_iou"] <= 1 for r in val)
    model, info = load_model(run)
    assert info["step"] == 3 and not model.training


def test_resume_continues_exactly(tmp_path, monkeypatch):
    from gausslift.lrm.data import TrainData

    cfg = tiny("val_every=0", "image_every=0")
    full = train(cfg, [SAMPLE], tmp_path / "full", steps=4, progress_bar=False)
    real = TrainData.batch

    def dies_at_step_3(self, step, rank=0, world=1):
        if step == 3:
            raise RuntimeError("killed")
        return real(self, step, rank, world)

    monkeypatch.setattr(TrainData, "batch", dies_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, [SAMPLE], tmp_path / "part", steps=4, progress_bar=False)
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(TrainData, "batch", real)
    part = train(LRMTrainConfig(), [SAMPLE], tmp_path / "part", steps=4, resume=True, progress_bar=False)
    a, b = params(full), params(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_log(part) if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_nonfinite_losses_skip_then_roll_back(tmp_path, monkeypatch):
    real = LRMLoss.forward
    bad_steps = {1, 2, 3}

    def flaky(self, render, alpha, target, mask, step=0):
        total, terms = real(self, render, alpha, target, mask, step)
        return (total * float("nan"), terms) if step in bad_steps else (total, terms)

    monkeypatch.setattr(LRMLoss, "forward", flaky)
    run = train(tiny("max_nonfinite=2"), [SAMPLE], tmp_path / "run", steps=6, progress_bar=False)
    rows = read_log(run)
    assert [r["step"] for r in rows if r.get("nonfinite")] == [1, 2, 3]
    assert [r["lr_scale"] for r in rows if r.get("rollback")] == [0.5]
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["guard"]["skipped"] == 3 and state["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="training length"):
        train(tiny(), [SAMPLE], tmp_path / "a", progress_bar=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny(), [SAMPLE], tmp_path / "b", steps=1, resume=True, progress_bar=False)
    train(tiny(), [SAMPLE], tmp_path / "c", steps=1, progress_bar=False)
    with pytest.raises(InputError, match="--resume"):
        train(tiny(), [SAMPLE], tmp_path / "c", steps=1, progress_bar=False)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        train(tiny(), [SAMPLE], tmp_path / "d", steps=1, init=junk, progress_bar=False)
    with pytest.raises(InputError, match="not a GS-LRM run"):
        load_model(tmp_path)


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
