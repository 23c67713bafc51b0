"""gausslift.train.loop: the one loop, on a toy task (a linear model fitted by Adam to noisy draws)."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from gausslift.errors import InputError
from gausslift.train import loop as L
from gausslift.train.dist import Dist


@dataclass
class ToyConfig:
    width: int = 4
    lr: float = 0.1
    seed: int = 0
    tags: list = field(default_factory=list)


class Toy(L.Task):
    name = "toy"
    columns = ("step", "loss", "lr")
    shape_keys = ("width",)

    def __init__(self, cfg=None):
        self.cfg = cfg or ToyConfig()
        self.planned = []

    def config(self):
        return self.cfg

    def start(self):
        torch.manual_seed(self.cfg.seed)
        self.w = torch.nn.Parameter(torch.zeros(self.cfg.width))
        self.opt = torch.optim.Adam([self.w], lr=self.cfg.lr)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.truth = torch.arange(self.cfg.width, dtype=torch.float32)

    def state_dict(self):
        return {"w": self.w.detach(), "optim": self.opt.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, s):
        with torch.no_grad():
            self.w.copy_(s["w"])
        self.opt.load_state_dict(s["optim"])
        self.gen.set_state(s["gen"])

    def plan(self, total):
        self.planned.append(total)

    def loss(self, step):
        x = torch.randn(8, self.cfg.width, generator=self.gen)
        y = x @ self.truth + 0.01 * torch.randn(8, generator=self.gen)
        return ((x @ self.w - y) ** 2).mean(), {}

    def update(self, loss, step, lr_scale):
        frac = step / self.loop.total if self.loop.total else 0.0  # a schedule of the step alone
        lr = self.cfg.lr * lr_scale * (1 - frac)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"lr": lr}

    def finite(self):
        return bool(torch.isfinite(self.w).all())


def opts(**kw):
    base = dict(iters=20, quiet=True, log_every=1, checkpoint_minutes=0)
    return L.LoopOptions(**(base | kw))


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for the loop's timing: tests advance ``clock["t"]``."""
    c = {"t": 0.0}
    monkeypatch.setattr(L.time, "perf_counter", lambda: c["t"])
    monkeypatch.setattr(L.Budget, "elapsed", lambda self: self.elapsed0 + c["t"] - self.t0)
    return c


def rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_runs_plans_and_learns(tmp_path):
    t = Toy()
    res = L.Loop(t, tmp_path / "r", opts(iters=300)).run()
    assert res["steps"] == 300 and res["stopped_by"] == "steps" and t.planned == [300]
    assert torch.allclose(t.w.detach(), t.truth, atol=0.05)  # it learned
    saved = torch.load(tmp_path / "r" / L.CHECKPOINT, weights_only=False)
    assert saved["format"] == L.FORMAT and saved["task"] == "toy" and saved["step"] == 300
    assert set(saved["state"]) == {"w", "optim", "gen"}  # named state
    assert (tmp_path / "r" / L.CONFIG).read_text().startswith("width: 4")


def test_resume_is_bit_identical_and_logs_once(tmp_path):
    full = Toy()
    L.Loop(full, tmp_path / "a", opts(iters=20)).run()
    part = Toy()
    L.Loop(part, tmp_path / "b", opts(iters=20, checkpoint_every=5)).run()  # then pretend it died at 10:
    ck = torch.load(tmp_path / "b" / L.CHECKPOINT, weights_only=False)
    assert ck["step"] == 20
    # an interrupted run: stop after 10 steps (a shorter run of the same plan would change the schedule)
    killed = Toy()
    lp = L.Loop(killed, tmp_path / "c", opts(iters=20, checkpoint_every=10))
    orig = killed.update

    def die(loss, step, s):
        if step == 13:
            raise KeyboardInterrupt  # dies mid-run, after its step-10 checkpoint
        return orig(loss, step, s)

    killed.update = die
    with pytest.raises(KeyboardInterrupt):
        lp.run()
    again = Toy()
    L.Loop(again, tmp_path / "c", opts(iters=20, resume=True)).run()
    assert torch.equal(again.w.detach(), full.w.detach())
    steps = [r["step"] for r in rows(tmp_path / "c") if "loss" in r]
    assert steps == list(range(1, 21))  # rows 11-13 of the dead process were dropped, none repeated


def test_refuses_non_empty_folder_and_missing_checkpoint(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty: add --resume"):
        L.Loop(Toy(), run, opts()).run()
    assert (run / "notes.txt").read_text() == "mine" and len(list(run.iterdir())) == 1
    with pytest.raises(InputError, match="nothing to resume"):
        L.Loop(Toy(), run, opts(resume=True)).run()
    with pytest.raises(InputError, match="training length"):
        L.Loop(Toy(), tmp_path / "x", opts(iters=0)).run()


def test_resume_refuses_a_shape_change_before_writing(tmp_path):
    run = tmp_path / "r"
    L.Loop(Toy(), run, opts(iters=5)).run()
    before = (run / L.CONFIG).read_text()
    with pytest.raises(InputError, match=r"width \(4 -> 6\)"):
        L.Loop(Toy(ToyConfig(width=6)), run, opts(iters=10, resume=True)).run()
    assert (run / L.CONFIG).read_text() == before
    res = L.Loop(Toy(ToyConfig(lr=0.01)), run, opts(iters=10, resume=True)).run()  # not a shape key
    assert res["steps"] == 10 and "lr: 0.01" in (run / L.CONFIG).read_text()


@pytest.mark.parametrize("snapshot_every", [0, 4])
def test_nan_is_rolled_back_and_logged(tmp_path, monkeypatch, snapshot_every):
    monkeypatch.setenv(L.FAULT_ENV, "7")
    t = Toy()
    res = L.Loop(t, tmp_path / "r", opts(iters=30, snapshot_every=snapshot_every)).run()
    log = rows(tmp_path / "r")
    assert [r["step"] for r in log if r.get("nonfinite")] == [8, 9, 10]  # rows count steps taken
    back = [r for r in log if r.get("rollback")]
    assert len(back) == 1 and back[0]["step"] == 10 and back[0]["lr_scale"] == 0.5
    assert res["rollbacks"] == 1 and res["nonfinite_skipped"] == 3 and torch.isfinite(t.w).all()
    assert any("rolled back" in e for e in res["events"])


def test_rollback_restores_the_good_state(tmp_path, monkeypatch):
    monkeypatch.setenv(L.FAULT_ENV, "10")
    t = Toy()
    lp = L.Loop(t, tmp_path / "r", opts(iters=13, snapshot_every=5))
    seen = {}
    orig = t.load_state_dict

    def spy(s):
        seen["w"] = s["w"].clone()
        orig(s)

    t.load_state_dict = spy
    snap = {}
    orig_update = t.update

    def upd(loss, step, s):
        out = orig_update(loss, step, s)
        if step == 9:  # the state after step 10's update = the snapshot taken at step 10
            snap["w"] = t.w.detach().clone()
        return out

    t.update = upd
    lp.run()
    assert torch.equal(seen["w"], snap["w"])  # rolled back to the snapshot, not to the start


def test_minutes_plan_once_and_stay_fixed(tmp_path, clock):
    t = Toy()
    orig = t.loss

    def slow(step):
        clock["t"] += 0.5 if step < 40 else 2.0  # the machine gets 4x slower after the plan
        return orig(step)

    t.loss = slow
    res = L.Loop(t, tmp_path / "r", opts(iters=0, minutes=1.0, warmup_seconds=5)).run()
    assert len(t.planned) == 1  # planned once, never re-planned under load
    assert res["planned_steps"] == t.planned[0] > 0
    assert res["stopped_by"] == "time" and res["steps"] < res["planned_steps"]


def test_sigint_checkpoints_then_stops(tmp_path):
    import signal

    t = Toy()
    orig = t.update

    def interrupt(loss, step, s):
        if step == 6:
            signal.raise_signal(signal.SIGINT)
        return orig(loss, step, s)

    t.update = interrupt
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # as under a terminal, even under nohup
    try:
        with pytest.raises(KeyboardInterrupt):
            L.Loop(t, tmp_path / "r", opts(iters=20)).run()
    finally:
        signal.signal(signal.SIGINT, old)
    assert torch.load(tmp_path / "r" / L.CHECKPOINT, weights_only=False)["step"] == 7


def test_collectives_use_the_training_device(monkeypatch):
    """NCCL takes only device tensors: every collective must be on Dist.device, whatever the backend.
    (A CPU-tensor flag, as ``torch.tensor([1.0])``, fails here with a meta training device.)"""
    seen = []
    monkeypatch.setattr(L.torch.distributed, "all_reduce", lambda t, op=None: seen.append(t.device))
    d = Dist(rank=0, world=2, device=torch.device("meta"))
    with pytest.raises(RuntimeError, match="meta"):  # meta tensors have no values to read back ...
        d.all_true(True)
    assert seen == [torch.device("meta")]  # ... but the collective got a tensor on the training device
    with pytest.raises(RuntimeError, match="training device"):
        d.all_reduce(torch.ones(1))
    assert Dist(rank=1, world=3).shard(range(8)) == [1, 4, 7]


def test_extend_uses_the_time_left_at_the_schedules_end(tmp_path, clock):
    t = Toy()
    t.speed_factor = lambda: 0.5  # a pessimistic plan: half the steps the time allows
    orig, seen = t.loss, []

    def tick(step):
        clock["t"] += 0.5
        seen.append(step)
        return orig(step)

    t.loss = tick
    res = L.Loop(t, tmp_path / "r", opts(iters=0, minutes=1.0, warmup_seconds=5, extend=True)).run()
    assert len(t.planned) == 1 and res["planned_steps"] == t.planned[0]  # the plan did not change
    assert res["steps"] > 1.5 * res["planned_steps"] and res["stopped_by"] == "time"
    assert any("going on at the schedules' end values" in e for e in res["events"])
    short = Toy()
    short.speed_factor, short.loss = t.speed_factor, lambda step: (clock.__setitem__("t", clock["t"] + 0.5),
                                                                   Toy.loss(short, step))[1]  # fmt: skip
    clock["t"] = 0.0
    res2 = L.Loop(short, tmp_path / "s", opts(iters=0, minutes=1.0, warmup_seconds=5)).run()
    assert res2["steps"] == res2["planned_steps"] and res2["stopped_by"] == "steps"  # without: it stops


def test_shared_flags_do_not_import_torch_and_match_the_loop():
    import subprocess
    import sys

    code = "import sys, gausslift.cli._train as t; print('torch' in sys.modules, t.CONFIG)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = res.stdout.split()
    assert out == ["False", L.CONFIG]


def test_options_from_a_config_by_name():
    @dataclass
    class Cfg:
        iters: int = 500
        minutes: float = 0.0
        log_every: int = 7
        lr: float = 0.1  # not a loop option: ignored

    o = L.LoopOptions.from_config(Cfg(), quiet=True)
    assert (o.iters, o.minutes, o.log_every, o.quiet) == (500, 0.0, 7, True)
    o = L.LoopOptions.from_config(Cfg(minutes=3.0), log_every=1)
    assert (o.iters, o.minutes, o.log_every) == (0, 3.0, 1)  # a minutes budget overrides iters


def test_replan_follows_a_load_that_falls_after_the_warm_up(tmp_path, clock):

    def run(name, **kw):
        clock["t"] = 0.0
        t = Toy()
        orig = t.loss

        def tick(step):
            clock["t"] += 1.0 if step < 16 else 0.25  # 4x faster once the warm-up has been timed
            return orig(step)

        t.loss = tick
        return t, L.Loop(t, tmp_path / name, opts(iters=0, minutes=1.0, warmup_seconds=5, **kw)).run()

    fixed, res0 = run("fixed")
    assert len(fixed.planned) == 1 and res0["stopped_by"] == "steps"  # without: it ends early
    t, res = run("replan", replan_at=(0.25, 0.5))
    assert len(t.planned) >= 2 and t.planned[1] > 1.5 * t.planned[0]  # planned again, longer
    assert res["steps"] > 1.5 * res0["steps"] and res["planned_steps"] == t.planned[-1]
    assert any(e.startswith("re-planned") for e in res["events"])
    # a steady machine keeps its plan (the change is under 10%)
    clock["t"] = 0.0
    steady = Toy()
    steady.loss = lambda step: (clock.__setitem__("t", clock["t"] + 0.5), Toy.loss(steady, step))[1]
    res2 = L.Loop(steady, tmp_path / "steady", opts(iters=0, minutes=1.0, warmup_seconds=5,
                                                    replan_at=(0.25, 0.5))).run()  # fmt: skip
    assert len(steady.planned) == 1 and not any(e.startswith("re-planned") for e in res2["events"])


def test_replan_times_the_later_steps_since_the_plan(tmp_path, clock):
    """A model that has slowed since the plan (grown, or at a finer stage) is timed as it is now: the
    re-plan reads the later half of the steps since the last plan, not their median over all of them."""
    t, seen = Toy(), {}
    loss, plan = t.loss, t.plan

    def on_plan(total):  # the clock at each plan
        seen.setdefault("plans", []).append(clock["t"])
        plan(total)

    def tick(step):
        if t.planned and "first" not in seen:
            seen["first"] = step
        slow = not t.planned  # the warm-up: 1 s a step
        if t.planned:  # then 0.1 s for 60 % of the steps up to the re-plan point, then 1 s again
            point = int(0.25 * t.planned[0])
            slow = step >= seen["first"] + 0.6 * (point - seen["first"])
        clock["t"] += 1.0 if slow else 0.1
        return loss(step)

    t.loss, t.plan = tick, on_plan
    res = L.Loop(t, tmp_path / "r", opts(iters=0, minutes=10.0, warmup_seconds=5, replan_at=(0.25,))).run()
    assert len(t.planned) == 2, res["events"]
    point, left = int(0.25 * t.planned[0]), 600.0 - seen["plans"][1]
    # planned from 1 s a step (the later half); the median since the plan (0.1 s) would give ~10x the rest
    assert point + 0.8 * left <= t.planned[1] <= point + 1.0 * left
    assert res["steps"] >= 0.95 * t.planned[1]  # and the run does reach its plan


def test_plans_tell_the_task_which_steps_were_timed(tmp_path, clock):
    """``Task.steps_in`` gets the first step of the timed window: the median duration of the steps from
    there to now is the step time the loop planned with (a task predicting its own step times compares
    the steps ahead with exactly those)."""
    t, calls = Toy(), []
    loss = t.loss

    def dur(step):  # every step its own duration (growing: a growing model)
        return 0.5 + 0.01 * step

    def tick(step):
        clock["t"] += dur(step)
        return loss(step)

    def steps_in(steps, timed_from):
        lp = t.loop
        dt = (lp.budget.left() - lp._reserve()) / steps
        calls.append((timed_from, lp.step, dt))
        return int(steps)

    t.loss, t.steps_in = tick, steps_in
    L.Loop(t, tmp_path / "r", opts(iters=0, minutes=2.0, warmup_seconds=5, replan_at=(0.25, 0.5))).run()
    assert len(calls) == 3  # the plan and two re-plans
    assert calls[0][0] == 3  # the warm-up's first two steps (JIT) are left out
    for first, now, dt in calls:
        assert first < now - 4
        assert np.median([dur(s) for s in range(first, now)]) == pytest.approx(dt)
    assert calls[1][0] > calls[0][1]  # a re-plan times steps after the plan (their later half)


def test_a_late_re_plan_compares_with_the_steps_left(tmp_path, clock):
    """At 75 % of the run, 8 % more steps in all are a third more of the steps left: re-planned (a
    threshold on the whole run would keep a plan that ends far from the time left)."""
    t = Toy()
    loss = t.loss

    def tick(step):
        clock["t"] += 0.5
        return loss(step)

    def steps_in(steps, timed_from):
        lp = t.loop
        if lp.step >= 0.7 * (lp.total or 1e9):  # the late point: 8 % more steps in all than planned
            return int(1.08 * lp.total) - lp.step
        return int(steps)

    t.loss, t.steps_in = tick, steps_in
    o = opts(iters=0, minutes=2.0, warmup_seconds=5, replan_at=(0.25, 0.75))
    res = L.Loop(t, tmp_path / "r", o).run()
    assert len(t.planned) == 2 and t.planned[1] == int(1.08 * t.planned[0]), res["events"]
    assert any(e.startswith("kept the plan at step") for e in res["events"])  # the 25 % point kept it


def test_progress_is_continuous_across_a_re_plan_and_survives_a_resume(tmp_path, clock):
    """A schedule of the loop's progress (a learning-rate decay) goes on from where it stood when a
    re-plan changes the total, instead of jumping back (longer plan) or ahead (shorter), and it reaches
    1 at the new total; the anchor is saved with the run."""
    t = Toy()
    loss, seen = t.loss, {}

    def tick(step):
        clock["t"] += 1.0 if step < 16 else 0.25  # 4x faster after the warm-up: a longer re-plan
        seen[step] = (t.loop.progress(step), t.progress(step), t.loop.total)
        return loss(step)

    t.loss = tick
    res = L.Loop(t, tmp_path / "r", opts(iters=0, minutes=1.0, warmup_seconds=5, replan_at=(0.5,))).run()
    assert len(t.planned) == 2 and t.planned[1] > 1.5 * t.planned[0], res["events"]
    at = min(s for s, (_, _, total) in seen.items() if total == t.planned[1])  # first step of the new plan
    p = [seen[s][0] for s in sorted(seen) if s >= 16]
    assert all(b >= a for a, b in zip(p, p[1:]))  # never goes back
    jump = seen[at][0] - seen[at - 1][0]
    assert 0 < jump < 2.0 / t.planned[0]  # one step's worth, not a jump back to step / new total
    assert seen[at][0] > at / t.planned[1] + 0.05  # (which would be this much lower)
    assert all(a == b for a, b, _ in seen.values())  # the task reads the loop's
    last = max(s for s in seen if s < t.planned[1])
    assert seen[last][0] == pytest.approx(1.0, abs=2.0 / t.planned[1])
    saved = torch.load(tmp_path / "r" / L.CHECKPOINT, weights_only=False)
    s0, t0 = saved["loop"]["anchor"]
    assert (s0, t0) == tuple(t.loop.anchor) and t0 == pytest.approx(s0 / t.planned[0]) and s0 in (at - 1, at)
    resumed = L.Loop(Toy(), tmp_path / "r", opts(iters=0, minutes=1.0, resume=True))
    resumed._open()
    assert resumed.anchor == (s0, t0) and resumed.progress(at + 3) == pytest.approx(seen[at + 3][0])


def test_a_re_plan_point_behind_a_shorter_plan_is_skipped_with_an_event(tmp_path, clock):
    """Shortened at 25 % below the 50 % point's step: that point is passed, said so, not silently used up."""
    t = Toy()
    loss = t.loss

    def tick(step):
        clock["t"] += 0.25 if step < 16 else 1.0  # 4x slower after the warm-up: a much shorter plan
        return loss(step)

    t.loss = tick
    res = L.Loop(t, tmp_path / "r", opts(iters=0, minutes=1.0, warmup_seconds=3, replan_at=(0.25, 0.5))).run()
    assert len(t.planned) == 2 and t.planned[1] < 0.5 * t.planned[0], res["events"]
    assert any("re-plan point 50% is behind the new plan: skipped" in e for e in res["events"])
