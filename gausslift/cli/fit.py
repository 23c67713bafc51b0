"""``gausslift fit DATA --out RUN``: reconstruct one capture as Gaussian splats."""

from __future__ import annotations

import sys
from pathlib import Path

from gausslift.cli._train import add_train_flags, apply_threads, train_config
from gausslift.cli._train import loop_options as train_loop_options
from gausslift.errors import InputError

HELP = "fit Gaussian splats to one capture (RUN gets splats.ply, config.yaml, checkpoints, logs)"


def add_arguments(p) -> None:
    p.add_argument("data", help="capture folder or file (any format gausslift reads)")
    add_train_flags(p, config_help="YAML config (see RUN/config.yaml of any run for the keys)")
    p.add_argument("--holdout-every", type=int, help="hold out every K-th view when there is no test split")
    p.add_argument("--background", choices=("white", "black", "random"))
    p.add_argument("--backend", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--format", help="capture format (default: detected; a resume: the run's)")


def build_config(args):
    """The fit's config: on ``--resume`` the run's own, else ``--config`` or the defaults; then the
    flags and every ``--set`` (see :func:`gausslift.cli._train.train_config`). A minutes budget
    overrides ``iters``."""
    from gausslift.fit.config import FitConfig

    flags = {
        "iters": args.iters,
        "minutes": args.minutes,
        "holdout_every": args.holdout_every,
        "background": args.background,
        "backend": args.backend,
        "device": args.device,  # e.g. a GPU run resumed on a CPU: --device cpu --backend cpu
    }
    return train_config(FitConfig, args, flags=flags)


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
    from gausslift.fit.runs import INFO, PLY, read_info
    from gausslift.fit.trainer import Trainer, loop_options
    from gausslift.train.dist import Dist
    from gausslift.train.loop import CHECKPOINT, Loop

    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).is_file():  # before reading the capture
        raise InputError(out, f"nothing to resume (no {CHECKPOINT})")
    apply_threads(args)
    cfg = build_config(args)
    fmt = args.format
    if args.resume and fmt is None and (out / INFO).is_file():
        fmt = read_info(out).get("format")
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
    trainer = Trainer(scene, cfg, out, run_info=info)  # checks the views and the device; writes nothing
    opts = train_loop_options(args, **loop_options(cfg, resume=args.resume, quiet=args.quiet))
    result = Loop(trainer, out, opts, Dist(device=trainer.device)).run()  # refuses a non-empty new --out
    for e in result["events"]:
        print(e, file=sys.stderr)
    print(
        f"fitted {result['num_gaussians']} Gaussians in {result['iters']} iterations "
        f"({result['train_seconds'] / 60:.1f} min): {out / PLY}"
    )
    return 0
