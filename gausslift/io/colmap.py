"""COLMAP sparse models (binary ``*.bin`` or text ``*.txt``) in ``sparse/0``, ``sparse`` or the folder
itself, with the images in ``images/``.

COLMAP's cameras are OpenCV-axed world-to-camera (``qvec`` wxyz, ``tvec``) and its pixel centres are
already at +0.5, so poses and K are used as stored. Camera models: SIMPLE_PINHOLE, PINHOLE,
SIMPLE_RADIAL, RADIAL, OPENCV, and FULL_OPENCV when k4..k6 are zero; the others (fisheye, FOV, ...)
raise InputError. ``points3D`` become ``scene.points3d`` and ``scene.points_rgb``. Masks, when a
``masks/`` (or ``mask/``) folder sits next to ``images/``, pair with the images by
:func:`gausslift.io.common.pair_masks`; else an RGBA image's alpha is its mask.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, make_K, viewmat_from_Rt
from gausslift.errors import InputError
from gausslift.io.common import checked_camera, has_alpha, image_header, pair_masks, require_views
from gausslift.scene import Scene, View

FORMAT = "colmap"
MASK_DIRS = ("masks", "mask")  # next to images/, paired by :func:`gausslift.io.common.pair_masks`
# model id -> (name, number of params)
MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}


def find_model(path: Path) -> Path | None:
    """The folder holding cameras/images.{bin,txt}: ``path/sparse/0``, ``path/sparse`` or ``path``."""
    for d in (path / "sparse" / "0", path / "sparse", path):
        for ext in (".bin", ".txt"):
            if (d / f"cameras{ext}").is_file() and (d / f"images{ext}").is_file():
                return d
    return None


_PARTS = ("cameras", "images", "points3D")


def partial_model(path: Path) -> tuple[Path, list[str]] | None:
    """(folder, missing file names) for a folder that holds part of a COLMAP model (for example
    ``cameras.bin`` and ``points3D.bin`` but no ``images.bin``, as some LLFF scenes ship), else None."""
    for d in (path / "sparse" / "0", path / "sparse", path):
        for ext in (".bin", ".txt"):
            have = [p for p in _PARTS if (d / f"{p}{ext}").is_file()]
            if have:
                need = [f"{p}{ext}" for p in _PARTS[:2] if p not in have]
                return (d, need) if need else None
    return None


def detect(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and find_model(path) is not None


def diagnose(path: Path) -> str | None:
    """Why ``path`` is almost, but not quite, a COLMAP capture (for auto-detection's error)."""
    path = Path(path)
    part = partial_model(path) if path.is_dir() else None
    if part is None:
        return None
    d, need = part
    have = [f"{p}{e}" for p in _PARTS for e in (".bin", ".txt") if (d / f"{p}{e}").is_file()]
    return f"found {', '.join(have)} in {d}, but {' and '.join(need)} is missing"


def params_to_K_dist(model: str, params: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray]:
    p = list(map(float, params))
    dist = np.zeros(5)
    if model == "SIMPLE_PINHOLE":
        K = make_K(p[0], p[0], p[1], p[2])
    elif model == "PINHOLE":
        K = make_K(*p[:4])
    elif model == "SIMPLE_RADIAL":
        K, dist[0] = make_K(p[0], p[0], p[1], p[2]), p[3]
    elif model == "RADIAL":
        K, dist[:2] = make_K(p[0], p[0], p[1], p[2]), p[3:5]
    elif model == "OPENCV":
        K, dist[:4] = make_K(*p[:4]), p[4:8]
    elif model == "FULL_OPENCV" and not any(p[9:12]):
        K, dist[:4], dist[4] = make_K(*p[:4]), p[4:8], p[8]
    else:
        raise InputError(where, f"camera model {model} is not supported (pinhole + OpenCV distortion only)")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(where, f"{model} camera has a non-positive focal length")
    return K, dist


def qvec_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


# ---------------------------------------------------------------------------------------------------
# parsing: every function returns plain dicts/arrays and raises InputError naming the file
class _Buf:
    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.data):
            raise InputError(self.path, "file is truncated")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return out

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InputError(self.path, "file is truncated (unterminated image name)")
        s = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return s

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise InputError(self.path, "file is truncated")
        self.pos += n


def _cameras_bin(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    b = _Buf(path)
    out = {}
    for _ in range(b.take("<Q")[0]):
        cid, mid, w, h = b.take("<iiQQ")
        if mid not in MODELS:
            raise InputError(path, f"unknown camera model id {mid}")
        name, n = MODELS[mid]
        out[cid] = (name, int(w), int(h), np.array(b.take(f"<{n}d")))
    return out


def _images_bin(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray, int, str]]:
    b = _Buf(path)
    out = {}
    for _ in range(b.take("<Q")[0]):
        iid, *qt, cid = b.take("<i7di")
        name = b.string()
        b.skip(24 * b.take("<Q")[0])  # points2D: x, y (double), point3D_id (int64)
        out[iid] = (np.array(qt[:4]), np.array(qt[4:]), cid, name)
    return out


def _points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    b = _Buf(path)
    n = b.take("<Q")[0]
    xyz, rgb = np.zeros((n, 3)), np.zeros((n, 3), np.uint8)
    for i in range(n):
        _, x, y, z, r, g, bl, _err, track = b.take("<Q3d3BdQ")
        xyz[i], rgb[i] = (x, y, z), (r, g, bl)
        b.skip(8 * track)
    return xyz, rgb


def _lines(path: Path, keep_empty: bool = False) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read file ({e.__class__.__name__})") from None
    lines = [ln.strip() for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return lines if keep_empty else [ln for ln in lines if ln]


def _cameras_txt(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    out = {}
    for ln in _lines(path):
        f = ln.split()
        try:
            name = f[1]
            n = dict(MODELS.values())[name]
            out[int(f[0])] = (name, int(f[2]), int(f[3]), np.array([float(x) for x in f[4 : 4 + n]]))
            if len(f) != 4 + n:
                raise ValueError
        except (IndexError, ValueError, KeyError):
            raise InputError(path, f"bad camera line: {ln[:80]}") from None
    return out


def _images_txt(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray, int, str]]:
    lines = _lines(path, keep_empty=True)
    while lines and not lines[-1]:
        lines.pop()
    out, i = {}, 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        f = lines[i].split()
        try:
            q, t = np.array([float(x) for x in f[1:5]]), np.array([float(x) for x in f[5:8]])
            out[int(f[0])] = (q, t, int(f[8]), " ".join(f[9:]))
            if len(f) < 10:
                raise ValueError
        except (IndexError, ValueError):
            raise InputError(path, f"bad image line: {lines[i][:80]}") from None
        i += 2  # the next line lists the image's 2D points (possibly empty)
    return out


def _points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for ln in _lines(path):
        f = ln.split()
        try:
            xyz.append([float(x) for x in f[1:4]])
            rgb.append([int(x) for x in f[4:7]])
        except (IndexError, ValueError):
            raise InputError(path, f"bad point line: {ln[:80]}") from None
    return np.array(xyz, dtype=np.float64).reshape(-1, 3), np.array(rgb, dtype=np.uint8).reshape(-1, 3)


def read_model(model: Path):
    ext = ".bin" if (model / "cameras.bin").is_file() and (model / "images.bin").is_file() else ".txt"
    if ext == ".bin":
        cams, imgs = _cameras_bin(model / "cameras.bin"), _images_bin(model / "images.bin")
    else:
        cams, imgs = _cameras_txt(model / "cameras.txt"), _images_txt(model / "images.txt")
    pts = model / f"points3D{ext}"
    points = None
    if pts.is_file():
        points = _points_bin(pts) if ext == ".bin" else _points_txt(pts)
    return cams, imgs, points, ext


def _images_dir(path: Path, model: Path) -> Path:
    for d in (path / "images", model.parent / "images", model.parent.parent / "images"):
        if d.is_dir():
            return d
    return path / "images"


def read(path: Path) -> Scene:
    path = Path(path)
    model = find_model(path)
    if model is None:
        part = partial_model(path)
        if part is not None:
            d, need = part
            raise InputError(d / need[0], f"COLMAP model is incomplete: {' and '.join(need)} is missing")
        raise InputError(path, "no COLMAP model (cameras and images .bin/.txt) in sparse/0, sparse or here")
    cams, imgs, points, ext = read_model(model)
    img_dir = _images_dir(path, model)
    warnings: list[str] = []
    views: list[View] = []
    where_i = model / f"images{ext}"
    for _iid, (q, t, cid, name) in sorted(imgs.items(), key=lambda kv: kv[1][3]):
        if cid not in cams:
            raise InputError(where_i, f"image {name} uses camera {cid}, which cameras{ext} lacks")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or np.linalg.norm(q) < 1e-12:
            raise InputError(where_i, f"image {name} has a NaN/inf or zero pose")
        model_name, w, h, params = cams[cid]
        if not np.all(np.isfinite(params)):
            raise InputError(model / f"cameras{ext}", f"camera {cid} has NaN or inf parameters")
        if w <= 0 or h <= 0:
            raise InputError(model / f"cameras{ext}", f"camera {cid} has size {w}x{h}")
        K, dist = params_to_K_dist(model_name, params, model / f"cameras{ext}")
        cam = Camera(K, viewmat_from_Rt(qvec_to_matrix(q), t), w, h, dist)
        image = img_dir / name
        header = image_header(image) if image.is_file() else None
        cam = checked_camera(cam, image, warnings, header)
        if cam is None:
            continue
        view_name = str(Path(name).with_suffix(""))
        meta = {"image_id": int(_iid), "camera_id": int(cid), "model": model_name}
        views.append(View(view_name, cam, image, image if has_alpha(header) else None, "train", meta))
    require_views(views, model / f"images{ext}", warnings)
    mask_dir = next((img_dir.parent / d for d in MASK_DIRS if (img_dir.parent / d).is_dir()), None)
    masks = pair_masks([v.image for v in views], mask_dir, warnings)
    for v in views:
        v.mask = masks.get(v.image, v.mask)
    xyz, rgb = points if points is not None else (None, None)
    if xyz is not None and not np.all(np.isfinite(xyz)):
        raise InputError(model / f"points3D{ext}", "contains NaN or inf")
    return Scene(
        views,
        format=FORMAT,
        root=path,
        points3d=xyz,
        points_rgb=None if rgb is None else rgb.astype(np.float32) / 255.0,
        warnings=warnings,
    )
