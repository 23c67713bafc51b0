"""Reenactment: render an avatar with new per-frame parameters from any camera.

``animate(run, params_npz, out, camera=...)``: ``params_npz`` holds the subject's per-frame
parameters, each ``[T, ...]`` (a synth ``params.npz`` works as it is). Parameters it lacks (e.g. the
identity) come from the run's first frame; ``world_from_subject`` [T,4,4] defaults to the run's first
frame's. Writes ``out/frame_XXXX.png`` (RGBA), ``out/animation.mp4`` and, with ``ply=True``,
``out/frame_XXXX.ply`` (the posed Gaussians in the INRIA layout).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from gausslift.avatar import model as M
from gausslift.avatar.evaluate import LoadedAvatar
from gausslift.errors import InputError
from gausslift.ioutil import atomic_path

NOT_PARAMS = ("world_from_subject", "keypoints3d", "keypoints2d", "keypoints_visible")


def read_params(path: Path, subject, defaults: dict) -> tuple[dict, np.ndarray | None]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "parameter file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:
        raise InputError(path, f"unreadable parameter file ({type(e).__name__})") from None
    wfs = arrays.pop("world_from_subject", None)
    for k in NOT_PARAMS:
        arrays.pop(k, None)
    unknown = sorted(set(arrays) - set(subject.param_shapes))
    if unknown:
        raise InputError(path, f"unknown parameter(s) {unknown} for the {subject.name} model")
    lengths = {k: len(v) for k, v in arrays.items()}
    if not arrays or len(set(lengths.values())) != 1:
        raise InputError(path, f"parameters must all have the same number of frames, got {lengths}")
    T = next(iter(lengths.values()))
    out = {}
    for k, shape in subject.param_shapes.items():
        if k in arrays:
            if tuple(arrays[k].shape[1:]) != tuple(shape):
                raise InputError(
                    path,
                    f"parameter {k!r} has per-frame shape {tuple(arrays[k].shape[1:])}, "
                    f"expected {tuple(shape)}",
                )
            out[k] = torch.as_tensor(arrays[k], dtype=torch.float32)
        else:
            out[k] = defaults[k][:1].detach().cpu().repeat(T, *([1] * (defaults[k].dim() - 1)))
    if wfs is not None and wfs.shape != (T, 4, 4):
        raise InputError(path, f"world_from_subject has shape {wfs.shape}, expected ({T}, 4, 4)")
    return out, wfs


def animate(
    run,
    params_path,
    out,
    camera: int = 0,
    ply: bool = False,
    fps: float = 25,
    device: str = "cpu",
    backend: str = "auto",
    size: int = 0,
    subject=None,
) -> dict:
    av = LoadedAvatar(run, device, backend, subject)
    params, wfs = read_params(Path(params_path), av.subject, av.table)
    T = len(next(iter(params.values())))
    seq = av.seq
    if not 0 <= camera < seq.num_cameras:
        raise InputError(None, f"camera must be 0..{seq.num_cameras - 1}, got {camera}")
    cam = seq.cameras[0][camera]
    if size:
        cam = cam.resized(size, size)
    if wfs is None:
        wfs = np.repeat(seq.world_from_subject[:1], T, 0)
    wfs_t = torch.as_tensor(wfs, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(T):
        p = {k: v[t : t + 1].to(av.device) for k, v in params.items()}
        verts = av.vertices(p, wfs_t[t : t + 1])[0]
        rgb, alpha = av.render(verts, cam)
        rgba = np.concatenate([rgb.cpu().numpy(), alpha.cpu().numpy()[..., None]], -1)
        u8 = (rgba.clip(0, 1) * 255 + 0.5).astype(np.uint8)
        with atomic_path(out / f"frame_{t:04d}.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(u8, cv2.COLOR_RGBA2BGRA))
        frames.append(u8[..., :3])
        if ply:
            save_avatar_ply(av, verts, out / f"frame_{t:04d}.ply")
    from gausslift.viz.video import write_video

    video = write_video(frames, out / "animation.mp4", fps=fps)
    return {"frames": T, "video": str(video), "camera": camera, "ply": ply}


def save_avatar_ply(av: LoadedAvatar, verts: torch.Tensor, path: Path) -> None:
    from gausslift.splats import Splats, save_ply

    with torch.no_grad():
        means, quats, scales = M.world_gaussians(av.params, av.binding, verts, av.faces)
        save_ply(
            Splats(
                means.cpu(),
                quats.cpu(),
                scales.log().cpu(),
                av.params["opacities"].cpu(),
                av.params["sh0"].cpu(),
                av.params["shN"].cpu(),
            ),
            path,
        )
