"""``gausslift demo``: fit the small head sample shipped with gausslift, then score and orbit it."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fit the bundled FaceLift head sample (128^2, 32 views): writes a .ply, a turntable and metrics"

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "facelift_head_128"


def add_arguments(p) -> None:
    p.add_argument("--out", default="gausslift_demo", help="run folder (default: ./gausslift_demo)")
    p.add_argument("--minutes", type=float, default=1.5, help="fitting budget (default 1.5)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from gausslift.cli import eval as eval_cli
    from gausslift.cli import fit as fit_cli
    from gausslift.cli import render as render_cli

    out = Path(args.out)
    fit_args = argparse.Namespace(
        data=str(SAMPLE), out=str(out), config=None, iters=None, minutes=args.minutes, holdout_every=4,
        background="white", backend=args.backend, format=None, resume=False, quiet=args.quiet,
        set=["init_num_points=10000", "strategy.max_gaussians=40000", "background_loss_weight=0.1"],
    )  # fmt: skip
    fit_cli.run(fit_args)
    summary = eval_cli.evaluate_run(out, "test", backend=args.backend)
    render_cli.run(argparse.Namespace(run=str(out), split="orbit", out=str(out), backend=args.backend,
                                      frames=120, quiet=args.quiet))  # fmt: skip
    print(
        f"held-out PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f}, "
        f"mask IoU {summary.get('mask_iou', float('nan')):.3f}, {summary['num_gaussians']} Gaussians"
    )
    print(
        f"splats:    {out / 'splats.ply'}\nturntable: {out / 'orbit.mp4'}\nmetrics:   {out / 'metrics.json'}"
    )
    return 0
