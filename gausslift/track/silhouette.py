"""Silhouette IoU of a track against ``gausslift ingest``'s masks (a measurement; the fit itself uses
keypoints only).

Ingest writes one FaceLift sample per frame (``manifest.json``'s ``samples``: ``frame``, ``path``),
each with its own ``world_from_capture`` and per camera a virtual pinhole and an RGBA image whose alpha
is the mask (``meta["source"]["camera"]`` names the source camera). The tracked mesh (capture world)
is moved by that sample's ``world_from_capture``, rendered with :func:`gausslift.meshrender.render_mask`
through the sample's camera and compared with alpha > 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError


def _samples(ingest_dir: Path) -> dict[int, Path]:
    man = ingest_dir / "manifest.json"
    if not man.is_file():
        raise InputError(ingest_dir, "not a gausslift ingest output (no manifest.json)")
    try:
        samples = json.loads(man.read_text())["samples"]
        return {int(s["frame"]): ingest_dir / s["path"] for s in samples if s.get("frame") is not None}
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(man, f"unreadable ingest manifest ({type(e).__name__})") from None


@torch.no_grad()
def silhouette_iou(subject, params: dict[str, np.ndarray], world_from_subject: np.ndarray,
                   frame_ids: np.ndarray, ingest_dir: str | Path, every: int = 1) -> dict:
    """{"per_camera": {camera: {"median": iou, "n": frames}}, "per_frame": [{frame, camera: iou}]}
    over the tracked frames that ingest wrote (every ``every``-th of them)."""
    import cv2

    from gausslift.io import read_scene
    from gausslift.meshrender import render_mask

    ingest_dir = Path(ingest_dir)
    samples = _samples(ingest_dir)
    faces = subject.faces.cpu().numpy()
    per_cam: dict[str, list[float]] = {}
    rows = []
    for t in range(0, len(frame_ids), max(1, int(every))):
        fid = int(frame_ids[t])
        if fid not in samples:
            continue
        scene = read_scene(samples[fid])
        if scene.world_from_capture is None:
            raise InputError(samples[fid], "sample has no world_from_capture")
        p = {k: torch.as_tensor(v[t:t + 1], dtype=torch.float32) for k, v in params.items()}
        v = subject(p).vertices[0].double().numpy()
        A = scene.world_from_capture @ world_from_subject[t]
        v = v @ A[:3, :3].T + A[:3, 3]
        row = {"frame": fid}
        for view in scene.views:
            rgba = cv2.imread(str(view.image), cv2.IMREAD_UNCHANGED)
            if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
                continue
            mask = rgba[..., 3] > 127
            cam = view.camera
            model = render_mask(v, faces, cam.K, cam.viewmat, cam.width, cam.height) > 0.5
            union = (mask | model).sum()
            iou = float((mask & model).sum() / union) if union else float("nan")
            name = view.meta.get("source", {}).get("camera", view.name)
            per_cam.setdefault(name, []).append(iou)
            row[name] = round(iou, 4)
        rows.append(row)
    if not rows:
        raise InputError(ingest_dir, "no ingested frame matches the tracked frames")
    cams = {c: {"median": round(float(np.nanmedian(x)), 4), "n": len(x)} for c, x in per_cam.items()}
    return {"per_camera": cams,
            "per_frame": rows}
