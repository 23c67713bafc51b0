"""GS-LRM data-parallel training: 2 gloo processes (torchrun) learn what one process learns with the same
total batch (parameters after 3 steps to 1e-5); the fast variant checks the same equivalence for the
gradients in-process (per-rank shards, averaged as DDP does)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gausslift
from gausslift.lrm.config import image_size, train_config
from gausslift.lrm.data import TrainData
from gausslift.lrm.losses import LRMLoss
from gausslift.lrm.train import load_model, render_batch, train
from gausslift.models.gslrm import GSLRM

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "data.background=random", "batch=2", "warmup_steps=1", "lr=1e-3",
        "val_every=0", "image_every=0", "checkpoint_every=0", "backend=cpu"]  # fmt: skip


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
           "--set", *TINY, "--out", str(tmp_path / "ddp"), "--steps", "3", "--device", "cpu"]  # fmt: skip
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


def json_load(path):
    import json

    return json.loads(Path(path).read_text())
