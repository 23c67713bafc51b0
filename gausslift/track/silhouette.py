"""The tracked mesh against ``gausslift ingest``'s masks: the silhouette IoU (a measurement, written
into the track's report) and :class:`SilhouetteTerm` (the fit's differentiable silhouette term; the
masks it uses are loaded by :mod:`gausslift.track.masks`).

Ingest writes one FaceLift sample per frame (``manifest.json``'s ``samples``: ``frame``, ``path``),
each with its own ``world_from_capture`` and per camera a virtual pinhole and an RGBA image whose alpha
is the mask (``meta["source"]["camera"]`` names the source camera). For the IoU, the tracked mesh
(capture world) is moved by that sample's ``world_from_capture``, rendered with
:func:`gausslift.meshrender.render_mask` through the sample's camera and compared with alpha > 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.track.masks import ingest_samples

_samples = ingest_samples  # the name this module used to give it


@torch.no_grad()
def silhouette_iou(subject, params: dict[str, np.ndarray], world_from_subject: np.ndarray,
                   frame_ids: np.ndarray, ingest_dir: str | Path, every: int = 1) -> dict:
    """{"per_camera": {camera: {"median": iou, "n": frames}}, "per_frame": [{frame, camera: iou}]}
    over the tracked frames that ingest wrote (every ``every``-th of them)."""
    import cv2

    from gausslift.io import read_scene
    from gausslift.meshrender import render_mask

    ingest_dir = Path(ingest_dir)
    samples = ingest_samples(ingest_dir)
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


# ---------------------------------------------------------------------------------------------- the term
def farthest_points(X: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` points of X [V,3] spread evenly (farthest-point sampling, deterministic)."""
    n = min(int(n), len(X))
    idx = np.zeros(n, np.int64)
    idx[0] = int(np.argmin(((X - X.mean(0)) ** 2).sum(1))) if seed == 0 else seed % len(X)
    d = ((X - X[idx[0]]) ** 2).sum(1)
    for i in range(1, n):
        idx[i] = int(np.argmax(d))
        d = np.minimum(d, ((X - X[idx[i]]) ** 2).sum(1))
    return np.sort(idx)


def cauchy(d: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.log1p((d / sigma) ** 2)


class SilhouetteTerm(torch.nn.Module):
    """A differentiable 2-sided chamfer between the posed model and the masks of a
    :class:`gausslift.track.masks.MaskSet` (see ``docs/track.md``).

    ``points`` vertices of the model, spread evenly over the rest mesh by farthest-point sampling
    (without the tail unless ``tail``: ingest's masks miss the thin tail, and the keypoints hold it),
    are posed by LBS on those rows only (a subset copy of the subject, as
    :class:`gausslift.track.posing.KeypointModel`), moved into the world and projected into every
    (frame, camera) with a mask. Two means, each over the present (frame, camera) pairs:

    * ``outside``: rho(D(p)) over the projected model points p, D the distance transform of the
      mask's complement (bilinear), so a point outside the mask is pulled towards it;
    * ``cover``: rho(min_p |s - p|) over the contour samples s of the mask, so every part of the mask's
      outline needs a model point near it (the nearest point is found without gradient, the distance
      to it has one).

    rho is Cauchy, log(1 + d²/σ²), σ = ``robust_px`` ingest pixels: a spurious blob or a missed tail
    costs a bounded, slowly growing amount instead of dominating.
    """

    def __init__(self, subject, masks, points: int = 1000, tail: bool = False, robust_px: float = 5.0):
        super().__init__()
        from gausslift.track.posing import _subset_subject

        self.masks, self.robust_px = masks, float(robust_px)
        with torch.no_grad():
            rest = subject(subject.zero_params(1)).vertices[0].double().numpy()
        keep = np.ones(len(rest), bool)
        regions = getattr(subject, "regions", {})
        if not tail and "tail" in regions and (~regions["tail"]).sum() > 0:
            keep = ~np.asarray(regions["tail"], bool)
        cand = np.flatnonzero(keep)
        self.vids = cand[farthest_points(rest[cand], points)]
        self.sub = _subset_subject(subject, self.vids)
        self.full = self.sub is None
        self.subject = subject
        self.rest = rest[self.vids]

    def model_points(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The posed vertices [F, n, 3] (model units)."""
        if self.full:
            return self.subject(params).vertices[:, torch.as_tensor(self.vids)]
        return self.sub(params).vertices

    def forward(self, Xw: torch.Tensor, frames: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """World points [F, n, 3] of the frames ``frames`` (positions in the mask set; default all)
        -> {"outside", "cover"} (scalar means)."""
        from gausslift.track.masks import project_points

        m = self.masks
        C = len(m.cameras)
        if frames is None:
            P, flat = m.P, None
        else:
            P = m.P[frames]
            flat = (frames[:, None] * C + torch.arange(C)[None]).reshape(-1)
        q = project_points(P, Xw).reshape(-1, Xw.shape[1], 2).float()  # [F*C, n, 2] working pixels
        sel = (lambda x: x) if flat is None else (lambda x: x[flat])
        present, dt, samples, sw = sel(m.present), sel(m.outside), sel(m.samples), sel(m.sample_w)
        pres = present.float()
        if float(pres.sum()) == 0:
            z = q.sum() * 0
            return {"outside": z, "cover": z}
        grid = (q / m.res * 2 - 1)[:, None]  # [N,1,n,2]
        d_out = torch.nn.functional.grid_sample(dt, grid, mode="bilinear", padding_mode="border",
                                                align_corners=False)[:, 0, 0]  # [N,n]
        outside = (cauchy(d_out, self.robust_px).mean(1) * pres).sum() / pres.sum()
        with torch.no_grad():  # nearest projected point of each contour sample (squared distances)
            qd = q.detach()
            # |s - q|^2 - |s|^2 = [s, 1] . [-2q, |q|^2]: one bmm, no broadcast copy
            sa = torch.cat([samples, torch.ones_like(samples[..., :1])], -1)
            qa = torch.cat([-2 * qd, (qd * qd).sum(-1, keepdim=True)], -1)
            d2 = torch.bmm(sa, qa.transpose(1, 2))
            nn = d2.argmin(-1)  # [N,M]
        near = torch.gather(q, 1, nn[..., None].expand(-1, -1, 2))
        d_cov = (samples - near).norm(dim=-1) * m.px
        w = sw * pres[:, None]
        cover = (cauchy(d_cov, self.robust_px) * w).sum() / w.sum().clamp_min(1)
        return {"outside": outside, "cover": cover}
