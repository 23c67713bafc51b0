"""Visual-hull depth along pixel rays: the first point of each ray inside every view's silhouette.

Used by :class:`gausslift.models.gslrm.GSLRM` when ``hull_depth > 0`` (not in FaceLift): a calibrated
multi-view input with masks bounds the subject by its visual hull, and a pixel's Gaussian starts on
the hull's surface instead of at the ray's point nearest the origin.

For each foreground pixel (mask > 0.5) of each input view, the ray's segment inside the box
``[-box, box]^3`` is sampled at ``samples`` evenly spaced points. A point is inside the hull when it
projects (OpenCV camera, pixel centres at +0.5, nearest pixel) inside the mask of every view, in
front of the camera; points outside a view's image are outside. With ``tolerance`` t > 0 a point may
miss up to t views' silhouettes and still count (a vote of V - t of V views: a hull that survives views
that disagree, e.g. generated ones; t = 0 is the strict hull). The first inside point is refined
by ``refine`` samples in the interval before it. Rays that miss get ``nan``. No gradient.
"""

from __future__ import annotations

import torch


def project(X: torch.Tensor, K: torch.Tensor, viewmat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points X [N, 3], one camera (K [3, 3], world-to-camera viewmat [4, 4]) -> (pixel xy [N, 2],
    z [N])."""
    Xc = X @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = Xc[:, 2]
    xy = Xc[:, :2] / z.clamp_min(1e-6)[:, None]
    px = xy[:, 0] * K[0, 0] + K[0, 2]
    py = xy[:, 1] * K[1, 1] + K[1, 2]
    return torch.stack([px, py], dim=-1), z


def inside_hull(X: torch.Tensor, masks: torch.Tensor, Ks: torch.Tensor, viewmats: torch.Tensor,
                tolerance: int = 0) -> torch.Tensor:  # fmt: skip
    """X [N, 3]; masks [V, H, W]; Ks [V, 3, 3]; viewmats [V, 4, 4] -> bool [N]: inside every silhouette
    but at most ``tolerance``. Views are tested one after another on the points still in the running,
    so most points are tested once."""
    V, H, W = masks.shape
    alive = torch.arange(X.shape[0], device=X.device)
    misses = torch.zeros(X.shape[0], dtype=torch.long, device=X.device)
    for v in range(V):
        if alive.numel() == 0:
            break
        pix, z = project(X[alive], Ks[v], viewmats[v])
        x, y = pix[:, 0].floor().long(), pix[:, 1].floor().long()
        ok = (z > 0) & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        ok &= masks[v][y.clamp(0, H - 1), x.clamp(0, W - 1)] > 0.5
        if tolerance > 0:
            misses[alive] += (~ok).long()
            ok = misses[alive] <= tolerance
        alive = alive[ok]
    out = torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
    out[alive] = True
    return out


def box_segment(o: torch.Tensor, d: torch.Tensor, box: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray (o [N,3], unit d [N,3]) against [-box, box]^3 -> (t_near >= 0, t_far); empty where
    t_far <= t_near."""
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (-box - o) / safe, (box - o) / safe
    return torch.minimum(t0, t1).amax(-1).clamp_min(0.0), torch.maximum(t0, t1).amin(-1)


def first_hit(o, d, masks, Ks, viewmats, samples: int = 96, refine: int = 8, box: float = 1.0,
              tolerance: int = 0):  # fmt: skip
    """Rays o, d [N, 3] of one sample; its views' masks/cameras -> t of the first hull point [N]
    (nan: a miss)."""
    tn, tf = box_segment(o, d, box)
    inside = lambda ts: inside_hull((o[:, None] + ts[..., None] * d[:, None]).reshape(-1, 3), masks, Ks,
                                    viewmats, tolerance).reshape(ts.shape)  # fmt: skip
    s = torch.linspace(0.0, 1.0, samples, device=o.device, dtype=o.dtype)
    ts = tn[:, None] + (tf - tn).clamp_min(0.0)[:, None] * s  # [N, S]
    occ = inside(ts) & (tf > tn)[:, None]
    hit = occ.any(-1)
    k = occ.float().argmax(-1)  # the first inside sample
    t_hit = ts.gather(1, k[:, None])[:, 0]
    if refine > 0 and samples > 1:  # search the interval before it (the start of the segment: nothing before)
        step = (tf - tn).clamp_min(0.0) / (samples - 1)
        lo = torch.where(k > 0, t_hit - step, t_hit)
        r = torch.linspace(0.0, 1.0, refine + 1, device=o.device, dtype=o.dtype)[1:]
        tr = lo[:, None] + (t_hit - lo)[:, None] * r  # [N, refine], ends at t_hit (inside)
        occ_r = inside(tr)
        occ_r[:, -1] = True
        t_hit = tr.gather(1, occ_r.float().argmax(-1)[:, None])[:, 0]
    return torch.where(hit, t_hit, torch.full_like(t_hit, float("nan")))


@torch.no_grad()
def hull_depths(masks, Ks, viewmats, origins, dirs, samples: int = 96, refine: int = 8,
                box: float = 1.0, tolerance: int = 0) -> torch.Tensor:  # fmt: skip
    """Per input pixel, t of the first visual-hull point on its ray, nan where the pixel is background
    or its ray misses. masks [B,V,H,W]; Ks [B,V,3,3]; viewmats [B,V,4,4]; origins/dirs [B,V,H,W,3]."""
    masks, Ks, viewmats = masks.float(), Ks.float(), viewmats.float()
    origins, dirs = origins.float(), dirs.float()
    t = torch.full(masks.shape, float("nan"), device=masks.device)
    for b in range(masks.shape[0]):
        fg = masks[b] > 0.5
        if fg.any():
            o, d = origins[b][fg], dirs[b][fg]
            t[b][fg] = first_hit(o, d, masks[b], Ks[b], viewmats[b], samples, refine, box, tolerance)
    return t
