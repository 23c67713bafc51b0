"""Images pair with masks by one rule in every reader (same stem, then the index in the name, then
sorted position), with summary warnings; partial captures fail naming what is missing."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from _captures import (
    centred_K,
    render_sphere,
    ring_cameras,
    write_colmap,
    write_llff,
    write_nerfstudio,
    write_neus,
)

from gausslift.errors import InputError
from gausslift.io import read_scene
from gausslift.io.common import pair_masks, stem_index
from gausslift.scene import load_view


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        (folder / n).write_bytes(b"x")
        out.append(folder / n)
    return out


def test_pair_masks_rules(tmp_path):
    assert stem_index("000012") == 12 and stem_index("r_12") == 12 and stem_index("mask") is None
    imgs = _touch(tmp_path / "i", ["r_0.png", "r_1.png", "r_2.png"])
    # 1. same stem (any image extension), no warning
    m = _touch(tmp_path / "m1", ["r_0.png", "r_1.jpg", "r_2.png"])
    w: list[str] = []
    assert pair_masks(imgs, tmp_path / "m1", w) == dict(zip(imgs, m)) and w == []
    # 2. the index in the name; one summary warning
    m = _touch(tmp_path / "m2", ["mask_002.png", "mask_000.png", "mask_001.png", ".hidden"])
    w = []
    got = pair_masks(imgs, tmp_path / "m2", w)
    assert [got[i].name for i in imgs] == ["mask_000.png", "mask_001.png", "mask_002.png"]
    assert len(w) == 1 and "paired 3 masks by index: names differ" in w[0]
    # 3. sorted position when nothing else pairs and the counts match
    m = _touch(tmp_path / "m3", ["c.png", "a.png", "b.png"])
    w = []
    got = pair_masks(imgs, tmp_path / "m3", w)
    assert [got[i].name for i in imgs] == ["a.png", "b.png", "c.png"]
    assert len(w) == 1 and "by sorted position" in w[0]
    # ... but not when the counts differ: views without masks, said once
    m = _touch(tmp_path / "m4", ["c.png", "a.png"])
    w = []
    assert pair_masks(imgs, tmp_path / "m4", w) == {}
    assert len(w) == 2 and "no mask for 3 views" in w[0] and "2 masks pair with no image" in w[1]
    # mixed: stems first, the rest by index; stray and unmatched files summarised once each
    m = _touch(tmp_path / "m5", ["r_0.png", "1.png", "7.png", "a", "notes.txt"])
    w = []
    got = pair_masks(imgs, tmp_path / "m5", w)
    assert {i.name: p.name for i, p in got.items()} == {"r_0.png": "r_0.png", "r_1.png": "1.png"}
    assert sum("paired 1 masks by index" in x for x in w) == 1
    assert sum("m5: ignored 2 non-image file(s): a, notes.txt" in x for x in w) == 1
    assert sum("no mask for 1 views (r_2.png)" in x for x in w) == 1
    assert sum("1 masks pair with no image (7.png)" in x for x in w) == 1
    assert len(w) == 4
    assert pair_masks(imgs, tmp_path / "absent", w) == {} and len(w) == 4


def test_neus_dtu_names_and_stray_file(tmp_path):
    cams = ring_cameras(5)
    root = write_neus(tmp_path / "scan24", cams, image_name="{:06d}.png", mask_name="{:03d}.png", stray=True)
    scene = read_scene(root)
    assert scene.format == "neus" and len(scene.views) == 5
    assert [(v.image.name, v.mask.name) for v in scene.views] == [
        (f"{k:06d}.png", f"{k:03d}.png") for k in range(5)
    ]
    by_index = [w for w in scene.warnings if "paired 5 masks by index: names differ" in w]
    stray = [w for w in scene.warnings if "non-image file" in w]
    assert len(by_index) == 1 and len(stray) == 1  # one warning for both folders
    assert stray[0].endswith("scan24: ignored 2 non-image file(s): image/a, mask/a")
    assert len(scene.warnings) == 2
    for v, cam in zip(scene.views, cams):  # the mask really is this view's silhouette
        _, mask = load_view(v)
        np.testing.assert_array_equal(mask > 0.5, render_sphere(cam)[..., 3] > 127)


def test_llff_and_nerfstudio_masks_with_other_names(tmp_path):
    cams = centred_K(ring_cameras(4))
    root = write_llff(tmp_path / "llff", cams, factor=2)
    for p in sorted((root / "masks_2").iterdir()):
        p.rename(p.with_name(f"{stem_index(p.stem)}.mask.png"))
    scene = read_scene(root)
    assert [v.mask.name for v in scene.views] == [f"{k}.mask.png" for k in range(4)]
    assert sum("paired 4 masks by index" in w for w in scene.warnings) == 1
    # transforms.json without mask_path, masks in a masks/ folder next to it
    root = write_nerfstudio(tmp_path / "ns", cams, masks=True)
    data = json.loads((root / "transforms.json").read_text())
    for fr in data["frames"]:
        fr.pop("mask_path")
    (root / "transforms.json").write_text(json.dumps(data))
    scene = read_scene(root)
    assert all(v.mask is not None and v.mask.parent.name == "masks" for v in scene.views)
    assert not scene.warnings


def test_colmap_without_images_bin_names_it(tmp_path):
    root = write_colmap(tmp_path / "scene", ring_cameras(3), points=np.zeros((4, 3)))
    (root / "sparse/0/images.bin").unlink()
    with pytest.raises(InputError, match=r"closest format: colmap .*cameras\.bin.*images\.bin is missing"):
        read_scene(root)
    with pytest.raises(InputError, match=r"images\.bin is missing") as e:
        read_scene(root, format="colmap")
    assert e.value.path.name == "images.bin"
    (root / "sparse/0/cameras.bin").unlink()
    with pytest.raises(InputError, match=r"cameras\.bin and images\.bin is missing"):
        read_scene(root)


def test_transforms_without_frames(tmp_path):
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": []}))
    with pytest.raises(InputError, match="has no frames"):
        read_scene(tmp_path)


def test_llff_image_folder_of_the_right_count(tmp_path):
    cams = centred_K(ring_cameras(4))
    root = write_llff(tmp_path / "llff", cams, factor=2, masks=False)
    (root / "images").mkdir()
    shutil.copy(root / "images_2/img_000.png", root / "images/img_000.png")  # 1 image for 4 poses
    scene = read_scene(root)  # images/ has the wrong count, images_2/ fits: used, with a warning
    assert scene.meta["llff_factor"] == 2 and len(scene.views) == 4
    assert sum("using images_2 instead" in w for w in scene.warnings) == 1
    (root / "images_2/img_003.png").unlink()
    with pytest.raises(
        InputError, match=r"4 poses, and no image folder has 4 \(found images: 1, images_2: 3"
    ):
        read_scene(root)
    shutil.rmtree(root / "images")
    shutil.rmtree(root / "images_2")
    with pytest.raises(InputError, match=r"no images or images_N folder .*4 poses"):
        read_scene(root)


def test_auto_detection_says_what_is_missing(tmp_path):
    root = write_neus(tmp_path / "n", ring_cameras(3))
    shutil.rmtree(root / "image")
    with pytest.raises(InputError, match=r"image: no images \(folder missing"):
        read_scene(root)
    (root / "cameras_sphere.npz").rename(root / "cameras.npz")  # IDR's name: detected only with image/
    with pytest.raises(InputError, match=r"closest format: neus \(found cameras.npz but no image/"):
        read_scene(root)
    plain = tmp_path / "plain"
    plain.mkdir()
    for k in range(3):
        cv2.imwrite(str(plain / f"{k}.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="holds 3 images but no camera file"):
        read_scene(plain)


def test_colmap_masks_folder(tmp_path):
    cams = ring_cameras(3)
    root = write_colmap(tmp_path / "c", cams)
    (root / "masks").mkdir()
    for k, cam in enumerate(cams):
        cv2.imwrite(str(root / "masks" / f"{k}.png"), render_sphere(cam)[..., 3])
    scene = read_scene(root)
    assert [v.mask.name for v in scene.views] == ["0.png", "1.png", "2.png"]
    assert sum("paired 3 masks by index" in w for w in scene.warnings) == 1
    _, mask = load_view(scene.views[1])
    np.testing.assert_array_equal(mask > 0.5, render_sphere(cams[1])[..., 3] > 127)


def test_same_stem_in_two_folders_is_not_paired_by_stem(tmp_path):
    imgs = _touch(tmp_path / "train", ["r_0.png", "r_1.png"]) + _touch(tmp_path / "test", ["r_0.png"])
    _touch(tmp_path / "masks", ["r_0.png", "r_1.png"])
    w: list[str] = []
    got = pair_masks(imgs, tmp_path / "masks", w)
    assert {str(i.relative_to(tmp_path)): m.name for i, m in got.items()} == {"train/r_1.png": "r_1.png"}
    assert sum("no mask for 2 views" in x for x in w) == 1


@pytest.mark.parametrize(
    "make,needle",
    [
        (
            lambda d: (d / "videos_undist").mkdir(),
            r"closest format: mammal \(found videos_undist/ but no new_cam",
        ),
        (
            lambda d: (d / "cams.json").write_text('{"frames": [{"transform_matrix": []}]}'),
            r"transforms \(cams",
        ),
        (
            lambda d: (d / "calib.toml").write_text("[cam_0]\nname = 'a'\n"),
            r"anipose \(found calib.toml with",
        ),
    ],
)
def test_closest_format_hints(tmp_path, make, needle):
    make(tmp_path)
    with pytest.raises(InputError, match=needle):
        read_scene(tmp_path)
