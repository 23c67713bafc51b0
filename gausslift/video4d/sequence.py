"""A tracked real session as an avatar sequence: ``gausslift ingest`` samples + ``gausslift track``
parameters -> the layout ``gausslift synth mouse --frames T`` writes (see :mod:`gausslift.io.sequence`).

``make_sequence(INGEST, TRACK, SEQ)`` writes::

    SEQ/params.npz            the track's per-frame parameters (pose, bone_lengths, scale, translation)
                              for the frames both hold, world_from_subject [T,4,4] moved into each
                              frame's normalised ingest world (sample world_from_capture @ track
                              world_from_subject), keypoints3d [T,22,3] in that world
    SEQ/meta.json             model, the source folders, frame ids, camera names
    SEQ/frame_XXXX/opencv_cameras.json
                              the ingest sample's cameras; file_path images/<camera>.png
    SEQ/frame_XXXX/images/    the ingest sample's RGBA images (alpha = the mask), hard links where the
                              file system allows, else copies; named after the source cameras

Nothing in INGEST or TRACK is modified; every file is written atomically and ``meta.json`` last.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.io.sequence import load_json, load_npz
from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.track.masks import ingest_samples

PARAMS = ("pose", "bone_lengths", "scale", "translation")


def _link(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise InputError(src, "image listed by the ingest sample is missing")
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def make_sequence(ingest: str | Path, track: str | Path, out: str | Path) -> dict:
    """Write SEQ (see the module docstring); returns its meta."""
    ingest, track, out = Path(ingest), Path(track), Path(out)
    if not (track / "params.npz").is_file():
        raise InputError(track / "params.npz", "not found (run gausslift track first)")
    z = load_npz(track / "params.npz")
    meta_t = load_json(track / "meta.json") if (track / "meta.json").is_file() else {}
    ids = meta_t.get("frame_ids")
    if ids is None:
        raise InputError(track / "meta.json", "missing or without frame_ids (not a gausslift track output)")
    for k in (*PARAMS, "world_from_subject"):
        if k not in z:
            raise InputError(track / "params.npz", f"missing {k!r} (not a gausslift track output)")
    samples = ingest_samples(ingest)
    rows = [(t, int(f)) for t, f in enumerate(ids) if int(f) in samples]
    if not rows:
        raise InputError(ingest, f"no ingested frame matches the tracked frames of {track}")
    out.mkdir(parents=True, exist_ok=True)
    wfs, kps, names0 = [], [], None
    for i, (t, fid) in enumerate(rows):
        src = samples[fid]
        js = load_json(src / "opencv_cameras.json")
        wfc = js.get("world_from_capture")
        if wfc is None:
            raise InputError(src / "opencv_cameras.json", "no world_from_capture (not an ingest sample)")
        A = np.asarray(wfc, np.float64) @ z["world_from_subject"][t]
        wfs.append(A)
        if "keypoints3d" in z:
            k = z["keypoints3d"][t] @ np.asarray(wfc, np.float64)[:3, :3].T + np.asarray(wfc)[:3, 3]
            kps.append(k)
        dst = out / f"frame_{i:04d}"
        frames, names = [], []
        for f in js.get("frames", []):
            name = str(f.get("source", {}).get("camera") or Path(f["file_path"]).stem)
            names.append(name)
            _link(src / f["file_path"], dst / "images" / f"{name}.png")
            frames.append({**f, "file_path": f"images/{name}.png"})
        if names0 is None:
            names0 = names
        elif names != names0:
            raise InputError(
                src / "opencv_cameras.json", f"cameras {names} differ from the first frame's {names0}"
            )
        atomic_write_json(
            dst / "opencv_cameras.json",
            {"id": dst.name, "frame": fid, "world_from_capture": wfc, "frames": frames},
            indent=1,
        )
    sel = [t for t, _ in rows]
    arrays = {k: z[k][sel].astype(np.float32) for k in PARAMS}
    arrays["world_from_subject"] = np.stack(wfs)
    if kps:
        arrays["keypoints3d"] = np.stack(kps)
    with atomic_path(out / "params.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    meta = {
        "name": out.name,
        "subject": "mouse",
        "model": meta_t.get("model", "mouse"),
        "frames": len(rows),
        "frame_ids": [f for _, f in rows],
        "cameras": names0,
        "ingest": str(ingest),
        "track": str(track),
        "source": "gausslift video4d (ingest + track)",
    }
    atomic_write_json(out / "meta.json", meta, indent=1)
    return meta
