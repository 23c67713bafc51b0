"""Blender / NeRF-synthetic and nerfstudio / instant-ngp ``transforms*.json`` captures.

Each frame has an OpenGL camera-to-world ``transform_matrix`` (x right, y up, z back). Intrinsics come
from per-frame keys, else top-level keys: ``fl_x fl_y cx cy w h`` (nerfstudio / instant-ngp) or
``camera_angle_x`` (and ``camera_angle_y``) (Blender); distortion ``k1 k2 p1 p2 k3``. Image size comes
from the image file's header when ``w``/``h`` are absent. Pixel centres are at +0.5 in both Blender
renders and nerfstudio (which casts rays through ``pixel + 0.5``), so ``cx = w/2`` by default and
nothing is shifted. (The original NeRF code casts rays through integer pixel indices, half a pixel
off the renders; we follow the renders.)

Splits: ``transforms_{train,val,test}.json`` in a folder; or one ``transforms.json`` whose frames are
all 'train' unless it lists ``train_filenames`` / ``val_filenames`` / ``test_filenames``
(nerfstudio). Masks: nerfstudio ``mask_path``; else a ``masks/`` (or ``mask/``) folder next to the JSON,
paired with the images by :func:`gausslift.io.common.pair_masks`; else the image's alpha channel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, make_K, opengl_c2w_from_viewmat, viewmat_from_opengl_c2w
from gausslift.errors import InputError
from gausslift.io.common import (
    as_matrix,
    as_number,
    check_rotation,
    checked_camera,
    has_alpha,
    image_header,
    load_json,
    pair_masks,
    require_views,
    resolve_image,
)
from gausslift.ioutil import atomic_write_bytes, atomic_write_json
from gausslift.scene import SPLITS, Scene, View

FORMAT = "transforms"
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_DIST_KEYS = ("k1", "k2", "p1", "p2", "k3")
_UNSUPPORTED_DIST = ("k4", "k5", "k6")
_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_KNOWN_FRAME_KEYS = set(_INTRINSIC_KEYS + _DIST_KEYS) | {"file_path", "transform_matrix", "mask_path"}


def _split_files(folder: Path) -> list[tuple[Path, str]]:
    return [
        (folder / f"transforms_{s}.json", s) for s in SPLITS if (folder / f"transforms_{s}.json").is_file()
    ]


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.name.startswith("transforms") and path.suffix == ".json"
    return (path / "transforms.json").is_file() or bool(_split_files(path))


def diagnose(path: Path) -> str | None:
    path = Path(path)
    if not path.is_dir():
        return None
    for js in sorted(path.glob("*.json"))[:20]:
        try:
            with open(js, "rb") as f:
                head = f.read(1 << 20)
        except OSError:
            continue
        if b'"transform_matrix"' in head:
            return f"{js.name} has frames with a transform_matrix but is not named transforms*.json"
    return None


def _files(path: Path) -> list[tuple[Path, str | None]]:
    if path.is_file():
        stem = path.stem.removeprefix("transforms").lstrip("_")
        return [(path, stem if stem in SPLITS else None)]
    files = _split_files(path)
    if files:
        return list(files)
    if (path / "transforms.json").is_file():
        return [(path / "transforms.json", None)]
    raise InputError(path, "no transforms.json or transforms_{train,val,test}.json here")


def _norm_rel(rel: str) -> str:
    rel = rel.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def _view_name(rel: str) -> str:
    rel = _norm_rel(rel)
    base, ext = os.path.splitext(rel)
    return base if ext.lower() in (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp") else rel


def read(path: Path) -> Scene:
    path = Path(path)
    root = path.parent if path.is_file() else path
    warnings: list[str] = []
    views: list[View] = []
    extras: dict = {}
    world_from_capture = None
    ply_files: list[Path] = []
    empty: list[Path] = []
    files = _files(path)
    for js, file_split in files:
        data = load_json(js)
        if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
            raise InputError(js, "expected an object with a 'frames' list")
        if not data["frames"]:
            empty.append(js)
        model = str(data.get("camera_model", "OPENCV"))
        if model not in _PINHOLE_MODELS:
            raise InputError(js, f"camera_model {model} is not supported (pinhole + OpenCV distortion only)")
        split_of = _split_lists(data, js)
        if data.get("ply_file_path"):
            ply_files.append(root / str(data["ply_file_path"]))
        if "world_from_capture" in data:
            world_from_capture = as_matrix(data["world_from_capture"], (4, 4), js, "world_from_capture")
        extras[js.name] = {
            k: v
            for k, v in data.items()
            if k not in _KNOWN_FRAME_KEYS
            and k not in ("frames", "camera_model", "world_from_capture")
            and not k.endswith("_filenames")
            and k != "ply_file_path"
        }
        for i, fr in enumerate(data["frames"]):
            view = _read_frame(fr, i, data, js, root, warnings)
            if view is None:
                continue
            rel = _norm_rel(str(fr["file_path"]))
            view.split = file_split or split_of.get(rel, split_of.get(_view_name(rel), "train"))
            view.meta["file"] = js.name
            views.append(view)
    if len(empty) == len(files):
        raise InputError(empty[0], "has no frames (its 'frames' list is empty): no camera to read")
    warnings += [f"{js}: no frames" for js in empty]
    _folder_masks(views, root, warnings)
    require_views(views, path, warnings)
    points, rgb = _points(ply_files, warnings)
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise InputError(path, "two frames use the same file_path")
    return Scene(
        views,
        format=FORMAT,
        root=root,
        warnings=warnings,
        world_from_capture=world_from_capture,
        points3d=points,
        points_rgb=rgb,
        meta={"transforms": extras},
    )


MASK_DIRS = ("masks", "mask")


def _folder_masks(views: list[View], root: Path, warnings: list[str]) -> None:
    """When no frame names a ``mask_path``, masks from a ``masks/`` (or ``mask/``) folder next to the
    JSON, paired with the images by :func:`gausslift.io.common.pair_masks`."""
    if any(v.mask is not None and v.mask != v.image for v in views):
        return
    mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if mask_dir is None:
        return
    pairs = pair_masks([v.image for v in views if v.image is not None], mask_dir, warnings)
    for v in views:
        if v.image in pairs:
            v.mask = pairs[v.image]


def _points(ply_files: list[Path], warnings: list[str]):
    """nerfstudio's ``ply_file_path``: sparse points (x y z, optional red green blue) for initialisation."""
    for ply in ply_files[:1]:
        try:
            from plyfile import PlyData

            v = PlyData.read(str(ply))["vertex"].data
            xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
            names = v.dtype.names or ()
            rgb = (
                np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
                if {"red", "green", "blue"} <= set(names)
                else None
            )
        except Exception as e:  # plyfile raises many kinds on broken files
            warnings.append(f"{ply}: sparse points not read ({e.__class__.__name__}); continuing without")
            return None, None
        if not np.all(np.isfinite(xyz)):
            warnings.append(f"{ply}: sparse points contain NaN or inf; continuing without")
            return None, None
        return xyz, rgb
    return None, None


def _split_lists(data: dict, js: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in SPLITS:
        lst = data.get(f"{s}_filenames")
        if lst is None:
            continue
        if not isinstance(lst, list):
            raise InputError(js, f"{s}_filenames is not a list")
        for rel in lst:
            out[_norm_rel(str(rel))] = s
            out[_view_name(str(rel))] = s
    return out


def _read_frame(fr, i: int, data: dict, js: Path, root: Path, warnings: list[str]) -> View | None:
    where = f"frame {i}"
    if not isinstance(fr, dict):
        raise InputError(js, f"{where} is not an object")
    for k in ("file_path", "transform_matrix"):
        if k not in fr:
            raise InputError(js, f"{where} lacks '{k}'")
    c2w = as_matrix(fr["transform_matrix"], (-1, 4), js, f"{where} transform_matrix")
    if c2w.shape[0] not in (3, 4):
        raise InputError(js, f"{where} transform_matrix has shape {list(c2w.shape)}, expected 4x4")
    check_rotation(c2w[:3, :3], js, f"{where} transform_matrix")

    def get(key):
        v = fr.get(key, data.get(key))
        return None if v is None else as_number(v, js, f"{where} {key}")

    rel = str(fr["file_path"])
    image = resolve_image(root, rel)
    header = image_header(image) if image.is_file() else None
    w, h = get("w"), get("h")
    if w is None or h is None:
        if header is None:  # size unknown and no readable image: the view is skipped
            why = "image file is missing" if not image.is_file() else "not a readable image"
            warnings.append(f"{image}: {why}; view skipped")
            return None
        w = float(header[0]) if w is None else w
        h = float(header[1]) if h is None else h
    if w <= 0 or h <= 0 or w != int(w) or h != int(h):
        raise InputError(js, f"{where}: bad image size {w}x{h}")
    fx, fy = get("fl_x"), get("fl_y")
    ax, ay = get("camera_angle_x"), get("camera_angle_y")
    if fx is None and ax is not None:
        fx = 0.5 * w / math.tan(0.5 * ax)
    if fy is None and ay is not None:
        fy = 0.5 * h / math.tan(0.5 * ay)
    if fx is None:
        fx = fy
    if fy is None:
        fy = fx
    if fx is None or fy is None or not (fx > 0 and fy > 0):
        raise InputError(js, f"{where}: no valid focal length (fl_x/fl_y or camera_angle_x)")
    cx, cy = get("cx"), get("cy")
    K = make_K(fx, fy, w / 2 if cx is None else cx, h / 2 if cy is None else cy)
    dist = [get(k) or 0.0 for k in _DIST_KEYS]
    if any(get(k) for k in _UNSUPPORTED_DIST):
        raise InputError(js, f"{where}: distortion k4..k6 is not supported")
    cam = Camera(K, viewmat_from_opengl_c2w(c2w[:3]), int(w), int(h), np.array(dist))
    cam = checked_camera(cam, image, warnings, header)
    if cam is None:
        return None
    mask = None
    if fr.get("mask_path"):
        mask = resolve_image(root, str(fr["mask_path"]))
        if not mask.is_file():
            warnings.append(f"{mask}: mask file is missing; view kept without a mask")
            mask = None
    elif has_alpha(header):
        mask = image
    extra = {k: v for k, v in fr.items() if k not in _KNOWN_FRAME_KEYS}
    return View(_view_name(rel), cam, image, mask, "train", {"index": i, "frame_extra": extra})


# ---------------------------------------------------------------------------------------------------
# writer
def _intrinsics(cam: Camera) -> dict:
    K = cam.K
    out = {
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": cam.width,
        "h": cam.height,
    }
    if cam.has_distortion:
        out.update({k: float(d) for k, d in zip(_DIST_KEYS, cam.dist)})
    return out


def _safe_rel(name: str) -> str:
    """A view name as a relative path inside the output folder (so it reads back as the same name)."""
    parts = [
        "".join(c if c.isalnum() or c in "-_." else "_" for c in part)
        for part in name.replace("\\", "/").split("/")
        if part not in ("", ".", "..")
    ]
    return "/".join(parts) or "view"


def write(
    scene_or_views: Scene | Sequence[View],
    out_dir: str | Path,
    *,
    copy_images: bool = True,
    extra: dict | None = None,
    filename: str = "transforms.json",
) -> Path:
    """Write views as a nerfstudio-style ``transforms.json`` in ``out_dir``; returns its path.

    Cameras become OpenGL ``transform_matrix`` plus ``fl_x fl_y cx cy w h`` (and ``k1 k2 p1 p2 k3``),
    top-level when all views share them, else per frame. With ``copy_images`` each image file is
    copied to ``<view name><ext>`` (so names read back unchanged) and a separate mask file to
    ``masks/<view name><ext>``; else both are referenced relative to ``out_dir``.
    Non-train splits are kept in ``{split}_filenames``. Files are written atomically, the JSON last.
    """
    out_dir = Path(out_dir)
    scene = scene_or_views if isinstance(scene_or_views, Scene) else None
    views = list(scene.views if scene is not None else scene_or_views)
    if not views:
        raise InputError(out_dir, "nothing to write: no views")
    intr = []
    for v in views:
        if v.camera.batch_shape:
            raise ValueError(f"view '{v.name}' has a batched camera")
        if abs(v.camera.K[0, 1]) > 1e-12:
            raise InputError(out_dir, f"view '{v.name}' has a skewed K; transforms.json cannot store it")
        if v.image is None:
            raise InputError(out_dir, f"view '{v.name}' has no image file to reference")
        intr.append(_intrinsics(v.camera))
    shared = all(d == intr[0] for d in intr)
    frames, split_lists = [], {s: [] for s in SPLITS}
    used: set[str] = set()
    for v, d in zip(views, intr):
        src = Path(v.image)
        if copy_images:
            stem = _safe_rel(v.name)
            while stem in used:
                stem += "_"
            used.add(stem)
            rel = f"{stem}{src.suffix}"
            atomic_write_bytes(out_dir / rel, src.read_bytes())
        else:
            rel = Path(os.path.relpath(src.resolve(), out_dir.resolve())).as_posix()
        frame = {"file_path": rel, "transform_matrix": opengl_c2w_from_viewmat(v.camera.viewmat).tolist()}
        if v.mask is not None and Path(v.mask) != src:
            msrc = Path(v.mask)
            if copy_images:
                mrel = f"masks/{stem}{msrc.suffix}"
                atomic_write_bytes(out_dir / mrel, msrc.read_bytes())
            else:
                mrel = Path(os.path.relpath(msrc.resolve(), out_dir.resolve())).as_posix()
            frame["mask_path"] = mrel
        if not shared:
            frame.update(d)
        for k, val in dict(v.meta.get("frame_extra", {})).items():
            frame.setdefault(k, val)
        frames.append(frame)
        split_lists.setdefault(v.split, []).append(rel)
    top: dict = {"camera_model": "OPENCV"}
    if shared:
        top.update(intr[0])
    if scene is not None and scene.world_from_capture is not None:
        top["world_from_capture"] = np.asarray(scene.world_from_capture).tolist()
    if any(v.split != "train" for v in views):
        for s, lst in split_lists.items():
            top[f"{s}_filenames"] = lst
    top.update(extra or {})
    top["frames"] = frames
    js = out_dir / filename
    atomic_write_json(js, top)
    return js
