"""Readers on the shared real captures: view counts, masks, the datasets' own projection conventions
(rays built as NeRF builds them from the raw files), and silhouette consistency across views (a
visual hull carved from some views' masks must project inside the other views' masks)."""

import json
import time

import numpy as np
import pytest

from gausslift.io import read_scene
from gausslift.scene import load_view

pytestmark = pytest.mark.realdata


def _nerf_points(c2w_gl: np.ndarray, focal: float, W: int, H: int, uv: np.ndarray, depth: np.ndarray):
    """World points on NeRF's rays (get_rays: dirs = [(u - W/2)/f, -(v - H/2)/f, -1] in the OpenGL
    camera, rotated by c2w) at continuous image coordinates ``uv``."""
    d = np.stack([(uv[:, 0] - 0.5 * W) / focal, -(uv[:, 1] - 0.5 * H) / focal, -np.ones(len(uv))], 1)
    return c2w_gl[:3, 3] + depth[:, None] * (d @ c2w_gl[:3, :3].T)


def _hull_precision(scene, carve, check, center, half, n=40):
    """Carve an n^3 grid (cube of half-size ``half`` at ``center``) with the masks of views ``carve``;
    return (voxels kept, fraction of their projections into views ``check`` that land in the mask)."""
    g = np.linspace(-half, half, n)
    X = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + center
    keep = np.ones(len(X), bool)
    masks = {}

    def inside(i, pts):
        v = scene.views[i]
        if i not in masks:
            masks[i] = load_view(v)[1] > 0.5
        m = masks[i]
        uv, z = v.camera.project(pts)
        fin = np.all(np.isfinite(uv), axis=1)
        ij = np.floor(np.where(fin[:, None], uv, -1)).astype(np.int64)
        ok = (
            fin
            & (z > 0)
            & (ij[:, 0] >= 0)
            & (ij[:, 0] < m.shape[1])
            & (ij[:, 1] >= 0)
            & (ij[:, 1] < m.shape[0])
        )
        out = np.zeros(len(pts), bool)
        out[ok] = m[ij[ok, 1], ij[ok, 0]]
        return out

    for i in carve:
        keep &= inside(i, X)
    H = X[keep]
    if len(H) == 0:
        return 0, 0.0
    return len(H), float(np.mean([inside(i, H).mean() for i in check]))


def test_lego_all_splits_and_nerf_convention(shared_data):
    root = shared_data / "lego_200"
    t0 = time.perf_counter()
    scene = read_scene(root)
    elapsed = time.perf_counter() - t0
    assert scene.format == "transforms" and len(scene) == 400 and not scene.warnings
    splits = [v.split for v in scene.views]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (100, 100, 200)
    assert all(v.mask == v.image for v in scene.views)  # RGBA: mask from alpha
    assert elapsed < 5.0, f"reading 400 views took {elapsed:.2f}s"
    rng = np.random.default_rng(0)
    worst = 0.0
    for split in ("train", "val", "test"):
        data = json.loads((root / f"transforms_{split}.json").read_text())
        for fr in data["frames"][::20]:
            W = H = 200
            focal = 0.5 * W / np.tan(0.5 * data["camera_angle_x"])
            uv = rng.uniform(0, 200, (50, 2))
            X = _nerf_points(np.array(fr["transform_matrix"]), focal, W, H, uv, rng.uniform(2, 6, 50))
            view = scene.view(fr["file_path"].removeprefix("./"))
            worst = max(worst, np.abs(view.camera.project(X)[0] - uv).max())
    print(f"lego: NeRF-convention vs Camera.project max {worst:.2e} px; read 400 views in {elapsed:.3f}s")
    assert worst <= 0.05


def test_lego_silhouettes_consistent(shared_data):
    scene = read_scene(shared_data / "lego_200")
    train = [i for i, v in enumerate(scene.views) if v.split == "train"][:40]
    val = [i for i, v in enumerate(scene.views) if v.split == "val"][:20]
    kept, precision = _hull_precision(scene, train, val, np.zeros(3), 1.5)
    print(f"lego: visual hull of 40 train masks: {kept} voxels, {precision:.4f} of projections in val masks")
    assert kept > 500 and precision > 0.97


def test_facelift_sample(shared_data):
    scene = read_scene(shared_data / "facelift_head" / "gslrm_sample_000")
    assert scene.format == "facelift" and len(scene) == 32 and not scene.warnings
    assert all(v.mask is not None for v in scene.views)
    rgb, mask = load_view(scene.views[24])
    assert rgb.shape == (512, 512, 3) and 0.05 < mask.mean() < 0.9
    kept, precision = _hull_precision(scene, range(0, 32, 2), range(1, 32, 2), np.zeros(3), 1.0)
    print(f"facelift: hull of 16 even views: {kept} voxels, {precision:.4f} of projections in odd masks")
    assert kept > 500 and precision > 0.97


def test_ethiopian_head_llff_convention_and_masks(shared_data):
    root = shared_data / "ethiopian_head"
    scene = read_scene(root)
    assert scene.format == "llff" and len(scene) == 66 and not scene.warnings
    assert all(v.mask is not None and v.mask.parent.name == "masks_8" for v in scene.views)
    assert all((v.camera.width, v.camera.height) == (500, 500) for v in scene.views)
    # NeRF's load_llff: poses [3,5,N] -> columns [1, -0, 2, 3]; H, W from the images; focal / factor
    pb = np.load(root / "poses_bounds.npy")
    poses = pb[:, :15].reshape(-1, 3, 5)
    rng = np.random.default_rng(1)
    worst = 0.0
    for k in range(0, 66, 5):
        p = poses[k]
        c2w = np.eye(4)
        c2w[:3, :4] = np.stack([p[:, 1], -p[:, 0], p[:, 2], p[:, 3]], 1)
        focal = p[2, 4] / 8
        uv = rng.uniform(0, 500, (50, 2))
        X = _nerf_points(c2w, focal, 500, 500, uv, rng.uniform(pb[k, 15], pb[k, 16], 50))
        worst = max(worst, np.abs(scene.views[k].camera.project(X)[0] - uv).max())
    print(f"ethiopian_head: LLFF/NeRF-convention vs Camera.project max {worst:.2e} px")
    assert worst <= 0.05
    # the head sits where the optical axes meet; carve it from half the masks, check the others
    cams = scene.cameras()
    A = np.eye(3) - np.einsum("ni,nj->nij", cams.forward, cams.forward)
    center = np.linalg.solve(A.sum(0), np.einsum("nij,nj->i", A, cams.center))
    half = 0.6 * float(np.min(pb[:, 15]))
    kept, precision = _hull_precision(scene, range(0, 66, 2), range(1, 66, 2), center, half)
    print(
        f"ethiopian_head: hull of 33 masks: {kept} voxels, {precision:.4f} of projections in the other masks"
    )
    assert kept > 500 and precision > 0.95
