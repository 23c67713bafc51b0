"""DeepFly3D (df3d) results: ``df3d_result*.pkl`` next to (or in a ``df3d/`` folder below) the
``camera_N.mp4`` videos or ``camera_N_img_I.jpg`` frames of a tethered-fly recording.

Conventions, read from DeepFly3D's own code (``df3d/core.py`` ``Core.save``, ``pyba`` ``Camera`` and
``CameraNetwork``, the df3d README):

* integer keys ``0..C-1``, one per camera as in the file names (``camera_{k}``), each a dict with
  ``R`` (3x3) and ``tvec`` (3): world-to-camera, ``x_cam = R X + tvec`` (pyba projects with
  ``cv2.projectPoints(X, Rodrigues(R), tvec, intr, distort)``; its centre is ``-R^T tvec``), OpenCV axes
  (z forward). ``intr`` is an OpenCV K (pixel centres at 0 -> :func:`gausslift.cameras.K_from_opencv`)
  and ``distort`` OpenCV's ``k1 k2 p1 p2 k3``. Units are millimetres (cameras about 118 mm away,
  f about 16,000 px: nearly orthographic).
* ``points2d`` [C, T, J, 2] is NORMALISED to [0, 1] and in (row, column) order: pixels are
  ``(x, y) = (p[..., 1] * W, p[..., 0] * H)`` in OpenCV's convention (pyba multiplies by
  ``image_shape[::-1]`` = (H, W) and swaps the columns). A point with ANY coordinate zero is "not
  seen" (pyba's ``can_see``; df3d mirrors the columns of its left-hand cameras after zeroing unseen
  points, so those read (0, 1)).
* ``points3d_wo_procrustes`` [T, J, 3] is the triangulation in the cameras' world; ``points3d`` is the
  same after a Procrustes alignment to a template skeleton, so it is NOT in the cameras' world and is
  only used (with a warning) when the former is absent. Rows of zeros are untriangulated joints.
* ``camera_ordering`` (kept in ``scene.meta``) maps df3d's canonical camera positions to file ids;
  ``image_shape`` ``[W, H]`` is the calibrated image size when present (a video of another size
  but the same aspect is rescaled by ingest), else the size comes from the video (else the frames,
  else 960x480, DeepFly3D's camera, with a warning).

Views are named ``camera_{k}``; a camera's video becomes ``view.meta["video"]`` (frames by index);
without videos the camera's first frame image is ``view.image``. 2D and 3D points become
``scene.keypoints`` (used by ``inspect`` for per-camera reprojection errors). The pickle is read with a
restricted unpickler (numpy arrays and plain containers only).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, K_from_opencv, viewmat_from_Rt
from gausslift.errors import InputError
from gausslift.io.common import as_matrix, check_rotation, image_header, load_pickle
from gausslift.io.dannce import video_size
from gausslift.scene import Keypoints, Scene, View

FORMAT = "deepfly3d"
DEFAULT_SIZE = (960, 480)  # DeepFly3D's cameras (width, height)
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
_FRAME = re.compile(r"^camera_(\d+)_img_(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def _pickles(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("df3d_result*.pkl") if p.is_file())


def find_result(path: Path) -> Path | None:
    """The ``df3d_result*.pkl`` for ``path``: the file itself, or one in ``path``, ``path/df3d`` or
    ``path/images/df3d`` (df3d-cli's output folders)."""
    path = Path(path)
    if path.is_file():
        return path if path.name.startswith("df3d_result") and path.suffix == ".pkl" else None
    for d in (path, path / "df3d", path / "images" / "df3d"):
        found = _pickles(d)
        if found:
            return found[-1]
    return None


def detect(path: Path) -> bool:
    return find_result(Path(path)) is not None


def diagnose(path: Path) -> str | None:
    path = Path(path)
    if not path.is_dir():
        return None
    vids = sorted(p.name for p in path.glob("camera_*") if p.suffix.lower() in VIDEO_EXTS)
    imgs = [p for p in path.glob("camera_*_img_*") if _FRAME.match(p.name)]
    if vids or imgs:
        what = f"{len(vids)} camera_N videos" if vids else f"{len(imgs)} camera_N_img_I frames"
        return f"found {what} but no df3d_result*.pkl (run df3d-cli first)"
    return None


def _media_dirs(pkl: Path, path: Path) -> list[Path]:
    dirs = [pkl.parent, pkl.parent.parent, pkl.parent.parent.parent]
    if path.is_dir():
        dirs = [path, path / "images"] + dirs
    out = []
    for d in dirs:
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def _find_media(dirs: list[Path], k: int) -> tuple[Path | None, Path | None]:
    """(video, first frame image) of camera ``k``."""
    for d in dirs:
        for ext in VIDEO_EXTS:
            if (d / f"camera_{k}{ext}").is_file():
                return d / f"camera_{k}{ext}", None
    for d in dirs:
        frames = []
        for p in d.glob(f"camera_{k}_img_*"):
            m = _FRAME.match(p.name)
            if m and int(m.group(1)) == k:
                frames.append((int(m.group(2)), p))
        if frames:
            return None, min(frames)[1]
    return None, None


def _camera(pkl: Path, k: int, d: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(d, dict):
        raise InputError(pkl, f"camera {k} is not a dict with R, tvec, intr")
    missing = [key for key in ("R", "tvec", "intr") if d.get(key) is None]
    if missing:
        raise InputError(pkl, f"camera {k} has no {', '.join(missing)} (df3d ran without calibration?)")
    R = as_matrix(d["R"], (3, 3), pkl, f"camera {k} R")
    check_rotation(R, pkl, f"camera {k} R")
    t = as_matrix(np.ravel(d["tvec"]), (3,), pkl, f"camera {k} tvec")
    K = as_matrix(d["intr"], (3, 3), pkl, f"camera {k} intr")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(pkl, f"camera {k} intr has a non-positive focal length")
    dist = np.zeros(5) if d.get("distort") is None else np.ravel(np.asarray(d["distort"], np.float64))
    if dist.size > 5 or not np.all(np.isfinite(dist)):
        raise InputError(pkl, f"camera {k} distort must be at most 5 finite numbers")
    return R, t, K, np.pad(dist, (0, 5 - dist.size))


def _size(video: Path | None, image: Path | None, scene: Scene) -> tuple[int, int] | None:
    if video is not None:
        size = video_size(video)
        if size is None:
            scene.warn(f"{video}: not a readable video")
        return size
    if image is not None:
        h = image_header(image)
        return None if h is None else (h[0], h[1])
    return None


def _keypoints(pkl: Path, data: dict, ids: list[int], views: list[View], scene: Scene) -> Keypoints | None:
    if "points2d" not in data:
        return None
    p2 = np.asarray(data["points2d"], dtype=np.float64)
    if p2.ndim != 4 or p2.shape[-1] != 2 or p2.shape[0] < max(ids) + 1:
        raise InputError(pkl, f"points2d has shape {list(p2.shape)}, expected [cameras, frames, joints, 2]")
    key = "points3d_wo_procrustes" if data.get("points3d_wo_procrustes") is not None else "points3d"
    if data.get(key) is None:
        scene.warn(f"{pkl}: 2D points but no 3D points; nothing to check them against")
        return None
    p3 = np.asarray(data[key], dtype=np.float64)
    if p3.shape != p2.shape[1:3] + (3,):
        raise InputError(pkl, f"{key} has shape {list(p3.shape)}, expected {list(p2.shape[1:3]) + [3]}")
    if key == "points3d":
        scene.warn(
            f"{pkl}: no points3d_wo_procrustes; using points3d, which df3d aligns to a template skeleton "
            "(not the cameras' world), so its reprojection errors may be large"
        )
    p3 = np.where(np.all(p3 == 0, axis=-1, keepdims=True), np.nan, p3)
    points2d = {}
    for k, v in zip(ids, views):
        W, H = v.camera.width, v.camera.height
        rc = p2[k]
        xy = np.stack([rc[..., 1] * W, rc[..., 0] * H], -1) + 0.5  # OpenCV pixels -> centres at +0.5
        unseen = np.any(np.isclose(rc * [H, W], 0), axis=-1, keepdims=True)  # pyba's Camera.can_see
        points2d[v.name] = np.where(unseen, np.nan, xy)
    return Keypoints(p3, points2d)


def read(path: Path) -> Scene:
    path = Path(path)
    pkl = find_result(path)
    if pkl is None:
        raise InputError(path, "no df3d_result*.pkl here, in df3d/ or in images/df3d/")
    data = load_pickle(pkl, "DeepFly3D result pickle")
    if not isinstance(data, dict):
        raise InputError(pkl, "expected a dict (camera ids, points2d, points3d, ...)")
    ids = sorted(int(k) for k in data if isinstance(k, (int, np.integer)))
    if not ids:
        raise InputError(pkl, "no cameras (integer keys with R, tvec, intr): df3d ran without calibration?")
    root = path if path.is_dir() else pkl.parent
    scene = Scene(views=[], format=FORMAT, root=root, meta={"units": "mm", "calibration": str(pkl)})
    if data.get("camera_ordering") is not None:
        scene.meta["camera_ordering"] = [int(x) for x in np.ravel(data["camera_ordering"])]
    shape = data.get("image_shape")
    calib_size = None
    if shape is not None and np.size(shape) == 2 and np.all(np.asarray(shape, dtype=np.float64) > 0):
        calib_size = tuple(int(x) for x in np.ravel(shape))
    dirs = _media_dirs(pkl, path)
    assumed, no_media = [], []
    for k in ids:
        R, t, K, dist = _camera(pkl, k, data[k])
        video, image = _find_media(dirs, k)
        size = calib_size or _size(video, image, scene)
        if size is None:
            size = DEFAULT_SIZE
            assumed.append(f"camera_{k}")
        if video is None and image is None:
            no_media.append(f"camera_{k}")
        meta = {"index": k} if video is None else {"index": k, "video": video}
        cam = Camera(K_from_opencv(K), viewmat_from_Rt(R, t), size[0], size[1], dist)
        scene.views.append(View(f"camera_{k}", cam, image, None, "train", meta))
    if assumed:
        w, h = DEFAULT_SIZE
        scene.warn(f"{pkl}: no image size for {', '.join(assumed)}; assumed {w}x{h} (DeepFly3D's cameras)")
    if no_media and len(no_media) < len(ids):
        scene.warn(f"no camera_N video or frames found for {', '.join(no_media)}")
    scene.keypoints = _keypoints(pkl, data, ids, scene.views, scene)
    return scene
