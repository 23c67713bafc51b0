"""FaceLift / GS-LRM sample folders: ``opencv_cameras.json`` + RGBA images (mask = alpha).

``opencv_cameras.json`` is ``{"frames": [{"w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path"}, ...]}``
with ``w2c`` the OpenCV world-to-camera 4x4 and intrinsics whose pixel centres are already at +0.5
(FaceLift renders with Blender), so the reader copies them unchanged. Extra per-frame keys are kept in
``view.meta["frame_extra"]``; extra top-level keys in ``scene.meta["facelift"]``; a top-level
``world_from_capture`` becomes ``scene.world_from_capture``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, make_K
from gausslift.errors import InputError
from gausslift.io.common import (
    as_matrix,
    as_number,
    check_rotation,
    checked_camera,
    has_alpha,
    image_header,
    load_json,
    require_views,
    resolve_image,
)
from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.scene import Scene, View, load_view

FORMAT = "facelift"
CAMERAS_JSON = "opencv_cameras.json"
_FRAME_KEYS = ("w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path")
# zlib level 1: about 1.6x faster to encode than OpenCV's default 3 on ingest's 512^2 RGBA frames, for
# files about 10% larger (measured); writing PNGs was a third of ingest's time.
_PNG_FAST = [16, 1, 19, 32]  # zlib level 1, PNG 'up' filter (cv2 constants; cv2 is imported lazily here)


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.name == CAMERAS_JSON
    return (path / CAMERAS_JSON).is_file()


def read(path: Path) -> Scene:
    path = Path(path)
    js = path if path.is_file() else path / CAMERAS_JSON
    root = js.parent
    data = load_json(js)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(js, "expected an object with a 'frames' list")
    if not data["frames"]:
        raise InputError(js, "'frames' is empty")
    warnings: list[str] = []
    views: list[View] = []
    stems = [Path(str(f.get("file_path", ""))).stem for f in data["frames"] if isinstance(f, dict)]
    unique_stems = len(set(stems)) == len(stems)
    for i, fr in enumerate(data["frames"]):
        if not isinstance(fr, dict):
            raise InputError(js, f"frame {i} is not an object")
        missing = [k for k in _FRAME_KEYS if k not in fr]
        if missing:
            raise InputError(js, f"frame {i} lacks {', '.join(missing)}")
        where = f"frame {i}"
        w = as_number(fr["w"], js, f"{where} w", positive=True)
        h = as_number(fr["h"], js, f"{where} h", positive=True)
        if w != int(w) or h != int(h):
            raise InputError(js, f"{where}: image size {w}x{h} is not whole pixels")
        K = make_K(
            *(as_number(fr[k], js, f"{where} {k}", positive=k in ("fx", "fy")) for k in _FRAME_KEYS[2:6])
        )
        w2c = as_matrix(fr["w2c"], (-1, 4), js, f"{where} w2c")
        if w2c.shape[0] not in (3, 4):
            raise InputError(js, f"{where} w2c has shape {list(w2c.shape)}, expected 4x4 or 3x4")
        viewmat = np.eye(4)
        viewmat[:3] = w2c[:3]
        check_rotation(viewmat[:3, :3], js, f"{where} w2c")
        cam = Camera(K, viewmat, int(w), int(h))
        rel = str(fr["file_path"])
        image = resolve_image(root, rel)
        header = image_header(image) if image.is_file() else None
        cam = checked_camera(cam, image, warnings, header)
        if cam is None:
            continue
        stem = Path(rel).stem if unique_stems else str(Path(rel).with_suffix(""))
        extra = {k: v for k, v in fr.items() if k not in _FRAME_KEYS}
        meta = {"index": i, "frame_extra": extra}
        if "source" in extra:
            meta["source"] = extra["source"]
        mask = image if has_alpha(header) else None
        views.append(View(stem, cam, image, mask, "train", meta))
    require_views(views, js, warnings)
    world_from_capture = None
    if "world_from_capture" in data:
        world_from_capture = as_matrix(data["world_from_capture"], (4, 4), js, "world_from_capture")
    extra_top = {k: v for k, v in data.items() if k not in ("frames", "world_from_capture")}
    return Scene(
        views,
        format=FORMAT,
        root=root,
        warnings=warnings,
        world_from_capture=world_from_capture,
        meta={"facelift": extra_top},
    )


# ---------------------------------------------------------------------------------------------------
# writer
def frame_record(cam: Camera, file_path: str) -> dict:
    """One ``opencv_cameras.json`` frame: size, intrinsics, world-to-camera and the image's path."""
    K = cam.K
    return {"w": cam.width, "h": cam.height, "fx": float(K[0, 0]), "fy": float(K[1, 1]),
            "cx": float(K[0, 2]), "cy": float(K[1, 2]), "w2c": np.asarray(cam.viewmat).tolist(),
            "file_path": file_path}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "view"


def _to_uint(img: np.ndarray, bit_depth: int) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8 and bit_depth == 8:
        return a
    if a.dtype == np.uint16 and bit_depth == 16:
        return a
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    top = 255 if bit_depth == 8 else 65535
    return np.round(np.clip(a, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def _as_alpha(mask) -> np.ndarray:
    """A mask as the writer reads it: integer masks on their dtype's full scale (uint8 0..255, as an
    image's alpha channel), bool and float masks as fractions in [0, 1]."""
    m = np.asarray(mask)
    if m.dtype in (np.uint8, np.uint16):
        return m
    return m.astype(np.float32)


def write(
    scene_or_views: Scene | Sequence[View],
    out_dir: str | Path,
    *,
    images: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    extra: dict | None = None,
    bit_depth: int = 8,
) -> Path:
    """Write views to a FaceLift sample folder: ``images/<name>.png`` (RGBA, alpha = mask) and
    ``opencv_cameras.json``; returns the JSON path.

    Images come from ``images`` (float in [0,1] or uint8/16, HxWx3 or HxWx4) when given, else are
    loaded from each view's files. ``masks`` (HxW) give the alpha when given; else the view's mask;
    else alpha is 1. ``view.meta["frame_extra"]`` and ``view.meta["source"]`` become per-frame keys;
    ``extra`` (and a scene's ``meta["facelift"]`` and ``world_from_capture``) top-level keys. Every file
    is written atomically and the JSON last, so a failed write leaves no valid-looking sample.
    """
    import cv2

    if bit_depth not in (8, 16):
        raise ValueError("bit_depth must be 8 or 16")
    out_dir = Path(out_dir)
    scene = scene_or_views if isinstance(scene_or_views, Scene) else None
    views = list(scene.views if scene is not None else scene_or_views)
    if not views:
        raise InputError(out_dir, "nothing to write: no views")
    if images is not None and len(images) != len(views):
        raise ValueError(f"{len(images)} images for {len(views)} views")
    names = [_safe_name(v.name) for v in views]
    if len(set(names)) != len(names):
        names = [f"cam_{i:03d}" for i in range(len(views))]
    frames = []
    for i, v in enumerate(views):
        cam = v.camera
        if cam.batch_shape:
            raise ValueError(f"view '{v.name}' has a batched camera")
        if cam.has_distortion:
            raise InputError(out_dir, f"view '{v.name}' has lens distortion; FaceLift cameras are pinhole")
        if abs(cam.K[0, 1]) > 1e-12:
            raise InputError(out_dir, f"view '{v.name}' has a skewed K; FaceLift cameras have none")
        if images is not None:
            img = np.asarray(images[i])
            mask = masks[i] if masks is not None else None
            if img.ndim == 3 and img.shape[2] == 4 and mask is None:
                img, mask = img[..., :3], img[..., 3]
        else:
            img, mask = load_view(v)
            if masks is not None and masks[i] is not None:
                mask = masks[i]
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != (cam.height, cam.width):
            raise InputError(
                out_dir,
                f"view '{v.name}': image shape {img.shape} does not fit its {cam.width}x{cam.height} camera",
            )
        rgb = _to_uint(img, bit_depth)
        alpha = (
            np.full(rgb.shape[:2], 255 if bit_depth == 8 else 65535, rgb.dtype)
            if mask is None
            else _to_uint(_as_alpha(mask), bit_depth)
        )
        if alpha.shape != rgb.shape[:2]:
            raise InputError(out_dir, f"view '{v.name}': mask shape {alpha.shape} does not fit the image")
        bgra = np.dstack([rgb[..., ::-1], alpha])
        rel = f"images/{names[i]}.png"
        with atomic_path(out_dir / rel) as tmp:
            if not cv2.imwrite(str(tmp), bgra, _PNG_FAST):
                raise InputError(out_dir / rel, "could not write image")
        frame = frame_record(cam, rel)
        for k, val in dict(v.meta.get("frame_extra", {})).items():
            frame.setdefault(k, val)
        if "source" in v.meta:
            frame["source"] = v.meta["source"]
        frames.append(frame)
    top: dict = {}
    if scene is not None:
        top.update(scene.meta.get("facelift", {}))
        if scene.world_from_capture is not None:
            top["world_from_capture"] = np.asarray(scene.world_from_capture).tolist()
    top.update(extra or {})
    top["frames"] = frames
    js = out_dir / CAMERAS_JSON
    atomic_write_json(js, top)
    return js
