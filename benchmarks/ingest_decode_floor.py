"""The decoding floor of ``gausslift ingest SESSION --frames 0:120:20`` on the mouse session.

Each used camera's H.264 stream (1280x1024) has a single key frame, so reaching frame 100 means decoding
frames 0..100. This times decoding alone, with no masks, resampling or writing: the 3 used cameras
(back, mid, top) in 3 threads, as ingest decodes them, keeping frames 0, 20, ..., 100. 18 views divided
by this time bounds the views/s any ingest of that selection can reach on this machine.

    python3 benchmarks/ingest_decode_floor.py
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

SESSION = Path(__file__).resolve().parents[2] / "shared" / "data" / "mouse_minimal_session"
WANT = set(range(0, 101, 20))


def decode(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    kept = 0
    for i in range(max(WANT) + 1):
        cap.grab()
        if i in WANT:
            kept += cap.retrieve()[0]
    cap.release()
    return kept


def main() -> int:
    if not SESSION.is_dir():
        print(f"skipped: {SESSION} not found (the shared data)")
        return 0
    videos = [SESSION / c / f"minimal_{c}.mp4" for c in ("back", "mid", "top")]
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        with ThreadPoolExecutor(len(videos)) as pool:
            kept = sum(pool.map(decode, videos))
        walls.append(time.perf_counter() - t)
    m = statistics.median(walls)
    print(f"decode {len(videos)} x {max(WANT) + 1} frames, {kept} kept: median {m:.3f} s "
          f"{[round(w, 3) for w in walls]} -> at most {kept / m:.1f} views/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
