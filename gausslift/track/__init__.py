"""``gausslift track``: the articulated MAMMAL mouse fitted to every frame of a multi-view session from
2D keypoints (see ``docs/track.md``).

Modules, one concept each: :mod:`~gausslift.track.skeleton` (keypoint maps: label node -> model
point), :mod:`~gausslift.track.observations` (the session's 2D labels per camera),
:mod:`~gausslift.track.triangulate` (DLT), :mod:`~gausslift.track.init` (similarity initialisation),
:mod:`~gausslift.track.posing` (cheap posing of the mapped points, projection),
:mod:`~gausslift.track.optimize` (the fit: model and loss), :mod:`~gausslift.track.task` (its Adam
stages as a task of the one training loop, :mod:`gausslift.train.loop`), :mod:`~gausslift.track.metrics` and
:mod:`~gausslift.track.output` (files and report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.track.observations import (
    NO_KEYPOINTS,
    Observations,
    load_observations,
    mask_observations,
    require_cameras,
)
from gausslift.track.optimize import Tracker, TrackOptions, TrackResult
from gausslift.track.output import write_track
from gausslift.track.skeleton import KeypointMap, auto_map, load_map
from gausslift.track.task import TrackTask, run_tracker, track

__all__ = ["Observations", "load_observations", "mask_observations", "require_cameras", "TrackOptions",
           "TrackResult", "track", "Tracker", "TrackTask", "write_track", "KeypointMap", "auto_map",
           "load_map", "track_session"]


def track_session(obs: Observations, out: str | Path, subject, keypoints: str = "auto",
                  opts: TrackOptions | None = None, model_spec: str = "mouse",
                  masks: str | Path | None = None, loop=None) -> tuple[TrackResult, dict]:
    """Map, fit and write: ``obs`` already holds the cameras and frames to use (see
    :meth:`Observations.select`); ``keypoints`` is ``auto`` | ``sleap`` | ``dannce`` | a YAML file;
    ``masks``: a ``gausslift ingest`` output of the same session: the fit's silhouette term (unless
    ``opts.silhouette`` is False; only the masks of ``obs``'s cameras are used) and the silhouette IoU
    report. Observations without any label (:func:`mask_observations`) track from the masks alone.
    ``out`` is the loop's run folder too (a new run refuses a non-empty one); ``loop``: the
    :class:`gausslift.train.loop.LoopOptions` (default: :func:`gausslift.track.task.loop_options`
    of ``opts``; ``resume=True`` continues a killed track there). The outputs are written when the
    run ends (:meth:`gausslift.track.task.TrackTask.finish`)."""
    from gausslift.errors import InputError

    opts = opts or TrackOptions()
    labelled = bool(np.isfinite(obs.points2d).all(-1).any())
    if labelled:
        require_cameras(obs)
    elif masks is None:
        raise InputError(obs.root, NO_KEYPOINTS)
    kmap = auto_map(obs.names, subject) if keypoints == "auto" else load_map(keypoints, subject)
    mask_set = None
    if masks is not None and (opts.silhouette or not labelled):
        from gausslift.track.masks import load_masks

        if not opts.silhouette:
            raise InputError(None, "tracking from masks alone needs the silhouette term (silhouette: true)")
        mask_set = load_masks(masks, obs.frame_ids, obs.cameras, opts.silhouette_res, opts.silhouette_samples)
        if not labelled and len(mask_set.cameras) < 2:
            raise InputError(Path(masks), f"tracking from masks alone needs masks of at least two cameras "
                                          f"(found {', '.join(mask_set.cameras) or 'none'})")
    reports = []

    def write(result: TrackResult) -> dict:
        extra = {}
        if masks is not None:
            from gausslift.track.silhouette import silhouette_iou

            used = "a silhouette term" if mask_set is not None else "measured only: no silhouette term"
            extra = {"silhouette_iou": silhouette_iou(subject, result.params, result.world_from_subject,
                                                      obs.frame_ids, masks),
                     "silhouette_note": f"against the masks of {masks} ({used}"
                                        + (f"; fitted to the cameras {', '.join(mask_set.cameras)}"
                                           if mask_set is not None else "") + ")"}
        reports.append(write_track(out, subject, result, obs, opts, kmap.name, model_spec, extra))
        return reports[-1]

    result = run_tracker(Tracker(subject, kmap, obs, opts, mask_set), out, loop, write)
    return result, reports[-1]
