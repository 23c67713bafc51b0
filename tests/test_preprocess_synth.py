"""Synthetic rigs for the ingest tests: a textured sphere seen by distorted cameras with known calibration,
rendered exactly by ray casting (each pixel centre's ray through the inverse distortion), written as still
images or as an anipose-like session with tiny videos. Also tests of the renderer itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, K_to_opencv, look_at, make_K, matrix_to_rodrigues

UP_TRUE = np.array([0.1, -1.0, 0.2]) / np.linalg.norm([0.1, -1.0, 0.2])  # the rig's up (not +z)
CENTRE = np.array([10.0, -20.0, 500.0])  # sphere centre (mm)
RADIUS = 40.0


def texture(X: np.ndarray) -> np.ndarray:
    """Smooth grey texture on 3D points [..., 3] (mm), values in ~[0.35, 0.95]."""
    d = X - CENTRE
    return (
        0.65
        + 0.15 * np.sin(0.21 * d[..., 0] + 0.5) * np.cos(0.17 * d[..., 1])
        + 0.13 * np.sin(0.19 * d[..., 2])
    )


def background(h: int, w: int, seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return 0.12 + 0.05 * np.sin(xx / (5.0 + seed)) * np.cos(yy / 7.0) + 0.03 * np.sin((xx + yy) / 11.0)


def make_rig(n: int = 4, width: int = 320, height: int = 256, elevation_deg: float = 25.0) -> list[Camera]:
    """n distorted cameras on a ring around CENTRE (up = UP_TRUE), different distances and focal lengths,
    aimed slightly off the subject so it is not centred in the source images."""
    a = np.cross(UP_TRUE, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(UP_TRUE, a)
    cams = []
    el = np.radians(elevation_deg)
    for i in range(n):
        az = 2 * np.pi * i / n + 0.3
        dist = 320.0 + 40.0 * i
        eye = CENTRE + dist * (np.cos(el) * (np.cos(az) * a + np.sin(az) * b) + np.sin(el) * UP_TRUE)
        side = np.cross(CENTRE - eye, UP_TRUE)
        target = CENTRE + 25.0 * side / np.linalg.norm(side) + 10.0 * UP_TRUE * (-1) ** i
        f = (300.0 + 25.0 * i) * width / 320
        K = make_K(f, f * 1.01, width / 2 + 6 * (i - 1.5), height / 2 - 4 * (i - 1.5))
        dist_coef = np.array([-0.22 + 0.02 * i, 0.05, 0.0012, -0.0008, 0.0])
        cams.append(Camera(K, look_at(eye, target, UP_TRUE), width, height, dist_coef))
    return cams


def pixel_rays(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World ray origin [3] and unit directions [H, W, 3] through each pixel centre."""
    uv = np.stack(np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5), -1).reshape(-1, 2)
    o, d = cam.rays(uv)
    return o[0], d.reshape(cam.height, cam.width, 3)


def render(origin, dirs, centre=CENTRE, radius=RADIUS, bg=None, centre_tex=CENTRE):
    """(image float [H,W], mask bool [H,W]) of the textured sphere; texture moves with the sphere."""
    oc = origin - centre
    b = dirs @ oc
    c = oc @ oc - radius**2
    disc = b * b - c
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 0.0))
    hit &= t > 0
    X = origin + t[..., None] * dirs
    img = np.where(hit, texture(X - centre + centre_tex), 0.0 if bg is None else bg)
    return img, hit


def write_anipose_session(
    root: Path, cams: list[Camera], names: list[str], centres: list[np.ndarray], fps=10
):
    """An anipose-like session: calibration.toml, <name>/<name>.avi (lossless-ish MJPG at quality 100)
    showing the sphere at ``centres`` (one per frame). Returns the true masks {name: [F, H, W]}."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    lines = []
    truth = {}
    for i, (cam, name) in enumerate(zip(cams, names)):
        K = K_to_opencv(cam.K)
        lines += [
            f"[cam_{i}]",
            f'name = "{name}"',
            f"size = [ {cam.width}, {cam.height},]",
            "matrix = " + str([list(map(float, r)) for r in K]),
            "distortions = " + str(list(map(float, cam.dist))),
            "rotation = " + str(list(map(float, matrix_to_rodrigues(cam.R)))),
            "translation = " + str(list(map(float, cam.t))),
            "",
        ]
        (root / name).mkdir(exist_ok=True)
        vw = cv2.VideoWriter(
            str(root / name / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps, (cam.width, cam.height)
        )
        vw.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        o, d = pixel_rays(cam)
        bg = background(cam.height, cam.width, i)
        masks = []
        for c in centres:
            img, m = render(o, d, centre=c, bg=bg)
            g = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
            vw.write(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
            masks.append(m)
        vw.release()
        truth[name] = np.array(masks)
    (root / "calibration.toml").write_text("\n".join(lines))
    return truth


def write_points3d(root: Path, points: np.ndarray) -> None:
    """sleap-anipose points3d.h5: tracks [F, 1, J, 3]."""
    import h5py

    with h5py.File(root / "points3d.h5", "w") as f:
        f["tracks"] = points[:, None]


# ---------------------------------------------------------------------------------------------------
def test_renderer_matches_projection():
    """The sphere centre projects (with distortion) inside the rendered silhouette, near its centroid."""
    cam = make_rig(1)[0]
    o, d = pixel_rays(cam)
    _, m = render(o, d)
    uv, _ = cam.project(CENTRE[None])
    ys, xs = np.nonzero(m)
    assert m[int(uv[0, 1]), int(uv[0, 0])]
    assert np.hypot(xs.mean() + 0.5 - uv[0, 0], ys.mean() + 0.5 - uv[0, 1]) < 3.0
    assert 0.01 < m.mean() < 0.5
