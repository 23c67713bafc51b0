#!/usr/bin/env python
"""Acceptance: ``gausslift inspect --json`` on the real captures in ../shared/data agrees with each
dataset's own projection convention to 0.05 px, and lists the calibration warnings it finds.

For every view, test points are placed in front of the camera the JSON describes; they are projected
(a) with the JSON's K / viewmat / distortion (internal convention: OpenCV axes, pixel centres at +0.5)
by the small pinhole code here, and (b) with the dataset's own files and convention, independently:

* lego_200 (Blender/NeRF): OpenGL camera-to-world, focal from camera_angle_x, centre at W/2;
* facelift gslrm_sample_000: OpenCV w2c with fx, fy, cx, cy as stored;
* ethiopian_head (LLFF): poses [down, right, back | centre | h w f], f / 8 for images_8, centre W/2;
* mouse_minimal_session (anipose): cv2.projectPoints with the toml's K, dist, rvec, tvec, then +0.5;
* DANNCE markerless_mouse_1: MATLAB's x = X r + t, radial/tangential distortion, [x y 1] K', then
  -0.5 (1-based pixels).

Usage: python scripts/acceptance_inspect.py [DATA_DIR]   (default ../shared/data; skips when absent)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TOL_PX = 0.05
_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GAUSSLIFT_SHARED_DATA") or _DEFAULT)


# ---------------------------------------------------------------------------------------------------
# the JSON side: internal convention
def project_internal(view: dict, X: np.ndarray) -> np.ndarray:
    K, V = np.array(view["K"]), np.array(view["viewmat"])
    k1, k2, p1, p2, k3 = view["distortion"]
    pc = X @ V[:3, :3].T + V[:3, 3]
    x, y = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


def test_points(view: dict, depth: float) -> np.ndarray:
    """A 5x5 grid over the middle 70% of the field of view at three depths, in world coordinates."""
    K, V = np.array(view["K"]), np.array(view["viewmat"])
    w, h = view["width"], view["height"]
    u, v = np.meshgrid(np.linspace(0.15, 0.85, 5) * w, np.linspace(0.15, 0.85, 5) * h)
    x = (u.ravel() - K[0, 2]) / K[0, 0]
    y = (v.ravel() - K[1, 2]) / K[1, 1]
    pts = [np.stack([x * z, y * z, np.full_like(x, z)], -1) for z in (0.7 * depth, depth, 1.3 * depth)]
    pc = np.concatenate(pts)
    R, t = V[:3, :3], V[:3, 3]
    return (pc - t) @ R  # R^T (pc - t)


def rig_depth(views: list[dict]) -> float:
    C = np.stack([-np.array(v["viewmat"])[:3, :3].T @ np.array(v["viewmat"])[:3, 3] for v in views])
    return float(np.median(np.linalg.norm(C - C.mean(0), axis=1))) or 1.0


# ---------------------------------------------------------------------------------------------------
# the datasets' own conventions
def png_size(path: Path) -> tuple[int, int]:
    import cv2

    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    img = cv2.imread(str(path))
    return img.shape[1], img.shape[0]


def lego_own(root: Path):
    frames = {}
    for split in ("train", "val", "test"):
        meta = json.loads((root / f"transforms_{split}.json").read_text())
        for fr in meta["frames"]:
            img = (root / fr["file_path"]).with_suffix(".png").resolve()
            frames[str(img)] = (np.array(fr["transform_matrix"], float), meta["camera_angle_x"], img)

    def project(view, X):
        c2w, angle, img = frames[str(Path(view["image"]).resolve())]
        w, h = png_size(img)
        f = 0.5 * w / np.tan(0.5 * angle)
        w2c = np.linalg.inv(c2w)  # (Blender's rotations are orthonormal only to ~1e-7)
        pg = X @ w2c[:3, :3].T + w2c[:3, 3]  # OpenGL camera coords (x right, y up, z back)
        return np.stack([w / 2 + f * pg[:, 0] / -pg[:, 2], h / 2 - f * pg[:, 1] / -pg[:, 2]], -1)

    return project, {"views": 400, "masks": None}


def facelift_own(root: Path):
    meta = json.loads((root / "opencv_cameras.json").read_text())
    frames = {str((root / fr["file_path"]).resolve()): fr for fr in meta["frames"]}

    def project(view, X):
        fr = frames[str(Path(view["image"]).resolve())]
        w2c = np.array(fr["w2c"], float)
        pc = X @ w2c[:3, :3].T + w2c[:3, 3]
        return np.stack(
            [fr["fx"] * pc[:, 0] / pc[:, 2] + fr["cx"], fr["fy"] * pc[:, 1] / pc[:, 2] + fr["cy"]], -1
        )

    return project, {"views": 32, "masks": None}


def llff_own(root: Path):
    pb = np.load(root / "poses_bounds.npy")
    poses = pb[:, :15].reshape(-1, 3, 5)
    names = sorted(p.name for p in (root / "images_8").iterdir() if p.suffix.lower() in (".png", ".jpg"))

    def project(view, X):
        i = names.index(Path(view["image"]).name)
        P = poses[i]
        w, h = png_size(Path(view["image"]))
        f = P[2, 4] * w / P[1, 4]  # focal of the originals scaled to this image
        d = (X - P[:, 3]) @ np.linalg.inv(P[:, :3]).T  # (down, right, back)
        return np.stack([w / 2 + f * d[:, 1] / -d[:, 2], h / 2 + f * d[:, 0] / -d[:, 2]], -1)

    return project, {"views": 66, "masks": 66}


def anipose_own(root: Path):
    import cv2
    import tomllib

    cal = tomllib.loads((root / "calibration.toml").read_text())
    cams = {c["name"]: c for k, c in cal.items() if k.startswith("cam_")}

    def project(view, X):
        c = cams[view["name"]]
        uv, _ = cv2.projectPoints(
            X,
            np.array(c["rotation"]),
            np.array(c["translation"]),
            np.array(c["matrix"]),
            np.array(c["distortions"]),
        )
        return uv[:, 0] + 0.5

    return project, {"views": 4, "masks": None}


def dannce_own(root: Path):
    import scipy.io

    m = scipy.io.loadmat(str(root / "label3d_dannce.mat"))
    names = [str(np.ravel(c)[0]) for c in m["camnames"].ravel()]
    params = {n: m["params"][i, 0][0, 0] for i, n in enumerate(names)}

    def project(view, X):
        p = params[view["name"]]
        P = X @ p["r"] + p["t"].ravel()
        x, y = P[:, 0] / P[:, 2], P[:, 1] / P[:, 2]
        rd, td = np.ravel(p["RDistort"]), np.ravel(p["TDistort"])
        k3 = rd[2] if rd.size > 2 else 0.0
        r2 = x * x + y * y
        rad = 1 + rd[0] * r2 + rd[1] * r2**2 + k3 * r2**3
        xd = x * rad + 2 * td[0] * x * y + td[1] * (r2 + 2 * x * x)
        yd = y * rad + td[0] * (r2 + 2 * y * y) + 2 * td[1] * x * y
        uv = np.stack([xd, yd, np.ones_like(xd)], -1) @ p["K"]
        return uv[:, :2] - 0.5

    return project, {"views": 6, "masks": None}


DATASETS = [
    ("lego_200", lego_own),
    ("facelift_head/gslrm_sample_000", facelift_own),
    ("ethiopian_head", llff_own),
    ("mouse_minimal_session", anipose_own),
    ("dannce_calib/demo/markerless_mouse_1", dannce_own),
]


# ---------------------------------------------------------------------------------------------------
def inspect_json(path: Path) -> tuple[dict | None, str]:
    r = subprocess.run(
        [sys.executable, "-m", "gausslift", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    return json.loads(r.stdout), ""


def check(rel: str, own) -> str:
    path = DATA / rel
    if not path.exists():
        print(f"SKIP {rel}: not found under {DATA}")
        return "skip"
    doc, err = inspect_json(path)
    if doc is None:
        print(f"SKIP {rel}: gausslift inspect failed: {err}")
        return "skip" if "not a capture in any known format" in err else "fail"
    project, expect = own(path)
    views = doc["views"]
    problems = []
    if len(views) != expect["views"]:
        problems.append(f"{len(views)} views, expected {expect['views']}")
    if expect["masks"] is not None:
        masks = [v for v in views if v["mask"] and Path(v["mask"]).is_file()]
        if len(masks) != expect["masks"]:
            problems.append(f"{len(masks)} views with a mask file, expected {expect['masks']}")
    depth = rig_depth(views)
    worst, n = 0.0, 0
    for v in views:
        X = test_points(v, depth)
        a, b = project_internal(v, X), project(v, X)
        err = np.linalg.norm(a - b, axis=-1)
        if not np.all(np.isfinite(err)):
            problems.append(f"view {v['name']}: non-finite projection")
            continue
        worst, n = max(worst, float(err.max())), n + err.size
    if worst > TOL_PX:
        problems.append(f"max projection difference {worst:.3g} px > {TOL_PX} px")
    splits = {}
    for v in views:
        splits[v["split"]] = splits.get(v["split"], 0) + 1
    status = "FAIL" if problems else "PASS"
    print(
        f"{status} {rel}: format {doc['format']}, {len(views)} views {splits}, {n} points, "
        f"max |JSON - own convention| = {worst:.2e} px"
    )
    for p in problems:
        print(f"     problem: {p}")
    for w in doc["warnings"]:
        print(f"     warning: {w}")
    return status.lower()


def main() -> int:
    if not DATA.is_dir():
        print(f"SKIP: real data not found at {DATA}")
        return 0
    results = [check(rel, own) for rel, own in DATASETS]
    print(
        f"\n{results.count('pass')} passed, {results.count('fail')} failed, {results.count('skip')} skipped"
    )
    return 1 if "fail" in results else 0


if __name__ == "__main__":
    sys.exit(main())
