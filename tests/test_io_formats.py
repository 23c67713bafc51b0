"""Readers on synthetic captures: ground-truth projections come back, detection is unambiguous, and
broken input gives a clear InputError or a warning (never a traceback)."""

import json

import numpy as np
import pytest
from _captures import (
    centred_K,
    ring_cameras,
    world_points,
    write_blender,
    write_colmap,
    write_facelift,
    write_llff,
    write_nerfstudio,
    write_neus,
)

from gausslift.errors import InputError
from gausslift.io import colmap, detect_format, facelift, llff, neus, read_scene, transforms
from gausslift.scene import load_view

MINE = (facelift, transforms, llff, neus, colmap)


def _max_px_err(scene, gt_cams, names_in_order=None):
    """Max pixel disagreement between the scene's cameras and the ground truth, over world points."""
    pts = world_points()
    views = scene.views if names_in_order is None else [scene.view(n) for n in names_in_order]
    assert len(views) == len(gt_cams)
    err = 0.0
    for v, gt in zip(views, gt_cams):
        a, za = v.camera.project(pts)
        b, zb = gt.project(pts)
        assert np.all(za > 0)
        err = max(err, np.abs(a - b).max(), np.abs(za - zb).max())
    return err


def _detected_by(path):
    return [m.FORMAT for m in MINE if m.detect(path)]


# ---------------------------------------------------------------------------------------------------
# each format reads back the ground truth
def test_facelift_reads_ground_truth(tmp_path):
    cams = ring_cameras(4)
    root = write_facelift(tmp_path / "fl", cams, extra={"world_from_capture": (2 * np.eye(4)).tolist()})
    scene = read_scene(root)
    assert scene.format == "facelift" and _detected_by(root) == ["facelift"]
    assert scene.names == [f"cam_{k:03d}" for k in range(4)] and not scene.warnings
    assert _max_px_err(scene, cams) < 1e-9
    assert scene.views[1].meta["frame_extra"]["blender_camera_name"] == "cam.001"
    assert (
        np.allclose(scene.world_from_capture, 2 * np.eye(4)) and scene.meta["facelift"]["id"] == "synthetic"
    )
    rgb, mask = load_view(scene.views[0])
    assert rgb.shape == (30, 40, 3) and mask is not None and 0 < mask.mean() < 1


def test_blender_reads_splits_and_alpha_masks(tmp_path):
    cams = centred_K(ring_cameras(6))
    root = write_blender(tmp_path / "bl", cams)
    scene = read_scene(root)
    assert scene.format == "transforms" and _detected_by(root) == ["transforms"]
    assert sorted(v.split for v in scene.views) == ["test"] * 2 + ["train"] * 2 + ["val"] * 2
    order = [f"{['train', 'val', 'test'][k % 3]}/r_{k}" for k in range(6)]
    assert _max_px_err(scene, cams, order) < 1e-9
    assert all(v.mask == v.image for v in scene.views)  # alpha
    assert scene.view("val/r_1").meta["frame_extra"] == {"rotation": 0.1}
    # one split file read on its own
    single = transforms.read(root / "transforms_val.json")
    assert single.names == ["val/r_1", "val/r_4"] and {v.split for v in single.views} == {"val"}


def test_nerfstudio_distortion_masks_and_val_list(tmp_path, rng):
    cams = ring_cameras(4)
    dist = rng.uniform(-0.05, 0.05, (4, 4))
    root = write_nerfstudio(tmp_path / "ns", cams, dist=dist)
    scene = read_scene(root)
    assert scene.format == "transforms"
    assert [v.split for v in scene.views] == ["train", "train", "train", "val"]
    gt = cams.with_(dist=np.concatenate([dist, np.zeros((4, 1))], 1))
    assert _max_px_err(scene, gt) < 1e-9
    assert _max_px_err(scene, cams) > 1e-3  # distortion is really applied
    rgb, mask = load_view(scene.views[2])
    assert mask is not None and scene.views[2].mask.parent.name == "masks"


def test_llff_reads_downsampled_images_and_masks(tmp_path):
    cams = centred_K(ring_cameras(5))
    root = write_llff(tmp_path / "llff", cams, factor=2)
    scene = read_scene(root)
    assert scene.format == "llff" and _detected_by(root) == ["llff"] and not scene.warnings
    assert _max_px_err(scene, cams) < 1e-9
    assert all(v.mask is not None and v.mask.parent.name == "masks_2" for v in scene.views)
    assert scene.views[0].meta["near"] < scene.views[0].meta["far"]
    _, mask = load_view(scene.views[3])
    assert mask.shape == (30, 40)


def test_neus_decomposes_and_shifts_half_pixel(tmp_path):
    cams = ring_cameras(4)
    root = write_neus(tmp_path / "neus", cams)
    scene = read_scene(root)
    assert scene.format == "neus" and _detected_by(root) == ["neus"] and not scene.warnings
    assert _max_px_err(scene, cams) < 1e-8
    for v in scene.views:
        K = v.camera.K
        assert K[0, 0] > 0 and K[1, 1] > 0 and abs(K[0, 1]) < 1e-9
        assert np.isclose(np.linalg.det(v.camera.R), 1.0)
    expected = np.diag([0.5, 0.5, 0.5, 1.0])
    expected[:3, 3] = -0.5 * np.array([0.3, -0.2, 0.1])
    assert np.allclose(scene.world_from_capture, expected)
    assert all(v.mask is not None for v in scene.views)


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_binary_and_text(tmp_path, rng, binary):
    cams = ring_cameras(4)
    dist = rng.uniform(-0.05, 0.05, (4, 4))
    pts = world_points(7)
    root = write_colmap(tmp_path / "cm", cams, binary=binary, dist=dist, points=pts)
    scene = read_scene(root)
    assert scene.format == "colmap" and _detected_by(root) == ["colmap"] and not scene.warnings
    gt = cams.with_(dist=np.concatenate([dist, np.zeros((4, 1))], 1))
    assert _max_px_err(scene, gt) < 1e-9
    assert np.allclose(scene.points3d, pts) and scene.points_rgb.shape == (7, 3)
    assert scene.points_rgb.max() <= 1.0 and scene.points_rgb.max() > 0
    # the model folder itself is also a valid path
    assert len(colmap.read(root / "sparse" / "0")) == 4


def test_colmap_pinhole_models(tmp_path):
    cams = ring_cameras(2)
    root = write_colmap(tmp_path / "cm", cams, binary=False)
    assert _max_px_err(read_scene(root), cams) < 1e-9
    txt = root / "sparse/0/cameras.txt"
    w, h = cams.width, cams.height
    txt.write_text(f"1 SIMPLE_RADIAL {w} {h} 30 20 15 0.1\n2 OPENCV_FISHEYE {w} {h} 30 30 20 15 0 0 0 0\n")
    with pytest.raises(InputError, match="OPENCV_FISHEYE"):
        read_scene(root)
    txt.write_text(f"1 SIMPLE_RADIAL {w} {h} 30 20 15 0.1\n2 RADIAL {w} {h} 31 20 15 0.1 0.2\n")
    s = read_scene(root)
    assert np.allclose(s.views[0].camera.dist, [0.1, 0, 0, 0, 0])
    assert np.allclose(s.views[1].camera.dist, [0.1, 0.2, 0, 0, 0]) and s.views[1].camera.K[1, 1] == 31


# ---------------------------------------------------------------------------------------------------
# broken input
WRITERS = {
    "facelift": (write_facelift, "opencv_cameras.json", "images/cam_001.png"),
    "transforms": (
        lambda r, c: write_blender(r, centred_K(c), ("train",)),
        "transforms_train.json",
        "train/r_1.png",
    ),
    "llff": (lambda r, c: write_llff(r, centred_K(c)), "poses_bounds.npy", None),
    "neus": (write_neus, "cameras_sphere.npz", "image/001.png"),
    "colmap": (write_colmap, "sparse/0/images.bin", "images/view_01.png"),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_missing_image_is_a_warning_and_view_is_skipped(tmp_path, fmt):
    write, _, img = WRITERS[fmt]
    root = write(tmp_path / fmt, ring_cameras(3))
    if img is None:  # LLFF pairs rows with sorted images: a missing one is an error, not a skip
        (root / "images_2/img_001.png").unlink()
        with pytest.raises(InputError, match="2 images but poses_bounds.npy has 3 poses"):
            read_scene(root)
        return
    (root / img).unlink()
    scene = read_scene(root)
    assert len(scene) == 2
    assert any("missing" in w and img.split("/")[-1] in w for w in scene.warnings)


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_missing_calibration_file_or_all_images(tmp_path, fmt):
    write, calib, _ = WRITERS[fmt]
    root = write(tmp_path / fmt, ring_cameras(2))
    for d in ("images", "image", "train", "images_2"):
        for p in (root / d).glob("*.png"):
            p.unlink()
    with pytest.raises(InputError) as e:
        read_scene(root, format=fmt)
    assert str(root) in str(e.value)
    (root / calib).unlink()
    with pytest.raises(InputError):
        read_scene(root, format=fmt)


@pytest.mark.parametrize("fmt", ["facelift", "transforms"])
@pytest.mark.parametrize("breakage", ["empty", "garbage", "nan", "shape", "size", "noframes"])
def test_broken_json(tmp_path, fmt, breakage):
    write, calib, _ = WRITERS[fmt]
    root = write(tmp_path / fmt, ring_cameras(2))
    js = root / calib
    data = json.loads(js.read_text())
    key = "w2c" if fmt == "facelift" else "transform_matrix"
    if breakage == "empty":
        js.write_text("")
    elif breakage == "garbage":
        js.write_text('{"frames": [')
    elif breakage == "noframes":
        js.write_text(json.dumps({"something": 1}))
    else:
        fr = data["frames"][1]
        if breakage == "nan":
            fr[key][0][1] = float("nan")
        elif breakage == "shape":
            fr[key] = fr[key][:2]
        elif breakage == "size":
            fr["w"] = -5
        js.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        read_scene(root, format=fmt)
    assert str(js) in str(e.value) or str(root) in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["llff", "neus"])
@pytest.mark.parametrize("breakage", ["nan", "shape", "garbage"])
def test_broken_arrays(tmp_path, fmt, breakage):
    write, calib, _ = WRITERS[fmt]
    root = write(tmp_path / fmt, ring_cameras(2))
    f = root / calib
    if breakage == "garbage":
        f.write_bytes(b"not numpy at all")
    elif fmt == "llff":
        a = np.load(f)
        a = a[:, :15] if breakage == "shape" else np.where(np.arange(17) == 3, np.nan, a)
        np.save(f, a)
    else:
        mats = dict(np.load(f))
        mats["world_mat_1"] = mats["world_mat_1"][:2] if breakage == "shape" else mats["world_mat_1"] * np.nan
        np.savez(f, **mats)
    with pytest.raises(InputError) as e:
        read_scene(root, format=fmt)
    assert str(f) in str(e.value)


def test_colmap_truncated_or_nan(tmp_path):
    root = write_colmap(tmp_path / "cm", ring_cameras(2))
    b = root / "sparse/0/images.bin"
    data = b.read_bytes()
    b.write_bytes(data[:-30])
    with pytest.raises(InputError, match="truncated"):
        read_scene(root)
    root = write_colmap(tmp_path / "cm2", ring_cameras(2), binary=False)
    t = root / "sparse/0/images.txt"
    lines = t.read_text().splitlines()
    f = lines[1].split()
    lines[1] = " ".join([f[0], "nan", *f[2:]])
    t.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="images.txt.*NaN"):
        read_scene(root)


def test_wrong_image_size_warns(tmp_path):
    import cv2

    cams = ring_cameras(3)
    root = write_facelift(tmp_path / "fl", cams)
    # half size (same aspect): camera rescaled exactly, with a warning
    cv2.imwrite(str(root / "images/cam_001.png"), np.zeros((15, 20, 4), np.uint8))
    # different aspect: warning, camera kept, loading fails clearly
    cv2.imwrite(str(root / "images/cam_002.png"), np.zeros((30, 30, 4), np.uint8))
    scene = read_scene(root)
    assert len(scene) == 3 and len(scene.warnings) == 2
    half = scene.views[1].camera
    assert (half.width, half.height) == (20, 15)
    pts = world_points()
    assert np.allclose(half.project(pts)[0], cams[1].project(pts)[0] / 2, atol=1e-9)
    with pytest.raises(InputError, match="30x30"):
        load_view(scene.views[2])


def test_llff_size_disagreement_warns(tmp_path):
    import cv2

    root = write_llff(tmp_path / "llff", centred_K(ring_cameras(2)), factor=2)
    cv2.imwrite(str(root / "images_2/img_000.png"), np.zeros((20, 40, 3), np.uint8))
    scene = read_scene(root)
    assert any("disagree" in w or "20" in w for w in scene.warnings) and len(scene) == 2


def test_detect_is_exclusive_and_cheap(tmp_path):
    roots = {
        "facelift": write_facelift(tmp_path / "a", ring_cameras(2)),
        "transforms": write_nerfstudio(tmp_path / "b", ring_cameras(2)),
        "llff": write_llff(tmp_path / "c", centred_K(ring_cameras(2))),
        "neus": write_neus(tmp_path / "d", ring_cameras(2)),
        "colmap": write_colmap(tmp_path / "e", ring_cameras(2)),
    }
    for fmt, root in roots.items():
        assert _detected_by(root) == [fmt]
        assert detect_format(root) == fmt
    (tmp_path / "empty").mkdir()
    assert _detected_by(tmp_path / "empty") == []
    # a file path works where the format has one defining file
    assert facelift.detect(roots["facelift"] / "opencv_cameras.json")
    assert transforms.detect(roots["transforms"] / "transforms.json")
    assert llff.detect(roots["llff"] / "poses_bounds.npy")
    assert neus.detect(roots["neus"] / "cameras_sphere.npz")


def test_nerfstudio_sparse_points_ply(tmp_path):
    from plyfile import PlyData, PlyElement

    root = write_nerfstudio(tmp_path / "ns", ring_cameras(2))
    data = json.loads((root / "transforms.json").read_text())
    data["ply_file_path"] = "sparse_pc.ply"
    (root / "transforms.json").write_text(json.dumps(data))
    pts = world_points(9)
    v = np.zeros(
        9, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    v["x"], v["y"], v["z"], v["red"] = pts[:, 0], pts[:, 1], pts[:, 2], 255
    PlyData([PlyElement.describe(v, "vertex")]).write(str(root / "sparse_pc.ply"))
    scene = read_scene(root)
    assert np.allclose(scene.points3d, pts, atol=1e-6) and np.allclose(scene.points_rgb[:, 0], 1.0)
    (root / "sparse_pc.ply").write_bytes(b"ply\nbroken")
    scene = read_scene(root)
    assert scene.points3d is None and any("sparse points not read" in w for w in scene.warnings)


def test_colmap_model_locations_and_unreadable_image(tmp_path):
    import shutil

    cams = ring_cameras(3)
    root = write_colmap(tmp_path / "cm", cams)
    for f in (root / "sparse/0").iterdir():
        shutil.move(str(f), root / "sparse" / f.name)
    (root / "sparse/0").rmdir()
    assert _detected_by(root) == ["colmap"] and _max_px_err(read_scene(root), cams) < 1e-9
    for f in list((root / "sparse").iterdir()):
        shutil.move(str(f), root / f.name)
    assert _detected_by(root) == ["colmap"] and _max_px_err(read_scene(root), cams) < 1e-9
    (root / "images/view_02.png").write_bytes(b"\x89PNG broken")
    scene = read_scene(root)
    assert len(scene) == 2 and any("view_02.png: not a readable image" in w for w in scene.warnings)
