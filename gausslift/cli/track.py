"""``gausslift track SESSION --subject mouse --out TRACK``: the articulated mouse fitted to every frame
of a multi-view session from its 2D keypoints (see docs/track.md).

The fit's Adam steps run on the one training loop (:mod:`gausslift.train.loop`), so ``track`` takes the
shared trainer flags (:mod:`gausslift.cli._train`): ``--out`` is the run folder (a new run refuses a
non-empty one), ``--config`` / ``--set`` set :class:`gausslift.track.TrackOptions` keys, ``--resume``
continues a killed track (give the same SESSION and selection flags again), ``--minutes`` plans the
step count from the clock. ``--iters N`` is the *articulated* stage's steps (the config key ``iters``,
default 400, as before): the loop runs ``rigid_iters + iters`` steps (100 + 400 by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gausslift.cli._train import add_train_flags, apply_threads, cpu_only, train_config
from gausslift.cli._train import loop_options as train_loop_options

HELP = "fit the articulated MAMMAL mouse to every frame of a session from its 2D keypoints and masks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session",
                   help="session folder (anipose + SLEAP *.analysis.h5, DANNCE label3d_dannce.mat)")
    conf = "YAML file of TrackOptions keys (see TRACK/config.yaml of any track)"
    add_train_flags(p, config_help=conf, helps={
        "iters": "articulated Adam steps (config key iters, default 400); the loop runs rigid_iters (100) + "
                 "iters steps",
        "out": "output and run folder (params.npz, track.npz, report.json, meta.json; config.yaml, "
               "checkpoint.pt, logs); a new track needs an empty or new folder",
        "device": "auto | cpu (the track runs on the CPU)"})  # fmt: skip
    p.add_argument("--subject", default="mouse", help="the articulated model (only 'mouse', MAMMAL)")
    p.add_argument("--model-path", default=None, help="mammal_mouse.npz or its folder (default: lookup)")
    p.add_argument("--cameras", default=None, help="comma-separated camera names to use (default: every "
                                                   "camera with keypoints and a consistent calibration)")
    p.add_argument("--frames", default=None, help="START:STOP:STEP or a,b,c (default: all)")
    p.add_argument("--keypoints", default="auto",
                   help="keypoint map: auto (default) | sleap | dannce | FILE.yaml (see docs/track.md)")
    p.add_argument("--init", choices=("dlt", "points3d"), default=None,
                   help="initialise from a DLT of the labels (default) or the session's points3d.h5")
    p.add_argument("--robust-px", type=float, default=None,
                   help="robust loss scale in pixels (default 10; ~3 for hand labels that agree closely)")
    p.add_argument("--no-offsets", action="store_true", help="do not fit the per-node offsets")
    p.add_argument("--keep-bad-cameras", action="store_true",
                   help="use cameras whose calibration fails the checks (as ingest)")
    p.add_argument("--masks", default=None, metavar="INGEST_DIR",
                   help="a gausslift ingest output of the session: fit the mesh to its masks too (the "
                        "silhouette term; --set silhouette=false to only measure) and report the "
                        "silhouette IoU per camera; a session without keypoint files tracks from the "
                        "masks alone")


def build_config(args):
    """The track's options: on ``--resume`` the run's saved ones, else ``--config`` or the defaults; then
    the flags given and every ``--set`` (:func:`gausslift.cli._train.train_config`)."""
    from gausslift.track import TrackOptions

    flags = {"iters": args.iters, "minutes": args.minutes, "init": args.init, "robust_px": args.robust_px,
             "fit_offsets": False if args.no_offsets else None}
    return train_config(TrackOptions, args, flags=flags)


def _cameras(args, obs, scene) -> tuple[list[str], dict[str, str]]:
    """The cameras to track with, and the excluded ones with their reason."""
    from gausslift.errors import InputError
    from gausslift.preprocess.calib import check_calibration

    checks, _ = check_calibration(scene)
    excluded = {}
    if args.cameras:
        wanted = [c.strip() for c in args.cameras.split(",") if c.strip()]
        for c in wanted:
            if c not in scene.names:
                raise InputError(obs.root, f"--cameras {c}: no such camera ({', '.join(scene.names)})")
            if c not in obs.cameras:
                raise InputError(obs.root, f"--cameras {c}: that camera has no keypoint file")
        names = wanted
    else:
        names = list(obs.cameras)
    if not args.keep_bad_cameras:
        for c in list(names):
            if checks[c].bad:
                why = "; ".join(checks[c].reasons)
                excluded[c] = f"bad calibration ({why}; --keep-bad-cameras to use it)"
                names.remove(c)
    return names, excluded


def run(args) -> int:
    from gausslift.errors import InputError
    from gausslift.io import read_scene
    from gausslift.preprocess.frames import parse_frames
    from gausslift.subjects import load_subject
    from gausslift.track import load_observations, mask_observations, require_cameras, track_session
    from gausslift.track.task import loop_options
    from gausslift.train.loop import CHECKPOINT

    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).is_file():  # before reading the session
        raise InputError(out, f"nothing to resume (no {CHECKPOINT})")
    if args.subject.strip().lower() != "mouse":
        raise InputError(None, f"--subject {args.subject}: tracking supports 'mouse' (the MAMMAL model) only")
    cpu_only(args, "the track")
    if args.iters is not None and args.iters < 0:
        raise InputError(None, f"--iters must be >= 0, got {args.iters}")
    apply_threads(args)
    opts = build_config(args)
    opts.check()
    scene = read_scene(args.session)
    obs = load_observations(args.session, scene, required=args.masks is None)
    keypoints = args.keypoints
    subject = None
    if obs is None:  # no keypoint files: track from the masks alone (a warning in obs.warnings)
        subject = load_subject("mouse", args.model_path)
        obs = mask_observations(args.session, scene, args.masks, list(subject.keypoint_names))
        keypoints = "dannce" if keypoints == "auto" else keypoints
    names, excluded = _cameras(args, obs, scene)
    obs = obs.select(cameras=names, frames=parse_frames(args.frames, obs.num_frames))
    require_cameras(obs, excluded)
    subject = subject or load_subject("mouse", args.model_path)
    obs.warnings += [f"camera '{k}' not used: {v}" for k, v in excluded.items()]
    loop = train_loop_options(args, **loop_options(opts, resume=args.resume, quiet=args.quiet))
    result, rep = track_session(obs, out, subject, keypoints, opts, masks=args.masks, loop=loop)
    for e in result.run.get("events", []):
        print(e, file=sys.stderr)
    errs = ", ".join(f"{c} {d['median_px']} px" for c, d in rep["keypoint_error"].items()
                     if d.get("median_px") is not None) or "none (no labels)"
    print(f"tracked {rep['frames']} frames x {len(obs.cameras)} cameras ({', '.join(obs.cameras)}) in "
          f"{result.seconds:.1f} s; median keypoint error {errs} -> {args.out}")
    if rep.get("silhouette_iou"):
        ious = ", ".join(f"{c} {d['median']}" for c, d in rep["silhouette_iou"]["per_camera"].items())
        print(f"silhouette IoU against {args.masks} (median per camera): {ious}")
    for w in obs.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
