"""`mvdiff train` under torchrun: 2 gloo ranks on the CPU, the code path NCCL takes on GPUs.

NCCL accepts only tensors on the training device. On a CPU both are the CPU, so the test cannot get NCCL's
error itself; instead it requires what makes that error impossible: every collective of the run goes through
``Dist.all_reduce`` (which refuses a tensor off the training device, on every backend: see
tests/test_loop.py::test_collectives_use_the_training_device) and its tensor is on ``Dist.device``.

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

RANK_SCRIPT = r"""
import json, os, sys
import torch
import torch.distributed as tdist
import gausslift.mvdiff.data as D
import gausslift.mvdiff.train as T
from gausslift.cli import main
from gausslift.train import dist as GD

rank = os.environ["RANK"]
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
            calls.append([_name, str(t.device) if torch.is_tensor(t) else "?", inside[0] > 0])
            return _orig(t, *a, **k)
        setattr(tdist, name, watch)

load = D.load_sample
def record(sample, *a, **k):  # DataLoader workers are forked from here: they write the file too
    with open(f"drawn{rank}.txt", "a") as f:
        f.write(f"{sample}\n")
    return load(sample, *a, **k)
D.load_sample = record

build = T.build_pipeline
def grab(cfg):
    seen["pipe"] = build(cfg)
    return seen["pipe"]
T.build_pipeline = grab

code = main(["mvdiff", "train", "data", "--out", "run", "--size", "32", "--channels", "16,16,32,32",
             "--batch", "2", "--steps", "3", "--checkpoint-every", "0", "--ema-decay", "0", "--threads", "1"])
p = seen["pipe"]
weights = [q.detach().flatten() for m in (p.unet, p.views) for q in m.parameters()]
torch.save(torch.cat(weights), f"w{rank}.pt")
json.dump({"code": code, "calls": calls, "device": seen.get("device")}, open(f"calls{rank}.json", "w"))
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


def test_torchrun_two_gloo_ranks_device_collectives_and_disjoint_shards(tmp_path):
    samples = _samples(tmp_path / "data", 6)
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("GAUSSLIFT_FAULT_NAN", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "rank.py"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = []
    for rank in (0, 1):
        rep = json.loads((tmp_path / f"calls{rank}.json").read_text())
        assert rep["code"] == 0
        # per step: the loop's flags; per update: the gradients; once: the weights' check
        assert len(rep["calls"]) >= 6, rep["calls"]
        bad = [c for c in rep["calls"] if not (c[2] and c[1] == (rep["device"] or "cpu"))]
        assert not bad, f"rank {rank}: collectives outside Dist or off the training device: {bad[:3]}"
        assert rep["device"] == "cpu"
        lines = (tmp_path / f"drawn{rank}.txt").read_text().split()
        drawn.append({str((tmp_path / x).resolve()) for x in lines})
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1], drawn  # disjoint shards
    assert drawn[0] | drawn[1] == {str(Path(s).resolve()) for s in samples}  # 3 draws x 2 = each shard
    assert torch.equal(torch.load(tmp_path / "w0.pt"), torch.load(tmp_path / "w1.pt"))  # in step
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and (tmp_path / "run" / "pipeline" / "unet" / "config.json").is_file()
