"""Shading a rendered mesh frame: Lambertian plus a soft Blinn-Phong specular lobe under a random
environment (a sky/ground hemisphere ambient and 1-3 directional lights), in linear RGB, then sRGB.

The light lives in the normalised world (z up), so every view and every frame of a sample sees the same
environment, as a real rig does. Normals are the mesh's smooth vertex normals (world space),
interpolated with the frame's barycentrics. Work is done on the covered pixels only (about 10% of a
512^2 view at size ratio 0.3), all numpy float32.

Colour of an anti-aliased silhouette pixel whose centre misses the mesh is taken from its covered
neighbours (straight, not premultiplied, alpha, as in FaceLift's RGBA renders).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausslift.synth.appearance import Appearance


@dataclass
class Light:
    sky: np.ndarray  # [3] linear RGB ambient from above
    ground: np.ndarray  # [3] ambient from below
    dirs: np.ndarray  # [L,3] unit directions towards the lights (world)
    colours: np.ndarray  # [L,3] linear RGB
    exposure: float = 1.0

    def to_json(self) -> dict:
        return {k: np.round(np.asarray(getattr(self, k), dtype=float), 4).tolist()
                for k in ("sky", "ground", "dirs", "colours", "exposure")}


def random_light(rng: np.random.Generator) -> Light:
    """1-3 lights from the upper hemisphere (elevation 10-80 deg), warm to cool white, plus a soft
    sky/ground ambient; total irradiance on an upward normal around 1."""
    n = int(rng.integers(1, 4))
    az = rng.uniform(0, 2 * np.pi, n)
    el = np.radians(rng.uniform(10, 80, n))
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    temp = rng.uniform(-1, 1, n)[:, None]
    colours = (1 + 0.12 * temp * np.array([1.0, 0.0, -1.0])) * rng.uniform(0.3, 1.0, (n, 1))
    colours *= rng.uniform(0.55, 0.8) / colours.sum(0).mean()
    amb = rng.uniform(0.25, 0.45)
    sky = amb * (1 + 0.08 * rng.normal(0, 1, 3))
    ground = sky * rng.uniform(0.3, 0.6)
    return Light(sky.astype(np.float32), ground.astype(np.float32), dirs.astype(np.float32),
                 colours.astype(np.float32), float(rng.uniform(0.9, 1.15)))


def smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V,3] float32 (bincount, faster than np.add.at)."""
    v = np.asarray(vertices, dtype=np.float32)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    idx = faces.ravel()
    n = np.stack([np.bincount(idx, np.repeat(fn[:, c], 3), minlength=len(v)) for c in range(3)], -1)
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


_LUT_N = 8192
_x = np.linspace(0.0, 1.0, _LUT_N)
_SRGB_LUT = np.where(_x <= 0.0031308, 12.92 * _x, 1.055 * _x ** (1 / 2.4) - 0.055)
_SRGB_LUT = (_SRGB_LUT * 255 + 0.5).astype(np.uint8)


def _to_srgb8(lin: np.ndarray) -> np.ndarray:
    """Linear [0,1] -> 8-bit sRGB through a table (8192 entries: at most one code value off)."""
    return _SRGB_LUT[(np.clip(lin, 0.0, 1.0) * (_LUT_N - 1) + 0.5).astype(np.int32)]


def shade(frame, faces: np.ndarray, vnormals: np.ndarray, uv_corner: np.ndarray | None,
          app: Appearance, light: Light, grey: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [H,W,3], alpha uint8 [H,W]) of a :class:`gausslift.meshrender.MeshFrame`.

    ``faces`` are the rendered faces, ``vnormals`` world vertex normals, ``uv_corner`` [F,3,2] the
    UVs of each rendered face's corners (None: no texture).
    """
    import cv2

    H, W = frame.tri_id.shape
    rgb = np.zeros((H, W, 3), np.uint8)
    alpha_full = np.zeros((H, W), np.uint8)
    rows, cols = np.flatnonzero(frame.alpha.any(1)), np.flatnonzero(frame.alpha.any(0))
    if not len(rows):
        return rgb, alpha_full
    y0, y1, x0, x1 = max(rows[0] - 1, 0), rows[-1] + 2, max(cols[0] - 1, 0), cols[-1] + 2
    tri = frame.tri_id[y0:y1, x0:x1]  # work inside the subject's bounding box
    ys, xs = np.nonzero(tri >= 0)
    t = tri[ys, xs]
    b = frame.bary[y0:y1, x0:x1][ys, xs][:, :, None]
    fv = faces[t]  # [N,3]
    n = (vnormals[fv] * b).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    alb = (app.vertex_albedo[fv] * b).sum(1)
    if uv_corner is not None:
        uv = (uv_corner[t] * b).sum(1)
        mx = (uv[:, 0] * app.uv_scale[0] - 0.5).astype(np.float32)[:, None]
        my = ((1.0 - uv[:, 1]) * app.uv_scale[1] - 0.5).astype(np.float32)[:, None]
        detail = cv2.remap(app.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alb = alb * detail.reshape(-1, 1)
    # view direction (towards the camera) in world space
    R = frame.viewmat[:3, :3].astype(np.float32)
    Kinv = np.linalg.inv(frame.K).astype(np.float32)
    pix = np.stack([xs + (x0 + 0.5), ys + (y0 + 0.5), np.ones(len(xs))], -1).astype(np.float32)
    d = (pix @ Kinv.T) @ R  # camera ray -> world (R^T d)
    view = -d / np.linalg.norm(d, axis=1, keepdims=True)
    flip = (n * view).sum(1) < 0  # smooth normals may lean away at the silhouette
    n[flip] -= (n[flip] * view[flip]).sum(1, keepdims=True) * view[flip]  # onto the tangent plane
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    up = n[:, 2:3]
    irr = light.sky[None] * (0.5 + 0.5 * up) + light.ground[None] * (0.5 - 0.5 * up)
    spec = np.zeros_like(irr)
    for ldir, col in zip(light.dirs, light.colours):
        ndl = n @ ldir
        irr += np.maximum(ndl, 0)[:, None] * col[None]
        h = ldir[None] + view
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        ndh = np.maximum((n * h).sum(1), 0) * (ndl > 0)
        spec += (app.specular * ndh**app.shininess)[:, None] * col[None]
    lin = (alb * irr + spec) * light.exposure
    if grey:
        lin = np.repeat(lin @ np.array([0.2126, 0.7152, 0.0722], np.float32), 3).reshape(-1, 3)
    crop = rgb[y0:y1, x0:x1]
    crop[ys, xs] = _to_srgb8(lin)
    alpha = (np.clip(frame.alpha[y0:y1, x0:x1], 0, 1) * 255.0 + 0.5).astype(np.uint8)
    edge = (alpha > 0) & (tri < 0)
    if edge.any():  # colour the AA fringe from covered neighbours
        covered = (tri >= 0).astype(np.float32)
        num = cv2.boxFilter(crop.astype(np.float32), -1, (3, 3), normalize=False,
                            borderType=cv2.BORDER_CONSTANT)
        den = cv2.boxFilter(covered, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        fill = num / np.maximum(den, 1e-6)[..., None]
        ok = edge & (den > 0)
        crop[ok] = (fill[ok] + 0.5).astype(np.uint8)
        alpha[edge & ~ok] = 0
    alpha_full[y0:y1, x0:x1] = alpha
    return rgb, alpha_full
