"""gausslift.train: devices, device-independent checkpoints, budgets, the NaN guard, the run log."""

import json
import random

import numpy as np
import pytest
import torch

from gausslift.errors import InputError
from gausslift.train import budget as budget_mod
from gausslift.train import device as dev
from gausslift.train.budget import Budget
from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, to_cpu
from gausslift.train.guard import NonFiniteGuard, all_finite
from gausslift.train.runlog import RunLog, image_grid, to_scalars


# -- device ---------------------------------------------------------------------------------------------
def _fake_cuda(monkeypatch, count=2, gsplat=True):
    monkeypatch.setattr(dev, "cuda_usable", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(dev, "gsplat_installed", lambda: gsplat)


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(dev, "cuda_usable", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(None, backend="auto") == torch.device("cpu")
    assert dev.resolve_device(" CPU ") == torch.device("cpu")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(dev.DeviceError, match="use --device cpu"):
            dev.resolve_device(spec)
    with pytest.raises(dev.DeviceError, match="auto, cpu, cuda or cuda:N"):
        dev.resolve_device("gpu")
    with pytest.raises(dev.DeviceError, match="CUDA only"):
        dev.resolve_device("auto", backend="gsplat")


def test_resolve_device_with_cuda(monkeypatch):
    _fake_cuda(monkeypatch)
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("auto", backend="torch") == torch.device("cuda")
    assert dev.resolve_device("auto", backend="gsplat") == torch.device("cuda")
    assert dev.resolve_device("auto", backend="auto") == torch.device("cuda")
    assert dev.resolve_device("auto", backend="cpu") == torch.device("cpu")  # numba runs on the host
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device("cpu", backend="torch") == torch.device("cpu")
    with pytest.raises(dev.DeviceError, match="only 2 CUDA"):
        dev.resolve_device("cuda:2")
    with pytest.raises(dev.DeviceError, match="CUDA only"):
        dev.resolve_device("cpu", backend="gsplat")
    _fake_cuda(monkeypatch, gsplat=False)  # auto backend without gsplat would fall back to the cpu kernels
    assert dev.resolve_device("auto", backend="auto") == torch.device("cpu")


def test_synchronize_waits_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    assert dev.synchronize(torch.device("cpu")) is None
    assert calls == []  # the CPU has no queue: nothing to wait for, CUDA untouched
    dev.synchronize(torch.device("cuda", 1))
    assert calls == [torch.device("cuda", 1)]  # the device asked for, not the current one


# -- checkpoints ------------------------------------------------------------------------------------------
def _adam_state():
    p = torch.nn.Parameter(torch.randn(5, 3))
    opt = torch.optim.Adam([p], lr=0.1)
    (p**2).sum().backward()
    opt.step()
    return p, opt


def test_checkpoint_round_trip_and_map_location(tmp_path):
    p, opt = _adam_state()
    data = {"params": {"means": p.detach()}, "optim": opt.state_dict(), "step": 7}
    data["nest"] = [(1, torch.ones(2))]
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, data)
    assert [f.name for f in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary left behind
    back = load_checkpoint(path)
    assert back["step"] == 7 and torch.equal(back["params"]["means"], p.detach())
    assert back["params"]["means"].device.type == "cpu"
    assert torch.equal(back["nest"][0][1], torch.ones(2))
    # a fresh optimiser takes the state (torch moves it to its parameters' device)
    p2 = torch.nn.Parameter(back["params"]["means"].clone())
    opt2 = torch.optim.Adam([p2], lr=0.1)
    opt2.load_state_dict(back["optim"])
    assert torch.equal(opt2.state[p2]["exp_avg"], opt.state[p]["exp_avg"])
    # map_location places every tensor on the device asked for (meta: a device that is not the CPU)
    meta = load_checkpoint(path, map_location="meta")
    assert meta["params"]["means"].device.type == "meta"
    assert meta["optim"]["state"][0]["exp_avg"].device.type == "meta"


def test_to_cpu_detaches_and_keeps_structure():
    x = torch.ones(2, requires_grad=True) * 2
    out = to_cpu({"a": [x, (x, 3)], "b": "s", "c": np.zeros(2)})
    assert not out["a"][0].requires_grad and isinstance(out["a"][1], tuple) and out["b"] == "s"


def test_load_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable checkpoint") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


def test_rng_state_restores_every_stream():
    gen = torch.Generator().manual_seed(5)
    st = rng_state(gen)
    a = (torch.rand(3), torch.rand(2, generator=gen), np.random.rand(2), random.random())
    torch.rand(10), np.random.rand(4), random.random(), torch.rand(1, generator=gen)
    set_rng_state(st, gen)
    b = (torch.rand(3), torch.rand(2, generator=gen), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]


def test_rng_state_survives_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    x = torch.rand(4)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(4), x)


# -- budget ------------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_budget_steps_and_minutes(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    b = Budget(steps=10)
    assert not b.done(9) and b.done(10) and b.fraction(5) == 0.5 and b.left() == float("inf")
    b = Budget(minutes=1)
    clock.t += 30
    assert b.elapsed() == 30 and b.fraction(0) == 0.5 and not b.done(10**9)
    assert b.done(0, reserve=31)
    clock.t += 31
    assert b.done(0) and b.fraction(0) == 1.0


def test_budget_carries_elapsed_time_across_resume(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    b = Budget(minutes=2)
    clock.t += 50
    saved = b.state()
    clock.t += 1000  # the process was down for a while: that time does not count
    b2 = Budget(minutes=2)
    b2.restore(saved)
    clock.t += 10
    assert b2.elapsed() == 60 and b2.left() == 60


# -- guard --------------------------------------------------------------------------------------------------
def test_guard_skips_and_asks_for_rollback():
    g = NonFiniteGuard(max_consecutive=2)
    assert g.check(torch.tensor(1.0))
    assert not g.check(torch.tensor(float("nan"))) and not g.rollback
    assert g.check(torch.tensor(0.5)) and g.consecutive == 0  # a good step resets the count
    assert not g.check(torch.tensor(float("inf")))
    assert not g.check(torch.tensor(float("nan"))) and g.rollback and g.skipped == 3
    g.reset()
    assert not g.rollback
    g2 = NonFiniteGuard(2)
    g2.restore(g.state())
    assert g2.skipped == 3


def test_all_finite():
    assert all_finite([torch.ones(3), torch.zeros(2, 2)]) and all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])


# -- run log ------------------------------------------------------------------------------------------------
def test_runlog_writes_tensors_as_numbers_and_truncates_on_resume(tmp_path):
    with RunLog(tmp_path, columns=("step", "loss")) as log:
        for s in (10, 20, 30):
            row = log.write({"step": s, "loss": torch.tensor(1.0 / s), "note": "x"})
        assert isinstance(row["loss"], float)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [10, 20, 30]
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "step,loss"
    with RunLog(tmp_path, columns=("step", "loss"), resume_step=20, tensorboard=False) as log:
        log.write({"step": 30, "loss": 0.5})
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]
    csv_rows = (tmp_path / "log.csv").read_text().splitlines()
    assert csv_rows[-1] == "30,0.5" and len(csv_rows) == 4


def test_to_scalars_and_image_grid(tmp_path):
    row = to_scalars({"step": 3, "a": torch.tensor([2.0]), "b": 1.5})
    assert row == {"step": 3, "a": 2.0, "b": 1.5}
    imgs = torch.zeros(3, 4, 5, 3)
    grid = image_grid(imgs, pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3) and grid[1:5, 1:6].max() == 0 and grid[0, 0, 0] == 1
    with RunLog(tmp_path, columns=("step",)) as log:
        out = log.log_images("val", imgs, step=1)
    assert out.shape == image_grid(imgs).shape
    if log.tb is not None:
        assert any((tmp_path / "tb").iterdir())


def test_autocast_dtype_picks_bf16_only_where_it_is_fast(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dev, "cpu_has_amx_bf16", lambda: False)
    monkeypatch.setattr(dev, "_BF16_WARNED", [])
    assert dev.autocast_dtype("auto", cpu) is None and dev.autocast_dtype("auto", cuda) == torch.bfloat16
    assert dev.autocast_dtype("fp32", cuda) is None and dev.autocast_dtype("fp16", cpu) == torch.float16
    with pytest.warns(UserWarning, match="without AMX"):
        assert dev.autocast_dtype("bf16", cpu) == torch.bfloat16
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert dev.autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_has_amx_bf16", lambda: True)
    assert dev.autocast_dtype("auto", cpu) == torch.bfloat16
