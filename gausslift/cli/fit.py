"""``gausslift fit DATA --out RUN``: reconstruct one capture as Gaussian splats."""

from __future__ import annotations

import sys
from pathlib import Path

from gausslift.config import apply_overrides, load_config
from gausslift.errors import InputError

HELP = "fit Gaussian splats to one capture (RUN gets splats.ply, config.yaml, checkpoints, logs)"


def add_arguments(p) -> None:
    p.add_argument("data", help="capture folder or file (any format gausslift reads)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", help="YAML config (see RUN/config.yaml of any run for the keys)")
    p.add_argument("--iters", type=int, help="iterations (ignored when --minutes is given)")
    p.add_argument("--minutes", type=float, help="wall-clock budget; schedules scale to it")
    p.add_argument("--holdout-every", type=int, help="hold out every K-th view when there is no test split")
    p.add_argument("--background", choices=("white", "black", "random"))
    p.add_argument("--backend", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (auto: CUDA when the backend can use it)")
    p.add_argument("--format", help="capture format (default: detected)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args):
    from gausslift.fit.config import FitConfig

    cfg = load_config(FitConfig, args.config) if args.config else FitConfig()
    flags = {
        "iters": args.iters,
        "minutes": args.minutes,
        "holdout_every": args.holdout_every,
        "background": args.background,
        "backend": args.backend,
        "device": args.device,
    }
    sets = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.set)
    return apply_overrides(cfg, sets)


def load_scene(path: str | Path, fmt: str | None, holdout_every: int):
    """The capture with its held-out views: its own test split, else every K-th view."""
    from gausslift.io import read_scene

    scene = read_scene(path, fmt)
    if not scene.views:
        raise InputError(path, "the capture has no views")
    if not any(v.split == "test" for v in scene.views) and holdout_every > 0:
        scene = scene.with_holdout_every(holdout_every)
    return scene


def load_run(run: str | Path):
    """(info, params, scene) of a finished run folder."""
    from gausslift.fit.runs import PLY, load_splats, read_info

    info = read_info(run)
    params = load_splats(Path(run) / PLY)
    scene = load_scene(info["scene"], info.get("format"), int(info.get("holdout_every", 0)))
    return info, params, scene


def split_views(scene, split: str):
    if split == "all":
        return list(scene.views)
    return [v for v in scene.views if v.split == split]


def run(args) -> int:
    from gausslift.fit.config import FitConfig
    from gausslift.fit.runs import CONFIG, PLY, read_info
    from gausslift.fit.trainer import Trainer

    out = Path(args.out)
    if args.resume:
        if not (out / CONFIG).is_file():
            raise InputError(out, "nothing to resume (no config.yaml)")
        moved = [f"{k}={v}" for k, v in (("device", args.device), ("backend", args.backend)) if v]  # e.g. a
        # GPU run resumed on a CPU: --device cpu --backend cpu
        cfg = apply_overrides(load_config(FitConfig, out / CONFIG), moved + list(args.set))
        fmt = read_info(out).get("format")
    else:
        cfg = build_config(args)
        fmt = args.format
    scene = load_scene(args.data, fmt, cfg.holdout_every)
    for w in scene.warnings:
        print(f"warning: {w}", file=sys.stderr)
    test = [v.name for v in scene.views if v.split == "test"]
    info = {
        "scene": str(Path(args.data).resolve()),
        "format": scene.format,
        "holdout_every": cfg.holdout_every,
        "background": cfg.background,
        "downscale": cfg.downscale,
        "backend": cfg.backend,
        "num_train_views": sum(v.split == "train" for v in scene.views),
        "test_views": test,
    }
    from gausslift.fit.checkpoint import CHECKPOINT

    resume = args.resume and (out / CHECKPOINT).is_file()
    if args.resume and not resume:
        print("no checkpoint yet: starting from the beginning", file=sys.stderr)
    trainer = Trainer(scene, cfg, out, run_info=info)
    result = trainer.fit(resume=resume, progress=not args.quiet)
    for e in result["events"]:
        print(e, file=sys.stderr)
    print(
        f"fitted {result['num_gaussians']} Gaussians in {result['iters']} iterations "
        f"({result['train_seconds'] / 60:.1f} min): {out / PLY}"
    )
    return 0
