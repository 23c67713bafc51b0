"""``video4d(SESSION, DIR, opts)``: ingest -> track -> sequence -> avatar -> eval -> outputs -> report,
one stage at a time, each recorded in ``DIR/video4d.json`` when it has finished.

A rerun with the same session and options skips the finished stages and picks up the one that stopped:
``track`` and ``avatar`` continue from their run's checkpoint (the one training loop's resume, which
ends bit for bit where an uninterrupted run would); the other stages are short and redone from a clean
folder. Each stage writes its files atomically, so a stage killed half way leaves nothing that a rerun
could mistake for a finished one.

Layout of ``DIR``::

    video4d.json      session, options, stages {name: {done, seconds}}, the figures once finished
    ingest/           gausslift ingest (undistorted, normalised samples; alpha = the mask)
    track/            gausslift track (params.npz, report.json, ...), with the silhouette against ingest
    sequence/         the avatar sequence (see gausslift.video4d.sequence)
    avatar/           gausslift avatar fit (avatar.pt, avatar.json, logs)
    eval.json         gausslift avatar eval with every view's figures
    ply/frame_XXXXXX.ply   the rigged Gaussians per frame, in frame 0's normalised world
    orbit.mp4         the moving mouse from an orbiting camera
    compare_<camera>.mp4   input | render, every frame, per used camera
    report.html       tables, per-frame plots and images (report/ holds its images)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gausslift.errors import InputError
from gausslift.video4d import stages as S
from gausslift.video4d.state import STAGES, Run, Video4DOptions

__all__ = ["STAGES", "Run", "Video4DOptions", "video4d"]


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"video4d: {msg}", file=sys.stderr, flush=True)


def video4d(
    session: str | Path, out: str | Path, opts: Video4DOptions | None = None, quiet: bool = False
) -> dict:
    """Run (or continue) every stage; returns the state (``figures`` holds the headline numbers)."""
    opts = opts or Video4DOptions()
    session, out = Path(session).expanduser(), Path(out).expanduser()
    if not session.exists():
        raise InputError(session, "no such session folder")
    if opts.threads > 0:
        from gausslift.train.device import set_threads

        set_threads(opts.threads)
    run = Run(out, session, opts)
    t_start = time.perf_counter()
    for stage in STAGES:
        if run.done(stage):
            _say(f"{stage}: done before, skipped", quiet)
            continue
        _say(f"{stage} ...", quiet)
        t0 = time.perf_counter()
        try:
            extra = getattr(S, f"stage_{stage}")(run, session, opts, quiet) or {}
        except BaseException:
            run.interrupted(stage, time.perf_counter() - t0)
            raise
        run.finish(stage, time.perf_counter() - t0, **extra)
        _say(f"{stage}: {time.perf_counter() - t0:.1f} s", quiet)
    run.state["wall_seconds_this_call"] = round(time.perf_counter() - t_start, 2)
    run.state["total_stage_seconds"] = round(run.seconds(), 2)
    run.save()
    return run.state
