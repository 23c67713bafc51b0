"""Time to quality of per-scene fits: the fit before issue 26 against the new default, in the same run.

For every scene and repetition the configurations (``--configs``, default ``old new``) are fitted with a
``minutes`` budget (``gausslift.fit.trainer.Trainer`` on the one loop, as ``gausslift fit --minutes``),
each in its own subprocess with ``--threads`` threads; they run side by side so that they share the
machine's load (``--sequential``: one after the other). During a fit the parameters are
written to disk at fixed wall-clock points (every ``--eval-every`` seconds of the fit's own clock and
at its end); the time the writes take is given back to the fit's budget, so the fit is not slowed
down by its own measurement. After the fit, in the same subprocess, each saved state is scored on the
held-out views (``--split``: ``test`` for the figures, ``val`` to choose settings: lego_200's own val
split, or for the heads every ``--val-every``-th training view, which is then left out of the fit and is apart
from the test views), so evaluation time never counts.

Reported per fit: the held-out PSNR at each point, the final PSNR, steps, Gaussians, and the peak RSS
of the fitting process before evaluation (``ru_maxrss``). Per scene: the medians over repetitions, and
the time each configuration needs to reach the reference configuration's (the first in ``--configs``)
final PSNR (linear interpolation between points; ``-`` when never reached), and its ratio to the
reference's own time. Writes ``OUT/results.json``, ``OUT/table.md`` and an SVG plot (no matplotlib:
the SVG is written here).

    python benchmarks/fit_speed.py --out /tmp/fs_bench                                  # 3 scenes, full
    python benchmarks/fit_speed.py --scenes lego --minutes 3 --split val --reps 1 --out /tmp/q
    python benchmarks/fit_speed.py --configs old mcmc60k=strategy.kind=mcmc,strategy.cap_max=60000 ...
    python benchmarks/fit_speed.py --scenes demo --reps 5 --threads 1 --out /tmp/d   # the demo's fit
    python benchmarks/fit_speed.py --configs new "box=env:GAUSSLIFT_TIGHT_TILES=0" ...   # an env variable

The ``demo`` scene is ``gausslift demo``'s fit: the 128^2 sample shipped in the package, 1.5 minutes,
``--holdout-every 4`` and the demo's own ``--set`` flags, so it needs no ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gausslift.cli.demo import FIT_SETS as DEMO_FIT_SETS  # noqa: E402

SCENES = {  # name: (data folder under --data, minutes (today's acceptance budget), holdout_every)
    "lego": ("lego_200", 15.0, 0),
    "facelift": ("facelift_head/gslrm_sample_000", 10.0, 4),
    "statue": ("ethiopian_head", 10.0, 8),
    # `gausslift demo`'s fit: the bundled 128^2 sample (an absolute folder), its budget and its flags
    "demo": (str(ROOT / "gausslift" / "data" / "facelift_head_128"), 1.5, 4),
}
SCENE_SETS = {"demo": list(DEMO_FIT_SETS)}
# named configurations: overrides of FitConfig's defaults. "old" is the behaviour before issue 26 (its
# baseline: the default strategy, planned once); "new" is the fit's default. A scene's own flags come first
# (the demo's fit sets strategy.kind=default, so its "new" is the default kind with the predicted plan)
CONFIGS = {"old": ["strategy.kind=default", "plan=once"], "new": []}


def parse_config(spec: str) -> tuple[str, list[str]]:
    if "=" not in spec:
        if spec not in CONFIGS:
            raise SystemExit(f"unknown config {spec!r} (known: {', '.join(CONFIGS)}; or NAME=k=v,k=v)")
        return spec, CONFIGS[spec]
    name, sets = spec.split("=", 1)
    return name, [s for s in sets.split(",") if s]


def split_env(sets: list[str]) -> tuple[dict[str, str], list[str]]:
    """({NAME: VALUE} of the ``env:NAME=VALUE`` items, the other items in order)."""
    env = dict(s[4:].split("=", 1) for s in sets if s.startswith("env:"))
    return env, [s for s in sets if not s.startswith("env:")]


def val_from_train(scene, k: int):
    """Mark every k-th training view (in name order, from the second) 'val': a validation split apart
    from the held-out test views, for captures without one (the heads); those views are not fitted."""
    from dataclasses import replace

    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    train.sort(key=lambda i: scene.views[i].name)
    val = {train[j] for j in range(1, len(train), k)}
    return scene.subset([replace(v, split="val") if i in val else v for i, v in enumerate(scene.views)])


# -- the worker: one fit in this process --------------------------------------------------------------
def worker(a) -> None:
    import torch

    from gausslift.cli.fit import load_scene, split_views
    from gausslift.config import apply_overrides
    from gausslift.fit.config import FitConfig
    from gausslift.fit.evaluate import evaluate
    from gausslift.fit.trainer import Trainer
    from gausslift.train.device import set_threads

    set_threads(a.threads)
    out = Path(a.run)
    scene = load_scene(a.data_path, None, a.holdout_every)
    if a.split == "val" and not any(v.split == "val" for v in scene.views):
        scene = val_from_train(scene, a.val_every)
    cfg = apply_overrides(FitConfig(), [f"minutes={a.minutes}", f"holdout_every={a.holdout_every}",
                                        "device=cpu", "backend=cpu", *a.set])  # fmt: skip
    points = [t for t in range(int(a.eval_every), int(a.minutes * 60), int(a.eval_every))]
    snaps: list[dict] = []

    class Timed(Trainer):
        def after_step(self, step, log):
            b = self.loop.budget
            if len(snaps) < len(points) and b.elapsed() >= points[len(snaps)]:
                t0, el = time.perf_counter(), b.elapsed()
                path = out / f"snap_{len(snaps):03d}.pt"
                torch.save({k: v.detach().clone() for k, v in self.params.items()}, path)
                snaps.append({"seconds": round(el, 2), "step": step, "gaussians": len(self.params["means"]),
                              "path": str(path)})  # fmt: skip
                b.t0 += time.perf_counter() - t0  # the write is not the fit's time

    t = Timed(scene, cfg, out / "run")
    res = t.fit(progress=False)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before any evaluation
    final = {"seconds": res["seconds"], "step": res["steps"], "gaussians": len(t.params["means"]),
             "params": {k: v.detach() for k, v in t.params.items()}}  # fmt: skip
    views = split_views(scene, a.split)
    curve = []
    for s in snaps + [final]:
        params = s.pop("params", None)
        if params is None:
            params = torch.load(s.pop("path"), weights_only=True)
        _, summ = evaluate(params, views, cfg.background, backend="cpu", device="cpu")
        curve.append(dict(s, psnr=round(summ["psnr"], 3)))
    result = {"curve": curve, "final_psnr": curve[-1]["psnr"], "steps": res["steps"],
              "planned_steps": res["planned_steps"], "gaussians": final["gaussians"],
              "peak_rss_mb": round(rss_mb, 1), "train_seconds": res["seconds"], "split": a.split,
              "views": len(views), "events": res["events"]}  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=1))
    for p in out.glob("snap_*.pt"):
        p.unlink()


# -- the driver ---------------------------------------------------------------------------------------
def time_to(curve: list[dict], target: float) -> float | None:
    """First time (s) the curve reaches ``target`` (linear between points; the curve starts at 0 s)."""
    prev_t, prev_p = 0.0, None
    for c in curve:
        if c["psnr"] >= target:
            if prev_p is None or c["psnr"] == prev_p:
                return c["seconds"]
            f = (target - prev_p) / (c["psnr"] - prev_p)
            return prev_t + f * (c["seconds"] - prev_t)
        prev_t, prev_p = c["seconds"], c["psnr"]
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def launch(a, scene: str, cfg_name: str, sets: list[str], rep: int) -> tuple[subprocess.Popen, Path]:
    folder, minutes, hold = SCENES[scene]
    minutes = a.minutes if a.minutes else minutes * a.scale
    run = Path(a.out) / f"{scene}_{cfg_name}_r{rep}"
    run.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", "--run", str(run), "--data-path", str(Path(a.data) / folder),
           "--minutes", str(minutes), "--holdout-every", str(hold), "--threads", str(a.threads),
           "--eval-every", str(a.eval_every), "--split", a.split,
           "--val-every", str(a.val_every)]  # fmt: skip
    extra, sets = split_env(SCENE_SETS.get(scene, []) + sets)  # the scene's own flags, then the config's
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    log = open(run / "worker.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), run


def load_avg() -> float:
    return os.getloadavg()[0]


def driver(a) -> None:
    configs = [parse_config(c) for c in a.configs]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    if res_path.is_file() and not a.resume:
        raise SystemExit(f"{res_path} holds the fits of an earlier run: add --resume to continue it (the "
                         f"table then marks the scenes whose fits come from more than one run), or choose "
                         f"another --out")  # fmt: skip
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    invocation = time.strftime("%Y-%m-%dT%H:%M:%S")
    for rep in range(a.reps):
        for scene in a.scenes:
            jobs, loads = [], []
            todo = [(n, s) for n, s in configs if f"{n}_r{rep}" not in results.get(scene, {})]
            for name, sets in todo:
                done = Path(a.out) / f"{scene}_{name}_r{rep}" / "result.json"
                if done.is_file():  # a worker that finished after its driver was stopped
                    jobs.append((name, sets, None, done.parent))
                    continue
                p, run = launch(a, scene, name, sets, rep)
                jobs.append((name, sets, p, run))
                if not a.concurrent:
                    while p.poll() is None:
                        loads.append(load_avg())
                        time.sleep(10)
            while any(p is not None and p.poll() is None for _, _, p, _ in jobs):
                loads.append(load_avg())
                time.sleep(10)
            for name, sets, p, run in jobs:
                if p is not None and p.returncode != 0:
                    print(f"{scene} {name} rep {rep}: worker failed (see {run}/worker.log)", flush=True)
                    continue
                r = json.loads((run / "result.json").read_text())
                r.update(sets=sets, load_avg_mean=round(statistics.mean(loads), 2) if loads else None,
                         threads=a.threads, concurrent=a.concurrent, invocation=invocation)  # fmt: skip
                results.setdefault(scene, {})[f"{name}_r{rep}"] = r
                print(f"{scene} {name} r{rep}: {r['final_psnr']:.2f} dB, {r['steps']} steps, "
                      f"{r['gaussians']} G, {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
            res_path.write_text(json.dumps(results, indent=1))
    summary = summarize(results, [n for n, _ in configs])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(table(summary, a))
    print(table(summary, a))
    (out / "fit_speed.svg").write_text(svg(summary))


def summarize(results: dict, names: list[str]) -> dict:
    out = {}
    ref = names[0]
    for scene, runs in results.items():
        s = {}
        for n in names:
            reps = [r for k, r in runs.items() if k.rsplit("_r", 1)[0] == n]
            if not reps:
                continue
            npts = min(len(r["curve"]) for r in reps)
            curve = [{"seconds": med([r["curve"][i]["seconds"] for r in reps]),
                      "psnr": med([r["curve"][i]["psnr"] for r in reps])} for i in range(npts)]  # fmt: skip
            s[n] = {"reps": len(reps), "invocations": sorted({r.get("invocation", "?") for r in reps}),
                    "final_psnr": med([r["final_psnr"] for r in reps]),
                    "final_psnrs": [r["final_psnr"] for r in reps], "steps": med([r["steps"] for r in reps]),
                    "gaussians": med([r["gaussians"] for r in reps]),
                    "peak_rss_mb": med([r["peak_rss_mb"] for r in reps]),
                    "seconds": med([r["train_seconds"] for r in reps]), "curve": curve,
                    "load": med([r.get("load_avg_mean") for r in reps]), "split": reps[0]["split"],
                    "threads": reps[0].get("threads")}  # fmt: skip
        if ref in s:
            target = s[ref]["final_psnr"]
            t_ref = time_to(s[ref]["curve"], target)
            for n, v in s.items():
                tt = [time_to(r["curve"], target) for k, r in runs.items() if k.rsplit("_r", 1)[0] == n]
                v["target_psnr"] = target
                v["time_to_target"] = med(tt) if all(x is not None for x in tt) else None
                v["ratio"] = round(v["time_to_target"] / t_ref, 3) if v["time_to_target"] and t_ref else None
            # the same-run ratio: per repetition, the time to the reference's final PSNR of that repetition
            # over the reference's own time to it; then the median over repetitions
            for n, v in s.items():
                per = []
                for k, r in runs.items():
                    name, rep = k.rsplit("_r", 1)
                    rr = runs.get(f"{ref}_r{rep}")
                    if name != n or rr is None:
                        continue
                    t_own, t = time_to(rr["curve"], rr["final_psnr"]), time_to(r["curve"], rr["final_psnr"])
                    per.append(round(t / t_own, 3) if t is not None and t_own else None)
                v["rep_ratios"] = per
                v["rep_ratio_median"] = med(per) if per and all(x is not None for x in per) else None
        out[scene] = s
    return out


def table(summary: dict, a) -> str:
    lines = ["| scene | config | reps | held-out PSNR (final) | steps | Gaussians | peak RSS | "
             "time to the first config's median final | ratio | same-run ratios (median) | mean load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for scene, s in summary.items():
        for n, v in s.items():
            tt = f"{v['time_to_target']:.0f} s" if v.get("time_to_target") else "not reached"
            ps = ", ".join(f"{x:.2f}" for x in v["final_psnrs"])
            load = f"{v['load']:.1f}" if v["load"] is not None else "-"
            rr = ", ".join("-" if x is None else f"{x:.2f}" for x in v.get("rep_ratios", []))
            rm = v.get("rep_ratio_median")
            rr = f"{rr} ({rm:.2f})" if rm is not None else rr or "-"
            lines.append(f"| {scene} | {n} | {v['reps']} | {v['final_psnr']:.2f} dB ({ps}) | "
                         f"{v['steps']:.0f} | {v['gaussians']:.0f} | {v['peak_rss_mb']:.0f} MB | {tt} | "
                         f"{v.get('ratio') or '-'} | {rr} | {load} |")  # fmt: skip
    mixed = [scene for scene, s in summary.items()
             if len({i for v in s.values() for i in v.get("invocations", [])}) > 1]
    if mixed:
        lines.append("")
        lines.append(f"Not one run: the fits of {', '.join(mixed)} come from more than one invocation "
                     f"(--resume), so their ratios compare fits made at different times.")  # fmt: skip
    lines.append("")
    lines.append("PSNR (dB) at the wall-clock points (median over repetitions; evaluation excluded):")
    for scene, s in summary.items():
        for n, v in s.items():
            pts = " ".join(f"{c['seconds']:.0f}s:{c['psnr']:.2f}" for c in v["curve"])
            lines.append(f"- {scene} {n}: {pts}")
    return "\n".join(lines) + "\n"


COLORS = ["#888888", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]


def svg(summary: dict) -> str:
    """One panel per scene: held-out PSNR against seconds, one polyline per configuration."""
    pw, ph, m = 360, 260, 48
    scenes = list(summary)
    W = pw * max(1, len(scenes))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{ph + 30}" '
             'font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']  # fmt: skip
    for i, scene in enumerate(scenes):
        s = summary[scene]
        x0 = i * pw
        pts = [c for v in s.values() for c in v["curve"]]
        if not pts:
            continue
        tmax = max(c["seconds"] for c in pts)
        lo = min(c["psnr"] for c in pts)
        hi = max(c["psnr"] for c in pts)
        lo = max(lo, hi - 8.0)  # the interesting range
        lo, hi = float(int(lo)), float(int(hi) + 1)

        def X(t, x0=x0, tmax=tmax):
            return x0 + m + (pw - m - 12) * t / tmax

        def Y(p, lo=lo, hi=hi):
            return 20 + (ph - 20 - m) * (1 - (min(max(p, lo), hi) - lo) / (hi - lo))

        parts.append(f'<text x="{x0 + pw / 2}" y="14" text-anchor="middle" font-weight="bold">{scene}</text>')
        parts.append(f'<line x1="{X(0)}" y1="{Y(lo)}" x2="{X(tmax)}" y2="{Y(lo)}" stroke="black"/>')
        parts.append(f'<line x1="{X(0)}" y1="{Y(lo)}" x2="{X(0)}" y2="{Y(hi)}" stroke="black"/>')
        for p in range(int(lo), int(hi) + 1):
            parts.append(f'<text x="{X(0) - 4}" y="{Y(p) + 4}" text-anchor="end">{p}</text>')
            parts.append(f'<line x1="{X(0)}" y1="{Y(p)}" x2="{X(tmax)}" y2="{Y(p)}" stroke="#eee"/>')
        step = 60 if tmax <= 900 else 120
        for t in range(0, int(tmax) + 1, step):
            parts.append(f'<text x="{X(t)}" y="{Y(lo) + 14}" text-anchor="middle">{t // 60}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{ph - 8}" text-anchor="middle">'
                     "minutes (held-out PSNR, dB)</text>")
        for j, (n, v) in enumerate(s.items()):
            col = COLORS[j % len(COLORS)]
            poly = " ".join(f"{X(c['seconds']):.1f},{Y(c['psnr']):.1f}" for c in v["curve"])
            parts.append(f'<polyline points="{poly}" fill="none" stroke="{col}" stroke-width="2"/>')
            parts.append(f'<text x="{X(tmax) - 4}" y="{Y(lo) - 8 - 14 * j}" text-anchor="end" fill="{col}">'
                         f'{n}: {v["final_psnr"]:.2f} dB</text>')  # fmt: skip
            if v.get("target_psnr") and j == 0:
                yt = Y(v["target_psnr"])
                parts.append(f'<line x1="{X(0)}" y1="{yt}" x2="{X(tmax)}" y2="{yt}" stroke="{col}" '
                             'stroke-dasharray="4 3"/>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/fit_speed")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    p.add_argument("--configs", nargs="+", default=["old", "new"],
                   help="names (old, new) or NAME=key=value,key=value (an item env:VAR=VALUE sets an "
                        "environment variable of the fit); the first is the reference")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="one budget for every scene (default: per scene)")  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the per-scene budgets")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=float, default=60.0)
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--val-every", type=int, default=4,
                   help="--split val on a capture without a val split: every K-th training view")  # fmt: skip
    p.add_argument("--sequential", dest="concurrent", action="store_false", help="one fit at a time")
    p.add_argument("--summarize", action="store_true", help="only rebuild the table and plot from OUT")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run in OUT (its stored fits are kept; the table says so)")
    # worker
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--data-path", help=argparse.SUPPRESS)
    p.add_argument("--holdout-every", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        a.minutes = float(a.minutes)
        return worker(a)
    if a.summarize:
        results = json.loads((Path(a.out) / "results.json").read_text())
        summary = summarize(results, [parse_config(c)[0] for c in a.configs])
        (Path(a.out) / "table.md").write_text(table(summary, a))
        (Path(a.out) / "fit_speed.svg").write_text(svg(summary))
        print(table(summary, a))
        return None
    driver(a)


if __name__ == "__main__":
    main()
