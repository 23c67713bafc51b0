"""Evaluating an avatar run on its held-out data (as GaussianAvatars does).

* **novel views**: the training frames (with the fine-tuned parameters) seen from the held-out cameras;
* **self-reenactment**: the held-out frames (their own, never-trained parameters) from the held-out
  cameras (from the training cameras when no camera was held out);
* **reenactment_train_cameras** (``train_camera_reenactment=True`` and cameras were held out): the
  held-out frames from the training cameras, so that held-out time and held-out views can be told apart.

Per split: PSNR, SSIM, LPIPS (VGG; ``None`` when its weights are not available), mask IoU (render
alpha vs the mask, both at 0.5), and the flicker figures of :mod:`gausslift.metrics.flicker` per
held-out camera over time (averaged): PSNR variance, change in static pixels (and the ground truth's),
landmark jitter in px^2 (the subject's keypoints projected with the parameters the avatar is posed
with, and with the ground-truth ones). The Gaussians are bound to the mesh, so the posed keypoints are
where the rendered landmarks are. In self-reenactment the avatar is posed with the held-out frames'
ground-truth parameters, so the two jitter figures are equal there by construction; they differ in the
novel-view split, whose parameters were fine-tuned. Plus render FPS (median over the views) and the
Gaussian count.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gausslift import metrics
from gausslift.avatar import model as M
from gausslift.avatar.trainer import read_run
from gausslift.errors import InputError, MissingWeightsError
from gausslift.io.sequence import load_image, read_sequence
from gausslift.metrics import flicker
from gausslift.subjects import load_subject


class LoadedAvatar:
    """A run's avatar, its subject and (lazily) its sequence, ready to render."""

    def __init__(self, run: str | Path, device: str = "cpu", backend: str = "auto", subject=None):
        self.run = Path(run)
        self.info = read_run(run)
        av = self.info.pop("avatar")
        self.device, self.backend = torch.device(device), backend
        self.subject = subject if subject is not None else load_subject(self.info["subject"])
        if av.get("static_offset") is not None:  # a VHAP sequence's, set when the avatar was fitted
            self.subject.set_static_offset(av["static_offset"].cpu().numpy())
        self.subject.to(self.device)
        self.params = {k: v.to(self.device) for k, v in av["params"].items()}
        self.binding = av["binding"].to(self.device)
        self.faces = self.subject.faces[av["faces_idx"].to(self.subject.faces.device)].to(self.device)
        self.table = {k: v.to(self.device) for k, v in av["frame_table"].items()}
        self.offsets = av["offsets"].to(self.device)
        self.sh_degree = int(av["sh_degree"])
        self._seq = None

    @property
    def seq(self):
        if self._seq is None:
            self._seq = read_sequence(self.info["sequence"])
        return self._seq

    def vertices(self, params: dict, world_from_subject: torch.Tensor) -> torch.Tensor:
        """[B,V,3] world vertices for per-frame params [B,...]."""
        return M.pose_vertices(self.subject, params, world_from_subject.to(self.device))

    def frame(self, t: int, table: dict | None = None) -> dict:
        table = self.table if table is None else table
        return {k: table[k][t : t + 1] for k in self.subject.param_shapes}

    @torch.no_grad()
    def render(self, verts: torch.Tensor, camera, bg=(1.0, 1.0, 1.0)):
        vm = torch.as_tensor(camera.viewmat, dtype=torch.float32, device=self.device)[None]
        K = torch.as_tensor(camera.K, dtype=torch.float32, device=self.device)[None]
        rgb, alpha, _ = M.render(
            self.params,
            self.binding,
            verts,
            self.faces,
            vm,
            K,
            camera.width,
            camera.height,
            self.sh_degree,
            torch.tensor(bg, device=self.device),
            self.backend,
        )
        return rgb[0].clamp(0, 1), alpha[0, ..., 0]


def _lpips(weights):
    try:
        return metrics.LPIPS("vgg", weights=weights)
    except (MissingWeightsError, InputError, FileNotFoundError, OSError):  # InputError: missing head file
        return None


@torch.no_grad()
def evaluate_run(
    run: str | Path,
    device: str = "cpu",
    backend: str = "auto",
    lpips_weights=None,
    max_frames: int = 0,
    subject=None,
    per_view: bool = False,
    train_camera_reenactment: bool = False,
) -> dict:
    """The metrics dict of a run (``subject``: an already built model instead of the run's spec;
    ``per_view``: also ``out["per_view"]``, one row per rendered view: split, frame, camera and its
    figures)."""
    av = LoadedAvatar(run, device, backend, subject)
    seq, info = av.seq, av.info
    wfs = torch.as_tensor(seq.world_from_subject, dtype=torch.float32)
    gt_table = {k: torch.as_tensor(v, dtype=torch.float32, device=av.device) for k, v in seq.params.items()}
    lp = _lpips(lpips_weights)
    test_cams = info["test_cameras"] or info["train_cameras"]
    splits = {
        "novel_view": (info["train_frames"], test_cams),
        "reenactment": (info["test_frames"], test_cams),
    }
    if train_camera_reenactment and info["test_cameras"]:
        splits["reenactment_train_cameras"] = (info["test_frames"], info["train_cameras"])
    out = {"num_gaussians": int(len(av.binding)), "lpips_available": lp is not None}
    times, views = [], []
    for name, (frames, cams) in splits.items():
        if not frames or not cams:
            continue
        if max_frames and len(frames) > max_frames:
            frames = frames[:: int(np.ceil(len(frames) / max_frames))]
        rows, fl = [], []
        for c in cams:
            seq_r, seq_g, tr, tr_gt = [], [], [], []
            for t in frames:
                cam = seq.cameras[t][c]
                verts = av.vertices(av.frame(t), wfs[t : t + 1])[0]
                if t < len(av.offsets):
                    verts = verts + av.offsets[t]
                t0 = time.perf_counter()
                rgb, alpha = av.render(verts, cam)
                times.append(time.perf_counter() - t0)
                img, mask = load_image(seq.images[t][c], seq.masks[t][c], cam)
                gt = torch.from_numpy(img).float().to(av.device) / 255
                m = None if mask is None else torch.from_numpy(mask).float().to(av.device) / 255
                if m is not None:
                    gt = gt * m[..., None] + (1 - m[..., None])
                row = {"psnr": float(metrics.psnr(rgb, gt)), "ssim": float(metrics.ssim(rgb, gt))}
                if lp is not None:
                    row["lpips"] = float(lp(rgb, gt))
                if m is not None:
                    row["mask_iou"] = float(metrics.mask_iou(alpha, m))
                rows.append(row)
                if per_view:
                    views.append({"split": name, "frame": int(t), "camera": seq.camera_names[c], **row})
                seq_r.append(rgb.cpu().numpy())
                seq_g.append(gt.cpu().numpy())
                for tab, dst in ((av.table, tr), (gt_table, tr_gt)):
                    kp = M.keypoints_world(av.subject, av.frame(t, tab), wfs[t : t + 1])
                    if kp is not None:
                        dst.append(cam.project(kp[0].cpu().numpy().astype(np.float64))[0])
            fl.append(
                flicker.flicker_report(
                    np.stack(seq_r),
                    np.stack(seq_g),
                    np.stack(tr) if tr else None,
                    np.stack(tr_gt) if tr_gt else None,
                )
            )
        res = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        res |= {k: float(np.mean([f[k] for f in fl])) for k in fl[0]}
        res |= {"views": len(rows), "frames": len(frames), "cameras": len(cams)}
        out[name] = res
    out["render_fps"] = float(1.0 / np.median(times)) if times else None
    out["train_seconds"] = info.get("train_seconds")
    out["peak_rss_mb"] = info.get("peak_rss_mb")
    if per_view:
        out["per_view"] = views
    return out
