"""``gausslift eval RUN``: metrics of a fitted run on its held-out views."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json, atomic_write_text

HELP = "score a fitted run (PSNR, SSIM, LPIPS, masked PSNR, mask IoU, count, FPS): CSV + metrics.json"


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder written by gausslift fit")
    p.add_argument("--split", default="test", choices=("test", "train", "all"))
    p.add_argument("--out", help="folder for metrics.json and per_view.csv (default: RUN)")
    p.add_argument("--lpips-weights", help="folder or file of the LPIPS weights (LPIPS skipped without)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def evaluate_run(run: str | Path, split: str = "test", out=None, lpips_weights=None, backend="auto",
                 device="auto") -> dict:  # fmt: skip
    from gausslift.cli.fit import load_run, split_views
    from gausslift.fit.evaluate import evaluate

    info, params, scene = load_run(run)
    views = split_views(scene, split)
    used = split
    if not views and split == "test":
        views, used = split_views(scene, "train"), "train"
        print(f"eval: {run}: the capture has no test views; scoring the training views (split 'train' in "
              f"metrics.json)", file=sys.stderr)
    if not views:
        raise InputError(run, f"the run's capture has no '{split}' views")
    lpips = None
    if lpips_weights:
        from gausslift.metrics import LPIPS

        lpips = LPIPS("vgg", weights=lpips_weights)
    rows, summary = evaluate(params, views, info.get("background", "white"), int(info.get("downscale", 1)),
                             backend, lpips, device)  # fmt: skip
    summary = {
        "split": used,
        **summary,
        "train_seconds": info.get("train_seconds"),
        "iters": info.get("iters"),
    }
    out = Path(out or run)
    atomic_write_json(out / "metrics.json", summary)
    cols = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "per_view.csv", buf.getvalue())
    return summary


def run(args) -> int:
    summary = evaluate_run(args.run, args.split, args.out, args.lpips_weights, args.backend, args.device)
    print(json.dumps(summary, indent=2))
    return 0
