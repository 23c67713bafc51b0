"""Helpers shared by the capture readers and writers: JSON loading with clear errors, validated
matrices, cheap image-size probes (file headers only), image path resolution and the missing-image
and wrong-size policy every reader follows.

Policy (the same for every reader):

* unreadable or broken calibration input -> :class:`InputError` naming the file;
* a view whose image file is missing (or whose header is unreadable) -> a warning in
  ``scene.warnings`` and the view is skipped; the other views still load; no view left -> InputError;
* an image whose size disagrees with its calibration -> a warning; when the aspect ratio agrees (a
  downsampled copy) the camera is rescaled to the image (exact with pixel centres at +0.5), otherwise
  the calibrated camera is kept and loading that image will fail with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from gausslift.cameras import Camera
from gausslift.errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG", ".exr", ".tif", ".tiff", ".bmp", ".webp")


# ---------------------------------------------------------------------------------------------------
# JSON and numbers
def load_json(path: str | Path) -> Any:
    """Parse a JSON file; InputError naming the file when it is missing, empty or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read file ({e.__class__.__name__})") from None
    if not text.strip():
        raise InputError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON (line {e.lineno}: {e.msg})") from None


def as_matrix(value: Any, shape: tuple[int, ...], path: Path | None, what: str) -> np.ndarray:
    """``value`` as a finite float64 array of ``shape`` (a leading -1 allows any count)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a numeric array") from None
    ok = a.ndim == len(shape) and all(s in (-1, n) for s, n in zip(shape, a.shape))
    if not ok:
        want = "x".join("N" if s == -1 else str(s) for s in shape)
        raise InputError(path, f"{what} has shape {list(a.shape)}, expected {want}")
    if not np.all(np.isfinite(a)):
        raise InputError(path, f"{what} contains NaN or inf")
    return a


def as_number(value: Any, path: Path | None, what: str, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise InputError(path, f"{what} is NaN or inf")
    if positive and x <= 0:
        raise InputError(path, f"{what} must be positive, got {x}")
    return x


def check_rotation(R: np.ndarray, path: Path | None, what: str, tol: float = 1e-3) -> None:
    """Rotation part must be orthonormal with det +1 (rigid cameras only)."""
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > tol or np.linalg.det(R) < 0:
        raise InputError(path, f"{what} is not a rotation (orthonormality error {err:.2g})")


# ---------------------------------------------------------------------------------------------------
# images
def image_header(path: Path) -> tuple[int, int, int] | None:
    """(width, height, channels) of an image from its header only (PNG, JPEG), else by decoding.

    Returns None when the file is not a readable image.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(head[25], 3)
                return int(w), int(h), channels
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(f)
    except OSError:
        return None
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    return img.shape[1], img.shape[0], 1 if img.ndim == 2 else img.shape[2]


def _jpeg_size(f) -> tuple[int, int, int] | None:
    f.seek(2)
    while True:
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = f.read(2)
        if len(seg) < 2:
            return None
        n = struct.unpack(">H", seg)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = f.read(6)
            if len(data) < 6:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return int(w), int(h), int(data[5])
        f.seek(n - 2, os.SEEK_CUR)


def resolve_image(root: Path, rel: str) -> Path:
    """Path of ``rel`` under ``root``; when ``rel`` has no image extension (Blender's ``./train/r_0``)
    the first existing ``rel + ext`` is used. Returns the most likely path even when nothing exists."""
    p = Path(os.path.normpath(root / rel))
    if p.suffix in IMAGE_EXTS or p.suffix.lower() in IMAGE_EXTS:
        return p
    for ext in IMAGE_EXTS:
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return p if p.is_file() else p.with_name(p.name + ".png")


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` sorted by name (hidden files ignored)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in {e.lower() for e in IMAGE_EXTS}
    )


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """An image file in ``folder`` named ``stem`` with any image extension (``stem`` itself first)."""
    if (folder / stem).is_file():
        return folder / stem
    base = Path(stem).stem if Path(stem).suffix.lower() in {e.lower() for e in IMAGE_EXTS} else stem
    for ext in IMAGE_EXTS:
        if (folder / (base + ext)).is_file():
            return folder / (base + ext)
    return None


def checked_camera(
    camera: Camera, image: Path, warnings: list[str], header: tuple[int, int, int] | None = None
) -> Camera | None:
    """Apply the missing-image / wrong-size policy to one view. Returns the camera to use, or None
    when the view must be skipped (a warning says why)."""
    if not image.is_file():
        warnings.append(f"{image}: image file is missing; view skipped")
        return None
    header = header or image_header(image)
    if header is None:
        warnings.append(f"{image}: not a readable image; view skipped")
        return None
    w, h = header[:2]
    if (w, h) == (camera.width, camera.height):
        return camera
    if w <= 0 or h <= 0:
        warnings.append(f"{image}: image has size {w}x{h}; view skipped")
        return None
    sx, sy = w / camera.width, h / camera.height
    same_aspect = abs(camera.width * sy - w) < 1.0 and abs(camera.height * sx - h) < 1.0
    if same_aspect:
        warnings.append(
            f"{image}: image is {w}x{h} but its calibration is {camera.width}x{camera.height}; "
            f"camera rescaled by {sx:.4g}"
        )
        return camera.resized(w, h)
    warnings.append(
        f"{image}: image is {w}x{h} but its calibration is {camera.width}x{camera.height} "
        "(different aspect ratio); camera kept, loading this image will fail"
    )
    return camera


def require_views(views: list, path: Path, warnings: list[str]) -> None:
    if not views:
        why = f" ({len(warnings)} warnings, first: {warnings[0]})" if warnings else ""
        raise InputError(path, "no usable view: every image is missing or unreadable" + why)


def has_alpha(header: tuple[int, int, int] | None) -> bool:
    return header is not None and header[2] in (2, 4)
