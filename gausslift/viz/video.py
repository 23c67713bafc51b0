"""Write frames as an H.264 / yuv420p .mp4 that browsers play (through imageio-ffmpeg), atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gausslift.ioutil import atomic_path


def to_uint8(frame) -> np.ndarray:
    """[H, W, 3|4|1] or [H, W] float in [0, 1] (numpy or torch) or uint8 -> uint8 [H, W, 3]."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame must be [H, W, 1|3|4], got {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return a


def _even(a: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: pad one edge row/column by replication when odd."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(a)


def write_video(frames: Iterable, path: str | Path, fps: float = 30, quality: float = 7) -> Path:
    """Encode ``frames`` (an iterable of images, streamed) to ``path`` (.mp4, H.264, yuv420p,
    faststart). Odd sizes are padded by one pixel. Returns the path; raises on zero frames."""
    import imageio_ffmpeg

    path = Path(path)
    writer = None
    n = 0
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        try:
            for frame in frames:
                a = _even(to_uint8(frame))
                if writer is None:
                    size = (a.shape[1], a.shape[0])
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp),
                        size,
                        fps=fps,
                        codec="libx264",
                        pix_fmt_in="rgb24",
                        pix_fmt_out="yuv420p",
                        quality=quality,
                        macro_block_size=1,
                        output_params=["-movflags", "+faststart"],
                    )
                    writer.send(None)
                elif (a.shape[1], a.shape[0]) != size:
                    raise ValueError(f"frame {n} is {a.shape[1]}x{a.shape[0]}, expected {size[0]}x{size[1]}")
                writer.send(a)
                n += 1
        finally:
            if writer is not None:
                writer.close()
        if n == 0:
            raise ValueError("write_video: no frames")
    return path
