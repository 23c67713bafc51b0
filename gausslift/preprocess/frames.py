"""Frames of a capture: the --frames spec, sequential video decoding that keeps only the frames asked for,
and still images. Frames are 8-bit arrays as decoded (HxW grey or HxWx3 RGB); videos are synchronised by
frame index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.scene import decode_image


def parse_frames(spec: str | None, n_frames: int) -> list[int]:
    """'START:STOP:STEP' (Python slice semantics, any part optional) or 'a,b,c' -> frame indices."""
    if spec is None or spec.strip() in ("", ":"):
        return list(range(n_frames))
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            if len(parts) > 3:
                raise ValueError
            idx = list(range(n_frames))[slice(*parts)]
        else:
            idx = [int(p) for p in spec.split(",")]
    except ValueError:
        raise InputError(None, f"--frames '{spec}': expected START:STOP:STEP or a,b,c") from None
    bad = [i for i in idx if not 0 <= i < n_frames]
    if bad:
        raise InputError(None, f"--frames '{spec}': frame {bad[0]} is outside 0..{n_frames - 1}")
    if not idx:
        raise InputError(None, f"--frames '{spec}' selects no frame of {n_frames}")
    return idx


def _open(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(path, "not a readable video")
    return cap


def video_info(path: str | Path) -> tuple[int, int, int]:
    """(frame count, width, height) from the container (the count may be an estimate)."""
    import cv2

    cap = _open(Path(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return n, w, h


def _to_array(frame: np.ndarray, tol: int = 6) -> np.ndarray:
    """BGR decode -> grey HxW when the channels agree within ``tol`` levels (grey video through a YUV
    codec comes back with small chroma noise), else RGB HxWx3."""
    import cv2

    if frame.ndim == 2:
        return frame
    step = max(1, frame.shape[0] // 64)
    rows = frame[::step].astype(np.int16)
    if np.abs(rows[..., 0] - rows[..., 1]).max() <= tol and np.abs(rows[..., 2] - rows[..., 1]).max() <= tol:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(frame[..., ::-1])


class VideoStream:
    """Frames of a video read front to back: ``read(indices)`` decodes up to the last index asked for,
    keeping only those (grab() skips the rest); asking for an earlier frame reopens the video."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.cap = None
        self.pos = 0

    def read(self, indices) -> dict[int, np.ndarray]:
        wanted = sorted(set(int(i) for i in indices))
        out: dict[int, np.ndarray] = {}
        if not wanted:
            return out
        if self.cap is None or wanted[0] < self.pos:
            self.close()
            self.cap, self.pos = _open(self.path), 0
        want = set(wanted)
        while self.pos <= wanted[-1]:
            if self.pos in want:
                ok, frame = self.cap.read()
                if ok:
                    out[self.pos] = _to_array(frame)
            else:
                ok = self.cap.grab()
            if not ok:
                break
            self.pos += 1
        missing = [i for i in wanted if i not in out]
        if missing:
            raise InputError(self.path, f"video ends before frame {missing[0]} (decoded {self.pos} frames)")
        return out

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def read_video_frames(path: str | Path, indices) -> dict[int, np.ndarray]:
    """Decode ``path`` once, front to back, keeping only frames in ``indices``."""
    stream = VideoStream(path)
    try:
        return stream.read(indices)
    finally:
        stream.close()


def sample_indices(n_frames: int, k: int, include=()) -> list[int]:
    """About ``k`` frame indices spread evenly over the video, plus ``include``."""
    base = np.linspace(0, max(n_frames - 1, 0), num=min(k, n_frames)).round().astype(int)
    return sorted(set(base.tolist()) | {int(i) for i in include})


def _decode_u8(path: str | Path, what: str) -> np.ndarray:
    """An image file decoded as stored (grey, BGR or BGRA), 16-bit reduced to 8-bit (through
    gausslift.scene.decode_image: no libpng eXIf warnings)."""
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    img = decode_image(data) if data else None
    if img is None:
        raise InputError(path, f"not a readable {what}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return img


def read_image_u8(path: str | Path) -> np.ndarray:
    """An image file as 8-bit grey HxW or RGB HxWx3 (alpha dropped)."""
    img = _decode_u8(path, "image")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    return _to_array(img) if img.ndim == 3 else img


def read_mask_u8(path: str | Path) -> np.ndarray:
    """A mask image (alpha channel if any, else grey) as 8-bit HxW."""
    img = _decode_u8(path, "mask image")
    if img.ndim == 3:
        img = img[..., 3] if img.shape[2] == 4 else img[..., :3].max(axis=2)
    return img
