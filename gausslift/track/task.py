"""The Adam stages of a track on the one training loop: :class:`TrackTask` (a
:class:`gausslift.train.loop.Task`), :func:`run_tracker` and :func:`track`. The model and its loss are
:class:`gausslift.track.optimize.Tracker`; see that module's docstring for the stages and schedules."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.track.observations import Observations
from gausslift.track.optimize import Tracker, TrackOptions, TrackResult
from gausslift.track.skeleton import KeypointMap
from gausslift.train.loop import Loop, LoopOptions, Task


def lr_factor(i: int, n: int) -> float:
    """The stage's cosine learning-rate factor at its step ``i`` of ``n``: 1 -> 0.05."""
    return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (min(i / n, 1.0) if n > 0 else 1.0)))


def sigma_factor(i: int, n: int, anneal: float) -> float:
    """Robust scale / robust_px at the stage's step ``i`` of ``n``: anneal -> 1 over the first half."""
    return anneal ** max(0.0, 1.0 - 2.0 * i / n) if n > 0 else 1.0


def loop_options(opts: TrackOptions, resume: bool = False, quiet: bool = True) -> dict:
    """The :class:`LoopOptions` fields a track's options set: ``rigid_iters + iters`` steps (one per
    Adam step), or a ``minutes`` budget (which overrides them)."""
    return dict(
        iters=0 if opts.minutes > 0 else int(opts.rigid_iters) + int(opts.iters),
        minutes=float(opts.minutes),
        resume=resume,
        quiet=quiet,
        log_every=int(opts.log_every),
        checkpoint_every=int(opts.checkpoint_every),
        snapshot_every=int(opts.snapshot_every),
    )


class TrackTask(Task):
    """The Adam stages of a :class:`Tracker` as a :class:`gausslift.train.loop.Task`.

    Step ``s`` of a run planned to ``total`` steps: the first ``R = round(total * rigid_iters /
    (rigid_iters + iters))`` are the rigid stage (the similarity alone, its step ``i = s``), the other
    ``A = total - R`` the articulated one (everything, ``i = s - R``); ``total = rigid_iters + iters``
    gives exactly the configured stages. Each stage has its own Adam, made fresh when the stage begins,
    with lr ``lr * lr_factor(i, n)`` (times the loop's rollback scale) and the robust scale
    ``robust_px * sigma_factor(i, n, anneal)``; the offsets move only from ``i >= A // 2`` of the
    articulated stage. Before a ``minutes`` budget is planned (the warm-up) the stages are the
    configured ones.

    Named state: ``params`` (omega, tau, log_s, theta, log_b, d_off), ``stage`` and ``optim`` (its Adam),
    ``history`` (the report's loss history) and ``reference`` (frames, cameras, nodes and the
    initialisation s0, R0, t0 the parameters are relative to; a resume with other ones is refused).
    """

    name = "track"
    columns = ("step", "stage", "loss", "reprojection", "silhouette", "lr", "sigma_px", "elapsed_s")
    shape_keys = ("fit_offsets",)  # the articulated Adam's parameter list

    def __init__(self, tracker: Tracker, write: Callable[[TrackResult], dict] | None = None):
        self.tk, self.write = tracker, write
        o = tracker.opts
        self.rigid, self.articulated = int(o.rigid_iters), int(o.iters)  # the configured split until planned
        self.stage: str | None = None
        self.opt: torch.optim.Adam | None = None
        self._pending: tuple | None = None
        self._stepped = False  # steps taken in this process: a state loaded now is a rollback, not a resume

    # -- the loop's interface -------------------------------------------------------------------------
    def config(self) -> TrackOptions:
        return self.tk.opts

    def start(self) -> None:
        """Fresh state: every unknown at the initialisation (zero), no stage yet."""
        with torch.no_grad():
            for t in self.tk.tensors().values():
                t.zero_()
                t.grad = None
        self.tk.history = []
        self.tk.sigma_factor = 1.0
        self.stage, self.opt, self._pending, self._stepped = None, None, None, False

    def split(self, total: int) -> tuple[int, int]:
        """(rigid, articulated) steps of a run of ``total`` steps."""
        r, a = int(self.tk.opts.rigid_iters), int(self.tk.opts.iters)
        rigid = round(total * r / (r + a)) if r + a > 0 else 0
        return rigid, int(total) - rigid

    def plan(self, total: int) -> None:
        self.rigid, self.articulated = self.split(total)

    def at(self, step: int) -> tuple[str, int, int]:
        """(stage, the stage's step, the stage's length) of loop step ``step``."""
        if step < self.rigid:
            return "rigid", step, self.rigid
        return "articulated", step - self.rigid, self.articulated

    def _enter(self, stage: str) -> None:
        self.stage = stage
        self.opt = torch.optim.Adam(self.tk.stage_params(stage), lr=self.tk.opts.lr)

    def state_dict(self) -> dict:
        tk = self.tk
        return {
            "params": {k: v.detach() for k, v in tk.tensors().items()},
            "stage": self.stage,
            "optim": self.opt.state_dict() if self.opt is not None else None,
            "history": [dict(h) for h in tk.history],
            "reference": {"frame_ids": np.asarray(tk.obs.frame_ids).copy(), "cameras": list(tk.obs.cameras),
                          "nodes": list(tk.nodes), "s0": float(tk.s0), "R0": tk.R0.clone(),
                          "t0": tk.t0.clone()},
        }

    def load_state_dict(self, st: dict) -> None:
        """A loaded checkpoint (a resume: checked against this track's data) or a rollback snapshot
        (the history goes on: it records what happened)."""
        tk = self.tk
        if not self._stepped:
            self._check_reference(st["reference"])
            ref = st["reference"]
            tk.s0, tk.R0, tk.t0 = float(ref["s0"]), ref["R0"].clone(), ref["t0"].clone()
            tk.history = [dict(h) for h in st["history"]]
        with torch.no_grad():
            for k, t in tk.tensors().items():
                t.copy_(st["params"][k])
                t.grad = None
        self.stage, self.opt = None, None
        if st["stage"] is not None:
            self._enter(st["stage"])
            self.opt.load_state_dict(st["optim"])

    def _check_reference(self, ref: dict) -> None:
        tk, out = self.tk, self.loop.out if self.loop is not None else None
        mine = {"frames": [int(i) for i in tk.obs.frame_ids], "cameras": list(tk.obs.cameras),
                "nodes": list(tk.nodes)}
        saved = {"frames": [int(i) for i in ref["frame_ids"]], "cameras": list(ref["cameras"]),
                 "nodes": list(ref["nodes"])}
        for k in mine:
            if mine[k] != saved[k]:
                raise InputError(out, f"the run tracked other {k} ({len(saved[k])}: {_short(saved[k])}) than "
                                      f"this call selects ({len(mine[k])}: {_short(mine[k])}): resume with "
                                      "the same SESSION, --frames, --cameras and --keypoints, or choose "
                                      "another --out")
        t_tol = 1e-6 * max(1.0, float(tk.t0.abs().max()))
        same = (abs(float(ref["s0"]) - tk.s0) <= 1e-6 * abs(tk.s0)
                and torch.allclose(ref["R0"], tk.R0, atol=1e-6)
                and torch.allclose(ref["t0"], tk.t0, atol=t_tol))
        if not same:
            raise InputError(out, "the run was initialised from other labels or another --init: resume "
                                  "with the same session and options, or choose another --out")

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.tk.tensors().values())

    # -- loss, update ---------------------------------------------------------------------------------
    def loss(self, step: int) -> tuple[torch.Tensor, dict]:
        self._stepped = True
        tk = self.tk
        stage, i, n = self.at(step)
        if stage != self.stage:  # the stage begins (or a rollback returned to the other one): fresh Adam
            self._enter(stage)
        tk.sigma_factor = sigma_factor(i, n, tk.opts.anneal)
        total, terms = tk.loss(stage == "articulated")
        self._pending = (stage, i, n, terms)
        return total, terms

    def update(self, loss: torch.Tensor, step: int, lr_scale: float) -> dict:
        tk, o = self.tk, self.tk.opts
        stage, i, n, terms = self._pending
        self._pending = None
        lr = o.lr * lr_factor(i, n) * lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        for t in tk.tensors().values():
            t.grad = None
        loss.backward()
        if stage == "articulated" and i < n // 2:  # the offsets move only in the second half
            tk.d_off.grad = None
        self.opt.step()
        if i % o.log_every == 0 or i == n - 1:
            tk.history.append({"stage": stage, "step": i, "loss": float(loss.detach()), **terms})
        return {"stage": stage, "lr": float(lr), "sigma_px": o.robust_px * tk.sigma_factor}

    # -- after the loop -------------------------------------------------------------------------------
    def finish(self, result: dict) -> dict:
        """The optional L-BFGS polish (``lbfgs_iters``) on the final Adam state, the result, and the
        outputs (``write``). The checkpoint holds the state before the polish, so a resumed finished run
        polishes the same state again."""
        tk = self.tk
        t = time.perf_counter()
        tk.sigma_factor = 1.0
        tk._lbfgs(tk.stage_params("articulated"), tk.opts.lbfgs_iters)
        res = tk.result(float(result["seconds"]) + time.perf_counter() - t)
        res.run = {k: result[k] for k in ("steps", "planned_steps", "stopped_by", "nonfinite_skipped",
                                          "rollbacks", "events") if k in result}
        res.run["stages"] = {"rigid": min(self.rigid, result["steps"]),
                             "articulated": max(0, result["steps"] - self.rigid)}
        out = result | {"track": res}
        if self.write is not None:
            out["report"] = self.write(res)
        return out


def _short(items: list, n: int = 6) -> str:
    s = ", ".join(str(x) for x in items[:n])
    return s + (", ..." if len(items) > n else "")


def track(subject, kmap: KeypointMap, obs: Observations, opts: TrackOptions | None = None,
          out: str | Path | None = None, resume: bool = False, masks=None) -> TrackResult:
    """Fit ``subject`` to ``obs`` (every camera and frame in it); see the module docstring. ``out``: the
    run folder (checkpoint, config, logs; None: a temporary one); ``resume``: continue the run there;
    ``masks``: a :class:`gausslift.track.masks.MaskSet` of the same frames for the silhouette term."""
    opts = opts or TrackOptions()
    tracker = Tracker(subject, kmap, obs, opts, masks)
    return run_tracker(tracker, out, LoopOptions(**loop_options(opts, resume=resume)))


def run_tracker(tracker: Tracker, out: str | Path | None = None, loop: LoopOptions | None = None,
        write: Callable[[TrackResult], dict] | None = None) -> TrackResult:
    """The fit: Adam on :class:`gausslift.train.loop.Loop` with ``out`` as the run folder (None: a
    temporary one), then the polish and ``write`` (the outputs) in :meth:`TrackTask.finish`.
    ``loop``: the loop's options (default :func:`loop_options` of the track's options)."""
    task = TrackTask(tracker, write)
    loop = loop or LoopOptions(**loop_options(tracker.opts))
    if out is not None:
        return Loop(task, out, loop).run()["track"]
    if loop.iters <= 0 and loop.minutes <= 0:  # no Adam step (rigid_iters = iters = 0): nothing to run
        task.start()
        return task.finish({"steps": 0, "planned_steps": 0, "seconds": 0.0, "stopped_by": "steps",
                            "nonfinite_skipped": 0, "rollbacks": 0, "events": []})["track"]
    with tempfile.TemporaryDirectory(prefix="gausslift-track-") as tmp:
        return Loop(task, Path(tmp) / "run", loop).run()["track"]
