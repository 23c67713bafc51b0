"""Per-camera inputs of an ingest: the selected frames (video or still image), the background model and
user-given masks.

Given masks (``--masks PATH``) are looked up per camera name: ``PATH/<camera>.<video>`` (mask video,
frames by index), ``PATH/<camera>/`` (mask images in name order, the i-th is frame i, or named by frame
number), or ``PATH/<camera>.png|jpg`` (one mask, for still captures).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.preprocess.frames import (
    read_image_u8,
    read_mask_u8,
    read_video_frames,
    sample_indices,
    video_info,
)
from gausslift.preprocess.masks import background_model
from gausslift.scene import View

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Source:
    view: View
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # selected frame index -> 8-bit image
    background: np.ndarray | None = None
    given: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> 8-bit mask


def media_kind(view: View) -> str:
    if view.meta.get("video") is not None:
        return "video"
    if view.image is not None:
        return "image"
    return "none"


def n_video_frames(view: View) -> int:
    n, w, h = video_info(view.meta["video"])
    cam = view.camera
    if (w, h) != (cam.width, cam.height):
        raise InputError(
            view.meta["video"],
            f"video is {w}x{h} but camera '{view.name}' is calibrated for {cam.width}x{cam.height}",
        )
    return n


def _given_mask_files(root: Path, name: str) -> tuple[str, list[Path]] | None:
    for ext in VIDEO_EXTS:
        if (root / (name + ext)).is_file():
            return "video", [root / (name + ext)]
    if (root / name).is_dir():
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if files:
            return "images", files
    for ext in IMAGE_EXTS:
        if (root / (name + ext)).is_file():
            return "image", [root / (name + ext)]
    return None


def _pick_image(files: list[Path], idx: int) -> Path | None:
    numbered = {}
    for p in files:
        m = re.findall(r"\d+", p.stem)
        if m:
            numbered.setdefault(int(m[-1]), p)
    if len(numbered) == len(files) and idx in numbered:
        return numbered[idx]
    return files[idx] if idx < len(files) else None


def load_given_masks(root: Path, view: View, indices: list[int]) -> dict[int, np.ndarray]:
    found = _given_mask_files(root, view.name)
    if found is None:
        raise InputError(root, f"no mask video, folder or image for camera '{view.name}'")
    kind, files = found
    if kind == "video":
        out = read_video_frames(files[0], indices)
        return {i: (m if m.ndim == 2 else m.max(axis=2)) for i, m in out.items()}
    if kind == "image":
        m = read_mask_u8(files[0])
        return {i: m for i in indices}
    out = {}
    for i in indices:
        p = _pick_image(files, i)
        if p is None:
            raise InputError(root / view.name, f"no mask image for frame {i}")
        out[i] = read_mask_u8(p)
    return out


def load_source(view: View, indices: list[int], masks: str, background_frames: int, n_frames: int) -> Source:
    """Decode what one camera needs: the selected frames, plus evenly spread frames for the background
    model when masks are automatic (one sequential pass over the video)."""
    src = Source(view)
    if media_kind(view) == "video":
        need = list(indices)
        bg_idx: list[int] = []
        if masks == "auto" and n_frames >= 3:
            bg_idx = sample_indices(n_frames, background_frames)
            need = sorted(set(need) | set(bg_idx))
        frames = read_video_frames(view.meta["video"], need)
        if bg_idx:
            src.background = background_model([frames[i] for i in bg_idx])
        src.frames = {i: frames[i] for i in indices}
    else:
        img = read_image_u8(view.image)
        cam = view.camera
        if img.shape[:2] != (cam.height, cam.width):
            raise InputError(
                view.image, f"image is {img.shape[1]}x{img.shape[0]}, camera {cam.width}x{cam.height}"
            )
        src.frames = {i: img for i in indices}
        if masks == "auto" and view.mask is not None:
            m = read_mask_u8(view.mask)
            src.given = {i: m for i in indices}
        elif masks == "auto":
            from gausslift.scene import read_image_file

            full = read_image_file(view.image)
            if full.shape[2] == 4:
                a = (full[..., 3] * 255 + 0.5).astype(np.uint8)
                src.given = {i: a for i in indices}
    if masks != "auto":
        src.given = load_given_masks(Path(masks), view, list(indices))
    for i, m in src.given.items():
        if m.shape != (view.camera.height, view.camera.width):
            raise InputError(masks, f"mask of camera '{view.name}' frame {i} is {m.shape[1]}x{m.shape[0]}")
    return src
