"""GS-LRM data-parallel training: 2 gloo processes (torchrun) learn what one process learns with the same
total batch (parameters after 3 steps to 1e-5); the fast variants check the same equivalence for the
gradients in-process (per-rank shards, averaged as DDP does), the ranks' loaders, and that the loop makes
its clock-driven decisions (checkpoint, plan) on every rank together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gausslift
from gausslift.lrm.config import image_size, train_config
from gausslift.lrm.data import TrainData, batch_loader
from gausslift.lrm.losses import LRMLoss
from gausslift.lrm.train import load_model, render_batch, train
from gausslift.models.gslrm import GSLRM
from gausslift.train.dist import Dist
from gausslift.train.loop import Task

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "data.background=random", "batch=2", "warmup_steps=1", "lr=1e-3",
        "val_every=0", "image_every=0", "checkpoint_every=0", "backend=cpu", "workers=1"]  # fmt: skip


def _grads(cfg, batch):
    torch.manual_seed(0)
    model = GSLRM(cfg.model).train()
    g = model(batch.in_images, batch.in_Ks, batch.in_viewmats)
    rgb, alpha = render_batch(g, batch, "cpu")
    loss, _ = LRMLoss(cfg.loss)(rgb, alpha, batch.images, batch.masks)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_rank_shards_average_to_the_full_batch_gradient():
    cfg = train_config("tiny", TINY)
    data = TrainData([SAMPLE, SAMPLE], cfg.data, image_size(cfg), cfg.model.patch_size, cfg.batch, cfg.seed)
    full = _grads(cfg, data.batch(1))
    parts = [_grads(cfg, data.batch(1, r, 2)) for r in range(2)]
    for n, g in full.items():
        avg = (parts[0][n] + parts[1][n]) / 2
        assert torch.allclose(avg, g, atol=1e-6, rtol=1e-4), n
    assert not torch.allclose(parts[0]["patch_embed.weight"], parts[1]["patch_embed.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "gausslift", "lrm", "train", str(SAMPLE), str(SAMPLE), "--config", "tiny",
           *[a for kv in TINY for a in ("--set", kv)], "--out", str(tmp_path / "ddp"), "--steps", "3",
           "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json_load(tmp_path / "ddp" / "run.json")
    assert run["world_size"] == 2
    one = train(train_config("tiny", TINY), [SAMPLE, SAMPLE], tmp_path / "one", steps=3, device="cpu",
                progress_bar=False)  # fmt: skip
    a, b = load_model(one)[0].state_dict(), load_model(tmp_path / "ddp")[0].state_dict()
    torch.manual_seed(0)
    start = GSLRM(train_config("tiny", TINY).model).state_dict()
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4  # they did move
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, float((a[k] - b[k]).abs().max()))
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["step"] == 3
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 3]  # log_every 10: first and last, once (rank 0)


def json_load(path):
    return json.loads(Path(path).read_text())


def test_rank_loaders_shard_the_global_batch():
    """Each rank's loader (worker processes) yields its interleaved share of the global batch of a step."""
    cfg = train_config("tiny", TINY)
    data = TrainData([SAMPLE, SAMPLE], cfg.data, image_size(cfg), cfg.model.patch_size, cfg.batch, cfg.seed)
    parts = [next(batch_loader(data, 5, 6, rank=r, world=2, workers=1)) for r in range(2)]
    whole = data.batch(5)
    assert [p.samples[0] for p in parts] == whole.samples
    assert torch.equal(torch.cat([p.images for p in parts]), whole.images)
    assert parts[0].target_names != parts[1].target_names  # different draws, not one sample twice


class _Line(Task):
    name, columns = "line", ("step", "loss")

    def config(self):
        return {"w": 2}

    def start(self):
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.opt = torch.optim.SGD([self.w], lr=0.1)
        self.planned = []

    def state_dict(self):
        return {"w": self.w.detach(), "optim": self.opt.state_dict()}

    def load_state_dict(self, s):
        with torch.no_grad():
            self.w.copy_(s["w"])

    def plan(self, total):
        self.planned.append((self.loop.step, total))

    def loss(self, step):
        return ((self.w - 1.0) ** 2).sum(), {}

    def update(self, loss, step, lr_scale):
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {}


def test_loop_checkpoints_and_plans_when_another_rank_says_so(tmp_path, monkeypatch):
    """Rank 0 of 2, whose own clock never asks for a checkpoint or a plan: the other rank's clock does
    (flags in the step's one collective), so rank 0 checkpoints and plans at the same step as it. A rank
    that decided alone would pair its barrier or its plan's all-reduce with the other's next step."""
    from gausslift.train import dist as D
    from gausslift.train import loop as L

    calls = []
    state = {"step": 0}

    def all_reduce(t, op=None):  # MIN with the other rank's flags
        calls.append(t.numel())
        if t.numel() == 4:
            other = torch.ones(4)
            if state["step"] == 3:
                other[2] = 0.0  # a checkpoint is due on the other rank
            if state["step"] == 15:
                other[3] = 0.0  # the other rank has timed its warm-up
            t.copy_(torch.minimum(t, other))
            state["step"] += 1

    monkeypatch.setattr(D.tdist, "all_reduce", all_reduce)
    monkeypatch.setattr(D.tdist, "barrier", lambda: calls.append("barrier"))
    task = _Line()
    saved = []
    real = L.Loop.checkpoint
    monkeypatch.setattr(L.Loop, "checkpoint", lambda self: (saved.append(self.step), real(self)))
    opts = L.LoopOptions(minutes=60, quiet=True, checkpoint_minutes=1e6, warmup_seconds=1e6)
    lp = L.Loop(task, tmp_path / "r", opts, Dist(rank=0, world=2))
    real_loss = task.loss

    def loss(step):
        if step == 20:
            lp._stop = True  # end the run at the next step (Ctrl-C's path: checkpoint, then stop)
        return real_loss(step)

    task.loss = loss
    with pytest.raises(KeyboardInterrupt):
        lp.run()
    assert saved[:2] == [0, 4]  # step 0, then after the step the other rank asked at
    assert [s for s, _ in task.planned] == [16] and task.planned[0][1] > 16  # planned once, with it
