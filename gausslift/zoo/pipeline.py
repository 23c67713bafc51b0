"""``zoo(ZOO, opts)``: the small models that ``lift`` needs for mice, trained with the measured recipes in one
resumable run: data -> GS-LRM -> multi-view diffusion -> a check, each stage recorded in ``ZOO/zoo.json``.

Stages (the commands each one amounts to):

* ``data_lrm``: ``synth mouse --n 256 --size 128 --rig random:8:20:60 --val-every 16`` -> ``data/lrm``
* ``data_mvdiff``: ``synth mouse --n 2048 --size 64 --rig facelift6 --framing input --val-every 32``
  -> ``data/mvdiff``
* ``lrm``: ``lrm train data/lrm --config mouse --minutes M/3`` -> ``lrm/``
* ``mvdiff``: ``mvdiff train data/mvdiff/data_train.txt --config mouse --minutes 2M/3`` -> ``mvdiff/``
  (its ``pipeline/`` is what ``lift`` loads)
* ``check``: one held-out mouse (``synth mouse --n 1 --size 256 --rig facelift6 --framing input --seed
  90001``, a seed no training sample uses) -> ``lift`` on its front view -> ``check/`` and the mask IoU of
  the ``.ply`` at the five unseen true cameras (``gausslift.zoo.check``).

The budget ``--minutes M`` (default 180) is the training time; it is split between the two trainers as the
measured recipes' times are (GS-LRM 60 minutes, diffusion 120: ``LRM_MINUTES``, ``MVDIFF_MINUTES``), and
each trainer plans its steps from its share of the clock (``gausslift.train.loop``). Data and the check
come on top; :func:`plan` estimates them before anything starts.

A rerun with the same options continues: finished stages are skipped, a trainer that was stopped resumes
from its checkpoint (the loop's ``--resume``; the time it had spent counts against its share), and a data
stage completes the samples that are missing (synth skips complete ones). Other options are refused in one
line (``gausslift.stages.StageRun``); ``threads`` may change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json
from gausslift.stages import StageRun, clean

STATE = "zoo.json"
STAGES = ("data_lrm", "data_mvdiff", "lrm", "mvdiff", "check")
LRM_MINUTES, MVDIFF_MINUTES = 60.0, 120.0  # the measured recipes' training times (docs/benchmarks.md)
# seconds per synthetic mouse and synth process, measured by `zoo --minutes 6 --threads 1` on the 2-core
# AMD EPYC of 2026-12-06 under load 6-8: 256 mice (8 views of 128^2, random rig) in 68 s, 2048 (6 views of
# 64^2, input framing) in 226 s; the check (one 256^2 mouse, lift with 5 draws of 20 steps, scoring) 98 s
SYNTH_S_PER_MOUSE = {"lrm": 0.24, "mvdiff": 0.11}
SYNTH_START_S = 5.0  # imports and the mouse model, per synth call
CHECK_S = 100.0


@dataclass
class ZooOptions:
    minutes: float = LRM_MINUTES + MVDIFF_MINUTES  # training time, split LRM_MINUTES : MVDIFF_MINUTES
    n_lrm: int = 256  # GS-LRM training mice (8 random views each, 20-60 degrees elevation)
    n_mvdiff: int = 2048  # diffusion training mice (FaceLift's six views, input framing)
    lrm_size: int = 128
    mvdiff_size: int = 64
    seed: int = 0  # synth seed of both training sets
    check_seed: int = 90001  # the held-out mouse (synth seeds the training sets do not use)
    check_size: int = 256
    check_steps: int = 20  # lift's diffusion steps in the check (the docs' measurements: 20, guidance 1)
    check_guidance: float = 1.0
    check_draws: int = 5  # lift's default
    # tests and experiments: a fixed number of steps instead of the clock (0: the minutes' share), config
    # overrides (KEY=VALUE) after each trainer's preset, extra `lift` flags for the check
    lrm_iters: int = 0
    mvdiff_iters: int = 0
    lrm_set: list[str] = field(default_factory=list)
    mvdiff_set: list[str] = field(default_factory=list)
    lift_args: list[str] = field(default_factory=list)
    threads: int = 0  # torch threads and synth processes (0: every core); may change on a rerun

    def check(self) -> None:
        problems = []
        if self.minutes <= 0 and not (self.lrm_iters > 0 and self.mvdiff_iters > 0):
            problems.append(f"--minutes must be > 0, got {self.minutes:g}")
        if self.n_lrm < 2:
            problems.append(f"--n-lrm must be at least 2 (one held out), got {self.n_lrm}")
        if self.n_mvdiff < 1:
            problems.append(f"--n-mvdiff must be at least 1, got {self.n_mvdiff}")
        for name in ("lrm_size", "mvdiff_size", "check_size"):
            v = getattr(self, name)
            if v < 16 or v % 8:
                problems.append(f"--{name.replace('_', '-')} must be a multiple of 8, at least 16, got {v}")
        if self.check_steps < 1 or self.check_draws < 1:
            problems.append("--check-steps and --check-draws must be at least 1")
        if self.threads < 0:
            problems.append(f"--threads must be >= 0, got {self.threads}")
        if problems:
            raise InputError(None, "; ".join(problems))

    def lrm_minutes(self) -> float:
        return 0.0 if self.lrm_iters > 0 else self.minutes * LRM_MINUTES / (LRM_MINUTES + MVDIFF_MINUTES)

    def mvdiff_minutes(self) -> float:
        return (
            0.0 if self.mvdiff_iters > 0 else self.minutes * MVDIFF_MINUTES / (LRM_MINUTES + MVDIFF_MINUTES)
        )

    def processes(self) -> int:
        return self.threads if self.threads > 0 else max(1, os.cpu_count() or 1)

    def lrm_val_every(self) -> int:
        return min(16, max(2, self.n_lrm // 2))  # the recipe's 16; fewer mice still hold one out

    def mvdiff_val_every(self) -> int:
        return min(32, max(2, self.n_mvdiff // 2))


def _synth_cmd(kind: str, opts: ZooOptions) -> str:
    if kind == "lrm":
        return (
            f"synth mouse --n {opts.n_lrm} --size {opts.lrm_size} --rig random:8:20:60 --val-every "
            f"{opts.lrm_val_every()} --seed {opts.seed}"
        )
    return (
        f"synth mouse --n {opts.n_mvdiff} --size {opts.mvdiff_size} --rig facelift6 --framing input "
        f"--val-every {opts.mvdiff_val_every()} --seed {opts.seed}"
    )


def _trainer_cmd(which: str, opts: ZooOptions) -> str:
    iters = opts.lrm_iters if which == "lrm" else opts.mvdiff_iters
    mins = opts.lrm_minutes() if which == "lrm" else opts.mvdiff_minutes()
    length = f"--steps {iters}" if iters > 0 else f"--minutes {mins:g}"
    data = "data/lrm" if which == "lrm" else "data/mvdiff/data_train.txt"
    sets = "".join(f" --set {s}" for s in (opts.lrm_set if which == "lrm" else opts.mvdiff_set))
    return f"{which} train {data} --config mouse {length}{sets}"


def plan(opts: ZooOptions, run: StageRun | None = None) -> list[dict]:
    """Each stage: its command, its expected seconds (an estimate for data and the check, the budget for
    the trainers) and, with a ``run``, whether it is done and the seconds it took."""
    p = opts.processes()
    rows = [
        dict(
            stage="data_lrm",
            what=_synth_cmd("lrm", opts),
            seconds=SYNTH_START_S + SYNTH_S_PER_MOUSE["lrm"] * opts.n_lrm * (opts.lrm_size / 128) ** 2 / p,
        ),
        dict(
            stage="data_mvdiff",
            what=_synth_cmd("mvdiff", opts),
            seconds=SYNTH_START_S
            + SYNTH_S_PER_MOUSE["mvdiff"] * opts.n_mvdiff * (opts.mvdiff_size / 64) ** 2 / p,
        ),
        dict(stage="lrm", what=_trainer_cmd("lrm", opts), seconds=opts.lrm_minutes() * 60, budget=True),
        dict(
            stage="mvdiff", what=_trainer_cmd("mvdiff", opts), seconds=opts.mvdiff_minutes() * 60, budget=True
        ),
        dict(
            stage="check",
            what=f"synth 1 held-out mouse (seed {opts.check_seed}, {opts.check_size}^2), lift "
            f"--steps {opts.check_steps} --guidance {opts.check_guidance:g} --draws "
            f"{opts.check_draws}, unseen-view IoU",
            seconds=CHECK_S,
        ),
    ]
    for r in rows:
        r.setdefault("budget", False)
        if run is not None:
            r["done"] = run.done(r["stage"])
            r["spent"] = run.seconds(r["stage"])
    return rows


def _hms(s: float) -> str:
    s = int(round(s))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_plan(rows: list[dict], opts: ZooOptions) -> str:
    left = 0.0
    lines = []
    for r in rows:
        if r.get("done"):
            state = f"done ({_hms(r['spent'])})"
        else:
            expect = r["seconds"] - (r.get("spent", 0.0) if r["budget"] else 0.0)
            left += max(expect, 0.0)
            kind = "budget" if r["budget"] and r["seconds"] > 0 else "about"
            state = (
                f"{kind} {_hms(max(expect, 0.0))}" if r["seconds"] > 0 or not r["budget"] else "fixed steps"
            )
            if r.get("spent"):
                state += f" ({_hms(r['spent'])} spent before)"
        lines.append(f"  {r['stage']:<12} {state:<28} {r['what']}")
    head = (
        f"zoo: plan, training {opts.minutes:g} min (GS-LRM {opts.lrm_minutes():g}, diffusion "
        f"{opts.mvdiff_minutes():g}), {opts.processes()} thread(s); about {_hms(left)} to go:"
    )
    return "\n".join([head, *lines])


def lift_command(out: Path, opts: ZooOptions) -> str:
    """The ``gausslift lift`` command that uses the zoo's models (with the check's sampler settings)."""
    from shlex import quote

    extra = (
        ""
        if (opts.check_steps, opts.check_guidance) == (50, 3.0)
        else f" --steps {opts.check_steps} --guidance {opts.check_guidance:g}"
    )
    return (
        f"gausslift lift IMAGE --mvdiff {quote(str(out / 'mvdiff'))} --lrm {quote(str(out / 'lrm'))} "
        f"--out OUT{extra}"
    )


# ----------------------------------------------------------------------------------------------- stages
def _synth(kind: str, out: Path, opts: ZooOptions, quiet: bool) -> dict:
    from gausslift.synth import SynthOptions, generate

    if kind == "lrm":
        so = SynthOptions(
            kind="mouse",
            n=opts.n_lrm,
            rig="random:8:20:60",
            size=opts.lrm_size,
            seed=opts.seed,
            workers=opts.processes(),
            val_every=opts.lrm_val_every(),
        )
    else:
        so = SynthOptions(
            kind="mouse",
            n=opts.n_mvdiff,
            rig="facelift6",
            size=opts.mvdiff_size,
            framing="input",
            seed=opts.seed,
            workers=opts.processes(),
            val_every=opts.mvdiff_val_every(),
        )
    r = generate(so, out, progress_bar=not quiet)  # complete samples of an earlier attempt are kept
    return {"samples": r["samples"], "views": r["views"]}


def _workers(opts: ZooOptions) -> list[str]:
    # one thread: the DataLoader's processes would only compete with the step for it (the batches are the
    # same either way: a pure function of seed and step)
    return ["workers=0"] if opts.threads == 1 else []


def _train_lrm(run: StageRun, opts: ZooOptions, quiet: bool) -> dict:
    from gausslift.config import apply_overrides
    from gausslift.lrm.config import check_config, mouse_preset
    from gausslift.lrm.train import CKPT, train

    dst = run.out / "lrm"
    resume = (dst / CKPT).is_file()
    if not resume:
        clean(dst)
    cfg = apply_overrides(
        mouse_preset(), [f"model.image_size={opts.lrm_size}", *_workers(opts), *opts.lrm_set]
    )
    check_config(cfg)
    train(
        cfg,
        [str(run.out / "data" / "lrm")],
        dst,
        steps=opts.lrm_iters,
        minutes=opts.lrm_minutes(),
        resume=resume,
        device="auto",
        progress_bar=not quiet,
    )
    return {"resumed": resume, **_last_log(dst)}


def _train_mvdiff(run: StageRun, opts: ZooOptions, quiet: bool) -> dict:
    from gausslift.config import apply_overrides
    from gausslift.mvdiff.train import mouse_preset, train
    from gausslift.train.loop import CHECKPOINT, REPLAN_AT, LoopOptions

    dst = run.out / "mvdiff"
    resume = (dst / CHECKPOINT).is_file()
    if not resume:
        clean(dst)
    cfg = apply_overrides(mouse_preset(), [f"size={opts.mvdiff_size}", *_workers(opts), *opts.mvdiff_set])
    cfg.data = [str(run.out / "data" / "mvdiff" / "data_train.txt")]
    lopts = LoopOptions(
        iters=opts.mvdiff_iters,
        minutes=opts.mvdiff_minutes(),
        resume=resume,
        quiet=quiet,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        replan_at=REPLAN_AT,
    )
    res = train(cfg, dst, lopts, device="auto")
    return {
        "resumed": resume,
        "steps": res.get("steps"),
        "stopped_by": res.get("stopped_by"),
        **_last_log(dst),
    }


def _last_log(run: Path) -> dict:
    """The step count and wall time of a run from its log (``log.jsonl``: the last row)."""
    p = run / "log.jsonl"
    if not p.is_file():
        return {}
    last = None
    for line in p.read_text().splitlines():
        if line.strip():
            last = line
    if last is None:
        return {}
    row = json.loads(last)
    return {k: row[k] for k in ("step", "elapsed_s") if k in row}


def _gausslift_env() -> dict:
    """The environment for a ``python -m gausslift`` child: this process's gausslift first on the path."""
    import gausslift

    root = str(Path(gausslift.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _check(run: StageRun, opts: ZooOptions, quiet: bool) -> dict:
    from gausslift.synth import SynthOptions, generate
    from gausslift.zoo.check import truth_iou

    data, dst = run.out / "data" / "check", run.out / "check"
    clean(dst)
    generate(
        SynthOptions(
            kind="mouse",
            n=1,
            rig="facelift6",
            size=opts.check_size,
            framing="input",
            seed=opts.check_seed,
            workers=1,
            val_every=1,
        ),
        data,
        progress_bar=False,
    )
    sample = data / "mouse_000000"
    cmd = [
        sys.executable,
        "-m",
        "gausslift",
        "lift",
        str(sample),
        "--view",
        "cam_000",
        "--mvdiff",
        str(run.out / "mvdiff"),
        "--lrm",
        str(run.out / "lrm"),
        "--out",
        str(dst),
        "--steps",
        str(opts.check_steps),
        "--guidance",
        f"{opts.check_guidance:g}",
        "--draws",
        str(opts.check_draws),
        "--threads",
        str(opts.threads),
        *opts.lift_args,
    ]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=_gausslift_env(), stdout=subprocess.DEVNULL if quiet else None).returncode
    if rc != 0:
        raise InputError(None, f"the check's lift failed (exit {rc}): {' '.join(cmd[1:])}")
    lift_s = time.perf_counter() - t0
    iou = truth_iou(sample, dst, res=min(128, opts.check_size))
    rep = {"sample": str(sample), "lift_seconds": round(lift_s, 2), "command": cmd[1:], **iou}
    atomic_write_json(dst / "check.json", rep, indent=1)
    u, m = iou["unseen_mean"], iou["mean"]
    return {
        "unseen_iou": round(u["chain"], 4),
        "six_view_iou": round(m["chain"], 4),
        "generated_unseen_iou": round(u["generated"], 4),
        "copy_input_unseen_iou": round(u["copy_input"], 4),
        "lift_seconds": round(lift_s, 2),
    }


def zoo(out: str | Path, opts: ZooOptions | None = None, quiet: bool = False, dry_run: bool = False) -> dict:
    """Run (or continue) every stage in ``out``; returns the state (``figures``: the check's IoU)."""
    opts = opts or ZooOptions()
    opts.check()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file: --out must be the zoo folder (new, or a zoo to continue)")
    if dry_run:
        run = None
        if (out / STATE).is_file():
            run = StageRun(out, STATE, "zoo", {}, asdict(opts), ignore=("threads",))
        print(format_plan(plan(opts, run), opts), file=sys.stderr, flush=True)
        return run.state if run is not None else {}
    import importlib

    importlib.import_module("diffusers")  # the diffusion extra, needed from the mvdiff stage on: fail first
    run = StageRun(out, STATE, "zoo", {}, asdict(opts), ignore=("threads",))
    if not quiet:
        print(format_plan(plan(opts, run), opts), file=sys.stderr, flush=True)
    if opts.threads > 0:
        from gausslift.train.device import set_threads

        set_threads(opts.threads)

    def say(msg: str) -> None:
        if not quiet:
            print(f"zoo: {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    run.stage("data_lrm", lambda: _synth("lrm", out / "data" / "lrm", opts, quiet), say)
    run.stage("data_mvdiff", lambda: _synth("mvdiff", out / "data" / "mvdiff", opts, quiet), say)
    run.stage("lrm", lambda: _train_lrm(run, opts, quiet), say)
    run.stage("mvdiff", lambda: _train_mvdiff(run, opts, quiet), say)
    run.stage("check", lambda: _check(run, opts, quiet), say)
    c = run.state["stages"]["check"]
    run.state["figures"] = {
        k: c[k]
        for k in ("unseen_iou", "six_view_iou", "generated_unseen_iou", "copy_input_unseen_iou")
        if k in c
    }
    run.state["wall_seconds_this_call"] = round(time.perf_counter() - t_start, 2)
    run.state["total_stage_seconds"] = round(run.seconds(), 2)
    run.state["lift_command"] = lift_command(out, opts)
    run.save()
    return run.state
