"""MAMMAL_mouse captures: ``new_cam.pkl`` plus undistorted videos.

``new_cam.pkl`` is a pickled list (or int-keyed dict) of per-camera dicts with ``K`` (3x3, OpenCV:
pixel centres at 0), ``R`` (3x3 world-to-camera, column vectors: x_cam = R X + T) and ``T`` (3 values,
millimetres; MAMMAL's loader treats it as a flat 3-vector, a 3x1 column is accepted too). The videos
(``videos_undist/<i>.mp4``) are already undistorted, so the cameras have no distortion unless a dict
carries one (``dist``/``D``). Masks come as videos too (``simpleclick_undist/<i>.mp4``). The image
size comes from the video, else :data:`DEFAULT_SIZE` is assumed with a warning.

The pickle is read with a restricted unpickler (numpy arrays and plain containers only), so a
``new_cam.pkl`` from elsewhere cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, K_from_opencv, viewmat_from_Rt
from gausslift.errors import InputError
from gausslift.io.common import load_pickle
from gausslift.io.dannce import video_size
from gausslift.scene import Scene, View

FORMAT = "mammal"
CAMERA_FILE = "new_cam.pkl"
DEFAULT_SIZE = (1152, 1024)  # markerless_mouse_1 (width, height)


def _pkl_path(path: Path) -> Path | None:
    if path.is_file() and path.name == CAMERA_FILE:
        return path
    if path.is_dir() and (path / CAMERA_FILE).is_file():
        return path / CAMERA_FILE
    return None


def detect(path: Path) -> bool:
    return _pkl_path(Path(path)) is not None


def diagnose(path: Path) -> str | None:
    path = Path(path)
    if path.is_dir() and (path / "videos_undist").is_dir():
        return f"found videos_undist/ but no {CAMERA_FILE}"
    return None


def load_cameras(path: Path) -> list[tuple[str, dict]]:
    data = load_pickle(path, "camera pickle")
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        items = [(str(k), v) for k, v in sorted(data.items(), key=lambda kv: str(kv[0]))]
    elif isinstance(data, (list, tuple)) and all(isinstance(v, dict) for v in data):
        items = [(str(i), v) for i, v in enumerate(data)]
    else:
        raise InputError(path, "expected a list of camera dicts with K, R, T")
    if not items:
        raise InputError(path, "contains no cameras")
    return items


def _get(path: Path, cam: dict, name: str, key: str, size: int, allow=None) -> np.ndarray:
    if key not in cam:
        raise InputError(path, f"camera {name} has no '{key}'")
    try:
        a = np.asarray(cam[key], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(path, f"camera {name} '{key}' is not numeric") from e
    if a.size not in (allow or (size,)):
        raise InputError(path, f"camera {name} '{key}' has shape {list(a.shape)}, expected {size} values")
    if not np.all(np.isfinite(a)):
        raise InputError(path, f"camera {name} '{key}' contains NaN or infinite values")
    return a


def read(path: Path) -> Scene:
    path = Path(path)
    pkl = _pkl_path(path)
    if pkl is None:
        raise InputError(path, f"no {CAMERA_FILE} found")
    root = pkl.parent
    scene = Scene(views=[], format=FORMAT, root=root, meta={"units": "mm", "calibration": str(pkl)})
    assumed = []
    for name, cam in load_cameras(pkl):
        K = _get(pkl, cam, name, "K", 9).reshape(3, 3)
        R = _get(pkl, cam, name, "R", 9).reshape(3, 3)
        T = _get(pkl, cam, name, "T", 3).reshape(3)
        dkey = next((k for k in ("dist", "D", "distortion") if k in cam), None)
        dist = None if dkey is None else _get(pkl, cam, name, dkey, 5, allow=(4, 5)).ravel()
        meta = {}
        size = None
        video = root / "videos_undist" / f"{name}.mp4"
        if video.is_file():
            meta["video"] = video
            size = video_size(video)
            if size is None:
                scene.warn(f"{video}: not a readable video")
        mask = root / "simpleclick_undist" / f"{name}.mp4"
        if mask.is_file():
            meta["mask_video"] = mask
        if size is None:
            size = DEFAULT_SIZE
            assumed.append(name)
        camera = Camera(K_from_opencv(K), viewmat_from_Rt(R, T), size[0], size[1], dist)
        scene.views.append(View(name=name, camera=camera, meta=meta))
    if assumed:
        scene.warn(
            f"{pkl}: no video to read the image size of camera(s) {', '.join(assumed)}; "
            f"assumed {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} as in markerless_mouse_1"
        )
    return scene
