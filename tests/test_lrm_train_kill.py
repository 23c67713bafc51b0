"""A GS-LRM run killed with SIGKILL resumes from its last checkpoint (``gausslift lrm train --resume``) and
ends bit-identical to an uninterrupted run of the same length, with each log row written once."""

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
from gausslift.cli import main

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "batch=2", "warmup_steps=1", "lr=1e-3", "val_every=0", "image_every=0",
        "log_every=1", "backend=cpu"]  # fmt: skip
ENV = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
# a training process that stops (for ever) when it reaches step BLOCK, after saying so
BLOCKED = """
import sys, time
from gausslift.lrm.train import LRMTask
real = LRMTask.loss
def loss(self, step):
    if step == int(sys.argv[1]):
        print("blocked", flush=True)
        time.sleep(600)
    return real(self, step)
LRMTask.loss = loss
from gausslift.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _sets(*extra) -> list[str]:
    return [a for kv in [*TINY, *extra] for a in ("--set", kv)]


def _argv(out, steps, *extra) -> list[str]:
    return ["lrm", "train", str(SAMPLE), "--out", str(out), "--steps", str(steps), "--device", "cpu", *extra]


def _step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=False)["step"])
    except Exception:  # not there yet
        return -1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["state"]["model"]


def _train_rows(run: Path) -> list[int]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


@pytest.fixture
def one_thread():
    """The same threads as the killed process (``--threads 1``), so sums come out bit-identical."""
    from gausslift.train.device import set_threads

    n = torch.get_num_threads()
    set_threads(1)
    yield
    set_threads(n)


def test_sigkill_then_resume_is_bit_identical(tmp_path, one_thread):
    """Killed (SIGKILL, with a loader process running) at step 3 after its step-2 checkpoint; the resumed
    run ends where an uninterrupted 5-step run ends, bit for bit."""
    run = tmp_path / "run"
    argv = _argv(run, 5, "--threads", "1", *_sets("checkpoint_every=2", "workers=1"))
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED, "3", *argv], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()  # blocks until the process reaches step 3 (or dies)
        assert line.strip() == "blocked", proc.stderr.read()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _step(run / "checkpoint.pt") == 2 and _train_rows(run) == [1, 2, 3]
    assert main(_argv(run, 5, "--resume")) == 0
    assert main(_argv(tmp_path / "full", 5, *_sets("checkpoint_every=2", "workers=0"))) == 0
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_rows(run) == [1, 2, 3, 4, 5]  # row 3 of the killed process dropped, none twice


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume(tmp_path):
    """Killed wherever it happens to be (mid-step, mid-checkpoint, ...) once it has a checkpoint at step
    >= 2; the resumed run equals an uninterrupted one of the same length."""
    steps = 12
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gausslift", *_argv(run, steps, "--threads", "1"),
                             *_sets("checkpoint_every=1")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while _step(run / "checkpoint.pt") < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint at step 2"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = _step(run / "checkpoint.pt")
    assert 2 <= saved < steps
    for out, extra in ((run, ["--resume"]), (tmp_path / "full", _sets("checkpoint_every=1"))):
        cmd = [sys.executable, "-m", "gausslift", *_argv(out, steps, "--threads", "1"), *extra]
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_rows(run) == list(range(1, steps + 1))
