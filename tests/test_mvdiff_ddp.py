"""`mvdiff train` under torchrun: 2 gloo ranks on the CPU, the code path NCCL takes on GPUs, with DDP.

What it requires:

1. Every collective the project issues itself (the loop's per-step flags) goes through ``Dist.all_reduce``
   with a tensor on ``Dist.device``: NCCL accepts only tensors on the training device and on a CPU both are
   the CPU, so the test cannot get NCCL's error itself; ``Dist.all_reduce`` refuses a tensor off the device
   on every backend (tests/test_loop.py::test_collectives_use_the_training_device). The gradients are
   DistributedDataParallel's: its collectives (the weights' broadcast when it is built, the gradient
   buckets' all-reduces in backward) are torch's own, on the parameters' device, and are left out.
2. The trainable modules are wrapped in DDP (no hand-written gradient averaging: the project issues one
   collective per step, the loop's flags).
3. The two ranks drew disjoint samples that together cover the set (each rank its shard).
4. Both ranks end with the same weights, which are (to 1e-5) what one process learns from both ranks'
   batches together: per step the mean of the two ranks' losses, each with its rank's batch and draws.
   The run also passes through the non-finite guard (``GAUSSLIFT_FAULT_NAN=2``): steps 2-4 run DDP's
   forward without a backward, are skipped, and the run rolls back to step 0 and goes on at half the
   learning rate, so the weights are those of steps 5-8 alone.

How the code before the one loop (7f772c4) fails here: its ``_all_agree`` called
``torch.distributed.all_reduce`` directly on ``torch.tensor([...])`` (a CPU tensor, which NCCL rejects at
step 1), so the collectives recorded below are not made through ``Dist``; and each rank drew with
replacement from all the samples with its own seed, so the two ranks' samples overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

STEPS, FAULT = 9, 2  # non-finite losses at steps 2, 3, 4: rolled back to step 0, then steps 5-8 at lr / 2
LR = 1e-3

RANK_SCRIPT = r"""
import json, os, sys
import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel
import gausslift.mvdiff.data as D
import gausslift.mvdiff.train as T
from gausslift.cli import main
from gausslift.train import dist as GD

rank = os.environ["RANK"]
TORCH = os.path.dirname(torch.__file__) + os.sep
calls, inside, seen = [], [0], {}

dist_all_reduce = GD.Dist.all_reduce
def through_dist(self, t, op=None):
    seen["device"] = str(self.device)
    inside[0] += 1
    try:
        return dist_all_reduce(self, t, op)
    finally:
        inside[0] -= 1
GD.Dist.all_reduce = through_dist

for name in ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
             "reduce_scatter_tensor", "reduce", "all_reduce_coalesced"):
    if hasattr(tdist, name):
        def watch(t, *a, _orig=getattr(tdist, name), _name=name, **k):
            by_torch = sys._getframe(1).f_code.co_filename.startswith(TORCH)  # DDP's own
            calls.append([_name, str(t.device) if torch.is_tensor(t) else "?", inside[0] > 0, by_torch])
            return _orig(t, *a, **k)
        setattr(tdist, name, watch)

load = D.load_sample
def record(sample, *a, **k):  # DataLoader workers are forked from here: they write the file too
    with open(f"drawn{rank}.txt", "a") as f:
        f.write(f"{sample}\n")
    return load(sample, *a, **k)
D.load_sample = record

start = T.MVDiffTask.start
def grab(self):
    seen["task"] = self
    return start(self)
T.MVDiffTask.start = grab

code = main(["mvdiff", "train", "data", "--out", "run", "--size", "32", "--channels", "16,16,32,32",
             "--batch", "2", "--steps", sys.argv[1], "--lr", sys.argv[2], "--checkpoint-every", "0",
             "--ema-decay", "0", "--workers", "1", "--threads", "1"])
task = seen["task"]
net, trained = task.net, {id(q) for q in task.params.values()}
ddp = isinstance(net, DistributedDataParallel)
wraps = ddp and {id(q) for q in net.module.parameters() if q.requires_grad} == trained
p = task.pipe
weights = [q.detach().flatten() for m in (p.unet, p.views) for q in m.parameters()]
torch.save(torch.cat(weights), f"w{rank}.pt")
json.dump({"code": code, "calls": calls, "device": seen.get("device"), "ddp": ddp, "wraps_trainable": wraps,
           "device_ids": net.device_ids if ddp else "-"}, open(f"calls{rank}.json", "w"))
"""


def _samples(root: Path, n: int) -> list[str]:
    import cv2
    import numpy as np

    yy, xx = np.mgrid[:32, :32]
    for s in range(n):
        folder = root / f"sample_{s:03d}"
        folder.mkdir(parents=True)
        for v in range(6):
            disc = ((yy - 16) ** 2 + (xx - 16 - v) ** 2 < (10 + s) ** 2).astype(np.float32)
            img = np.dstack([np.full((32, 32, 3), 0.2 * s), disc]) * 255
            cv2.imwrite(str(folder / f"cam_{v:03d}.png"), img.astype(np.uint8))
    return sorted(str(p) for p in root.iterdir())


def _one_process(root: Path, steps, lr_scale: float):
    """(start, end) weights of one process that trains on both ranks' batches of ``steps`` together: the
    mean of the ranks' losses (rank r: its shard's batch of the step, its noise/timestep/dropout draws),
    one backward, clipping and AdamW step, as MVDiffTask.update. The run's config is read from its folder."""
    import yaml
    from diffusers import DDPMScheduler

    import gausslift.mvdiff.data as D
    import gausslift.mvdiff.train as T

    cfg = T.MVDiffTrainConfig(**yaml.safe_load((root / "run" / "config.yaml").read_text()))
    pipe = T.build_pipeline(cfg)
    params = list(T.trainable_parameters(pipe, cfg.trainable).values())
    pipe.unet.train(cfg.trainable == "all")
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    t_weights = T.timestep_weights(cfg, sched.config.num_train_timesteps)
    samples = D.find_samples([root / d for d in cfg.data], pipe.num_views)
    shards = [D.StepBatches(samples[r::2], pipe.num_views, pipe.resolution, cfg.batch, cfg.background,
                            cfg.seed, r) for r in range(2)]  # fmt: skip
    flat = lambda: torch.cat([q.detach().flatten() for m in (pipe.unet, pipe.views) for q in m.parameters()])
    start = flat()
    opt = torch.optim.AdamW(params, lr=cfg.lr * lr_scale, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    for step in steps:
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for r, batches in enumerate(shards):
            inputs, targets = T.split_condition(batches[step]["images"])
            gen = torch.Generator().manual_seed(D.step_seed(cfg.seed, step, r, T.STREAM_NOISE))
            loss = loss + T.training_loss(pipe, sched, inputs, targets, cfg, gen, t_weights=t_weights) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return start, flat()


def test_torchrun_two_gloo_ranks_ddp_matches_one_process_through_a_rollback(tmp_path):
    samples = _samples(tmp_path / "data", 6)
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               GAUSSLIFT_FAULT_NAN=str(FAULT))  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "rank.py",
           str(STEPS), str(LR)]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = []
    for rank in (0, 1):
        rep = json.loads((tmp_path / f"calls{rank}.json").read_text())
        assert rep["code"] == 0 and rep["device"] == "cpu"
        # (2) DDP wraps exactly the trainable parameters (device_ids None on CPUs)
        assert rep["ddp"] and rep["wraps_trainable"] and rep["device_ids"] is None, rep
        # (1) the project's own collectives: the loop's flags, one per step, through Dist on its device
        ours = [c for c in rep["calls"] if not c[3]]
        assert len(ours) == STEPS, ours
        bad = [c for c in ours if not (c[2] and c[1] == rep["device"])]
        assert not bad, f"rank {rank}: collectives outside Dist or off the training device: {bad[:3]}"
        lines = (tmp_path / f"drawn{rank}.txt").read_text().split()
        drawn.append({str((tmp_path / x).resolve()) for x in lines})
    # (3) disjoint shards, together every sample
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1], drawn
    assert drawn[0] | drawn[1] == {str(Path(s).resolve()) for s in samples}
    # the skipped steps (DDP forward, no backward) and the rollback, logged; the run went on to the end
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("nonfinite")] == [FAULT + 1, FAULT + 2, FAULT + 3]
    assert [(r["step"], r["lr_scale"]) for r in rows if r.get("rollback")] == [(FAULT + 3, 0.5)]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == STEPS and ckpt["loop"]["rollbacks"] == 1 and ckpt["loop"]["lr_scale"] == 0.5
    assert (tmp_path / "run" / "pipeline" / "unet" / "config.json").is_file()
    # (4) the ranks in step, and what one process learns from both batches (steps after the rollback)
    w0, w1 = torch.load(tmp_path / "w0.pt"), torch.load(tmp_path / "w1.pt")
    assert torch.equal(w0, w1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start, one = _one_process(tmp_path, range(FAULT + 3, STEPS), 0.5)
    finally:
        torch.set_num_threads(threads)
    assert float((one - start).abs().max()) > 1e-3  # they did move
    assert float((w0 - one).abs().max()) <= 1e-5, float((w0 - one).abs().max())
