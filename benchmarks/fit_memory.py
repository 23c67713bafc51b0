"""Peak memory of a fit, for the default strategy before issue 26 (``old``) and today's default (``new``),
on lego_200, the FaceLift head sample and the head statue, with the views kept as float32 (``before``)
and as the fit keeps them today (``compact``: 8-bit views as uint8, 16-bit ones as uint16).

glibc's malloc keeps freed large temporaries in the heap once its dynamic mmap threshold has risen, which
adds up to a few hundred MB of noise to a fit's peak; ``MALLOC_MMAP_THRESHOLD_=1048576`` in the
environment (glibc's own tunable, inherited by the fits) fixes the threshold and shows the views' share
(docs/fit_speed.md: it also slowed a fit down, so gausslift does not set it).

Each fit runs a fixed number of steps in its own process (``ru_maxrss`` of that process, before any
evaluation), so the numbers do not depend on the machine's load.

    python benchmarks/fit_memory.py --steps 600 --out /tmp/fit_memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.fit_speed import SCENES as SPEED_SCENES  # noqa: E402  (folders, holdout_every)

SCENES = ("lego", "facelift", "statue")  # the captures under --data
KINDS = {"old": "default", "new": "mcmc"}
SETUPS = ("before", "compact")


def worker(a) -> None:
    import gausslift.fit.trainer as T
    from gausslift.cli.fit import load_scene
    from gausslift.config import apply_overrides
    from gausslift.fit.config import FitConfig
    from gausslift.train.device import set_threads

    set_threads(a.threads)
    if a.storage == "before":  # the views as before: float32 whatever the file's depth
        load = T.load_views
        T.load_views = lambda views, downscale=1, compact=False: load(views, downscale, compact=False)
    folder, _, hold = SPEED_SCENES[a.scene]
    scene = load_scene(str(Path(a.data) / folder), None, hold)
    sets = [f"iters={a.steps}", f"holdout_every={hold}", "device=cpu", "backend=cpu"]
    sets.append(f"strategy.kind={KINDS[a.kind]}")
    cfg = apply_overrides(FitConfig(), sets)
    run = Path(a.out) / f"{a.scene}_{a.kind}_{a.storage}"
    if run.is_dir():  # this benchmark's own fit of an earlier invocation: a fit needs a fresh folder
        shutil.rmtree(run)
    t = T.Trainer(scene, cfg, run)
    res = t.fit(progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"scene": a.scene, "kind": a.kind, "storage": a.storage, "steps": res["steps"],
                      "gaussians": len(t.params["means"]), "peak_rss_mb": round(rss, 1)}))  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/fit_memory")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="fits at a time")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--storage", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    missing = [s for s in a.scenes if not (Path(a.data) / SPEED_SCENES[s][0]).is_dir()]
    if missing:
        print(f"skipped: no {', '.join(missing)} under {a.data} (the shared data folder)")
        a.scenes = [s for s in a.scenes if s not in missing]
    todo = [(s, k, st) for s in a.scenes for k in KINDS for st in a.setups]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows, running = [], []
    while todo or running:
        while todo and len(running) < a.jobs:
            s, k, st = todo.pop(0)
            cmd = [sys.executable, __file__, "--worker", "--scene", s, "--kind", k, "--storage", st]
            cmd += ["--out", a.out, "--data", a.data, "--steps", str(a.steps), "--threads", str(a.threads)]
            running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
        p0 = running.pop(0)
        out, _ = p0.communicate()
        lines = [x for x in out.splitlines() if x.startswith("{")]
        if p0.returncode != 0 or not lines:
            print(f"a fit failed: {' '.join(p0.args[3:9])}")
            continue
        rows.append(json.loads(lines[-1]))
        print(lines[-1], flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "memory.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(memory_table(rows, a.scenes, a.setups)))


def memory_table(rows: list[dict], scenes: list[str], setups: list[str]) -> list[str]:
    """Markdown rows of peak RSS, with ratios against this run's references: the first setup (in each
    row) and the old strategy (last column)."""
    lines = ["| scene | strategy | " + " | ".join(setups) + " | Gaussians | new / old |",
             "|---|---|" + "---|" * (len(setups) + 2)]  # fmt: skip
    for s in scenes:
        peak = {(x["kind"], x["storage"]): x["peak_rss_mb"] for x in rows if x["scene"] == s}
        for k in KINDS:
            r = {x["storage"]: x for x in rows if x["scene"] == s and x["kind"] == k}
            if not r:
                continue
            ref = r.get(setups[0])
            cells = " | ".join(
                f"{r[st]['peak_rss_mb']:.0f} MB" + (f" ({r[st]['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x)"
                                                    if ref and st != setups[0] else "")
                if st in r else "-" for st in setups)  # fmt: skip
            vs_old = ", ".join(f"{peak[(k, st)] / peak[('old', st)]:.2f}" for st in setups
                               if k != "old" and (k, st) in peak and ("old", st) in peak)  # fmt: skip
            lines.append(f"| {s} | {k} | {cells} | {next(iter(r.values()))['gaussians']} | {vs_old or '-'} |")
    return lines


if __name__ == "__main__":
    main()
