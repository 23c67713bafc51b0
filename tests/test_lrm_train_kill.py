"""A GS-LRM run killed with SIGKILL resumes from its last checkpoint (``gausslift lrm train --resume``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gausslift

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "batch=1", "warmup_steps=1", "val_every=0", "image_every=0", "log_every=1",
        "checkpoint_every=1"]  # fmt: skip


def _cmd(out, steps, *extra):
    return [sys.executable, "-m", "gausslift", "lrm", "train", str(SAMPLE), "--out", str(out), "--steps",
            str(steps), "--device", "cpu", *extra]  # fmt: skip


def _step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=False)["step"])
    except Exception:  # not there yet
        return -1


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_cmd(run, 100000, "--set", *TINY), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while _step(run / "checkpoint.pt") < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint at step 2"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = _step(run / "checkpoint.pt")
    assert saved >= 2
    done = subprocess.run(_cmd(run, saved + 2, "--resume"), env=env, capture_output=True, text=True,
                          timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _step(run / "checkpoint.pt") == saved + 2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, saved + 3))  # rows logged after the checkpoint were dropped, none twice
