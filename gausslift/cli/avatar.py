"""``gausslift avatar fit|eval|animate|ablate``: rigged Gaussian avatars (GaussianAvatars)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gausslift.cli._train import add_train_flags, train_config

HELP = "rigged Gaussian avatars: fit to a multi-view video, evaluate, reenact, ablate the three switches"


def _fit_args(p) -> None:
    """The avatar's own fit flags (beside the shared trainer flags of :mod:`gausslift.cli._train`)."""
    p.add_argument(
        "--subject", help="ict | mouse | flame:/path/generic_model.pkl (default: what the data names)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--holdout-frames", type=float, help="fraction of frames held out at the end (default 0.2)"
    )
    p.add_argument("--holdout-cameras", type=int, help="hold out every n-th camera (default 8; 0: none)")
    p.add_argument("--backend", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--perceptual", action="store_true", help="switch 1: lambda_perceptual=0.05 with VGG19")
    p.add_argument("--adaptive", action="store_true", help="switch 2: adaptive_densify_ratio=0.5")
    p.add_argument("--temporal", action="store_true", help="switch 3: lambda_temporal=0.01")
    p.add_argument("--weights", help="folder or file with the VGG19 / LPIPS weights")


def _ablate_args(p) -> None:
    """The shared trainer flags that make sense for a set of fits (no --resume: reruns reuse runs)."""
    p.add_argument("--out", required=True, help="ablation folder")
    p.add_argument("--config", help="YAML config (see RUN/config.yaml of any run for the keys)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable")  # fmt: skip
    p.add_argument("--iters", "--steps", dest="iters", type=int, help="iterations per fit")
    p.add_argument("--minutes", type=float, help="wall-clock budget per fit (overrides --iters)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per fit (0: all, split by --jobs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(resume=False)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="avatar_cmd", required=True)
    p = sub.add_parser("fit", help="fit an avatar to a sequence (synth video or VHAP transforms_*.json)")
    p.add_argument("seq", help="sequence folder")
    add_train_flags(p, "YAML config (see RUN/config.yaml of any run for the keys)")
    _fit_args(p)
    p = sub.add_parser("eval", help="novel-view and self-reenactment metrics on the held-out data")
    p.add_argument("run")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--weights", help="LPIPS weights folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames per split")
    p = sub.add_parser("animate", help="render new parameters (reenactment) to PNGs + mp4 (+ .ply)")
    p.add_argument("run")
    p.add_argument("--params", required=True, help=".npz with per-frame subject parameters [T, ...]")
    p.add_argument("--out", required=True)
    p.add_argument("--camera", type=int, default=0, help="camera index of the sequence")
    p.add_argument("--size", type=int, default=0, help="square output size (default: the camera's)")
    p.add_argument("--ply", action="store_true", help="also write per-frame .ply")
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto")
    p = sub.add_parser("ablate", help="the five configurations, equal budgets, table + plot")
    p.add_argument("seq")
    _ablate_args(p)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--configs", help="comma list of a subset (baseline,perceptual,adaptive,temporal,all)")
    p.add_argument("--eval-max-frames", type=int, default=0)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="fits at a time (threads split between them); reruns skip finished fits, resume unfinished ones",
    )
    _fit_args(p)


def build_config(args):
    """The fit's config: on ``--resume`` the run's saved one, else ``--config`` or the defaults; then
    the flags given and every ``--set``, in order (:func:`gausslift.cli._train.train_config`)."""
    from gausslift.avatar.config import AvatarConfig

    flags = {
        "subject": args.subject,
        "iters": args.iters,
        "minutes": args.minutes,
        "seed": args.seed,
        "holdout_frames": args.holdout_frames,
        "holdout_cameras": args.holdout_cameras,
        "backend": args.backend,
        "device": args.device,
        "threads": args.threads or None,
        "perceptual_weights": args.weights,
    }
    if args.perceptual:
        flags |= {"lambda_perceptual": 0.05, "use_vgg_loss": "true"}
    if args.adaptive:
        flags["adaptive_densify_ratio"] = 0.5
    if args.temporal:
        flags["lambda_temporal"] = 0.01
    return train_config(AvatarConfig, args, flags=flags)


def run(args) -> int:
    cmd = args.avatar_cmd
    if cmd == "fit":
        return _fit(args)
    if cmd == "eval":
        from gausslift.avatar.evaluate import evaluate_run
        from gausslift.ioutil import atomic_write_json

        res = evaluate_run(args.run, args.device, args.backend, args.weights, args.max_frames,
                           train_camera_reenactment=True)
        atomic_write_json(Path(args.run) / "eval.json", res)
        if args.json:
            print(json.dumps(res, indent=1))
        else:
            for split in ("novel_view", "reenactment", "reenactment_train_cameras"):
                if split in res:
                    r = res[split]
                    lp = f"{r['lpips']:.4f}" if "lpips" in r else "n/a (no weights)"
                    print(
                        f"{split:25s} PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  LPIPS {lp}  "
                        f"IoU {r.get('mask_iou', float('nan')):.4f}  PSNR var {r['psnr_var']:.4f}  "
                        f"({r['views']} views)"
                    )
            print(f"Gaussians {res['num_gaussians']}  render FPS {res['render_fps']:.1f}")
        return 0
    if cmd == "animate":
        from gausslift.avatar.animate import animate

        res = animate(
            args.run,
            args.params,
            args.out,
            args.camera,
            args.ply,
            args.fps,
            args.device,
            args.backend,
            args.size,
        )
        print(f"{res['frames']} frames -> {res['video']}")
        return 0
    if cmd == "ablate":
        from gausslift.avatar.ablate import ablate

        cfg = build_config(args)
        configs = args.configs.split(",") if args.configs else None
        res = ablate(
            args.seq,
            args.out,
            cfg,
            seeds=args.seeds,
            configs=configs,
            eval_max_frames=args.eval_max_frames,
            progress=not args.quiet,
            jobs=args.jobs,
        )
        print(res["table_path"])
        return 0
    raise SystemExit(f"unknown avatar command {cmd}")


def _fit(args) -> int:
    from dataclasses import replace

    from gausslift.avatar.trainer import AvatarTrainer
    from gausslift.errors import InputError
    from gausslift.io.sequence import read_sequence
    from gausslift.subjects import load_subject
    from gausslift.train.device import set_threads

    cfg = build_config(args)
    if cfg.threads > 0:
        set_threads(cfg.threads)
    seq = read_sequence(args.seq)
    spec = cfg.subject or seq.model
    if not spec:
        raise InputError(
            args.seq, "the sequence does not name its model: pass --subject ict|mouse|flame:PATH"
        )
    if spec == "flame" or (spec.startswith("flame") and ":" not in spec):
        raise InputError(
            args.seq, "FLAME data needs the model file: pass --subject flame:/path/generic_model.pkl"
        )
    cfg = replace(cfg, subject=spec)
    subject = load_subject(spec)
    out = Path(args.out)
    info = AvatarTrainer(seq, subject, cfg, out).fit(resume=args.resume, progress=not args.quiet)
    print(
        f"{info['iters']} iterations, {info['num_gaussians']} Gaussians, {info['train_seconds']:.0f} s "
        f"-> {out}",
        file=sys.stderr,
    )
    return 0
