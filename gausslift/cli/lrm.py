"""``gausslift lrm train|predict|eval``: the GS-LRM feed-forward reconstruction model.

* ``train DATA... --out RUN [--config tiny|base|facelift|mouse|file.yaml] [--set KEY=VALUE]... [--steps N]
  [--minutes M] [--resume] [--init CKPT] [--val SAMPLES]...`` (the flags every trainer shares,
  ``gausslift.cli._train``); under ``torchrun --nproc_per_node N -m gausslift lrm train ...`` the same
  command runs DDP.
* ``predict SAMPLE_DIR|SEQUENCE_DIR|IMAGES... --ckpt RUN_OR_FILE --out DIR``: splats.ply, renders of the
  target views and a turntable; on an ingested sequence one .ply per frame, a 4D turntable and flicker
  figures (``gausslift.lrm.predict``).
* ``eval RUN --data LIST... [--fit-seconds S] [--json]``: held-out novel-view PSNR / SSIM / LPIPS / IoU
  with pass/fail against the seed's targets and a per-scene fit comparison row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "feed-forward reconstruction (GS-LRM): train, predict, eval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lrm_cmd", metavar="train|predict|eval", required=True)
    from gausslift.cli._train import add_train_flags

    t = sub.add_parser("train", help="train from scratch or fine-tune (--init); torchrun for DDP")
    t.add_argument("data", nargs="+", help="sample folders, folders with data_train.txt, or .txt lists")
    add_train_flags(t, config_help="tiny | base | facelift | mouse (the measured mouse recipe) | a .yaml "
                                   "file (default tiny: FaceLift's settings, small)")
    t.add_argument("--init", default=None, help="FaceLift's ckpt_*.pt, or a run / checkpoint of ours")
    t.add_argument("--val", action="append", default=None, metavar="SAMPLES",
                   help="held-out samples, repeatable (default: the data folders' data_val.txt)")  # fmt: skip

    q = sub.add_parser("predict", help="Gaussians from posed views: splats.ply, renders, turntable")
    q.add_argument("inputs", nargs="+", help="a sample folder, an ingested sequence, or image files")
    q.add_argument("--ckpt", required=True, help="run folder, run checkpoint or FaceLift ckpt_*.pt")
    q.add_argument("--out", required=True)
    q.add_argument("--views", default="", help="input view names, comma-separated (default: evenly spaced)")
    q.add_argument("--num-input-views", type=int, default=5)
    q.add_argument("--targets", choices=("all", "rest"), default="all")
    q.add_argument("--background", choices=("white", "black"), default="white")
    q.add_argument("--size", type=int, default=0, help="input size (default: the model's)")
    q.add_argument("--frames", type=int, default=120, help="turntable frames")
    q.add_argument("--no-turntable", action="store_true")
    q.add_argument("--d-head", type=int, default=None,
                   help="FaceLift checkpoint only: its attention head size (model.transformer.d_head), which "
                        "its weights do not record (default: its config.yaml, or 64 for the released model)")
    q.add_argument("--device", default="auto")

    e = sub.add_parser("eval", help="held-out novel views against the targets, and a per-scene fit")
    e.add_argument("run", help="run folder or checkpoint")
    e.add_argument("--data", nargs="+", required=True, help="held-out samples (folders: data_val.txt)")
    e.add_argument("--limit", type=int, default=0, help="first N samples only")
    e.add_argument("--fit-seconds", type=float, default=0.0, help="per-scene fit comparison per subject")
    e.add_argument("--lpips-weights", default=None, help="folder with the LPIPS-VGG weights")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print the full report as JSON")


def _train(args) -> int:
    from gausslift.cli._train import apply_threads, train_config
    from gausslift.lrm.config import TRAIN_PRESETS, LRMTrainConfig, check_spec
    from gausslift.lrm.train import train
    from gausslift.train.dist import dist_env

    apply_threads(args)
    if args.config and not args.resume:
        check_spec(args.config)
    cfg = train_config(LRMTrainConfig, args, presets=TRAIN_PRESETS)
    run = train(cfg, args.data, args.out, val=args.val, steps=args.iters or 0, minutes=args.minutes or 0.0,
                resume=args.resume, init=args.init, device=args.device or "auto",
                progress_bar=not args.quiet)  # fmt: skip
    if dist_env()[0] == 0:
        print(f"{run}: checkpoint.pt, config.yaml, log.csv, tb/")
    return 0


def _predict(args) -> int:
    from gausslift.errors import InputError
    from gausslift.lrm import predict as P
    from gausslift.lrm.train import load_model
    from gausslift.train.device import resolve_device

    opts = P.PredictOptions(input_views=tuple(v for v in args.views.split(",") if v),
                            num_input_views=args.num_input_views, targets=args.targets,
                            background=args.background, size=args.size or None,
                            turntable_frames=args.frames)  # fmt: skip
    out = Path(args.out)
    paths = [Path(p) for p in args.inputs]
    for p in paths:
        if not p.exists():
            raise InputError(p, "no such file or folder")
    model, _ = load_model(args.ckpt, resolve_device(args.device, None), d_head=args.d_head)
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        if (root / "opencv_cameras.json").is_file():
            res = P.predict_sample(model, root, out, opts, turntable_video=not args.no_turntable)
            res.pop("_renders", None)
            print(f"{out}: splats.ply ({res['n_gaussians']} Gaussians), mean PSNR {_f(res['mean_psnr'])}, "
                  f"IoU {_f(res['mean_iou'])} on {len(res['targets'])} views")  # fmt: skip
        else:
            s = P.predict_sequence(model, root, out, opts)
            print(f"{out}: {s['n_frames']} frames, temporal PSNR variance {_f(s['temporal_psnr_var'])}, "
                  f"background change {_f(s['background_change'], 4)}, "
                  f"mean PSNR {_f(s['mean_psnr'])}")  # fmt: skip
        return 0
    if any(p.is_dir() for p in paths):
        raise InputError(next(p for p in paths if p.is_dir()), "give one sample folder, or image files only")
    size = args.size or model.cfg.image_size
    views = P.load_images(paths, None, size, model.cfg.patch_size, P.BACKGROUNDS[args.background])
    res = P.predict_views(model, views, out, opts, turntable_video=not args.no_turntable)
    res.pop("_renders", None)
    print(f"{out}: splats.ply ({res['n_gaussians']} Gaussians) from {len(paths)} images")
    return 0


def _f(x, d: int = 2) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def _eval(args) -> int:
    from gausslift.ioutil import atomic_write_json
    from gausslift.lrm.eval import evaluate, format_table

    rep = evaluate(args.run, args.data, limit=args.limit, fit_seconds=args.fit_seconds,
                   lpips_weights=args.lpips_weights, device=args.device)  # fmt: skip
    run = Path(args.run)
    if run.is_dir():
        atomic_write_json(run / "eval.json", rep)
    if args.json:
        json.dump(rep, sys.stdout, indent=1)
        print()
    else:
        print(format_table(rep))
    return 0


def run(args) -> int:
    return {"train": _train, "predict": _predict, "eval": _eval}[args.lrm_cmd](args)
