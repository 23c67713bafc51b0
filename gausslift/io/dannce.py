"""DANNCE / Label3D projects: ``label3d_dannce.mat`` (MATLAB v5) with per-camera calibration.

``params{i}`` holds ``K`` (MATLAB: transposed, pixel centres at 1), ``r`` (row-vector rotation:
x_cam = X r + t), ``t``, ``RDistort`` (k1, k2[, k3]) and ``TDistort`` (p1, p2; MATLAB's tangential
model is OpenCV's, so the coefficients map one to one onto (k1, k2, p1, p2, k3)). ``camnames`` names
the cameras; ``labelData{i}`` holds hand labels: ``data_3d`` [frames, 3J] (x, y, z per joint, the same
for every camera), ``data_2d`` [frames, 2J] (x, y per joint, 1-based pixels) and ``data_sampleID``.

The file stores no image size: it is read from the camera's video (DANNCE layout
``videos/<camera>/0.mp4``) when there is one, else :data:`DEFAULT_SIZE` is assumed with a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, K_from_matlab, viewmat_from_matlab
from gausslift.errors import InputError
from gausslift.scene import Keypoints, Scene, View

FORMAT = "dannce"
DEFAULT_SIZE = (1152, 1024)  # the DANNCE markerless_mouse demo cameras (width, height)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _mat_path(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".mat" and path.name.endswith("dannce.mat"):
        return path
    if path.is_dir():
        if (path / "label3d_dannce.mat").is_file():
            return path / "label3d_dannce.mat"
        mats = sorted(path.glob("*dannce.mat"))
        if mats:
            return mats[0]
    return None


def detect(path: Path) -> bool:
    return _mat_path(Path(path)) is not None


def diagnose(path: Path) -> str | None:
    path = Path(path)
    if not path.is_dir():
        return None
    mats = sorted(p.name for p in path.glob("*.mat"))
    if mats and (path / "videos").is_dir():
        return f"found videos/ and {', '.join(mats[:3])} but no *dannce.mat (label3d_dannce.mat)"
    return None


def video_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a video from its stream header (cv2), or None when unreadable."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (w, h) if w > 0 and h > 0 else None
    finally:
        cap.release()


def find_video(folder: Path) -> Path | None:
    """``0.mp4`` in ``folder`` (DANNCE chunks videos by start frame), else the first video by number."""
    if not folder.is_dir():
        return None
    vids = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    if not vids:
        return None
    return sorted(vids, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))[
        0
    ]


# ---------------------------------------------------------------------------------------------------
# MATLAB structures (loadmat without squeeze: structs are 1x1 record arrays, cells object arrays)
def _load_mat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as e:  # v7.3
        raise InputError(path, "MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7") from e
    except Exception as e:  # scipy raises MatReadError, ValueError, struct errors... on broken files
        raise InputError(path, f"not a readable MATLAB file ({e})") from e


def _cells(path: Path, mat: dict, key: str) -> list:
    if key not in mat:
        raise InputError(path, f"has no '{key}' variable: not a Label3D/DANNCE file")
    a = mat[key]
    if not isinstance(a, np.ndarray) or a.dtype != object:
        raise InputError(path, f"'{key}' is not a cell array")
    return list(a.ravel())


def _field(path: Path, struct, name: str, what: str):
    s = struct
    while isinstance(s, np.ndarray) and s.dtype == object and s.size == 1:
        s = s.ravel()[0]
    if not isinstance(s, np.ndarray) or s.dtype.names is None:
        raise InputError(path, f"{what} is not a struct")
    if name not in s.dtype.names:
        return None
    return s.ravel()[0][name]


def _matrix(path: Path, value, n: int, what: str, allow: tuple[int, ...] | None = None) -> np.ndarray:
    if value is None:
        raise InputError(path, f"{what} is missing")
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(path, f"{what} is not numeric") from e
    sizes = allow or (n,)
    if a.size not in sizes:
        raise InputError(path, f"{what} has {a.size} values, expected {' or '.join(map(str, sizes))}")
    if not np.all(np.isfinite(a)):
        raise InputError(path, f"{what} contains NaN or infinite values")
    return a


def _camnames(path: Path, mat: dict, n: int) -> list[str]:
    if "camnames" not in mat:
        return [f"Camera{i + 1}" for i in range(n)]
    raw = mat["camnames"]
    if raw.dtype.kind in "US":  # char matrix, one name per row
        names = [str(x).strip() for x in np.atleast_1d(raw.squeeze())]
    else:
        names = [str(np.ravel(c)[0]).strip() if np.size(c) else "" for c in raw.ravel()]
    if len(names) != n:
        raise InputError(path, f"{len(names)} camnames but {n} cameras in 'params'")
    if len(set(names)) != n or not all(names):
        raise InputError(path, f"camera names are empty or repeat: {names}")
    return names


def parse_params(path: Path, struct, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple | None]:
    """(K, viewmat, dist, size-or-None) of one camera's ``params`` struct, in the internal convention."""
    what = f"camera '{name}'"
    K = _matrix(path, _field(path, struct, "K", what), 9, f"{what} K").reshape(3, 3)
    r = _matrix(path, _field(path, struct, "r", what), 9, f"{what} r").reshape(3, 3)
    t = _matrix(path, _field(path, struct, "t", what), 3, f"{what} t").reshape(3)
    rd = _field(path, struct, "RDistort", what)
    td = _field(path, struct, "TDistort", what)
    rd = np.zeros(2) if rd is None or np.size(rd) == 0 else _matrix(path, rd, 3, f"{what} RDistort", (2, 3))
    td = np.zeros(2) if td is None or np.size(td) == 0 else _matrix(path, td, 2, f"{what} TDistort")
    rd, td = rd.ravel(), td.ravel()
    dist = np.array([rd[0], rd[1], td[0], td[1], rd[2] if rd.size > 2 else 0.0])
    size = None
    im = _field(path, struct, "imageSize", what)  # MATLAB cameraParameters: [height, width]
    if im is not None and np.size(im) == 2:
        h, w = (int(v) for v in np.ravel(im))
        size = (w, h)
    return K_from_matlab(K), viewmat_from_matlab(r, t), dist, size


# ---------------------------------------------------------------------------------------------------
def _labels(path: Path, mat: dict, names: list[str], scene: Scene) -> Keypoints | None:
    if "labelData" not in mat:
        return None
    cells = _cells(path, mat, "labelData")
    if len(cells) != len(names):
        scene.warn(f"{path}: {len(cells)} labelData cells for {len(names)} cameras; labels ignored")
        return None
    per_cam = []
    for name, cell in zip(names, cells):
        d2 = _field(path, cell, "data_2d", f"labelData of '{name}'")
        d3 = _field(path, cell, "data_3d", f"labelData of '{name}'")
        ids = _field(path, cell, "data_sampleID", f"labelData of '{name}'")
        if d2 is None or d3 is None or np.size(d3) == 0:
            return None
        d2, d3 = np.asarray(d2, dtype=np.float64), np.asarray(d3, dtype=np.float64)
        if d3.ndim != 2 or d3.shape[1] % 3 or d2.shape != (d3.shape[0], d3.shape[1] // 3 * 2):
            scene.warn(f"{path}: labels of '{name}' have shapes {d2.shape} / {d3.shape}; labels ignored")
            return None
        ids = np.arange(d3.shape[0]) if ids is None else np.asarray(ids).ravel()
        if ids.size != d3.shape[0]:
            ids = np.arange(d3.shape[0])
        per_cam.append((ids, d2, d3))
    common = per_cam[0][0]
    for ids, _, _ in per_cam[1:]:
        common = np.intersect1d(common, ids)
    if common.size == 0:
        scene.warn(f"{path}: the cameras share no labelled sample; labels ignored")
        return None
    J = per_cam[0][2].shape[1] // 3
    points2d: dict[str, np.ndarray] = {}
    p3 = None
    for name, (ids, d2, d3) in zip(names, per_cam):
        rows = (
            np.searchsorted(ids, common) if np.all(np.diff(ids) > 0) else [list(ids).index(i) for i in common]
        )
        x3 = d3[rows].reshape(len(common), J, 3)
        if p3 is None:
            p3 = x3
        elif not np.allclose(np.nan_to_num(p3, nan=1e30), np.nan_to_num(x3, nan=1e30), atol=1e-6):
            scene.warn(f"{path}: 3D labels of '{name}' differ from those of '{names[0]}'; using '{names[0]}'")
        points2d[name] = d2[rows].reshape(len(common), J, 2) - 0.5  # MATLAB 1-based -> internal
    return Keypoints(p3, points2d)


def read(path: Path) -> Scene:
    path = Path(path)
    mat_path = _mat_path(path)
    if mat_path is None:
        raise InputError(path, "no *dannce.mat file found")
    mat = _load_mat(mat_path)
    params = _cells(mat_path, mat, "params")
    if not params:
        raise InputError(mat_path, "'params' is empty: no cameras")
    names = _camnames(mat_path, mat, len(params))
    root = mat_path.parent
    scene = Scene(views=[], format=FORMAT, root=root, meta={"units": "mm", "calibration": str(mat_path)})
    assumed = []
    for name, struct in zip(names, params):
        K, viewmat, dist, size = parse_params(mat_path, struct, name)
        meta = {}
        video = find_video(root / "videos" / name)
        if video is not None:
            meta["video"] = video
            vsize = video_size(video)
            if vsize is None:
                scene.warn(f"{video}: not a readable video")
            elif size is not None and vsize != size:
                scene.warn(f"{video}: video is {vsize[0]}x{vsize[1]} but imageSize says {size[0]}x{size[1]}")
            size = size or vsize
        if size is None:
            size = DEFAULT_SIZE
            assumed.append(name)
        scene.views.append(View(name=name, camera=Camera(K, viewmat, size[0], size[1], dist), meta=meta))
    if assumed:
        scene.warn(
            f"{mat_path}: no image size for camera(s) {', '.join(assumed)} (no video, no imageSize); "
            f"assumed {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} as in the DANNCE demo"
        )
    scene.keypoints = _labels(mat_path, mat, names, scene)
    return scene
