"""FaceLift and transforms writers: written captures read back with the same projections (1e-6 px),
the same images and masks, extra keys kept, and failed writes leave no half-written capture."""

import json

import numpy as np
import pytest
from _captures import ring_cameras, world_points, write_colmap, write_facelift, write_nerfstudio

from gausslift.cameras import look_at, make_K
from gausslift.errors import InputError
from gausslift.io import colmap, facelift, read_scene, transforms
from gausslift.scene import Scene, View, load_view


def _proj_err(a: Scene, b: Scene) -> float:
    pts = world_points()
    assert a.names == b.names
    return max(
        float(np.abs(va.camera.project(pts)[0] - vb.camera.project(pts)[0]).max()) for va, vb in zip(a, b)
    )


def _odd_cameras_scene(tmp_path, rng) -> Scene:
    """Views with unequal, off-centre intrinsics and irregular poses, images written by cv2."""
    import cv2

    views = []
    for k in range(3):
        eye = rng.normal(size=3)
        eye = 3 * eye / np.linalg.norm(eye)
        K = make_K(*rng.uniform(30, 50, 2), *rng.uniform(15, 25, 2))
        from gausslift.cameras import Camera

        cam = Camera(K, look_at(eye, rng.normal(size=3) * 0.1), 40, 32)
        img = (rng.uniform(size=(32, 40, 3)) * 255).astype(np.uint8)
        p = tmp_path / "src" / f"v{k}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), img)
        views.append(View(f"v{k}", cam, p, None, ["train", "val", "test"][k], {"source": {"id": k}}))
    return Scene(views, format="test")


def test_facelift_round_trip(tmp_path, rng):
    scene = _odd_cameras_scene(tmp_path, rng)
    scene.world_from_capture = np.diag([2.0, 2.0, 2.0, 1.0])
    masks = [rng.uniform(size=(32, 40)).astype(np.float32) for _ in scene.views]
    js = facelift.write(scene, tmp_path / "out", masks=masks, extra={"subject": "s1"})
    back = facelift.read(tmp_path / "out")
    assert _proj_err(scene, back) < 1e-6
    assert back.names == scene.names and not back.warnings
    assert np.allclose(back.world_from_capture, scene.world_from_capture)
    data = json.loads(js.read_text())
    assert data["subject"] == "s1" and data["frames"][2]["source"] == {"id": 2}
    assert back.views[2].meta["source"] == {"id": 2}
    for v, vb, m in zip(scene.views, back.views, masks):
        rgb0, _ = load_view(v)
        rgb1, m1 = load_view(vb)
        assert np.abs(rgb0 - rgb1).max() < 1e-6  # 8-bit in, 8-bit out: exact
        assert np.abs(m1 - m).max() <= 0.5 / 255 + 1e-6  # alpha = mask
    # a FaceLift capture re-written keeps its frame extras and top-level keys
    fl = read_scene(write_facelift(tmp_path / "fl", ring_cameras(3)))
    facelift.write(fl, tmp_path / "fl2", bit_depth=16)
    again = facelift.read(tmp_path / "fl2")
    assert _proj_err(fl, again) < 1e-9 and again.meta["facelift"]["id"] == "synthetic"
    assert again.views[1].meta["frame_extra"]["blender_camera_name"] == "cam.001"
    assert np.abs(load_view(again.views[1])[1] - load_view(fl.views[1])[1]).max() < 1e-4


def test_facelift_writer_from_arrays_and_refusals(tmp_path, rng):
    cams = ring_cameras(2)
    views = [View(f"a{k}", c) for k, c in enumerate(cams)]
    rgba = [rng.uniform(size=(30, 40, 4)).astype(np.float32) for _ in views]
    facelift.write(views, tmp_path / "arr", images=rgba)
    back = facelift.read(tmp_path / "arr")
    rgb, mask = load_view(back.views[1])
    assert np.abs(rgb - rgba[1][..., :3]).max() <= 0.5 / 255 + 1e-6
    assert np.abs(mask - rgba[1][..., 3]).max() <= 0.5 / 255 + 1e-6
    # distortion cannot be stored: refused before the JSON is written
    bad = [View("d", cams[0].with_(dist=[0.1, 0, 0, 0, 0]))]
    with pytest.raises(InputError, match="distortion"):
        facelift.write(bad, tmp_path / "bad", images=rgba[:1])
    assert not (tmp_path / "bad" / "opencv_cameras.json").exists()
    with pytest.raises(InputError, match="does not fit"):
        facelift.write(views[:1], tmp_path / "bad2", images=[np.zeros((5, 5, 3))])
    assert not (tmp_path / "bad2" / "opencv_cameras.json").exists()


def test_facelift_writer_keeps_integer_and_bool_masks(tmp_path, rng):
    """A uint8 mask is an alpha channel on 0..255 (it was binarised once); bool and float are fractions."""
    cams = ring_cameras(3)
    views = [View(f"m{k}", c) for k, c in enumerate(cams)]
    rgb = [rng.uniform(size=(30, 40, 3)).astype(np.float32) for _ in views]
    ramp = (np.arange(30 * 40) % 256).astype(np.uint8).reshape(30, 40)
    masks = [ramp, ramp > 100, ramp.astype(np.float32) / 255.0]
    facelift.write(views, tmp_path / "m", images=rgb, masks=masks)
    back = facelift.read(tmp_path / "m")
    got = [load_view(v)[1] for v in back.views]
    assert np.array_equal(np.round(got[0] * 255).astype(np.uint8), ramp)
    assert np.array_equal(got[1] > 0.5, ramp > 100) and set(np.unique(got[1])) <= {0.0, 1.0}
    assert np.abs(got[2] - masks[2]).max() <= 0.5 / 255 + 1e-6


def test_transforms_round_trip_with_distortion_and_splits(tmp_path, rng):
    scene = _odd_cameras_scene(tmp_path, rng)
    scene.views[1].camera = scene.views[1].camera.with_(dist=[0.05, -0.02, 0.001, -0.002, 0.01])
    js = transforms.write(scene, tmp_path / "tf")
    back = transforms.read(tmp_path / "tf")
    assert _proj_err(scene, back) < 1e-6
    assert [v.split for v in back.views] == ["train", "val", "test"]
    assert np.allclose(back.views[1].camera.dist, scene.views[1].camera.dist)
    data = json.loads(js.read_text())
    assert "fl_x" in data["frames"][0] and data["camera_model"] == "OPENCV"  # per-frame intrinsics
    assert np.array_equal(load_view(back.views[2])[0], load_view(scene.views[2])[0])


def test_transforms_writer_shared_intrinsics_masks_and_references(tmp_path):
    src = read_scene(write_nerfstudio(tmp_path / "ns", ring_cameras(3)))
    js = transforms.write(src, tmp_path / "copy")
    data = json.loads(js.read_text())
    assert "fl_x" in data and "fl_x" not in data["frames"][0]  # shared intrinsics hoisted
    back = transforms.read(tmp_path / "copy")
    assert _proj_err(src, back) < 1e-9
    assert all(v.mask is not None and v.mask.is_file() for v in back.views)
    assert [v.split for v in back.views] == [v.split for v in src.views]
    ref = transforms.write(src, tmp_path / "ref", copy_images=False)
    assert not (tmp_path / "ref" / "images").exists()
    back = transforms.read(ref)
    assert [v.image.resolve() for v in back.views] == [v.image.resolve() for v in src.views]


def test_colmap_to_transforms_to_facelift(tmp_path):
    cams = ring_cameras(3)
    src = colmap.read(write_colmap(tmp_path / "cm", cams))
    tf = transforms.read(transforms.write(src, tmp_path / "tf").parent)
    fl = facelift.read(facelift.write(tf, tmp_path / "fl").parent)
    assert _proj_err(src, tf) < 1e-6 and _proj_err(src, fl) < 1e-6


def test_transforms_writer_refuses_views_without_images(tmp_path):
    with pytest.raises(InputError, match="no image"):
        transforms.write([View("x", ring_cameras(1)[0])], tmp_path / "none")
    assert not (tmp_path / "none" / "transforms.json").exists()
