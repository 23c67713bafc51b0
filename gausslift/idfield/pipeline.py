"""``gausslift idfield fit RUN IMAGE --out FIT``: one image in, a fitted head out.

The image is RGBA (alpha: the head's matte) or RGB with ``--mask``. With ``--mask`` the mask is taken as
the *face-region* mask (as ``idfield prep`` writes it) and the image is compared inside it; without it
the alpha channel is a head matte (a photo) and the comparison uses the fitted mesh's own face region
inside the matte. Images larger than ``size`` (default 128, the tiny model's) are resized (the camera
with them). Camera: ``--camera`` (a JSON with ``fx fy cx cy w h w2c``, or a synth / FaceLift
``opencv_cameras.json`` and ``--view``), else FaceLift's front camera. ``--landmarks`` (.npy [68,2]
pixels of the given image) initialises the pose; else the matte does.

Writes ``FIT/gaussians.ply`` (INRIA), ``FIT/mesh.ply`` (the fitted mesh), ``FIT/params.npz`` (the
subject's parameters ``[1, ...]`` with ``world_from_subject`` and ``code``: the layout of a synth
``params.npz``, so ``idfield animate`` and the avatar tools read it), ``FIT/turntable.mp4``,
``FIT/render.png`` (the input view) and ``FIT/fit.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.idfield import field as fd
from gausslift.idfield.fit import Target, fit, fit_config, fitted_params
from gausslift.idfield.model import IdField, load_model
from gausslift.idfield.views import show_cameras, turntable_azimuths
from gausslift.io.meshply import write_ply
from gausslift.ioutil import atomic_path, atomic_write_json


def read_camera(path: str | Path | None, view: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat, K) at the image's size."""
    from gausslift.cameras import facelift_inference_rig

    if path is None:
        cam = facelift_inference_rig()[0].resized(width, height)
        return np.asarray(cam.viewmat, np.float64), np.asarray(cam.K, np.float64)
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        f = d["frames"][view] if "frames" in d else d
        K = np.array([[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1.0]], np.float64)
        vm = np.asarray(f["w2c"], np.float64).reshape(4, 4)
        w, h = int(f["w"]), int(f["h"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise InputError(path, f"not a camera file (fx fy cx cy w h w2c, or frames[{view}] of them): {e}"
                         ) from None
    if (w, h) != (width, height):
        K = K * np.array([[width / w], [height / h], [1.0]])
    return vm, K


def read_inputs(image, mask=None, size: int = 128) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(rgb [S,S,3] float, face mask or None, matte [S,S]) at ``size`` (only ever shrunk)."""
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(image, "cannot read the image")
    if img.ndim == 2:
        img = img[..., None].repeat(3, 2)
    if img.dtype != np.uint8:
        img = (img / np.iinfo(img.dtype).max * 255).astype(np.uint8)
    rgb = img[..., 2::-1][..., :3].astype(np.float32) / 255
    matte = img[..., 3].astype(np.float32) / 255 if img.shape[2] == 4 else None
    face = None
    if mask is not None:
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise InputError(mask, "cannot read the mask")
        if m.shape != rgb.shape[:2]:
            raise InputError(mask, f"mask {m.shape[1]}x{m.shape[0]} does not match the image")
        face = m.astype(np.float32) / 255
    if face is None and matte is None:
        raise InputError(image, "no alpha channel: give an RGBA image (alpha = the head's matte) or --mask")
    H, W = rgb.shape[:2]
    if max(H, W) > size:
        s = size / max(H, W)
        sz = (max(1, round(W * s)), max(1, round(H * s)))
        rgb = cv2.resize(rgb, sz, interpolation=cv2.INTER_AREA)
        face = None if face is None else cv2.resize(face, sz, interpolation=cv2.INTER_AREA)
        matte = None if matte is None else cv2.resize(matte, sz, interpolation=cv2.INTER_AREA)
    if matte is None:
        matte = (face > 0.5).astype(np.float32)
    return rgb, face, matte


def target_from(rgb, face, matte, vm, K) -> Target:
    if face is not None:
        return Target(rgb * face[..., None], face, vm, K, matte=matte)
    return Target(rgb * matte[..., None], None, vm, K, matte=matte, full=rgb)


def turntable(model: IdField, code, verts, size: int = 128, frames: int = 48) -> np.ndarray:
    vm, K = show_cameras(turntable_azimuths(frames), size)
    with torch.no_grad():
        g = model.gaussians(code, verts)
        out = []
        for i in range(0, frames, 8):
            rgb, _ = fd.render(g, torch.as_tensor(vm[i:i + 8], dtype=torch.float32),
                               torch.as_tensor(K[i:i + 8], dtype=torch.float32), size, size)
            out.append(rgb.clamp(0, 1).numpy())
    return np.concatenate(out)


def write_fit(model: IdField, res: dict, target: Target, out: str | Path, extra: dict | None = None) -> dict:
    import cv2

    from gausslift.splats import save_ply
    from gausslift.viz.video import write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pose, code = res["pose"], res["code"]
    with torch.no_grad():
        verts, _ = pose.vertices()
        g = model.gaussians(code, verts)
        rgb, _ = fd.render(g, torch.as_tensor(target.viewmat, dtype=torch.float32)[None],
                           torch.as_tensor(target.K, dtype=torch.float32)[None],
                           target.image.shape[1], target.image.shape[0])
    save_ply(fd.to_splats(g), out / "gaussians.ply")
    write_ply(out / "mesh.ply", verts.numpy(), model.subject.faces.cpu().numpy())
    with atomic_path(out / "params.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **fitted_params(pose, code))
    side = np.concatenate([target.image, rgb[0].clamp(0, 1).numpy()], 1)
    ok, buf = cv2.imencode(".png", (side * 255 + 0.5).astype(np.uint8)[..., ::-1])
    with atomic_path(out / "render.png") as tmp:
        Path(tmp).write_bytes(buf.tobytes())
    write_video(list(turntable(model, code, verts, target.image.shape[0])), out / "turntable.mp4", fps=24)
    info = {"seconds": res["seconds"], "landmark_rms_px": res["landmark_rms_px"], "loss": res["loss"],
            "files": ["gaussians.ply", "mesh.ply", "params.npz", "turntable.mp4", "render.png"]}
    info |= extra or {}
    atomic_write_json(out / "fit.json", info)
    return info


def fit_cli(args) -> dict:
    cfg = fit_config(args.set)  # a bad key fails before any reading
    model = load_model(args.run)
    rgb, face, matte = read_inputs(args.image, args.mask)
    vm, K = read_camera(args.camera, args.view, rgb.shape[1], rgb.shape[0])
    lm = None
    if args.landmarks:
        lm = np.load(args.landmarks).astype(np.float64).reshape(-1, 2)
    if args.iters:
        cfg.iters = int(args.iters)
    t = target_from(rgb, face, matte, vm, K)
    res = fit(model, [t], cfg, lm2d=lm)
    return write_fit(model, res, t, args.out, {"config": asdict(cfg), "image": str(args.image)})


def animate(run, fit_dir, params_path, out, camera=None, view: int = 0, size: int = 128, ply: bool = False,
            fps: float = 25) -> dict:
    """Reanimate a fitted head (``FIT/params.npz``: code and identity coefficients) with per-frame
    parameters ``params_path`` (each ``[T, ...]``, e.g. a synth ``params.npz``; ``world_from_subject``
    [T,4,4] when present, else the fit's): ``OUT/frame_XXXX.png``, ``OUT/animation.mp4`` (and
    ``frame_XXXX.ply``). The avatar run format stores Gaussians, not a generator, so this is the
    idfield counterpart of ``avatar animate``."""
    import cv2

    from gausslift.idfield.fit import reanimate
    from gausslift.idfield.model import identity_key
    from gausslift.splats import save_ply
    from gausslift.viz.video import write_video

    model = load_model(run)
    fp = Path(fit_dir) / "params.npz" if Path(fit_dir).is_dir() else Path(fit_dir)
    try:
        with np.load(fp) as d:
            fit_p = {k: np.asarray(d[k]) for k in d.files}
        with np.load(params_path) as d:
            seq = {k: np.asarray(d[k], np.float32) for k in d.files}
    except (OSError, ValueError) as e:
        raise InputError(fp, f"cannot read the parameters ({e})") from None
    if "code" not in fit_p:
        raise InputError(fp, "not an idfield fit (no code)")
    keys = [k for k in model.subject.param_shapes if k in seq]
    if not keys:
        raise InputError(params_path, f"no subject parameters ({', '.join(model.subject.param_shapes)})")
    T = len(seq[keys[0]])
    wfs = seq.get("world_from_subject", np.repeat(fit_p["world_from_subject"][:1], T, 0)).reshape(T, 4, 4)
    if camera is None:
        vm, K = show_cameras([270.0], size)
        vm, K = vm[0], K[0]
    else:
        vm, K = read_camera(camera, view, size, size)
    code = torch.as_tensor(fit_p["code"].reshape(-1), dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(T):
        ident = fit_p[identity_key(model.subject)]
        g = reanimate(model, code, ident, {k: seq[k][t:t + 1] for k in keys}, wfs[t])
        with torch.no_grad():
            rgb, _ = fd.render(g, torch.as_tensor(vm, dtype=torch.float32)[None],
                               torch.as_tensor(K, dtype=torch.float32)[None], size, size)
        u8 = (rgb[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".png", u8[..., ::-1])
        with atomic_path(out / f"frame_{t:04d}.png") as tmp:
            Path(tmp).write_bytes(buf.tobytes())
        if ply:
            save_ply(fd.to_splats(g), out / f"frame_{t:04d}.ply")
        frames.append(u8)
    video = write_video(frames, out / "animation.mp4", fps=fps)
    return {"frames": T, "video": str(video), "ply": ply}
