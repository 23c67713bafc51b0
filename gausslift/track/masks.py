"""The masks of a ``gausslift ingest`` output, mapped into the track's world, for the silhouette term.

Ingest writes one FaceLift sample per frame, with its own ``world_from_capture`` A_t (a similarity from
the session's world, mm, to the sample's normalised world) and per source camera a virtual pinhole
(K, w2c, 512²) whose RGBA image has the mask as alpha (see :mod:`gausslift.track.silhouette`). A track
world point X lands in that image at ``K [w2c] A_t X``: :class:`MaskSet` keeps that 3x4 matrix per
(frame, camera), premultiplied to the working resolution ``res`` (the masks are area-downsampled to
``res``; distances are given in pixels of the ingest image, 512 by default), and per (frame, camera):

* ``outside`` [N,1,res,res]: the Euclidean distance transform of the mask's complement (0 inside the
  mask, the distance to the mask outside it), sampled bilinearly at the projected model points;
* ``samples`` [N,M,2]: ``M`` points spaced evenly along the outer contours of the mask's main parts
  (its largest connected component and those at least ``blob_fraction`` of its area; pixel units of
  the working resolution), each of which should have a projected model point near it;
* ``present`` [N]: whether ingest wrote that camera of that frame.

Only the cameras the track uses are loaded (``cameras``: source camera names); frames that ingest did
not write are simply absent (``present`` False).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError


@dataclass
class MaskSet:
    root: Path
    cameras: list[str]  # source camera names, C
    frame_ids: np.ndarray  # [T]
    res: int  # working resolution (square)
    px: float  # ingest pixels per working pixel
    P: torch.Tensor  # [T,C,3,4] float64: track world -> working-resolution pixels (internal convention)
    outside: torch.Tensor  # [T*C,1,res,res] float32 distance to the mask (ingest pixels), 0 inside
    samples: torch.Tensor  # [T*C,M,2] float32 contour samples (working pixels)
    sample_w: torch.Tensor  # [T*C,M] 1 for a real sample, 0 for padding
    present: torch.Tensor  # [T*C] bool
    masks: np.ndarray  # [T,C,res,res] bool, the largest component (for the initialisation only)

    @property
    def num_frames(self) -> int:
        return int(self.P.shape[0])

    def select_frames(self, frames: list[int]) -> MaskSet:
        C = len(self.cameras)
        flat = torch.as_tensor([f * C + c for f in frames for c in range(C)], dtype=torch.long)
        return MaskSet(self.root, list(self.cameras), self.frame_ids[frames], self.res, self.px,
                       self.P[frames], self.outside[flat], self.samples[flat], self.sample_w[flat],
                       self.present[flat], self.masks[frames])


def ingest_samples(ingest_dir: Path) -> dict[int, Path]:
    """{frame id: sample folder} of a ``gausslift ingest`` output (its ``manifest.json``)."""
    man = ingest_dir / "manifest.json"
    if not man.is_file():
        raise InputError(ingest_dir, "not a gausslift ingest output (no manifest.json)")
    try:
        samples = json.loads(man.read_text())["samples"]
        return {int(s["frame"]): ingest_dir / s["path"] for s in samples if s.get("frame") is not None}
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(man, f"unreadable ingest manifest ({type(e).__name__})") from None


def _contour_samples(mask: np.ndarray, m: int) -> np.ndarray:
    """``m`` points [m,2] spaced evenly along the outer contours of ``mask`` (pixel centres at +0.5);
    empty if the mask is empty."""
    import cv2

    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = [c[:, 0, :].astype(np.float64) for c in cs if len(c) >= 3]
    if not pts:
        return np.zeros((0, 2))
    P = np.concatenate(pts)
    # arc length along each contour (closing it), then m samples over the total length
    segs = []
    for c in pts:
        d = np.linalg.norm(np.diff(np.vstack([c, c[:1]]), axis=0), axis=1)
        segs.append(d)
    d = np.concatenate(segs)
    s = np.concatenate([[0], np.cumsum(d)[:-1]])
    idx = np.searchsorted(s, np.linspace(0, s[-1] + d[-1], m, endpoint=False), side="right") - 1
    return P[np.clip(idx, 0, len(P) - 1)] + 0.5


def _main_parts(mask: np.ndarray, fraction: float = 0.0) -> np.ndarray:
    """The largest connected component of ``mask`` and those at least ``fraction`` of its area."""
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    area = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(area >= (fraction * area.max() if fraction > 0 else area.max()))
    return np.isin(lab, 1 + (keep if fraction > 0 else keep[:1]))


def load_masks(ingest_dir: str | Path, frame_ids: np.ndarray, cameras: list[str] | None = None,
               res: int = 256, samples: int = 96, blob_fraction: float = 0.2) -> MaskSet:
    """The masks of ``ingest_dir`` for the tracked ``frame_ids`` and the source ``cameras`` (default:
    every camera ingest wrote); see the module docstring. One :class:`InputError` naming the folder or
    file when it is not an ingest output or no frame and camera match."""
    import cv2
    from scipy.ndimage import distance_transform_edt

    from gausslift.io import read_scene

    root = Path(ingest_dir)
    if not root.is_dir():
        raise InputError(root, "--masks: no such folder (give a gausslift ingest output)")
    found = ingest_samples(root)
    frame_ids = np.asarray(frame_ids)
    views: dict[tuple[int, str], tuple] = {}
    names: list[str] = []
    for t, fid in enumerate(frame_ids):
        if int(fid) not in found:
            continue
        try:
            scene = read_scene(found[int(fid)])
        except InputError:
            raise
        except Exception as e:  # a broken sample: one line naming it
            raise InputError(found[int(fid)], f"unreadable ingest sample ({type(e).__name__}: {e})") from None
        if scene.world_from_capture is None:
            raise InputError(found[int(fid)], "sample has no world_from_capture")
        A = np.asarray(scene.world_from_capture, np.float64)
        for view in scene.views:
            name = view.meta.get("source", {}).get("camera", view.name)
            if cameras is not None and name not in cameras:
                continue
            if name not in names:
                names.append(name)
            views[(t, name)] = (A, view)
    if cameras is not None:
        names = [c for c in cameras if c in names]
    if not views or not names:
        which = f" for the cameras {', '.join(cameras)}" if cameras is not None else ""
        raise InputError(root, f"no ingested frame matches the tracked frames{which}")
    T, C = len(frame_ids), len(names)
    P = torch.zeros(T, C, 3, 4, dtype=torch.float64)
    outside = torch.zeros(T * C, 1, res, res)
    samp = torch.zeros(T * C, samples, 2)
    sw = torch.zeros(T * C, samples)
    present = torch.zeros(T * C, dtype=torch.bool)
    masks = np.zeros((T, C, res, res), bool)
    px = 1.0
    for (t, name), (A, view) in views.items():
        c = names.index(name)
        rgba = cv2.imread(str(view.image), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise InputError(view.image, "not an RGBA image (ingest writes the mask as alpha)")
        H, W = rgba.shape[:2]
        px = W / res
        alpha = cv2.resize(rgba[..., 3].astype(np.float32) / 255.0, (res, res), interpolation=cv2.INTER_AREA)
        m = alpha > 0.5
        cam = view.camera
        S = np.diag([res / W, res / H, 1.0])
        P[t, c] = torch.as_tensor(S @ cam.K @ np.asarray(cam.viewmat)[:3] @ A)
        i = t * C + c
        if m.any():
            outside[i, 0] = torch.as_tensor(distance_transform_edt(~m) * px, dtype=torch.float32)
            # the outline to cover: small separate blobs (grabCut's pieces of the thin tail, spurious
            # specks) are left out, as no model point should be dragged to them
            s = _contour_samples(_main_parts(m, blob_fraction), samples)
            samp[i, :len(s)] = torch.as_tensor(s, dtype=torch.float32)
            sw[i, :len(s)] = 1.0
            present[i] = True
            masks[t, c] = _main_parts(m)
    return MaskSet(root, names, frame_ids, res, px, P, outside, samp, sw, present, masks)


def project_points(P: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """World points X [T,n,3] through P [T,C,3,4] -> pixels [T,C,n,2] (depth clamped in front)."""
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], -1)  # [T,n,4]
    q = torch.einsum("tcij,tnj->tcni", P.to(X.dtype), Xh)
    return q[..., :2] / q[..., 2:].clamp_min(1e-6)
