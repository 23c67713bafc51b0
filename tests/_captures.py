"""Small synthetic captures in each format, for reader tests (and for other tests that need one).

Each ``write_<format>`` takes ground-truth cameras (internal convention) and writes the format's files
with its own conventions spelled out here, independently of the readers and writers under test: a
reader is right when it gives back the ground-truth projections.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from gausslift.cameras import Camera, make_K, ring

SPHERE_CENTER = np.array([0.1, -0.05, 0.0])
SPHERE_RADIUS = 0.6


def ring_cameras(n: int = 5, width: int = 40, height: int = 30, fov_deg: float = 45.0) -> Camera:
    """n cameras on a ring of radius 3 around the origin, looking at it (z up)."""
    return ring(n, radius=3.0, elevation_deg=15.0, fov_deg=fov_deg, size=(width, height), azimuth0_deg=10.0)


def world_points(n: int = 50, seed: int = 0) -> np.ndarray:
    """World points near the origin, inside every ring camera's view."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 3))


def render_sphere(cam: Camera) -> np.ndarray:
    """RGBA uint8 image of a shaded, normal-coloured sphere (alpha = silhouette) seen by ``cam``.

    Rays through pixel centres (i + 0.5, j + 0.5), built here from K and the viewmat directly."""
    j, i = np.mgrid[0 : cam.height, 0 : cam.width]
    uv1 = np.stack([i + 0.5, j + 0.5, np.ones_like(i, dtype=float)], -1).reshape(-1, 3)
    d_cam = uv1 @ np.linalg.inv(cam.K).T
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    o = -R.T @ t
    d = d_cam @ R  # R^T d for each row
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    oc = o - SPHERE_CENTER
    b = d @ oc
    disc = b * b - (oc @ oc - SPHERE_RADIUS**2)
    hit = disc > 0
    s = -b - np.sqrt(np.where(hit, disc, 0))
    n = (o + s[:, None] * d - SPHERE_CENTER) / SPHERE_RADIUS
    rgb = np.where(hit[:, None], 0.5 + 0.5 * n, 0.0)
    rgba = np.concatenate([rgb, hit[:, None].astype(float)], 1).reshape(cam.height, cam.width, 4)
    return np.round(rgba * 255).astype(np.uint8)


def _imwrite(path: Path, rgba: np.ndarray, alpha: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = rgba[..., [2, 1, 0, 3]] if alpha else rgba[..., [2, 1, 0]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))


def _c2w_cv(cam: Camera) -> np.ndarray:
    return np.linalg.inv(cam.viewmat)


# ---------------------------------------------------------------------------------------------------
def write_facelift(root: Path, cams: Camera, extra: dict | None = None) -> Path:
    root = Path(root)
    frames = []
    for k, cam in enumerate(cams):
        rel = f"images/cam_{k:03d}.png"
        _imwrite(root / rel, render_sphere(cam))
        K = cam.K
        frames.append(
            dict(
                w=cam.width,
                h=cam.height,
                fx=K[0, 0],
                fy=K[1, 1],
                cx=K[0, 2],
                cy=K[1, 2],
                w2c=cam.viewmat.tolist(),
                file_path=rel,
                blender_camera_name=f"cam.{k:03d}",
            )
        )
    (root / "opencv_cameras.json").write_text(
        json.dumps({"id": "synthetic", **(extra or {}), "frames": frames})
    )
    return root


def write_blender(root: Path, cams: Camera, splits=("train", "val", "test")) -> Path:
    """NeRF-synthetic layout: transforms_<split>.json with camera_angle_x, extension-less file_path,
    RGBA images; the cameras are dealt round-robin to the splits. Requires square pixels, centred."""
    root = Path(root)
    per = {s: [] for s in splits}
    for k, cam in enumerate(cams):
        s = splits[k % len(splits)]
        rel = f"./{s}/r_{k}"
        _imwrite(root / f"{s}/r_{k}.png", render_sphere(cam))
        c2w = _c2w_cv(cam)
        c2w[:3, 1:3] *= -1  # OpenCV camera axes -> OpenGL (y up, z back)
        per[s].append({"file_path": rel, "rotation": 0.1, "transform_matrix": c2w.tolist()})
    angle_x = 2 * np.arctan(cams.width / (2 * cams.K[0, 0, 0]))
    for s in splits:
        (root / f"transforms_{s}.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": per[s]}))
    return root


def write_nerfstudio(root: Path, cams: Camera, dist=None, masks: bool = True) -> Path:
    """nerfstudio layout: one transforms.json, per-frame fl_x.. (and k1 k2 p1 p2), RGB jpg-free PNGs
    without alpha, separate mask_path files; the last camera listed as 'val'."""
    root = Path(root)
    frames = []
    for k, cam in enumerate(cams):
        rgba = render_sphere(cam)
        rel = f"images/frame_{k:05d}.png"
        _imwrite(root / rel, rgba, alpha=False)
        K = cam.K
        fr = dict(
            file_path=rel,
            transform_matrix=None,
            fl_x=K[0, 0],
            fl_y=K[1, 1],
            cx=K[0, 2],
            cy=K[1, 2],
            w=cam.width,
            h=cam.height,
        )
        c2w = _c2w_cv(cam)
        c2w[:3, 1:3] *= -1
        fr["transform_matrix"] = c2w.tolist()
        if dist is not None:
            fr.update(dict(zip(("k1", "k2", "p1", "p2"), map(float, dist[k][:4]))))
        if masks:
            mrel = f"masks/frame_{k:05d}.png"
            (root / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / mrel), rgba[..., 3])
            fr["mask_path"] = mrel
        frames.append(fr)
    data = {"camera_model": "OPENCV", "frames": frames, "val_filenames": [frames[-1]["file_path"]]}
    (root / "transforms.json").write_text(json.dumps(data, indent=1))
    return root


def write_llff(root: Path, cams: Camera, factor: int = 2, masks: bool = True) -> Path:
    """LLFF: poses_bounds.npy with hwf of the ORIGINAL size (factor x the cameras' size), images in
    images_<factor> and masks in masks_<factor>. Requires fx == fy and a centred principal point."""
    root = Path(root)
    rows = []
    for k, cam in enumerate(cams):
        rgba = render_sphere(cam)
        _imwrite(root / f"images_{factor}/img_{k:03d}.png", rgba, alpha=False)
        if masks:
            (root / f"masks_{factor}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"masks_{factor}/img_{k:03d}.png"), rgba[..., 3])
        c2w = _c2w_cv(cam)
        x, y, z, t = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
        pose = np.stack([y, x, -z, t], 1)  # columns [down, right, back, translation]
        hwf = np.array([cam.height * factor, cam.width * factor, cam.K[0, 0] * factor])
        depth = np.linalg.norm(t)
        rows.append(np.concatenate([np.concatenate([pose, hwf[:, None]], 1).ravel(), [depth - 1, depth + 1]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    return root


def write_neus(
    root: Path,
    cams: Camera,
    scale: float = 2.0,
    offset=(0.3, -0.2, 0.1),
    image_name: str = "{:03d}.png",
    mask_name: str = "{:03d}.png",
    stray: bool = False,
) -> Path:
    """NeuS: cameras_sphere.npz with world_mat_i = K_cv [R|t] inv(scale_mat) (K_cv: pixel centres at
    integers, NeuS's convention) and scale_mat_i mapping the unit sphere into the capture.

    DTU scans as published name images ``image/000000.png`` and masks ``mask/000.png`` and carry a
    one-byte stray file ``a`` in both folders: ``image_name="{:06d}.png", stray=True``."""
    root = Path(root)
    scale_mat = np.diag([scale, scale, scale, 1.0])
    scale_mat[:3, 3] = offset
    mats = {}
    for k, cam in enumerate(cams):
        rgba = render_sphere(cam)
        _imwrite(root / "image" / image_name.format(k), rgba, alpha=False)
        (root / "mask").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "mask" / mask_name.format(k)), np.repeat(rgba[..., 3:], 3, 2))
    if stray:
        (root / "image" / "a").write_bytes(b"\n")
        (root / "mask" / "a").write_bytes(b"\n")
    for k, cam in enumerate(cams):
        K4 = np.eye(4)
        K4[:3, :3] = cam.K
        K4[0, 2] -= 0.5
        K4[1, 2] -= 0.5
        mats[f"world_mat_{k}"] = -3.7 * (K4 @ cam.viewmat @ np.linalg.inv(scale_mat))  # any scale/sign
        mats[f"scale_mat_{k}"] = scale_mat
    np.savez(root / "cameras_sphere.npz", **mats)
    return root


def write_colmap(root: Path, cams: Camera, binary: bool = True, dist=None, points=None) -> Path:
    """COLMAP: sparse/0/{cameras,images,points3D}.{bin,txt} (OPENCV model when ``dist`` is given, else
    PINHOLE; one COLMAP camera per image) and images/."""
    root = Path(root)
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    cam_rows, img_rows = [], []
    for k, cam in enumerate(cams):
        _imwrite(root / f"images/view_{k:02d}.png", render_sphere(cam), alpha=False)
        K = cam.K
        if dist is None:
            cam_rows.append(
                (k + 1, 1, "PINHOLE", cam.width, cam.height, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
            )
        else:
            p = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *map(float, dist[k][:4])]
            cam_rows.append((k + 1, 4, "OPENCV", cam.width, cam.height, p))
        x, y, z, w = Rotation.from_matrix(cam.viewmat[:3, :3]).as_quat()
        img_rows.append((k + 1, [w, x, y, z], cam.viewmat[:3, 3].tolist(), k + 1, f"view_{k:02d}.png"))
    pts = np.zeros((0, 3)) if points is None else np.asarray(points)
    rgb = (np.arange(len(pts) * 3).reshape(-1, 3) * 7) % 256
    if binary:
        b = struct.pack("<Q", len(cam_rows))
        for cid, mid, _, w, h, p in cam_rows:
            b += struct.pack("<iiQQ", cid, mid, w, h) + struct.pack(f"<{len(p)}d", *p)
        (model / "cameras.bin").write_bytes(b)
        b = struct.pack("<Q", len(img_rows))
        for iid, q, t, cid, name in img_rows:
            b += struct.pack("<i7di", iid, *q, *t, cid) + name.encode() + b"\0"
            b += struct.pack("<Q", 2) + struct.pack("<ddqddq", 1.0, 2.0, -1, 3.0, 4.0, 0)
        (model / "images.bin").write_bytes(b)
        b = struct.pack("<Q", len(pts))
        for i, (p, c) in enumerate(zip(pts, rgb)):
            b += struct.pack("<Q3d3BdQ", i, *p, *map(int, c), 0.5, 1) + struct.pack("<ii", 1, 0)
        (model / "points3D.bin").write_bytes(b)
    else:
        lines = [
            "# Camera list",
            *(f"{c} {n} {w} {h} " + " ".join(repr(float(x)) for x in p) for c, _, n, w, h, p in cam_rows),
        ]
        (model / "cameras.txt").write_text("\n".join(lines) + "\n")
        lines = ["# Image list"]
        for iid, q, t, cid, name in img_rows:
            lines += [f"{iid} " + " ".join(repr(float(x)) for x in [*q, *t]) + f" {cid} {name}", ""]
        (model / "images.txt").write_text("\n".join(lines) + "\n")
        lines = [
            f"{i} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {c[0]} {c[1]} {c[2]} 0.5 1 0"
            for i, (p, c) in enumerate(zip(pts, rgb))
        ]
        (model / "points3D.txt").write_text("# points\n" + "\n".join(lines) + "\n")
    return root


def centred_K(cams: Camera) -> Camera:
    """The same cameras with fx == fy and a centred principal point (for LLFF / Blender)."""
    K = make_K(cams.K[0, 0, 0], cams.K[0, 0, 0], cams.width / 2, cams.height / 2)
    return cams.with_(K=np.broadcast_to(K, cams.K.shape))


# ---------------------------------------------------------------------------------------------------
# DeepFly3D: a tethered fly seen by a near-orthographic rig (f = 16,000 px at 118 mm)
FLY_CENTRE = np.array([0.2, -0.1, 0.15])  # mm
FLY_RADII = np.array([0.45, 0.25, 0.22])  # mm: an ellipsoid "fly", long along x


def df3d_rig(n: int = 3, size=(320, 160), f: float = 16000.0, distance: float = 118.0) -> Camera:
    """n cameras on a horizontal half ring (azimuths spread over 180 degrees, as DeepFly3D's seven
    around the fly) at ``distance`` mm from the origin, looking at it, z up."""
    az = np.linspace(-90.0, 90.0, n) if n > 1 else np.zeros(1)
    fov = float(np.degrees(2 * np.arctan(size[0] / 2 / f)))
    return ring(n, radius=distance, elevation_deg=5.0, fov_deg=fov, size=size, azimuths_deg=az)


def render_ellipsoid(cam: Camera, centre=FLY_CENTRE, radii=FLY_RADII) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, silhouette bool) of a shaded, striped ellipsoid on a dark background, by ray
    casting through pixel centres (i + 0.5, j + 0.5) built here from K and the viewmat directly."""
    j, i = np.mgrid[0 : cam.height, 0 : cam.width]
    uv1 = np.stack([i + 0.5, j + 0.5, np.ones_like(i, dtype=float)], -1).reshape(-1, 3)
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    d = (uv1 @ np.linalg.inv(cam.K).T) @ R
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = (-R.T @ t - centre) / radii  # in the ellipsoid's unit-sphere coordinates
    dn = d / radii
    a = np.sum(dn * dn, 1)
    b = dn @ o
    disc = b * b - a * (o @ o - 1.0)
    hit = disc > 0
    s = (-b - np.sqrt(np.where(hit, disc, 0))) / a
    p = o + s[:, None] * dn  # unit sphere point
    n = p / radii
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    shade = 0.35 + 0.65 * np.clip(-(n * d).sum(1), 0, 1)
    stripes = 0.75 + 0.25 * np.sign(np.sin(p[:, 0] * 9.0))
    rgb = np.stack([shade * stripes, 0.8 * shade, 0.5 * shade * stripes], 1)
    bg = np.array([0.08, 0.1, 0.12])
    img = np.where(hit[:, None], rgb, bg).reshape(cam.height, cam.width, 3)
    return np.round(img * 255).astype(np.uint8), hit.reshape(cam.height, cam.width)


def fly_points(frames: int = 2, joints: int = 12, seed: int = 0) -> np.ndarray:
    """[frames, joints, 3] points on the ellipsoid's surface (mm), a little different per frame."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(frames, joints, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return FLY_CENTRE + 0.95 * FLY_RADII * v


def write_deepfly3d(
    root: Path, cams: Camera, points3d: np.ndarray, frames: int = 3, video: bool = True, hidden=()
) -> Path:
    """A df3d-cli output: ``root/camera_{k}.mp4`` (or ``camera_{k}_img_{i}.jpg``) and
    ``root/df3d/df3d_result_<name>.pkl`` with DeepFly3D's conventions written out here: per camera
    ``R``, ``tvec`` (x_cam = R X + tvec), ``intr`` (OpenCV K, pixel centres at 0) and ``distort``;
    ``points2d`` [C, T, J, 2] normalised (row / H, column / W), zeros where unseen (``hidden``: (camera,
    frame, joint) triples); ``points3d_wo_procrustes`` the 3D points, ``points3d`` a template-aligned
    copy (here shifted and rotated, as df3d's Procrustes step would), ``camera_ordering``."""
    import pickle

    root = Path(root)
    (root / "df3d").mkdir(parents=True, exist_ok=True)
    data: dict = {}
    C, (T, J) = len(cams), points3d.shape[:2]
    p2 = np.zeros((C, T, J, 2))
    for k, cam in enumerate(cams):
        R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
        K_cv = cam.K.copy()
        K_cv[0, 2] -= 0.5
        K_cv[1, 2] -= 0.5
        data[k] = {"R": R.copy(), "tvec": t.copy(), "intr": K_cv, "distort": np.zeros(5)}
        x = (points3d @ R.T + t) @ K_cv.T
        xy = x[..., :2] / x[..., 2:]
        p2[k, ..., 0] = xy[..., 1] / cam.height
        p2[k, ..., 1] = xy[..., 0] / cam.width
        img, _ = render_ellipsoid(cam)
        bgr = np.ascontiguousarray(img[..., ::-1])
        if video:
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            w = cv2.VideoWriter(str(root / f"camera_{k}.mp4"), fourcc, 30, (cam.width, cam.height))
            for _ in range(frames):
                w.write(bgr)
            w.release()
        else:
            for i in range(frames):
                cv2.imwrite(str(root / f"camera_{k}_img_{i}.jpg"), bgr)
    for c, f, j in hidden:
        p2[c, f, j] = (0.0, 1.0) if c % 2 else 0.0  # df3d's mirrored left-hand cameras store (0, 1)
    rot = Rotation.from_euler("xyz", [20, -30, 50], degrees=True).as_matrix()
    data["points2d"] = p2
    data["points3d_wo_procrustes"] = points3d.copy()
    data["points3d"] = (points3d - points3d.mean((0, 1))) @ rot.T
    data["camera_ordering"] = np.arange(C)
    data["heatmap_confidence"] = np.ones((C, T, J))
    with open(root / "df3d" / f"df3d_result_{root.name}.pkl", "wb") as fh:
        pickle.dump(data, fh)
    return root
