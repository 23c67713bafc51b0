"""anipose / sleap-anipose sessions: ``calibration.toml`` plus one folder of video per camera.

Calibration (``[cam_i]`` tables, in file order): ``name``, ``size = [w, h]``, ``matrix`` (OpenCV K,
pixel centres at 0 -> :func:`gausslift.cameras.K_from_opencv`), ``distortions`` (k1 k2 p1 p2 k3),
``rotation`` (Rodrigues) and ``translation`` (world-to-camera, in the board's units, usually mm).

Session layout (all optional): ``<root>/<camera name>/*.mp4|avi`` (the view's ``meta["video"]``; views
of video sessions have no image), ``<root>/points3d.h5`` (sleap-anipose triangulation, ``tracks``
[frames, tracks, nodes, 3]) and ``<root>/<camera name>/*.analysis.h5`` (SLEAP 2D tracks, stored
transposed as [tracks, 2, nodes, frames]; SLEAP's confidence-map grid puts pixel centres at integer
coordinates, as OpenCV does -> +0.5 here), and ``<root>/calibration.metadata.h5`` (sleap-anipose's
calibration record: board corners detected per camera [cameras, frames, corners, 2] and triangulated
[frames, corners, 3]), kept as ``scene.meta["board"]`` for the calibration checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, K_from_opencv, rodrigues_to_matrix, viewmat_from_Rt
from gausslift.errors import InputError
from gausslift.io.common import as_matrix
from gausslift.scene import Keypoints, Scene, View

FORMAT = "anipose"
CALIBRATION = "calibration.toml"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _toml_path(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".toml":
        return path
    if path.is_dir() and (path / CALIBRATION).is_file():
        return path / CALIBRATION
    return None


def detect(path: Path) -> bool:
    path = Path(path)
    toml = _toml_path(path)
    if toml is None:
        return False
    if toml.name == CALIBRATION:
        return True
    try:  # another .toml file: only if it looks like an anipose calibration (small text file)
        return toml.stat().st_size < 1_000_000 and "[cam_" in toml.read_text(errors="replace")
    except OSError:
        return False


def diagnose(path: Path) -> str | None:
    path = Path(path)
    if not path.is_dir():
        return None
    for toml in sorted(path.glob("*.toml"))[:10]:
        if detect(toml):
            return f"found {toml.name} with [cam_*] tables but no {CALIBRATION}: pass that file itself"
    cams = sorted(
        d.name
        for d in path.iterdir()
        if d.is_dir() and any(p.suffix.lower() in VIDEO_SUFFIXES for p in d.iterdir() if p.is_file())
    )
    if len(cams) >= 2:
        return f"found per-camera video folders ({', '.join(cams[:6])}) but no {CALIBRATION}"
    return None


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as e:
            raise InputError(path, "reading TOML needs Python >= 3.11 or the 'tomli' package") from e
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"not valid TOML ({e})") from e
    except UnicodeDecodeError as e:
        raise InputError(path, "not a text TOML file") from e
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from e


def _array(path: Path, cam: str, table: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in table:
        raise InputError(path, f"[{cam}] has no '{key}'")
    return as_matrix(table[key], shape, path, f"[{cam}] '{key}'")


def parse_calibration(path: Path) -> list[tuple[str, Camera]]:
    """(name, Camera) per ``[cam_*]`` table of an anipose calibration file, in file order."""
    data = _load_toml(path)
    tables = [(k, v) for k, v in data.items() if k.startswith("cam_") and isinstance(v, dict)]
    if not tables:
        raise InputError(path, "no [cam_*] tables: not an anipose calibration")
    out: list[tuple[str, Camera]] = []
    for key, t in tables:
        name = str(t.get("name", key))
        if t.get("fisheye"):
            raise InputError(path, f"[{key}] is a fisheye camera, which is not supported")
        size = _array(path, key, t, "size", (2,))
        if np.any(size <= 0) or np.any(size != np.round(size)):
            raise InputError(path, f"[{key}] 'size' must be two positive integers [width, height]")
        K = _array(path, key, t, "matrix", (3, 3))
        try:
            dist = np.asarray(t.get("distortions", np.zeros(5)), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            dist = np.full(6, np.nan)
        if dist.size > 5 or not np.all(np.isfinite(dist)):
            raise InputError(path, f"[{key}] 'distortions' must be at most 5 finite numbers")
        rvec = _array(path, key, t, "rotation", (3,))
        tvec = _array(path, key, t, "translation", (3,))
        viewmat = viewmat_from_Rt(rodrigues_to_matrix(rvec), tvec)
        cam = Camera(K_from_opencv(K), viewmat, int(size[0]), int(size[1]), dist)
        out.append((name, cam))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(path, f"camera names repeat: {', '.join(dup)}")
    return out


def _find_video(root: Path, name: str) -> Path | None:
    folder = root / name
    if folder.is_dir():
        vids = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if vids:
            return vids[0]
    raw = root / "videos-raw"  # anipose project layout: videos-raw/<session>-<cam>.avi
    if raw.is_dir():
        vids = sorted(
            p
            for p in raw.iterdir()
            if p.suffix.lower() in VIDEO_SUFFIXES and name in p.stem.replace("_", "-").split("-")
        )
        if vids:
            return vids[0]
    return None


# ---------------------------------------------------------------------------------------------------
# keypoints
def _read_h5(path: Path, key: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = None if key not in f else np.asarray(f[key][()], dtype=np.float64)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError... on damaged files
        raise InputError(path, f"not a readable HDF5 file ({e.__class__.__name__}: {e})") from e
    if data is None:
        raise InputError(path, f"has no '{key}' dataset")
    return data


def _sleap_names(path: Path) -> list[str] | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "node_names" not in f:
                return None
            return [n.decode() if isinstance(n, bytes) else str(n) for n in f["node_names"][()]]
    except Exception:  # names are optional
        return None


def read_sleap_analysis(path: Path) -> np.ndarray:
    """SLEAP ``*.analysis.h5`` tracks as [frames, tracks, nodes, 2] in OpenCV pixels (NaN missing)."""
    t = _read_h5(path, "tracks")
    if t.ndim != 4:
        raise InputError(path, f"'tracks' has {t.ndim} dimensions, expected 4")
    if t.shape[1] == 2 and t.shape[2] == 2:  # 2 nodes: both layouts have a size-2 axis in both places
        raise InputError(path, f"'tracks' has shape {t.shape}: with 2 nodes the SLEAP layouts (default "
                               "or untransposed export) cannot be told apart")  # fmt: skip
    if t.shape[1] == 2:  # SLEAP's default (MATLAB-friendly) export: [tracks, 2, nodes, frames]
        return np.transpose(t, (3, 0, 2, 1))
    if t.shape[2] == 2:  # untransposed export: [frames, nodes, 2, tracks]
        return np.transpose(t, (0, 3, 1, 2))
    raise InputError(path, f"'tracks' has shape {t.shape}: no axis of size 2 for x, y")


def _fit_frames(a: np.ndarray, frames: int) -> np.ndarray:
    if a.shape[0] >= frames:
        return a[:frames]
    pad = np.full((frames - a.shape[0],) + a.shape[1:], np.nan)
    return np.concatenate([a, pad])


def read_keypoints(root: Path, names: list[str], scene: Scene) -> Keypoints | None:
    p3 = root / "points3d.h5"
    if not p3.is_file():
        return None
    tracks = _read_h5(p3, "tracks")
    if tracks.ndim == 3:  # [frames, nodes, 3]
        tracks = tracks[:, None]
    if tracks.ndim != 4 or tracks.shape[-1] != 3:
        raise InputError(p3, f"'tracks' has shape {tracks.shape}, expected [frames, tracks, nodes, 3]")
    F, T, J = tracks.shape[:3]
    points2d: dict[str, np.ndarray] = {}
    node_names = None
    for name in names:
        files = sorted((root / name).glob("*.analysis.h5")) if (root / name).is_dir() else []
        if not files:
            continue
        xy = read_sleap_analysis(files[0])
        if xy.shape[1:3] != (T, J):
            scene.warn(
                f"{files[0]}: {xy.shape[1]} tracks x {xy.shape[2]} nodes do not match points3d.h5 "
                f"({T} x {J}); ignoring its 2D keypoints"
            )
            continue
        if xy.shape[0] != F:
            scene.warn(f"{files[0]}: {xy.shape[0]} frames but points3d.h5 has {F}; using the first {F}")
        xy = _fit_frames(xy, F) + 0.5  # OpenCV pixel centres -> internal
        points2d[name] = xy.reshape(F, T * J, 2)
        node_names = node_names or _sleap_names(files[0])
    labels = None
    if node_names is not None and len(node_names) == J:
        labels = node_names if T == 1 else [f"track{t}/{n}" for t in range(T) for n in node_names]
    return Keypoints(tracks.reshape(F, T * J, 3), points2d, labels)


def read_board(root: Path, names: list[str], scene: Scene) -> Keypoints | None:
    meta = root / "calibration.metadata.h5"
    if not meta.is_file():
        return None
    det = _read_h5(meta, "detected_corners")
    tri = _read_h5(meta, "triangulated_corners")
    if det.ndim != 4 or det.shape[0] != len(names) or det.shape[1:3] != tri.shape[:2] or tri.shape[-1] != 3:
        scene.warn(
            f"{meta}: corners of shape {det.shape} / {tri.shape} do not fit {len(names)} cameras; "
            "board ignored"
        )
        return None
    return Keypoints(tri, {n: det[i] + 0.5 for i, n in enumerate(names)})


def read(path: Path) -> Scene:
    path = Path(path)
    toml = _toml_path(path)
    if toml is None:
        raise InputError(path, f"no {CALIBRATION} found")
    cams = parse_calibration(toml)
    root = toml.parent
    scene = Scene(views=[], format=FORMAT, root=root, meta={"units": "mm", "calibration": str(toml)})
    for name, cam in cams:
        meta = {}
        video = _find_video(root, name)
        if video is not None:
            meta["video"] = video
        scene.views.append(View(name=name, camera=cam, meta=meta))
    with_video = [v.name for v in scene.views if "video" in v.meta]
    if with_video and len(with_video) < len(scene.views):
        missing = [v.name for v in scene.views if "video" not in v.meta]
        scene.warn(f"no video found for camera(s) {', '.join(missing)} (looked in {root}/<camera>/)")
    scene.keypoints = read_keypoints(root, scene.names, scene)
    board = read_board(root, scene.names, scene)
    if board is not None:
        scene.meta["board"] = board
    return scene
