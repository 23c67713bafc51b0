"""The stages of :func:`gausslift.video4d.pipeline.video4d`, one function each: ``stage_NAME(run, session,
opts, quiet) -> dict`` (extra figures recorded with the stage). A stage that stopped part way is redone
from a clean folder, except ``track`` and ``avatar``, which continue from their checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from gausslift.config import apply_overrides
from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json
from gausslift.video4d.state import Run, Video4DOptions, _clean


def stage_ingest(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.preprocess.ingest import IngestOptions, ingest

    dst = run.out / "ingest"
    _clean(dst)
    man = ingest(
        session,
        dst,
        IngestOptions(frames=opts.frames, size=opts.size, keep_bad_cameras=opts.keep_bad_cameras, workers=2),
    )
    if len(man["cameras"]) < 2:
        raise InputError(
            session,
            f"only {len(man['cameras'])} usable camera(s) after ingest's checks "
            f"({'; '.join(man['warnings'][-3:])}); video4d needs at least two",
        )
    return {"samples": len(man["samples"]), "cameras": man["cameras"], "warnings": man["warnings"]}


def _ingest_manifest(run: Run) -> dict:
    return json.loads((run.out / "ingest" / "manifest.json").read_text())


def stage_track(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.io import read_scene
    from gausslift.preprocess.frames import parse_frames
    from gausslift.subjects import load_subject
    from gausslift.track import (
        TrackOptions,
        load_observations,
        mask_observations,
        require_cameras,
        track_session,
    )
    from gausslift.track.task import loop_options
    from gausslift.train.loop import CHECKPOINT, LoopOptions

    dst = run.out / "track"
    resume = (dst / CHECKPOINT).is_file()
    if not resume:
        _clean(dst)
    topts = apply_overrides(TrackOptions(), opts.track_set)
    topts.check()
    man = _ingest_manifest(run)
    scene = read_scene(session)
    subject = load_subject("mouse")
    keypoints = "auto"
    obs = load_observations(session, scene, required=False)
    if obs is None:  # no keypoint files: the masks alone (the track's warnings say so)
        obs = mask_observations(session, scene, run.out / "ingest", list(subject.keypoint_names))
        keypoints = "dannce"
    cams = [c for c in man["cameras"] if c in obs.cameras]
    obs = obs.select(cameras=cams, frames=parse_frames(opts.frames, obs.num_frames))
    require_cameras(obs)
    loop = LoopOptions(**loop_options(topts, resume=resume, quiet=quiet))
    result, rep = track_session(obs, dst, subject, keypoints, topts, masks=run.out / "ingest", loop=loop)
    sil = (rep.get("silhouette_iou") or {}).get("per_camera", {})
    return {
        "keypoint_median_px": {c: d["median_px"] for c, d in rep["keypoint_error"].items()},
        "silhouette_iou": {c: d["median"] for c, d in sil.items()},
        "resumed": resume,
        "warnings": list(obs.warnings),
    }


def stage_sequence(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.video4d.sequence import make_sequence

    dst = run.out / "sequence"
    _clean(dst)
    meta = make_sequence(run.out / "ingest", run.out / "track", dst)
    return {"frames": meta["frames"], "cameras": meta["cameras"]}


def avatar_config(run: Run, opts: Video4DOptions):
    """The avatar fit's config: the held-out cameras and frames of ``opts``, a step count or the
    minutes that ``opts.minutes`` leaves after the stages so far and the reserve."""
    from gausslift.avatar.config import AvatarConfig

    cfg = AvatarConfig(
        subject="mouse",
        holdout_cameras=opts.holdout_cameras,
        holdout_frames=opts.holdout_frames,
        threads=opts.threads,
        background="white",
    )
    if opts.avatar_iters > 0:
        cfg = replace(cfg, iters=opts.avatar_iters, minutes=0.0)
    else:
        left = opts.minutes - run.seconds() / 60 - opts.reserve_minutes
        cfg = replace(cfg, minutes=max(1.0, round(left, 2)))
    return apply_overrides(cfg, opts.avatar_set)


def stage_avatar(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.avatar.trainer import AvatarTrainer
    from gausslift.io.sequence import read_sequence
    from gausslift.subjects import load_subject
    from gausslift.train.loop import CHECKPOINT

    dst = run.out / "avatar"
    resume = (dst / CHECKPOINT).is_file()
    if not resume:
        _clean(dst)
        cfg = avatar_config(run, opts)
        run.state["avatar_config"] = {"iters": cfg.iters, "minutes": cfg.minutes}
        run.save()
    else:  # the run's own saved config (its planned length included) is what the trainer resumes
        from gausslift.avatar.config import AvatarConfig
        from gausslift.config import load_config

        cfg = load_config(AvatarConfig, dst / "config.yaml")
    seq = read_sequence(run.out / "sequence")
    info = AvatarTrainer(seq, load_subject("mouse"), cfg, dst).fit(resume=resume, progress=not quiet)
    return {
        "iters": info["iters"],
        "num_gaussians": info["num_gaussians"],
        "train_seconds": info["train_seconds"],
        "resumed": resume,
    }


def stage_eval(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.avatar.evaluate import evaluate_run

    res = evaluate_run(run.out / "avatar", per_view=True, train_camera_reenactment=True)
    atomic_write_json(run.out / "eval.json", res, indent=1)
    keys = ("psnr", "ssim", "mask_iou", "views")
    figs = {
        s: {k: res[s][k] for k in keys if k in res[s]}
        for s in ("novel_view", "reenactment", "reenactment_train_cameras")
        if s in res
    }
    run.state["figures"]["avatar"] = figs
    return {}


def stage_outputs(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.video4d.outputs import write_outputs

    return write_outputs(run.out, fps=opts.fps)


def stage_report(run: Run, session: Path, opts: Video4DOptions, quiet: bool) -> dict:
    from gausslift.video4d.report import write_report

    path = write_report(run.out, run.state)
    return {"report": str(path)}
