"""4D sequences for the viewer: a folder of per-frame Gaussian-splat .ply files (no torch here).

Layouts recognised by :func:`find_sequence`, in this order:

- ``DIR/ply/*.ply`` with a frame number in each name (``frame_000000.ply``, ...; what ``video4d``
  writes), optionally beside ``DIR/video4d.json`` holding ``{"fps": 25, ...}`` (or, as video4d's
  state file, ``{"options": {"fps": 25, ...}, ...}``);
- otherwise, unless ``DIR`` is a run folder (``splats.ply``) or an INRIA output
  (``point_cloud/iteration_*/``): two or more .ply files in ``DIR`` itself whose names contain a
  frame number (``frame_0001.ply``, ``mouse_12.ply``; the last number in the name counts; hidden
  files, such as a writer's temporaries, are skipped).

Frames are sorted by that number (not by name: ``f_2`` before ``f_10``); .ply files without a number
are ignored; two files with the same number are an error. The playback rate is the fps of
``DIR/video4d.json`` when present, else 25. A ``video4d.json`` without any frame .ply (a run still
going) is an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gausslift.errors import InputError

DEFAULT_FPS = 25.0
META = "video4d.json"
FRAME_DIR = "ply"
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Sequence:
    """Per-frame .ply files of a 4D result, sorted by frame number."""

    root: Path
    frames: tuple[Path, ...]
    numbers: tuple[int, ...]
    fps: float
    meta: Path | None = None

    def __len__(self) -> int:
        return len(self.frames)


def frame_number(path: str | Path) -> int | None:
    """The last number in a file's stem (``frame_000012.ply`` -> 12), or None."""
    nums = _NUMBER.findall(Path(path).stem)
    return int(nums[-1]) if nums else None


def _numbered(folder: Path) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    for p in sorted(folder.glob("*.ply")):
        if p.name.startswith(".") or not p.is_file():  # hidden: a writer's temporary file (atomic_path)
            continue
        k = frame_number(p)
        if k is None:
            continue
        if k in found:
            raise InputError(folder, f"two .ply files for frame {k}: {found[k].name} and {p.name}")
        found[k] = p
    return sorted(found.items())


def read_fps(meta: Path) -> float:
    """``fps`` (or ``options.fps``) of a ``video4d.json``, DEFAULT_FPS when it has neither; a bad file
    is an InputError."""
    try:
        d = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(meta, f"unreadable JSON ({e})") from None
    if not isinstance(d, dict):
        raise InputError(meta, "not a JSON object")
    opts = d.get("options") if isinstance(d.get("options"), dict) else {}
    fps = d.get("fps", opts.get("fps", DEFAULT_FPS))  # video4d's state file keeps it under "options"
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise InputError(meta, f"'fps' must be a number in (0, 1000], got {fps!r}")
    return float(fps)


def find_sequence(src: str | Path) -> Sequence | None:
    """The 4D sequence in folder ``src``, or None when ``src`` is a file or a single-scene folder."""
    src = Path(src)
    if not src.is_dir():
        return None
    meta = src / META if (src / META).is_file() else None
    frames = _numbered(src / FRAME_DIR) if (src / FRAME_DIR).is_dir() else []
    if not frames:
        single = (src / "splats.ply").is_file() or any(src.glob("point_cloud/iteration_*/point_cloud.ply"))
        if single:
            return None
        frames = _numbered(src)
        if len(frames) < 2:
            if meta is not None:
                raise InputError(src, f"{META} is here but no per-frame .ply files (in {FRAME_DIR}/ or here)")
            return None
    fps = read_fps(meta) if meta is not None else DEFAULT_FPS
    return Sequence(src, tuple(p for _, p in frames), tuple(k for k, _ in frames), fps, meta)


def check_ply_header(path: Path) -> None:
    """A quick look at a frame before any work: readable, starts with ``ply``, has a header end and
    a vertex element. (Full reading happens per frame; this catches empty or foreign files early.)"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as e:
        raise InputError(path, f"unreadable ({e.strerror})") from None
    if not head.startswith(b"ply"):
        raise InputError(path, "not a .ply file (it does not start with 'ply')")
    if b"end_header" not in head:
        raise InputError(path, "unreadable .ply (no end_header in its first 64 KiB)")
    if b"element vertex" not in head:
        raise InputError(path, "no 'vertex' element (not Gaussian splats)")
