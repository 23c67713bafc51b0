"""What ``gausslift track`` writes (every file atomically, ``meta.json`` last)::

    TRACK/params.npz   the layout ``gausslift synth mouse --frames T`` writes: the subject's parameters
                       pose [T,J,3] (pose[:, root] = the mouse's rotation in the world), bone_lengths
                       [T,J] (shared), scale [T,1] (= 1) and translation [T,3] (= 0);
                       world_from_subject [T,4,4] (model units -> the session's world: x -> s x + t_f,
                       s shared), keypoints3d [T,22,3] (the model's DANNCE keypoints, world),
                       keypoints2d [T,C,22,2] and keypoints_visible [T,C,22] (projected into the
                       tracked cameras; visible = in front of the camera and inside the image)
    TRACK/track.npz    nodes [K], points3d [T,K,3] (the tracked label nodes, world), offsets [K,3]
                       (model units, rest axes), frame_ids [T], init_points3d [T,K,3] (the DLT used to
                       initialise)
    TRACK/report.json  keypoint error per camera (overall, per node and per frame), the fit's settings,
                       loss history, timings, the loop's summary (``run``: steps, rollbacks, events) and
                       warnings
    TRACK/meta.json    model, frames, cameras, units, keypoint names, the map, the session

The run folder also holds the loop's files (``config.yaml``, ``checkpoint.pt``, ``log.jsonl``,
``log.csv``, ``tb/``: see :mod:`gausslift.train.loop`); these outputs are written once the run ends.

The world is the session's calibration frame and units (mm for anipose and DANNCE). To use the track
with ``gausslift ingest``'s normalised samples, left-multiply ``world_from_subject`` by each sample's
``world_from_capture``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.track.metrics import pixel_errors, summary
from gausslift.track.observations import Observations
from gausslift.track.optimize import TrackOptions, TrackResult


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


@torch.no_grad()
def model_keypoints(subject, result: TrackResult, batch: int = 32) -> np.ndarray:
    """The subject's own keypoints (the 22 DANNCE points) in the world [T,22,3]."""
    T = result.world_from_subject.shape[0]
    out = []
    for i in range(0, T, batch):
        p = {k: torch.as_tensor(v[i:i + batch], dtype=torch.float32) for k, v in result.params.items()}
        kp = subject(p).keypoints.double().numpy()
        W = result.world_from_subject[i:i + batch]
        out.append(np.einsum("tij,tkj->tki", W[:, :3, :3], kp) + W[:, None, :3, 3])
    return np.concatenate(out)


def report(result: TrackResult, obs: Observations) -> dict:
    """Keypoint error of the tracked nodes against each camera's labels."""
    e = pixel_errors(obs.camera_models, result.points3d, obs.points2d)  # [C,F,K]
    per_frame = []
    for f in range(e.shape[1]):
        row = {}
        for c, name in enumerate(obs.cameras):
            s = summary(e[c, f])
            row[name] = {"median_px": s["median_px"], "n": s["n"]}
        per_frame.append({"frame": int(obs.frame_ids[f]), "cameras": row})
    return {
        "keypoint_error": {name: summary(e[c]) for c, name in enumerate(obs.cameras)},
        "keypoint_error_all": summary(e),
        "per_node_median_px": {name: {n: summary(e[c, :, k])["median_px"] for k, n in enumerate(result.nodes)}
                               for c, name in enumerate(obs.cameras)},
        "per_frame": per_frame,
    }


def write_track(out: str | Path, subject, result: TrackResult, obs: Observations, opts: TrackOptions,
                map_name: str, model_spec: str = "mouse", extra: dict | None = None) -> dict:
    """Write the files of the module docstring into ``out``; returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kp3 = model_keypoints(subject, result)
    T, C = kp3.shape[0], len(obs.cameras)
    kp2 = np.zeros((T, C, kp3.shape[1], 2))
    vis = np.zeros((T, C, kp3.shape[1]), bool)
    for c, cam in enumerate(obs.camera_models):
        uv, z = cam.project(kp3.reshape(-1, 3))
        kp2[:, c] = uv.reshape(T, -1, 2)
        u, v = kp2[:, c, :, 0], kp2[:, c, :, 1]
        vis[:, c] = (z.reshape(T, -1) > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    _save_npz(out / "track.npz", nodes=np.array(result.nodes), points3d=result.points3d,
              offsets=result.offsets, frame_ids=obs.frame_ids, init_points3d=result.init_points3d)
    rep = {
        "session": str(obs.root), "format": obs.format, "units": obs.units, "cameras": obs.cameras,
        "label_files": obs.files, "frames": T, "frame_ids": [int(i) for i in obs.frame_ids],
        "map": map_name, "nodes": result.nodes, "scale": result.scale,
        "bone_length_groups": sorted({round(float(b), 4) for b in result.params["bone_lengths"][0]}),
        "offsets": {n: [round(float(x), 5) for x in o] for n, o in zip(result.nodes, result.offsets)},
        **report(result, obs),
        "silhouette_iou": None,
        "silhouette_note": "not measured (give --masks INGEST_DIR); the fit uses keypoints only",
        "seconds": round(result.seconds, 2), "options": asdict(opts), "history": result.history,
        "run": result.run, "warnings": obs.warnings, **(extra or {}),
    }
    atomic_write_json(out / "report.json", rep, indent=1)
    _save_npz(out / "params.npz", **{k: v.astype(np.float32) for k, v in result.params.items()},
              world_from_subject=result.world_from_subject, keypoints3d=kp3, keypoints2d=kp2,
              keypoints_visible=vis)
    meta = {"name": out.name, "subject": "mouse", "model": model_spec, "frames": T,
            "frame_ids": rep["frame_ids"], "cameras": obs.cameras, "units": obs.units,
            "world": "the session's calibration frame (world_from_subject: model units -> world)",
            "keypoint_names": list(getattr(subject, "keypoint_names", None) or []),
            "tracked_nodes": result.nodes, "map": map_name, "session": str(obs.root),
            "source": "gausslift track"}
    atomic_write_json(out / "meta.json", meta, indent=1)
    return rep
