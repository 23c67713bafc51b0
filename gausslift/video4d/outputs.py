"""The 4D outputs of a video4d folder (see :mod:`gausslift.video4d.pipeline`): per-frame ``.ply``, an
orbit video and input | render videos per camera, plus a few still images for the report.

Every frame of the sequence is posed with the avatar's own per-frame parameters (fine-tuned for the
training frames, the tracked ones for the held-out frames) and its dynamic offsets. Ingest normalises
every frame on its own (``world_from_capture`` per sample), which removes the mouse's motion; the
``.ply`` files and the orbit are therefore moved into frame 0's normalised world
(``W0 @ inv(W_t)``), so that the mouse moves in them as it did in the capture.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from gausslift.ioutil import atomic_path, atomic_write_json

ELEVATION_DEG, FOV_DEG = 35.0, 30.0


def _capture_worlds(seq) -> np.ndarray:
    """[T,4,4] frame t's normalised world -> frame 0's (identity when the frames do not say)."""
    W = []
    for t in range(seq.num_frames):
        js = json.loads((seq.images[t][0].parent.parent / "opencv_cameras.json").read_text())
        W.append(np.asarray(js.get("world_from_capture", np.eye(4)), np.float64))
    W = np.stack(W)
    return W[0] @ np.linalg.inv(W)


@torch.no_grad()
def write_outputs(out: str | Path, fps: float = 25.0, device: str = "cpu", stills: int = 4) -> dict:
    from gausslift.avatar.animate import save_avatar_ply
    from gausslift.avatar.evaluate import LoadedAvatar
    from gausslift.io.sequence import load_image
    from gausslift.viz.orbit import orbit_cameras
    from gausslift.viz.video import write_video

    out = Path(out)
    av = LoadedAvatar(out / "avatar", device)
    seq = av.seq
    T = seq.num_frames
    wfs = torch.as_tensor(seq.world_from_subject, dtype=torch.float32)
    to0 = torch.as_tensor(_capture_worlds(seq), dtype=torch.float32)
    split = {
        "train_frames": av.info["train_frames"],
        "test_frames": av.info["test_frames"],
        "train_cameras": [seq.camera_names[c] for c in av.info["train_cameras"]],
        "test_cameras": [seq.camera_names[c] for c in av.info["test_cameras"]],
    }

    def verts(t: int, world0: bool) -> torch.Tensor:
        W = (to0[t] @ wfs[t]) if world0 else wfs[t]
        v = av.vertices(av.frame(t), W[None])[0]
        if t < len(av.offsets):
            v = v + (av.offsets[t] @ to0[t, :3, :3].T if world0 else av.offsets[t])
        return v

    v0 = [verts(t, True) for t in range(T)]
    plydir = out / "ply"
    for t in range(T):
        save_avatar_ply(av, v0[t], plydir / f"frame_{t:06d}.ply")
    centres = torch.stack([v.mean(0) for v in v0]).numpy()
    target = centres.mean(0)
    extent = max(float(np.percentile(np.linalg.norm(v0[0].numpy() - centres[0], axis=1), 80)), 1e-3)
    radius = 1.2 * extent / np.sin(np.radians(FOV_DEG) / 2) + float(np.ptp(centres, 0).max()) / 2
    size = seq.cameras[0][0].width
    cams = orbit_cameras(max(T, 2), radius, ELEVATION_DEG, FOV_DEG, size, target=tuple(target))
    write_video((av.render(v0[t], cams[t])[0].cpu().numpy() for t in range(T)), out / "orbit.mp4", fps=fps)
    videos, still_paths = {}, []
    pick = sorted({int(round(i)) for i in np.linspace(0, T - 1, max(1, stills))})
    (out / "report").mkdir(exist_ok=True)
    vt = [verts(t, False) for t in range(T)]  # each frame posed once, rendered by every camera
    for c, name in enumerate(seq.camera_names):
        frames = []
        for t in range(T):
            cam = seq.cameras[t][c]
            rgb, _ = load_image(seq.images[t][c], seq.masks[t][c], cam)
            ren = (av.render(vt[t], cam)[0].cpu().numpy() * 255 + 0.5).astype(np.uint8)
            pair = np.concatenate([rgb, ren], 1)
            frames.append(pair)
            if t in pick:
                p = out / "report" / f"{name}_{t:04d}.jpg"
                with atomic_path(p, suffix=".jpg") as tmp:
                    cv2.imwrite(
                        str(tmp), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
                    )
                still_paths.append(p.name)
        videos[name] = write_video(frames, out / f"compare_{name}.mp4", fps=fps).name
    orbit_still = out / "report" / "orbit_0000.jpg"
    with atomic_path(orbit_still, suffix=".jpg") as tmp:
        img = (av.render(v0[0], cams[0])[0].cpu().numpy() * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    info = {
        "frames": T,
        "cameras": seq.camera_names,
        "ply": f"ply/frame_000000.ply .. frame_{T - 1:06d}.ply",
        "orbit": "orbit.mp4",
        "compare": videos,
        "stills": still_paths,
        "orbit_still": orbit_still.name,
        "num_gaussians": int(len(av.binding)),
        "fps": fps,
        **split,
    }
    atomic_write_json(out / "outputs.json", info, indent=1)
    return {"frames": T, "videos": len(videos) + 1}
