"""``ablate(seq, out, cfg)``: the seed document's five configurations with equal budgets.

Rows: baseline, + perceptual loss (``lambda_perceptual=0.05``, VGG19), + region-adaptive
densification (``adaptive_densify_ratio=0.5``), + temporal consistency (``lambda_temporal=0.01``),
all three. Each (row, seed) is a separate ``gausslift avatar fit`` process (so its peak memory is its
own) with the same budget (``cfg.minutes`` or ``cfg.iters``) and seed ``cfg.seed + i``, then
:func:`gausslift.avatar.evaluate.evaluate_run`. Rows that need VGG19 weights which are not available
are reported as skipped, never faked.

Writes ``out/<row>/seed<i>/`` (runs; the config each was asked for in ``seed<i>.yaml`` beside it,
and with ``progress=False`` its output in ``seed<i>.log``), ``out/results.json`` (every number),
``out/table.md`` (means over seeds, ± the standard deviation when there are several, and the
difference to baseline) and ``out/plot.png`` (PSNR, Gaussians, FPS and PSNR variance per row, drawn
with OpenCV).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from gausslift.avatar.config import AvatarConfig
from gausslift.avatar.evaluate import evaluate_run
from gausslift.config import config_text, load_config, to_dict
from gausslift.errors import GaussliftError, InputError, MissingWeightsError
from gausslift.ioutil import atomic_path, atomic_write_json, atomic_write_text
from gausslift.train.loop import CHECKPOINT

ROWS = {
    "baseline": {},
    "perceptual": {"lambda_perceptual": 0.05, "use_vgg_loss": True},
    "adaptive": {"adaptive_densify_ratio": 0.5},
    "temporal": {"lambda_temporal": 0.01},
    "all": {
        "lambda_perceptual": 0.05,
        "use_vgg_loss": True,
        "adaptive_densify_ratio": 0.5,
        "lambda_temporal": 0.01,
    },
}
LABELS = {
    "baseline": "baseline",
    "perceptual": "+ perceptual loss",
    "adaptive": "+ region-adaptive densification",
    "temporal": "+ temporal consistency",
    "all": "all three",
}
# (key in the row summary, column title, format, higher is better)
COLUMNS = [
    ("nv_psnr", "NV PSNR", ".2f"),
    ("nv_ssim", "NV SSIM", ".4f"),
    ("nv_lpips", "NV LPIPS", ".4f"),
    ("re_psnr", "RE PSNR", ".2f"),
    ("re_ssim", "RE SSIM", ".4f"),
    ("re_lpips", "RE LPIPS", ".4f"),
    ("fps", "FPS", ".1f"),
    ("gaussians", "Gaussians", ".0f"),
    ("train_s", "train s", ".0f"),
    ("iters", "iters", ".0f"),
    ("peak_mb", "peak MB", ".0f"),
    ("nv_psnr_var", "NV PSNR var", ".4f"),
    ("nv_static", "NV static change", ".5f"),
    ("nv_jitter", "NV jitter px²", ".4f"),
]


def _vgg_available(weights: str) -> bool:
    from gausslift.metrics.nets import BACKBONE_FILES, find_weight_file

    canonical, patterns = BACKBONE_FILES["vgg19"]
    try:
        find_weight_file(canonical, patterns, weights or None)
        return True
    except MissingWeightsError:
        return False


def _summary(ev: dict, info: dict) -> dict:
    nv, re = ev.get("novel_view", {}), ev.get("reenactment", {})
    return {
        "nv_psnr": nv.get("psnr"),
        "nv_ssim": nv.get("ssim"),
        "nv_lpips": nv.get("lpips"),
        "re_psnr": re.get("psnr"),
        "re_ssim": re.get("ssim"),
        "re_lpips": re.get("lpips"),
        "fps": ev.get("render_fps"),
        "gaussians": ev.get("num_gaussians"),
        "train_s": info.get("train_seconds"),
        "iters": info.get("iters"),
        "peak_mb": info.get("peak_cuda_mb") or info.get("peak_rss_mb"),
        "nv_psnr_var": nv.get("psnr_var"),
        "nv_static": nv.get("static_change"),
        "nv_jitter": nv.get("jitter"),
    }


def _requested_path(run: Path) -> Path:
    """The config a run was asked for: beside its folder (the run folder is the fit's own)."""
    return run.with_name(run.name + ".yaml")


def _log_path(run: Path) -> Path:
    return run.with_name(run.name + ".log")


def _recorded(run: Path):
    """The config an earlier call asked ``run`` for (``None`` when unknown); older calls kept it in
    ``run/requested.yaml``."""
    for path in (_requested_path(run), run / "requested.yaml"):
        if path.is_file():
            try:
                return load_config(AvatarConfig, path)
            except GaussliftError:
                return None
    return None


def _same(recorded, rcfg) -> bool:
    """The same requested fit, compared as configs (a key added since, at its default, matches) except
    ``threads``, which ``jobs`` sets and which does not change what is fitted."""
    if recorded is None:
        return False
    return to_dict(replace(recorded, threads=0)) == to_dict(replace(rcfg, threads=0))


def _state(run: Path, rcfg) -> str:
    """What a rerun does with ``run``: "new" (fit), "done" (reuse), "resume" (continue an unfinished fit
    of the same config), "other" (the folder holds something else: refused, never overwritten)."""
    if not run.exists() or (run.is_dir() and not any(run.iterdir())):
        return "new"
    if not _same(_recorded(run), rcfg):
        return "other"
    try:
        if json.loads((run / "avatar.json").read_text()).get("finished", False):
            return "done"
    except (OSError, ValueError):
        pass
    return "resume" if (run / CHECKPOINT).is_file() else "other"


def _fit_cmd(seq, run: Path, resume: bool, progress: bool, threads: int = 0) -> list[str]:
    """A fresh fit with the requested config, or a resume (its saved config, this call's threads)."""
    cmd = [sys.executable, "-m", "gausslift", "avatar", "fit", str(seq), "--out", str(run)]
    if resume:
        cmd += ["--resume", "--set", f"threads={threads}"]
    else:
        cmd += ["--config", str(_requested_path(run))]
    return cmd + ([] if progress else ["--quiet"])


def _fit(seq, run: Path, text: str, resume: bool, progress: bool) -> str | None:
    """One fit in its own process (a fresh one, or ``resume`` the unfinished one in ``run``); ``None``
    on success, else what failed. Without a progress bar its output goes to ``run.log`` beside
    ``run`` (appended on a resume)."""
    run.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(_requested_path(run), text)
    cmd = _fit_cmd(seq, run, resume, progress, yaml.safe_load(text).get("threads", 0))
    if progress:
        rc = subprocess.run(cmd).returncode
    else:
        with open(_log_path(run), "a" if resume else "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=log).returncode
    where = "" if progress else f"; see {_log_path(run)}"
    return None if rc == 0 else f"{run} (exit {rc}{where})"


def _run_fits(todo: list, seq, jobs: int, progress: bool) -> None:
    """Run the ``(run, requested_yaml_text, resume)`` fits, ``jobs`` at a time (a bar only with one job)."""
    with ThreadPoolExecutor(jobs) as pool:
        failed = [f for f in pool.map(lambda rt: _fit(seq, *rt, progress and jobs == 1), todo) if f]
    if failed:
        raise RuntimeError("avatar fit failed for " + ", ".join(failed))


def _evaluate(run: Path, rcfg, eval_max_frames: int) -> dict:
    """``run/eval.json``, reused when it is newer than the fit and used the same frame limit."""
    ev_path = run / "eval.json"
    if ev_path.is_file() and ev_path.stat().st_mtime >= (run / "avatar.json").stat().st_mtime:
        ev = json.loads(ev_path.read_text())
        if ev.get("eval_max_frames") == eval_max_frames:
            return ev
    ev = evaluate_run(
        run,
        device="cpu" if rcfg.device in ("auto", "cpu") else rcfg.device,
        backend=rcfg.backend,
        lpips_weights=rcfg.perceptual_weights or None,
        max_frames=eval_max_frames,
    ) | {"eval_max_frames": eval_max_frames}
    atomic_write_json(ev_path, ev)
    return ev


def ablate(
    seq,
    out,
    cfg,
    seeds: int = 1,
    configs=None,
    eval_max_frames: int = 0,
    progress: bool = True,
    jobs: int = 1,
) -> dict:
    """Fit every (row, seed), ``jobs`` fits at a time, then evaluate them one after another.

    A rerun continues where an earlier call stopped: runs it finished with the same requested config
    are reused, unfinished ones are resumed (``avatar fit --resume``). A run folder that holds anything
    else (another config or budget, or no checkpoint) is refused before any fit starts, never
    overwritten: remove it or choose another ``out``. With ``jobs > 1`` and ``cfg.threads == 0`` each
    fit gets ``cpu_count // jobs`` threads. Evaluation (and so the render FPS) runs after all fits, one
    run at a time.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = configs or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ROWS)}")
    jobs = max(1, int(jobs))
    if jobs > 1 and cfg.threads <= 0:
        cfg = replace(cfg, threads=max(1, (os.cpu_count() or 1) // jobs))
    vgg = _vgg_available(cfg.perceptual_weights)
    results: dict = {
        "sequence": str(seq),
        "budget_minutes": cfg.minutes,
        "iters": cfg.iters,
        "seeds": seeds,
        "jobs": jobs,
        "rows": {},
    }
    plan, todo, other = {}, [], []  # row -> [(run, config)], or None when the row cannot run here
    for row in rows:
        if ROWS[row].get("use_vgg_loss") and not vgg:
            plan[row] = None
            continue
        plan[row] = []
        for i in range(seeds):
            run = out / row / f"seed{i}"
            rcfg = replace(cfg, seed=cfg.seed + i, **ROWS[row])
            plan[row].append((run, rcfg))
            state = _state(run, rcfg)
            if state == "other":
                other.append(str(run))
            elif state != "done":
                todo.append((run, config_text(rcfg), state == "resume"))
    if other:
        raise InputError(
            None,
            f"{', '.join(other)}: not a fit of this configuration and budget (or not resumable); "
            "remove it or choose another --out (finished fits are reused, unfinished ones resumed)",
        )
    _run_fits(todo, seq, jobs, progress)
    for row, runs in plan.items():
        if runs is None:
            results["rows"][row] = {"skipped": "VGG19 weights (vgg19-dcbb9e9d.pth) not found: give --weights"}
            continue
        summaries = [
            _summary(_evaluate(run, rcfg, eval_max_frames), json.loads((run / "avatar.json").read_text()))
            for run, rcfg in runs
        ]
        results["rows"][row] = {"runs": summaries}
    table = make_table(results)
    atomic_write_text(out / "table.md", table)
    atomic_write_json(out / "results.json", results)
    plot(results, out / "plot.png")
    return results | {"table_path": str(out / "table.md")}


def _stats(runs: list[dict], key: str):
    v = [r[key] for r in runs if r.get(key) is not None]
    return (float(np.mean(v)), float(np.std(v)) if len(v) > 1 else None) if v else (None, None)


def make_table(results: dict) -> str:
    rows = results["rows"]
    base = rows.get("baseline", {}).get("runs")
    head = "| configuration | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in rows.items():
        if "skipped" in r:
            lines.append(f"| {LABELS[name]} | skipped: {r['skipped']} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            m, s = _stats(r["runs"], key)
            if m is None:
                cells.append("n/a")
                continue
            cell = f"{m:{fmt}}" + (f" ± {s:{fmt}}" if s is not None else "")
            if base and name != "baseline":
                b, _ = _stats(base, key)
                if b is not None:
                    cell += f" ({m - b:+{fmt}})"
            cells.append(cell)
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    n = results["seeds"]
    budget = (
        f"{results['budget_minutes']} min" if results["budget_minutes"] else f"{results['iters']} iterations"
    )
    lines += [
        "",
        f"Means over {n} seed(s) (± std with several), differences to baseline in brackets; each run "
        f"{budget} (a wall-clock budget buys different iteration counts when the machine's load changes: "
        f"see the iters column). NV: novel views (training frames, held-out cameras); "
        f"RE: self-reenactment (held-out frames, held-out cameras). Sequence: {results['sequence']}.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Four bar panels (NV PSNR, Gaussians, FPS, NV PSNR variance), one bar per row."""
    import cv2

    panels = [
        ("nv_psnr", "NV PSNR dB"),
        ("gaussians", "Gaussians"),
        ("fps", "render FPS"),
        ("nv_psnr_var", "NV PSNR var"),
    ]
    names = [n for n, r in results["rows"].items() if "runs" in r]
    W, H = 320, 240
    img = np.full((H, W * len(panels), 3), 255, np.uint8)
    colours = [(180, 120, 60), (60, 160, 60), (60, 60, 200), (200, 120, 200), (40, 40, 40)]
    for p, (key, title) in enumerate(panels):
        x0 = p * W
        cv2.putText(img, title, (x0 + 10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        vals = [_stats(results["rows"][n]["runs"], key)[0] for n in names]
        good = [v for v in vals if v is not None]
        if not good:
            continue
        lo, hi = min(good), max(good)
        lo = lo - 0.1 * (hi - lo + 1e-9) if key == "nv_psnr" else 0.0
        for i, (n, v) in enumerate(zip(names, vals)):
            if v is None:
                continue
            h = int(170 * (v - lo) / max(hi - lo, 1e-9))
            x = x0 + 20 + i * 58
            cv2.rectangle(img, (x, 210 - h), (x + 40, 210), colours[i % len(colours)], -1)
            cv2.putText(
                img, f"{v:.3g}", (x, 205 - h), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA
            )
            cv2.putText(img, n[:8], (x - 2, 228), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), img)
