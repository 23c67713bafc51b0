"""gausslift track on the one training loop: stages and schedules follow the planned total, a killed track
resumes bit-identically, a non-empty run folder is refused, a NaN is rolled back (split
from test_track.py)."""

# ruff: noqa: F811  (the toy fixtures are imported from test_track and named as test arguments)
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_track import NODE_NAMES, _cli, synthetic, toy, toy_env, write_session  # noqa: F401

from gausslift.track import TrackOptions, load_map, track
from gausslift.track.skeleton import build_map


def test_stages_follow_the_planned_total(toy):
    """The stage split is a function of the planned total: the configured one for rigid_iters + iters,
    the same ratio for a planned (--minutes) total."""
    from gausslift.track.optimize import Tracker
    from gausslift.track.task import TrackTask, loop_options, lr_factor, sigma_factor

    kmap = load_map("dannce", toy)
    obs, *_ = synthetic(toy, kmap, T=4, seed=1)
    task = TrackTask(Tracker(toy, kmap, obs.select(cameras=obs.cameras[:3]), TrackOptions()))
    assert loop_options(TrackOptions())["iters"] == 500
    assert loop_options(TrackOptions(minutes=2))["iters"] == 0  # planned from the clock
    assert task.split(500) == (100, 400) and task.split(250) == (50, 200) and task.split(7) == (1, 6)
    task.plan(500)
    assert task.at(99) == ("rigid", 99, 100) and task.at(100) == ("articulated", 0, 400)
    assert lr_factor(0, 400) == 1.0 and abs(lr_factor(400, 400) - 0.05) < 1e-12
    assert sigma_factor(0, 400, 10.0) == 10.0 and sigma_factor(200, 400, 10.0) == 1.0


def _small(**kw):
    return TrackOptions(**({"iters": 40, "rigid_iters": 10, "checkpoint_every": 8, "log_every": 5} | kw))


def _same_track(a, b):
    assert set(a.params) == set(b.params)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert np.array_equal(a.world_from_subject, b.world_from_subject)
    assert np.array_equal(a.points3d, b.points3d) and np.array_equal(a.offsets, b.offsets)
    assert a.history == b.history


@pytest.mark.parametrize("kill", [13, 29])  # killed in the rigid stage / before the offsets move
def test_killed_track_resumes_bit_identically(toy, tmp_path, monkeypatch, kill):
    import json

    from gausslift.track.task import TrackTask
    from gausslift.train.loop import CHECKPOINT

    kmap = load_map("dannce", toy)
    obs, *_ = synthetic(toy, kmap, T=6, seed=1)
    train = obs.select(cameras=obs.cameras[:3])
    full = track(toy, kmap, train, _small(), out=tmp_path / "a")
    assert full.run["steps"] == 50 and full.run["stages"] == {"rigid": 10, "articulated": 40}
    orig = TrackTask.update

    def die(self, loss, step, lr_scale):
        if step == kill:
            raise KeyboardInterrupt  # dies mid-run, after a checkpoint_every checkpoint
        return orig(self, loss, step, lr_scale)

    monkeypatch.setattr(TrackTask, "update", die)
    with pytest.raises(KeyboardInterrupt):
        track(toy, kmap, train, _small(), out=tmp_path / "b")
    monkeypatch.setattr(TrackTask, "update", orig)
    ck = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    assert ck["step"] == kill // 8 * 8
    assert ck["state"]["stage"] == ("rigid" if kill < 10 + 8 else "articulated")
    assert set(ck["state"]) == {"params", "stage", "optim", "history", "reference"}
    again = track(toy, kmap, train, _small(), out=tmp_path / "b", resume=True)
    _same_track(again, full)
    rows = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


def _sleap_session(toy, root, seed=3):
    kmap = build_map({n: {"keypoint": n} for n in NODE_NAMES}, toy, "t")
    obs, X, uv, seq, drift = synthetic(toy, kmap, T=6, seed=seed)
    sess = write_session(root, obs.camera_models, obs.cameras,
                         {c: obs.points2d[i] for i, c in enumerate(obs.cameras)})
    return sess, X


SMALL = ["--cameras", "cam0,cam1,cam2", "--iters", "40", "--set", "rigid_iters=10", "--keypoints", "dannce",
         "--quiet", "--frames", "1:5"]


def test_cli_resumes_a_killed_track(toy, toy_env, tmp_path, capsys, monkeypatch):
    from gausslift.track.task import TrackTask

    sess, X = _sleap_session(toy, tmp_path / "s")
    rc, out = _cli([str(sess), "--out", str(tmp_path / "a"), *SMALL], capsys)
    assert rc == 0, out.err
    orig = TrackTask.update
    monkeypatch.setattr(TrackTask, "update", lambda self, loss, step, s: (_ for _ in ()).throw(
        KeyboardInterrupt) if step == 27 else orig(self, loss, step, s))
    rc, out = _cli([str(sess), "--out", str(tmp_path / "b"), *SMALL, "--set", "checkpoint_every=10"], capsys)
    assert rc == 130 and not (tmp_path / "b" / "params.npz").exists()
    monkeypatch.setattr(TrackTask, "update", orig)
    # the checkpoint records what it tracked: other frames are refused in one line, before any write
    rc, out = _cli([str(sess), "--out", str(tmp_path / "b"), *SMALL[:-1], "0:5", "--resume"], capsys)
    assert rc == 1 and "other frames" in out.err and len(out.err.strip().splitlines()) == 1
    rc, out = _cli([str(sess), "--out", str(tmp_path / "b"), *SMALL, "--resume"], capsys)
    assert rc == 0, out.err
    a, b = np.load(tmp_path / "a" / "params.npz"), np.load(tmp_path / "b" / "params.npz")
    assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    ta, tb = np.load(tmp_path / "a" / "track.npz"), np.load(tmp_path / "b" / "track.npz")
    assert np.array_equal(ta["points3d"], tb["points3d"])
    assert (tmp_path / "b" / "meta.json").is_file() and (tmp_path / "b" / "config.yaml").is_file()


def test_cli_refuses_a_non_empty_out(toy, toy_env, tmp_path, capsys):
    sess, X = _sleap_session(toy, tmp_path / "s")
    t = tmp_path / "t"
    t.mkdir()
    (t / "mine.txt").write_text("mine")
    rc, out = _cli([str(sess), "--out", str(t), *SMALL], capsys)
    assert rc == 1 and "not empty: add --resume" in out.err and len(out.err.strip().splitlines()) == 1
    assert [p.name for p in t.iterdir()] == ["mine.txt"] and (t / "mine.txt").read_text() == "mine"
    rc, out = _cli([str(sess), "--out", str(tmp_path / "u"), *SMALL, "--resume"], capsys)
    assert rc == 1 and "nothing to resume" in out.err and len(out.err.strip().splitlines()) == 1


def test_cli_nan_is_rolled_back_and_logged(toy, toy_env, tmp_path, capsys, monkeypatch):
    import json

    from gausslift.train.loop import FAULT_ENV

    sess, X = _sleap_session(toy, tmp_path / "s")
    monkeypatch.setenv(FAULT_ENV, "30")  # the loss is NaN at steps 30, 31, 32 (articulated)
    rc, out = _cli([str(sess), "--out", str(tmp_path / "t"), *SMALL, "--set", "snapshot_every=10"], capsys)
    assert rc == 0, out.err
    assert "rolled back" in out.err
    rows = [json.loads(x) for x in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("nonfinite")] == [31, 32, 33]
    back = [r for r in rows if r.get("rollback")]
    assert len(back) == 1 and back[0]["step"] == 33 and back[0]["lr_scale"] == 0.5
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert rep["run"]["rollbacks"] == 1 and rep["run"]["nonfinite_skipped"] == 3
    assert rep["run"]["steps"] == 50 and any("rolled back" in e for e in rep["run"]["events"])
    tracked = np.load(tmp_path / "t" / "track.npz")["points3d"]
    assert np.isfinite(tracked).all()
    assert np.median(np.linalg.norm(tracked - X[1:5], axis=-1)) < 2.0


# ---------------------------------------------------------------------- the real model
