"""Per-camera inputs of an ingest: frames (video streamed in chunks, or a still image), the background
model and masks.

Masks that come with the capture (a view's ``mask`` image, an RGBA image's alpha, a ``mask_video`` in
its meta) are used as they are. Given masks (``--masks PATH``) are looked up per camera name:
``PATH/<camera>.<video>`` (mask video, frames by index), ``PATH/<camera>/`` (mask images in name order,
the i-th is frame i, or named by frame number), or ``PATH/<camera>.png|jpg`` (one mask, for stills).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.preprocess.frames import (
    VideoStream,
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
    """One camera's inputs; ``frames``/``given`` hold the current chunk only (see :func:`load_chunk`)."""

    view: View
    background: np.ndarray | None = None
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> 8-bit image
    given: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> 8-bit mask
    stream: VideoStream | None = None
    still: np.ndarray | None = None
    given_kind: str | None = None  # video | images | image
    given_files: list[Path] = field(default_factory=list)
    given_stream: VideoStream | None = None
    background_misses: int = 0
    preloaded: dict[int, np.ndarray] = field(default_factory=dict)  # the first chunk, decoded early
    alpha: np.ndarray | None = None  # a still image's own alpha (given_kind "alpha")

    def close(self) -> None:
        for s in (self.stream, self.given_stream):
            if s is not None:
                s.close()


def media_kind(view: View) -> str:
    if view.meta.get("video") is not None:
        return "video"
    if view.image is not None:
        return "image"
    return "none"


def check_video(view: View, warnings: list[str]) -> tuple[View, int]:
    """(view, frame count): a video of another size but the same aspect ratio as its calibration (a
    downsampled copy) gets its camera rescaled exactly (pixel centres at +0.5), with a warning."""
    n, w, h = video_info(view.meta["video"])
    cam = view.camera
    if (w, h) == (cam.width, cam.height):
        return view, n
    sx, sy = w / cam.width, h / cam.height
    if abs(cam.width * sy - w) < 1.0 and abs(cam.height * sx - h) < 1.0:
        warnings.append(
            f"{view.meta['video']}: video is {w}x{h}, calibration {cam.width}x{cam.height}; camera rescaled"
        )
        return replace(view, camera=cam.resized(w, h)), n
    raise InputError(
        view.meta["video"],
        f"video is {w}x{h} but camera '{view.name}' is calibrated for {cam.width}x{cam.height}",
    )


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
    if len(numbered) == len(files):  # every file carries a number: that is its frame
        return numbered.get(idx)
    return files[idx] if idx < len(files) else None


def open_source(view: View, masks: str, background_frames: int, n_frames: int, first: list[int]) -> Source:
    """Open one camera: its video stream (or still image), given masks, and the background model from
    about ``background_frames`` frames spread over the whole video, decoded in the same pass as the
    frames of the ``first`` chunk (kept in ``src.preloaded``)."""
    src = Source(view)
    cam = view.camera
    if media_kind(view) == "video":
        src.stream = VideoStream(view.meta["video"])
        if masks == "auto" and view.meta.get("mask_video") is not None:  # the capture's own masks (MAMMAL)
            src.given_kind, src.given_files = "video", [Path(view.meta["mask_video"])]
            src.given_stream = VideoStream(src.given_files[0])
            return src
        if masks == "auto" and n_frames >= 3:
            bg_idx = sample_indices(n_frames, background_frames)
            got = read_video_frames(view.meta["video"], sorted(set(bg_idx) | set(first)))
            src.background = background_model([got[i] for i in bg_idx])
            src.preloaded = {i: got[i] for i in first}
    else:
        src.still = read_image_u8(view.image)
        if src.still.shape[:2] != (cam.height, cam.width):
            h, w = src.still.shape[:2]
            raise InputError(view.image, f"image is {w}x{h}, camera {cam.width}x{cam.height}")
        if masks == "auto" and view.mask is not None:
            src.given_kind, src.given_files = "image", [Path(view.mask)]
        elif masks == "auto":
            from gausslift.scene import read_image_file

            full = read_image_file(view.image)
            if full.shape[2] == 4:
                src.given_kind = "alpha"
                src.alpha = (full[..., 3] * 255 + 0.5).astype(np.uint8)
    if masks != "auto":
        found = _given_mask_files(Path(masks), view.name)
        if found is None:
            raise InputError(masks, f"no mask video, folder or image for camera '{view.name}'")
        src.given_kind, src.given_files = found
        if src.given_kind == "video":
            src.given_stream = VideoStream(src.given_files[0])
    return src


def load_chunk(src: Source, indices: list[int]) -> tuple[dict, dict]:
    """(frames, given masks) of ``indices``, without touching ``src.frames``/``src.given`` (so a reader
    thread can decode the next chunk while the current one is processed; only that thread uses the
    streams)."""
    if src.stream is None:
        frames = {i: src.still for i in indices}
    elif set(indices) <= set(src.preloaded):  # (the first chunk may be preloaded by open_source)
        frames = {i: src.preloaded[i] for i in indices}
    else:
        frames = src.stream.read(indices)
    src.preloaded = {}
    kind = src.given_kind
    if kind is None:
        given = {}
    elif kind == "alpha":
        given = {i: src.alpha for i in indices}
    elif kind == "image":
        m = read_mask_u8(src.given_files[0])
        given = {i: m for i in indices}
    elif kind == "video":
        got = src.given_stream.read(indices)
        given = {i: (m if m.ndim == 2 else m.max(axis=2)) for i, m in got.items()}
    else:
        given = {}
        for i in indices:
            p = _pick_image(src.given_files, i)
            if p is None:
                raise InputError(src.given_files[0].parent, f"no mask image for frame {i}")
            given[i] = read_mask_u8(p)
    cam = src.view.camera
    for i, m in given.items():
        if m.shape != (cam.height, cam.width):
            raise InputError(None, f"mask of camera '{src.view.name}' frame {i} is {m.shape[1]}x{m.shape[0]}")
    return frames, given


def read_chunk(src: Source, indices: list[int]) -> None:
    """Load the frames (and given masks) of ``indices`` into ``src``, dropping the previous chunk."""
    src.frames, src.given = load_chunk(src, indices)
