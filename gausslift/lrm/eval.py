"""``gausslift lrm eval``: GS-LRM on held-out subjects' novel views, against the seed's targets and a
per-scene ``gausslift fit`` of the same input views.

Per sample the inputs are the run's fixed choice (``data.input_views`` or ``num_input_views`` evenly
spaced in file order, as validation during training), the targets are the other views, composited over
the run's background (white for ``random``) at the run's resolution. Per target view: PSNR, SSIM
(11x11 Gaussian window), LPIPS-VGG (when weights are given) and the IoU of the rendered alpha (>= 0.5)
against the mask (>= 0.5). Means over all views are checked against :data:`TARGETS`.

The comparison row fits each subject's input views with ``gausslift.fit.Trainer`` (CPU or gsplat,
white background, the fit's defaults) for ``fit_seconds`` and scores it on the same target views.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gausslift.lrm.config import LRMTrainConfig, image_size
from gausslift.lrm.data import find_samples, validation_batches

TARGETS = {"psnr": (">", 25.0), "ssim": (">", 0.9), "lpips": ("<", 0.15), "iou": (">", 0.9)}


def _passes(metric: str, value) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    op, t = TARGETS[metric]
    return value > t if op == ">" else value < t


def _scores(rgb, alpha, target, mask, lpips):
    """Per-view dict of metrics for rgb [V,H,W,3], alpha [V,H,W] against target, mask."""
    from gausslift.metrics import mask_iou, psnr, ssim

    out = {"psnr": psnr(rgb, target), "ssim": ssim(rgb, target), "iou": mask_iou(alpha, mask)}
    if lpips is not None:
        out["lpips"] = lpips(rgb, target)
    return [{k: float(v[i]) for k, v in out.items()} for i in range(rgb.shape[0])]


def run_config(run) -> LRMTrainConfig:
    """The run's training config: its ``config.yaml``, else the one stored in our checkpoint file (a
    ``checkpoint.pt`` copied out of its run), else the defaults (FaceLift's checkpoint; the model's own
    size replaces the preset's)."""
    from gausslift.config import from_dict, load_config
    from gausslift.lrm.train import _read_run, run_checkpoint

    p = Path(run)
    folder = p if p.is_dir() else p.parent
    if (folder / "config.yaml").is_file():
        return load_config(LRMTrainConfig, folder / "config.yaml")
    ours = run_checkpoint(p)  # only a bare checkpoint.pt gets here, so it is read a second time
    return from_dict(LRMTrainConfig, _read_run(ours)["config"]) if ours is not None else LRMTrainConfig()


def fit_baseline(folder: Path, inputs: list[str], batch, seconds: float, backend: str, device: str, lpips):
    """Fit the input views of ``folder`` for ``seconds``; scores on the batch's target views."""
    from gausslift.fit.config import FitConfig
    from gausslift.fit.evaluate import render_cameras
    from gausslift.fit.trainer import Trainer
    from gausslift.io import read_scene

    scene = read_scene(folder)
    scene.views = [replace(v, split="train") for v in scene.views if v.name in inputs]
    H, W = batch.images.shape[2:4]
    down = max(1, round(scene.views[0].camera.width / W))
    cfg = FitConfig(minutes=seconds / 60.0, warmup_seconds=min(20.0, 0.3 * seconds), background="white",
                    backend=backend, device=device, downscale=down, checkpoint_minutes=1e9)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(scene, cfg, tmp)
        t0 = time.perf_counter()
        tr.fit(progress=False)
        took = time.perf_counter() - t0
        params = {k: v.detach() for k, v in tr.params.items()}
    bg = torch.ones(3)
    views = list(render_cameras(params, batch.viewmats[0].numpy(), batch.Ks[0].numpy(), W, H, bg, backend))
    rgb = torch.stack([r for r, _ in views])
    alpha = torch.stack([a[..., 0] for _, a in views])
    return _scores(rgb, alpha, batch.images[0], batch.masks[0], lpips), took


@torch.no_grad()
def evaluate(run, data, *, limit: int = 0, fit_seconds: float = 0.0, lpips_weights: str | None = None,
             device: str = "auto", backend: str = "auto") -> dict:  # fmt: skip
    """Score the model of ``run`` (run folder or checkpoint file) on the held-out samples ``data``
    (DATA arguments; folders use their ``data_val.txt``); ``limit`` > 0 takes the first samples only."""
    from gausslift.lrm.train import load_model, render_batch
    from gausslift.train.device import gsplat_installed, resolve_device

    dev = resolve_device(device, None if backend == "auto" else backend)
    if backend == "auto":
        backend = "cpu" if dev.type == "cpu" else ("gsplat" if gsplat_installed() else "torch")
    model, info = load_model(run, dev)
    cfg = run_config(run)
    cfg = replace(cfg, model=model.cfg)
    samples = find_samples(data, split="val")[: limit or None]
    lpips = None
    if lpips_weights:
        from gausslift.metrics import LPIPS

        lpips = LPIPS("vgg", weights=lpips_weights).to(dev)
    views, fits, fit_time, lrm_time = [], [], [], []
    batches = validation_batches(samples, cfg.data, image_size(cfg), cfg.model.patch_size, cfg.seed)
    for folder, batch in zip(samples, batches):
        b = batch.to(dev)
        t0 = time.perf_counter()
        g = model(b.in_images, b.in_Ks, b.in_viewmats, b.in_masks)
        rgb, alpha = render_batch(g, b, backend)
        lrm_time.append(time.perf_counter() - t0)
        names = batch.target_names[0]
        scores = _scores(rgb[0].clamp(0, 1).cpu(), alpha[0].clamp(0, 1).cpu(), batch.images[0],
                         batch.masks[0], lpips and lpips.cpu())  # fmt: skip
        for name, s in zip(names, scores):
            views.append(dict(sample=str(folder), view=name, method="lrm", **s))
        if fit_seconds > 0:
            inputs = batch.input_names[0]
            with torch.enable_grad():
                scores, took = fit_baseline(folder, inputs, batch, fit_seconds, backend, str(dev),
                                            lpips and lpips.cpu())  # fmt: skip
            fit_time.append(took)
            for name, s in zip(names, scores):
                fits.append(dict(sample=str(folder), view=name, method="fit", **s))
    rows = [summary("lrm", views, float(np.mean(lrm_time)) if lrm_time else None)]
    if fits:
        rows.append(summary(f"fit {fit_seconds:g}s", fits, float(np.mean(fit_time))))
    targets = {k: f"{o} {t}" for k, (o, t) in TARGETS.items()}
    return dict(run=str(run), model=info, n_samples=len(samples), resolution=image_size(cfg),
                num_input_views=cfg.data.num_input_views, targets=targets, rows=rows,
                views=views + fits)  # fmt: skip


def summary(method: str, views: list[dict], seconds: float | None) -> dict:
    row = {"method": method, "n_views": len(views), "seconds_per_subject": seconds}
    for m in TARGETS:
        vals = [v[m] for v in views if m in v]
        row[m] = float(np.mean(vals)) if vals else None
        row[f"{m}_pass"] = _passes(m, row[m])
    return row


def format_table(report: dict) -> str:
    """A markdown table of the report's rows (means, pass/fail against the targets)."""
    head = "| method | views | PSNR | SSIM | LPIPS | IoU | s/subject |"
    lines = [head, "|" + "---|" * 7]
    fmt = lambda r, m, d: "-" if r[m] is None else f"{r[m]:.{d}f} {'pass' if r[m + '_pass'] else 'FAIL'}"
    for r in report["rows"]:
        secs = "-" if r["seconds_per_subject"] is None else f"{r['seconds_per_subject']:.2f}"
        lines.append(f"| {r['method']} | {r['n_views']} | {fmt(r, 'psnr', 2)} | {fmt(r, 'ssim', 3)} | "
                     f"{fmt(r, 'lpips', 3)} | {fmt(r, 'iou', 3)} | {secs} |")  # fmt: skip
    t = report["targets"]
    lines.append(f"targets: PSNR {t['psnr']}, SSIM {t['ssim']}, LPIPS {t['lpips']}, IoU {t['iou']}; "
                 f"{report['n_samples']} held-out samples at {report['resolution']} px, "
                 f"{report['num_input_views']} input views")  # fmt: skip
    return "\n".join(lines)
