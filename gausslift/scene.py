"""A scene: the views of one capture (camera, image path, mask path, split), in the internal convention.

Readers in :mod:`gausslift.io` build scenes; everything downstream (checks, fitting, ingest) takes one.
Images are loaded lazily and returned as float32 HxWx3 in [0, 1]; masks as float32 HxW in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gausslift.cameras import Camera
from gausslift.errors import InputError

SPLITS = ("train", "val", "test")


@dataclass
class View:
    name: str
    camera: Camera  # unbatched
    image: Path | None = None
    mask: Path | None = None
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"frame": 3, "source": {...}}


@dataclass
class Keypoints:
    """Labelled points a capture carries, for checks: 3D points in world units and their 2D
    observations per view name (pixels in the internal convention, NaN where unlabelled)."""

    points3d: np.ndarray  # [F, J, 3] (F frames or 1, J joints)
    points2d: dict[str, np.ndarray]  # view name -> [F, J, 2]
    names: list[str] | None = None


@dataclass
class Scene:
    views: list[View]
    format: str = "unknown"
    root: Path | None = None
    points3d: np.ndarray | None = None  # [P, 3] sparse points (e.g. COLMAP), for initialisation
    points_rgb: np.ndarray | None = None  # [P, 3] in [0, 1]
    keypoints: Keypoints | None = None
    warnings: list[str] = field(default_factory=list)
    world_from_capture: np.ndarray | None = None  # 4x4 similarity, when the scene was normalised
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.views)

    def __iter__(self):
        return iter(self.views)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.views]

    def view(self, name: str) -> View:
        for v in self.views:
            if v.name == name:
                return v
        raise KeyError(name)

    def cameras(self) -> Camera:
        """All cameras stacked (requires equal image sizes)."""
        return Camera.stack([v.camera for v in self.views])

    def subset(self, views: list[View]) -> Scene:
        return replace(self, views=list(views))

    def split(self, *names: str) -> Scene:
        return self.subset([v for v in self.views if v.split in names])

    def with_holdout_every(self, k: int) -> Scene:
        """Mark every k-th view (in name order, starting from the first) as 'test', the rest 'train'."""
        if k <= 0:
            return self
        order = sorted(range(len(self.views)), key=lambda i: self.views[i].name)
        test = {order[j] for j in range(0, len(order), k)}
        views = [replace(v, split="test" if i in test else "train") for i, v in enumerate(self.views)]
        return self.subset(views)

    @property
    def has_masks(self) -> bool:
        return any(v.mask is not None for v in self.views)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# ---------------------------------------------------------------------------------------------------
# image loading
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def strip_png_exif(data: bytes) -> bytes:
    """A PNG byte stream without its ``eXIf`` chunks (others unchanged); non-PNG data as given.

    libpng prints "eXIf: duplicate" to stderr for PNGs carrying two eXIf chunks (the FaceLift sample
    does); the chunk holds metadata only (OpenCV's IMREAD_UNCHANGED ignores EXIF orientation), so
    dropping it changes no pixel. A truncated or malformed chunk list is left to the decoder, which
    then reports the real error."""
    if not data.startswith(_PNG_SIG) or b"eXIf" not in data:
        return data
    parts, pos, n = [data[:8]], 8, len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > n:
            return data
        if data[pos + 4 : pos + 8] != b"eXIf":
            parts.append(data[pos:end])
        pos = end
    if pos != n:
        return data
    return b"".join(parts)


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Decode image file bytes with OpenCV as stored (grey, BGR or BGRA; 8 or 16 bit), without
    libpng's eXIf warning; None when the bytes are not a readable image."""
    import cv2

    raw = bytes(data) if not isinstance(data, bytes) else data
    if not raw:
        return None
    buf = np.frombuffer(strip_png_exif(raw), dtype=np.uint8)
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def read_image_raw(path: str | Path) -> np.ndarray | None:
    """An image file decoded as stored (see :func:`decode_image`); None when missing or unreadable."""
    try:
        return decode_image(Path(path).read_bytes())
    except OSError:
        return None


def read_image_file(path: str | Path) -> np.ndarray:
    """Read an image as float32 [H, W, C] in [0, 1] (C = 1, 3 or 4); clear error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file is missing")
    img = read_image_raw(path)
    if img is None:
        raise InputError(path, "not a readable image")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def load_view(view: View) -> tuple[np.ndarray, np.ndarray | None]:
    """Image float32 [H, W, 3] and mask float32 [H, W] (from the mask file, else from alpha, else None).

    The image size must match the camera; a mismatch is an :class:`InputError` naming the file.
    """
    if view.image is None:
        raise InputError(None, f"view '{view.name}' has no image")
    img = read_image_file(view.image)
    h, w = img.shape[:2]
    cam = view.camera
    if (w, h) != (cam.width, cam.height):
        raise InputError(view.image, f"image is {w}x{h} but its camera is {cam.width}x{cam.height}")
    mask = None
    if img.shape[2] == 4:
        mask = img[..., 3].copy()
    if view.mask is not None:
        m = read_image_file(view.mask)
        if m.shape[:2] != (h, w):
            raise InputError(view.mask, f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}")
        mask = m[..., 3] if m.shape[2] == 4 else m[..., :3].mean(axis=2)
    rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(rgb, dtype=np.float32), mask
