"""``gausslift idfield prep | train | fit | animate | interpolate | eval`` (issue 22, docs/idfield.md)."""

from __future__ import annotations

import json

from gausslift.cli._train import add_train_flags, apply_threads, loop_options, train_config

HELP = "identity-field parametric Gaussian heads: prep, train, fit one image, interpolate, eval"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="idfield_cmd", required=True)
    p = sub.add_parser("prep", help="per frame: posed mesh, face-region mesh, face masks, masked images")
    p.add_argument("data", help="a gausslift synth folder (DATA/<id>/[frame_XXXX/]params.npz, "
                   "opencv_cameras.json, images/) and/or VHAP exports (DATA or DATA/<id>/ with "
                   "transforms_*.json; give --subject flame:PATH)")
    p.add_argument("--out", help="output folder (default DATA/idfield)")
    p.add_argument("--subject", default="ict", help="ict | flame:/path/generic_model.pkl (the data's model)")
    p.add_argument("--region", default="face", help="the subject's region that the masks show")
    p.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of the masks (sigma, pixels)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("train", help="train the identity field (auto-decoder) on prepared data")
    p.add_argument("data", help="a prepared folder (DATA or DATA/idfield with prep.json)")
    add_train_flags(p, "tiny | base | a YAML config (see RUN/config.yaml of any run for the keys)")
    p = sub.add_parser("fit", help="reconstruct a head from one image")
    p.add_argument("run", help="folder of 'idfield train' (or a model.pt)")
    p.add_argument("image", help="RGBA image (alpha = the head's matte) or RGB with --mask")
    p.add_argument("--camera", help="camera JSON (fx, fy, cx, cy, w, h, w2c; or a synth/FaceLift "
                   "opencv_cameras.json with --view); default FaceLift's front camera")
    p.add_argument("--view", type=int, default=0, help="the frame of --camera's 'frames' list")
    p.add_argument("--mask", help="a matte image (default: the image's alpha channel)")
    p.add_argument("--landmarks", help=".npy [68,2] pixel landmarks for the pose initialisation")
    p.add_argument("--iters", type=int, default=0, help="photometric steps (default: the fit config's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fit setting (gausslift.idfield.fit.FitConfig), e.g. origin=neutral")
    p = sub.add_parser("animate", help="reanimate a fitted head with per-frame parameters (PNGs + mp4)")
    p.add_argument("run")
    p.add_argument("fit", help="folder of 'idfield fit' (its params.npz)")
    p.add_argument("--params", required=True, help=".npz of per-frame subject parameters [T, ...]")
    p.add_argument("--out", required=True)
    p.add_argument("--camera", help="camera JSON (default: a frontal camera)")
    p.add_argument("--view", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--ply", action="store_true", help="also write per-frame .ply")
    p.add_argument("--threads", type=int, default=0)
    p = sub.add_parser("interpolate", help="a video and per-step .ply between two training identities")
    p.add_argument("run")
    p.add_argument("--a", required=True, help="identity name (see RUN/model.pt names)")
    p.add_argument("--b", required=True)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0)
    p = sub.add_parser("eval", help="single-image fits on held-out identities: the acceptance figures")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="prepared held-out folder")
    p.add_argument("--identities", type=int, default=0, help="only the first N identities (0: all)")
    p.add_argument("--baselines", default="mean,multiview", help="comma list of mean, multiview, none")
    p.add_argument("--lpips", help="folder of LPIPS weights (LPIPS is reported only with it)")
    p.add_argument("--out", help="write result.json here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fit setting (gausslift.idfield.fit.FitConfig), e.g. lm_iters=60")


def _prep(args) -> int:
    from gausslift.idfield.prep import prep

    s = prep(args.data, args.out, args.subject, args.region, args.blur, progress_bar=not args.quiet)
    print(f"{len(s['frames'])} frames of {len(s['identities'])} identities prepared")
    return 0


def _train(args) -> int:
    from gausslift.idfield.config import PRESETS, IdFieldConfig
    from gausslift.idfield.train import train
    from gausslift.train.loop import REPLAN_AT

    cfg = train_config(IdFieldConfig, args, PRESETS)
    # step-scheduled learning rates and the late scale regulariser: a minutes budget re-plans its step
    # count at 25% and 50% when the shared machine's load changed
    res = train(cfg, args.data, args.out, loop_options(args, log_every=cfg.log_every,
                                                       checkpoint_minutes=cfg.checkpoint_minutes,
                                                       checkpoint_every=cfg.checkpoint_every,
                                                       replan_at=REPLAN_AT),
                device=args.device)
    print(json.dumps({k: res[k] for k in ("steps", "seconds", "stopped_by", "device")}))
    return 0


def _fit(args) -> int:
    from gausslift.idfield.pipeline import fit_cli

    res = fit_cli(args)
    print(json.dumps(res, indent=1))
    return 0


def _animate(args) -> int:
    from gausslift.idfield.pipeline import animate

    res = animate(args.run, args.fit, args.params, args.out, args.camera, args.view, args.size, args.ply)
    print(json.dumps(res))
    return 0


def _interpolate(args) -> int:
    from gausslift.idfield.interpolate import interpolate

    res = interpolate(args.run, args.a, args.b, args.steps, args.out)
    print(json.dumps(res, indent=1))
    return 0


def _eval(args) -> int:
    from gausslift.idfield.evaluate import evaluate_cli

    res = evaluate_cli(args)
    print(json.dumps(res, indent=1) if args.json else res["summary_text"])
    return 0


def run(args) -> int:
    apply_threads(args)
    cmd = {"prep": _prep, "train": _train, "fit": _fit, "animate": _animate, "interpolate": _interpolate,
           "eval": _eval}
    return cmd[args.idfield_cmd](args)
