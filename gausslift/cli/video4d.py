"""``gausslift video4d SESSION --out DIR [--minutes M]``: a real multi-view session to a rigged 4D mouse,
ingest -> track -> avatar fit -> eval -> outputs and ``report.html`` (see gausslift.video4d)."""

from __future__ import annotations

import argparse
import sys

HELP = "a multi-view mouse session to a rigged 4D mouse: ingest, track, avatar fit, eval, videos, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="session folder (anipose + SLEAP, as gausslift track reads)")
    p.add_argument(
        "--out", required=True, help="output folder; rerun the same command to continue a killed run"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=40.0,
        help="wall-clock budget of the whole run (default 40); the avatar fit gets what ingest "
        "and track leave, less --reserve-minutes",
    )
    p.add_argument("--reserve-minutes", type=float, default=4.0, help="kept for eval, outputs, report (4)")
    p.add_argument("--avatar-iters", type=int, default=0, help="a fixed number of avatar steps instead")
    p.add_argument("--frames", default=None, help="START:STOP:STEP or a,b,c (default: all)")
    p.add_argument("--size", type=int, default=512, help="ingest image size (default 512)")
    p.add_argument(
        "--holdout-cameras",
        type=int,
        default=3,
        help="hold out every n-th used camera for evaluation (default 3: one of three; 0: none)",
    )
    p.add_argument(
        "--holdout-frames",
        type=float,
        default=0.2,
        help="hold out the last fraction of the frames (default 0.2; 0: none)",
    )
    p.add_argument(
        "--track-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrackOptions key (repeatable)",
    )
    p.add_argument(
        "--avatar-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an avatar config key (repeatable)",
    )
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate (default 25)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    p.add_argument("--keep-bad-cameras", action="store_true", help="use cameras whose calibration fails")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from gausslift.errors import InputError
    from gausslift.video4d import Video4DOptions, video4d

    if args.minutes <= 0 or args.reserve_minutes < 0 or args.avatar_iters < 0:
        raise InputError(None, "--minutes must be > 0, --reserve-minutes and --avatar-iters >= 0")
    opts = Video4DOptions(
        minutes=args.minutes,
        reserve_minutes=args.reserve_minutes,
        avatar_iters=args.avatar_iters,
        frames=args.frames,
        size=args.size,
        holdout_cameras=args.holdout_cameras,
        holdout_frames=args.holdout_frames,
        threads=args.threads,
        fps=args.fps,
        track_set=list(args.track_set),
        avatar_set=list(args.avatar_set),
        keep_bad_cameras=args.keep_bad_cameras,
    )
    state = video4d(args.session, args.out, opts, quiet=args.quiet)
    figs = state.get("figures", {}).get("avatar", {})
    line = "; ".join(
        f"{k} PSNR {v['psnr']:.2f} IoU {v.get('mask_iou', float('nan')):.3f}" for k, v in figs.items()
    )
    print(
        f"video4d: {state['total_stage_seconds'] / 60:.1f} min of stages -> {args.out}/report.html"
        + (f" ({line})" if line else ""),
        file=sys.stderr,
    )
    return 0
