"""``gausslift idfield interpolate RUN --a ID --b ID --steps N --out DIR``: heads between two training
identities. Step i of N blends the two codes and the two identities' mesh coefficients linearly
(``alpha = i / (N - 1)``), neutral expression, the head at the origin facing the front. Writes
``step_XX.ply`` (Gaussians, INRIA layout), ``interpolation.mp4`` (front view, then a turntable of the
middle step), ``strip.png`` (the steps' front views) and ``interpolation.json``:

* ``iou``: per step, the IoU of the render's alpha (> 0.5) with the mesh's face region as prep masks it
  (seen through the rest of the mesh: the eyelashes, hair and ears that lie in front of the face cut
  holes in it) in three views (front, +-40 degrees): a complete head covers its mesh;
* ``iou_outline``: the same against the face-region mesh alone (its own silhouette, without those
  holes: the Gaussians model the face surface, not the lashes in front of it);
* ``psnr_to_nearer``: per step, the front view's PSNR against the nearer endpoint's render (the
  endpoints themselves are left out: infinite), and the largest step-to-step change of it;
* ``psnr_step``: PSNR between consecutive steps' front views (smoothness).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.idfield import field as fd
from gausslift.idfield.fit import Pose
from gausslift.idfield.model import load_model
from gausslift.idfield.views import show_cameras, turntable_azimuths
from gausslift.ioutil import atomic_write_json
from gausslift.metrics import mask_iou, psnr


def _own_mask(model, verts: torch.Tensor, vm: np.ndarray, K: np.ndarray, size: int) -> np.ndarray:
    from gausslift.idfield.fit import Target, own_face_mask

    t = Target(np.zeros((size, size, 3)), None, vm, K)
    return own_face_mask(model, verts, t)


def _outline(model, verts: torch.Tensor, vm: np.ndarray, K: np.ndarray, size: int) -> np.ndarray:
    """The face-region triangles alone, rasterised (their own silhouette, nothing in front of them)."""
    from gausslift.meshrender import render_mask

    faces = model.subject.faces.cpu().numpy()[model.layout.region_faces]
    return render_mask(verts.detach().double().numpy(), faces, np.asarray(K, np.float64),
                       np.asarray(vm, np.float64), size, size).astype(np.float32)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from gausslift.ioutil import atomic_write_bytes

    ok, buf = cv2.imencode(".png", (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    if ok:
        atomic_write_bytes(path, buf.tobytes())


def interpolate(run, a: str, b: str, steps: int, out, size: int = 128) -> dict:
    from gausslift.errors import InputError
    from gausslift.splats import save_ply
    from gausslift.viz.video import write_video

    if steps < 2:
        raise InputError(None, f"--steps must be at least 2, got {steps}")
    model = load_model(run)
    za, zb = model.code_of(a), model.code_of(b)
    coeffs = model.world.get("identity_coeffs", {})
    ia, ib = (torch.as_tensor(coeffs[n], dtype=torch.float32) if n in coeffs else None for n in (a, b))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vms, Ks = show_cameras([270.0, 230.0, 310.0], size)
    vm_t, K_t = torch.as_tensor(vms, dtype=torch.float32), torch.as_tensor(Ks, dtype=torch.float32)
    pose = Pose(model.subject, model.world)
    frames, ious, outl, fronts = [], [], [], []
    for i in range(steps):
        al = i / (steps - 1)
        with torch.no_grad():
            if ia is not None and ib is not None:
                pose.coeffs[pose.id_key].copy_(((1 - al) * ia + al * ib)[None])
            verts, _ = pose.vertices()
            g = model.gaussians((1 - al) * za + al * zb, verts)
            rgb, alpha = fd.render(g, vm_t, K_t, size, size)
        save_ply(fd.to_splats(g), out / f"step_{i:02d}.ply")
        iou = [float(mask_iou(alpha[c, ..., 0],
                              torch.as_tensor(_own_mask(model, verts, vms[c], Ks[c], size))))
               for c in range(len(vms))]
        ious.append(float(np.mean(iou)))
        sil = [torch.as_tensor(_outline(model, verts, vms[c], Ks[c], size)) for c in range(len(vms))]
        outl.append(float(np.mean([float(mask_iou(alpha[c, ..., 0], sil[c])) for c in range(len(vms))])))
        fronts.append(rgb[0])
        frames.append(rgb[0].clamp(0, 1).numpy())
    near = [fronts[0] if i / (steps - 1) <= 0.5 else fronts[-1] for i in range(steps)]
    p_near = [float(psnr(fronts[i], near[i])) for i in range(1, steps - 1)]
    jumps = np.abs(np.diff(p_near)) if len(p_near) > 1 else np.zeros(0)
    p_step = [float(psnr(fronts[i + 1], fronts[i])) for i in range(steps - 1)]
    mid = (1 - 0.5) * za + 0.5 * zb
    with torch.no_grad():
        if ia is not None and ib is not None:
            pose.coeffs[pose.id_key].copy_((0.5 * (ia + ib))[None])
        verts, _ = pose.vertices()
        g = model.gaussians(mid, verts)
        tv, tK = show_cameras(turntable_azimuths(36), size)
        rgb, _ = fd.render(g, torch.as_tensor(tv, dtype=torch.float32),
                           torch.as_tensor(tK, dtype=torch.float32), size, size)
    video = [f for f in frames for _ in range(4)] + list(rgb.clamp(0, 1).numpy())
    write_video(video, out / "interpolation.mp4", fps=12)
    _write_png(out / "strip.png", np.concatenate(frames, 1))
    res = {"a": a, "b": b, "steps": steps, "iou": ious, "iou_min": float(min(ious)),
           "iou_outline": outl, "iou_outline_min": float(min(outl)),
           "psnr_to_nearer": p_near, "psnr_to_nearer_max_jump": float(jumps.max()) if len(jumps) else 0.0,
           "psnr_step": p_step, "psnr_step_min": float(min(p_step)), "mesh_coefficients": ia is not None}
    atomic_write_json(out / "interpolation.json", res)
    return res
