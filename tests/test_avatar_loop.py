"""The avatar trainer on the one loop (gausslift.train.loop): SIGKILL then --resume is bit-identical,
a non-empty run folder and a shape-changing resume are refused in one line, an injected NaN is rolled
back and logged, a resumed log has no duplicated rows. On the tiny synth head of test_avatar_fit."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from _subjects_fixtures import write_tiny_ict
from test_avatar_fit import write_synth

from gausslift.avatar import model as M
from gausslift.avatar.config import AvatarConfig
from gausslift.avatar.trainer import AvatarTrainer
from gausslift.cli import main
from gausslift.io.sequence import read_sequence
from gausslift.subjects import load_subject
from gausslift.train import loop as L

STEPS = 60
# densification from step 10, every 10 steps, SH degree 1 from step 20: the state a resume must
# restore changes shape during the run (Gaussians are cloned and split, shN starts training)
SCHEDULE = [
    "schedule_ref_iters=60",
    "strategy.refine_start_iter=10",
    "strategy.refine_every=10",
    "strategy.min_refine_every=1",
    "strategy.grow_grad2d=0.00005",
    "sh_degree=1",
    "sh_degree_interval=20",
    "log_every=1",
    "checkpoint_minutes=0",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def seq(tmp_path, monkeypatch):
    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))  # inherited by the subprocesses
    write_synth(tmp_path / "seq", load_subject("ict"))
    return tmp_path / "seq"


def fit_args(seq, run, *extra, steps=STEPS):
    sets = [a for s in SCHEDULE for a in ("--set", s)]
    return ["avatar", "fit", str(seq), "--out", str(run), "--iters", str(steps), "--backend", "cpu",
            "--threads", "1", "--quiet", *sets, *extra]  # fmt: skip


def rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def assert_equal_nest(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_equal_nest(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nest(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def folder_state(run):
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}


def test_sigkill_then_resume_is_bit_identical_and_logs_once(seq, tmp_path, capsys):
    # the uninterrupted run
    ref = tmp_path / "ref"
    assert main(fit_args(seq, ref)) == 0
    # the same run in a process killed with SIGKILL after a checkpoint past step 0 and a few steps more
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "gausslift", *fit_args(seq, run, "--set", "checkpoint_every=15")]
    errs = open(tmp_path / "killed.err", "w")  # a file, not a pipe: a full pipe would stall the child
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errs)
    ck, versions, deadline = run / L.CHECKPOINT, set(), time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                st = ck.stat()
                versions.add((st.st_ino, st.st_mtime_ns))  # step 0's, then step 15's
                last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"]
            except (OSError, IndexError, ValueError):
                last = 0
            if len(versions) >= 2 and last >= 18:
                break
            time.sleep(0.01)
        err = (tmp_path / "killed.err").read_text()
        assert proc.poll() is None, f"the fit ended before the kill: {err}"
    finally:
        proc.kill()  # SIGKILL: no handler runs, no final checkpoint
        proc.wait()
        errs.close()
    killed_at = torch.load(ck, weights_only=False)["step"]
    logged = [r["step"] for r in rows(run) if "loss" in r]
    assert 0 < killed_at < STEPS and max(logged) > killed_at  # rows past the checkpoint to drop
    assert not json.loads((run / "avatar.json").read_text())["finished"]
    # --resume finishes it: the same state as the uninterrupted run, bit for bit
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--resume", "--quiet"]) == 0
    a, b = (torch.load(r / L.CHECKPOINT, weights_only=False) for r in (ref, run))
    assert a["step"] == b["step"] == STEPS
    assert a["state"]["gaussians"]["shN"].shape[1] == 3  # SH degree 1
    assert_equal_nest(a["state"], b["state"], "state")
    assert_equal_nest(*(torch.load(r / "avatar.pt", weights_only=False) for r in (ref, run)))
    # log.jsonl: every step once, and the same losses as the uninterrupted run's
    got, want = ([r for r in rows(x) if "loss" in r] for x in (run, ref))
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert want[killed_at]["num_gaussians"] < want[-1]["num_gaussians"]  # densified after the kill
    drop = ("elapsed_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in got] == [
        {k: v for k, v in r.items() if k not in drop} for r in want
    ]
    csv_steps = [ln.split(",")[0] for ln in (run / "log.csv").read_text().splitlines()[1:]]
    assert csv_steps == [str(s) for s in range(1, STEPS + 1)]
    info = json.loads((run / "avatar.json").read_text())
    assert info["finished"] and info["iters"] == STEPS and info["num_gaussians"] > 0


def test_fresh_fit_into_a_non_empty_folder_is_refused(seq, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(seq, run, steps=3)) == 0
    before = folder_state(run)
    capsys.readouterr()
    assert main(fit_args(seq, run, steps=3)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty: add --resume" in err and "Traceback" not in err
    assert folder_state(run) == before  # nothing written, nothing overwritten
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    assert main(fit_args(seq, other, steps=3)) == 1
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_resume_with_a_shape_changing_config_is_refused(seq, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(seq, run, steps=3)) == 0
    before = folder_state(run)
    capsys.readouterr()
    resume = ["avatar", "fit", str(seq), "--out", str(run), "--resume", "--quiet", "--iters", "6"]
    for extra, says in (
        (["--set", "sh_degree=2"], "sh_degree (1 -> 2)"),
        (["--holdout-frames", "0.4"], "holdout_frames (0.2 -> 0.4)"),
        (["--set", "dynamic_offsets=true"], "dynamic_offsets (False -> True)"),
    ):
        assert main(resume + extra) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
        assert folder_state(run) == before
    assert main(resume + ["--set", "lr_sh0=0.01"]) == 0  # not a shape key: continues to step 6
    assert json.loads((run / "avatar.json").read_text())["iters"] == 6
    assert torch.load(run / L.CHECKPOINT, weights_only=False)["config"]["lr_sh0"] == 0.01


@pytest.mark.parametrize("snapshot_every", [0, 4])
def test_nan_is_rolled_back_and_logged(seq, tmp_path, monkeypatch, snapshot_every):
    monkeypatch.setenv(L.FAULT_ENV, "7")  # the loss is NaN at steps 7, 8, 9
    cfg = AvatarConfig(iters=20, backend="cpu", sh_degree=0, log_every=1, checkpoint_minutes=0,
                       snapshot_every=snapshot_every, subject="ict", dynamic_offsets=True)  # fmt: skip
    tr = AvatarTrainer(read_sequence(seq), load_subject("ict"), cfg, tmp_path / "run")
    info = tr.fit(progress=False)
    log = rows(tmp_path / "run")
    assert [r["step"] for r in log if r.get("nonfinite")] == [8, 9, 10]
    back = [r for r in log if r.get("rollback")]
    assert len(back) == 1 and back[0]["step"] == 10 and back[0]["lr_scale"] == 0.5
    assert info["finished"] and info["iters"] == 20 and info["rollbacks"] == 1
    assert info["nonfinite_skipped"] == 3 and any("rolled back" in e for e in info["events"])
    assert [r["step"] for r in log if "loss" in r] == [s for s in range(1, 21) if s not in (8, 9, 10)]
    assert tr.finite() and all(r["loss"] == r["loss"] for r in log if "loss" in r)  # no NaN logged
    # every rate at half its value after the rollback: the tracking rates by kind, the offsets', and
    # the Gaussians' (the means' on its schedule)
    lrs = {g["name"]: g["lr"] for g in tr.extra_opt.param_groups}
    assert lrs == {k: 0.5 * M.param_lr(k, cfg) for k in tr.frame_keys} | {"offsets": 0.5 * cfg.lr_offsets}
    assert tr.optimizers["sh0"].param_groups[0]["lr"] == 0.5 * cfg.lr_sh0
    saved = torch.load(tmp_path / "run" / L.CHECKPOINT, weights_only=False)
    assert saved["loop"]["lr_scale"] == 0.5 and saved["step"] == 20
    for v in saved["state"]["gaussians"].values():
        assert torch.isfinite(v).all()


def test_a_checkpoint_from_before_the_loop_is_refused(seq, tmp_path, capsys):
    """Checkpoints written by the avatar trainer's own loop (no format tag) are refused in one line."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"params": {}, "extra_opt": None, "step": 3, "total": 3}, run / L.CHECKPOINT)
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--resume", "--iters", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a checkpoint of this trainer (avatar)" in err


def test_threads_flag_and_config_are_recorded(seq, tmp_path):
    """--threads is the shared flag; it lands in the config (so ablate can split threads there too)."""
    run = tmp_path / "run"
    assert main(fit_args(seq, run, steps=2)) == 0
    assert json.loads((run / "avatar.json").read_text())["config"]["threads"] == 1
    assert "threads: 1" in (run / L.CONFIG).read_text() and os.path.isfile(run / "log.csv")


def test_a_minutes_budget_plans_the_schedules(seq, tmp_path):
    """``minutes`` overrides ``iters`` (only the warm-up's stand-in): the loop plans the length from the
    measured speed (once, plus at most the two re-plans the avatar asks for), and the densification
    schedule and SH steps follow the planned length."""
    from gausslift.fit.strategy import scaled_schedule

    cfg = AvatarConfig(iters=5, minutes=0.08, backend="cpu", sh_degree=0, subject="ict", log_every=1)
    tr = AvatarTrainer(read_sequence(seq), load_subject("ict"), cfg, tmp_path / "run")
    planned = []
    orig = tr.plan
    tr.plan = lambda total: (planned.append(total), orig(total))
    info = tr.fit(progress=False)
    assert 1 <= len(planned) <= 3 and planned[-1] == info["planned_iters"] == tr.total > 13  # not iters=5
    assert all(n > 13 for n in planned)
    assert tr.strategy.schedule == scaled_schedule(cfg.strategy, tr.total, cfg.schedule_ref_iters)
    assert info["finished"] and info["iters"] <= tr.total and info["stopped_by"] in ("steps", "time")


def test_a_re_plan_never_lowers_the_avatars_sh_degree(seq, tmp_path):
    """Lengthening the run lengthens the SH interval; the degree stays at the highest trained, and that
    floor survives a checkpoint."""
    cfg = AvatarConfig(iters=300, backend="cpu", sh_degree=3, subject="ict", schedule_ref_iters=30_000)
    tr = AvatarTrainer(read_sequence(seq), load_subject("ict"), cfg, tmp_path / "a")
    tr.start()
    tr.plan(300)  # one degree every 10 steps
    tr.loss(35)  # the step records the degree it trained
    assert tr.sh_reached == 3
    tr.plan(900)  # every 30 steps: step 36 would be degree 1 by the interval alone
    assert tr.sh_degree_at(36) == 3
    other = AvatarTrainer(read_sequence(seq), load_subject("ict"), cfg, tmp_path / "b")
    other.start()
    other.plan(900)
    assert other.sh_degree_at(36) == 1
    other.load_state_dict(tr.state_dict())
    assert other.sh_degree_at(36) == 3
